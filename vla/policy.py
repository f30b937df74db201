"""The reference VLA as a closed-loop policy (PyTorch, plain greedy decoding; host only).

``make_policy(artifact=REFERENCE_DIR)`` returns an object with ``reset()`` and
``infer(obs) -> action`` where ``obs`` is the simulator's observation dict (``image``,
``wrist_image``, ``instruction``; ``ee_pos`` and ``gripper`` too for a model that reads the arm state) and ``action`` is ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``
with the gripper binarised as OpenVLA's LIBERO post-processing does (1.0 open, 0.0 close).
"""

from __future__ import annotations

import numpy as np
import torch

from vla.artifact import REFERENCE_DIR, load_codec, load_tokenizer, load_verifier
from vla.data import IMAGE_KEYS


class VLAPolicy:
    def __init__(self, artifact=REFERENCE_DIR, threads: int = 1):
        torch.set_num_threads(threads)
        self.model, man = load_verifier(artifact)
        self.codec = load_codec(man)
        self.tok = load_tokenizer(artifact)
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        pass

    def prompt(self, obs: dict) -> torch.Tensor:
        """``[1, P]``: the state tokens when the tokenizer writes the arm state, then the instruction's words."""
        instruction = obs["instruction"]
        if instruction not in self._prompt_cache:
            unknown = self.tok.unknown_words(instruction)
            if unknown:
                raise ValueError(f"instruction {instruction!r}: words unknown to the model's tokenizer: {unknown}")
            self._prompt_cache[instruction] = self.tok.text_ids(instruction)
        state = self.tok.state.ids(obs) if self.tok.state is not None else []
        return torch.tensor([state + self._prompt_cache[instruction]])

    def images(self, obs) -> torch.Tensor:
        views = [obs[k] for k in IMAGE_KEYS[: self.model.cfg.n_views]]
        return torch.from_numpy(np.stack(views)[None])

    @torch.no_grad()
    def infer(self, obs) -> np.ndarray:
        tokens = self.model.greedy_actions(self.images(obs), self.prompt(obs))[0].numpy()
        tokens = np.clip(tokens, self.codec.first_action_token, self.codec.vocab_size - 1)
        action = self.codec.decode(tokens)
        action[6] = (self.codec.gripper_command(action[6]) + 1.0) / 2.0
        return action.astype(np.float32)


def make_policy(artifact=REFERENCE_DIR) -> VLAPolicy:
    return VLAPolicy(artifact)
