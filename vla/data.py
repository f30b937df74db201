"""Training samples from recorded episodes (sim/README.md format) for the reference VLA.

Contract: ``load_samples(root, tokenizer, codec, episodes)`` returns a ``Samples`` of in-memory
tensors, one row per control step of each successful demonstration and of each relabelled
episode (``sim.collect --driver``; kept whether or not it succeeded): ``images`` ``[N, V, H, W, 3]``
uint8 (third-person, then wrist), ``prompt`` ``[N, P]`` int64 *left*-padded with ``<pad>`` (0) so
the last prompt token always sits just before the action tokens (``Verifier.teacher_forced``
masks the padding out and numbers positions without it), ``actions`` ``[N, 7]`` token ids and
``episode`` ``[N]``. ``split_by_episode`` makes a
held-out split that never shares an episode with training.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch

from calib.dataset import iter_episodes, read_episode_index
from edge.codec import ActionCodec
from edge.tokenizer import Tokenizer

__all__ = ["Samples", "load_samples", "dataset_instructions", "augment_shift"]

IMAGE_KEYS = ("image", "wrist_image")


@dataclasses.dataclass
class Samples:
    images: torch.Tensor  # [N, V, H, W, 3] uint8
    prompt: torch.Tensor  # [N, P] int64, left-padded with 0
    prompt_len: torch.Tensor  # [N] true prompt length
    actions: torch.Tensor  # [N, 7] action token ids
    episode: torch.Tensor  # [N] episode index
    data_sha256: str  # hash of the arrays used
    aux: torch.Tensor | None = None  # [N, 4] stage targets (sim.tasks.stage_targets), NaN where unknown

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx) -> "Samples":
        idx = torch.as_tensor(idx)
        return Samples(self.images[idx], self.prompt[idx], self.prompt_len[idx], self.actions[idx],
                       self.episode[idx], self.data_sha256, None if self.aux is None else self.aux[idx])


def dataset_instructions(root: str | Path) -> list[str]:
    return sorted({rec["instruction"] for rec in read_episode_index(root) if "instruction" in rec})


def load_samples(root, tokenizer: Tokenizer, codec: ActionCodec, n_views: int = 2,
                 max_episodes: int | None = None, stage_targets: bool = False) -> Samples:
    """With a tokenizer that writes the arm state (``tokenizer.state``) each row's prompt carries its
    step's state; with ``stage_targets`` the rows get ``aux`` labels (expert episodes only: a
    relabelled episode's stages are not known from its labels, its rows get NaN)."""
    keys = IMAGE_KEYS[:n_views] + ("action",) + (("ee_pos", "gripper") if tokenizer.state is not None else ())
    imgs, prompts, acts, eps, aux = [], [], [], [], []
    digest = hashlib.sha256()
    for n, (rec, arr) in enumerate(iter_episodes(root, keys, relabelled=True)):
        if max_episodes is not None and n >= max_episodes:
            break
        T = arr["action"].shape[0]
        views = np.stack([arr[k] for k in IMAGE_KEYS[:n_views]], axis=1)  # [T, V, H, W, 3]
        imgs.append(views)
        if tokenizer.state is None:
            prompts.extend([tokenizer.prompt_ids(rec["instruction"])] * T)
        else:
            prompts.extend(tokenizer.prompt_ids(rec["instruction"], {"ee_pos": arr["ee_pos"][t], "gripper": arr["gripper"][t]})
                           for t in range(T))
        if stage_targets:
            aux.append(_stage_targets(rec, arr["action"][:, 6]))
        acts.append(codec.encode(arr["action"]))
        eps.append(np.full(T, int(rec["index"])))
        digest.update(arr["action"].tobytes())
        digest.update(views[:, :, ::8, ::8].tobytes())
    if not imgs:
        raise ValueError(f"{root}: no successful or relabelled episodes")
    P = max(len(p) for p in prompts)
    prompt = np.zeros((len(prompts), P), dtype=np.int64)
    plen = np.zeros(len(prompts), dtype=np.int64)
    for i, p in enumerate(prompts):
        prompt[i, P - len(p) :] = p
        plen[i] = len(p)
    return Samples(
        images=torch.from_numpy(np.concatenate(imgs)),
        prompt=torch.from_numpy(prompt),
        prompt_len=torch.from_numpy(plen),
        actions=torch.from_numpy(np.concatenate(acts)),
        episode=torch.from_numpy(np.concatenate(eps)),
        data_sha256=digest.hexdigest(),
        aux=torch.from_numpy(np.concatenate(aux)) if stage_targets else None,
    )


def _stage_targets(rec: dict, gripper_labels: np.ndarray) -> np.ndarray:
    from sim.tasks import get_task, stage_targets  # training labels only; the runtime never needs them

    if rec.get("relabelled") or "seed" not in rec:
        return np.full((len(gripper_labels), 4), np.nan, np.float32)
    return stage_targets(get_task(rec["suite"], rec["task"]), rec["seed"], gripper_labels)


def augment_shift(images: torch.Tensor, max_shift_px: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift_px`` (edge padding), per sample and view."""
    if max_shift_px <= 0:
        return images
    B, V, H, W, C = images.shape
    x = images.reshape(B * V, H, W, C).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.pad(x, (max_shift_px,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift_px + 1, (B * V,), generator=generator)
    dy = torch.randint(0, 2 * max_shift_px + 1, (B * V,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None])  # [BV, H]
    cols = (dx[:, None] + torch.arange(W)[None])  # [BV, W]
    bidx = torch.arange(B * V)[:, None, None]
    out = x.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # [BV, H, W, C]
    return out.round().clamp(0, 255).to(torch.uint8).reshape(B, V, H, W, C)
