"""``EdgePolicy``: observation in, action out, on the exported engines (the robot's policy).

Contract: ``reset()`` at the start of an episode; ``infer(obs) -> (action, stats)`` with ``obs``
a dict holding ``image`` (and ``wrist_image`` when the model uses two views), uint8 HxWx3, and
``instruction`` (and, when the model's tokenizer writes the arm state into the prompt,
``ee_pos`` [3] m and ``gripper`` finger opening m: ``reads_state``); ``action`` is ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` float32 with the
gripper binarised as OpenVLA's LIBERO post-processing (1.0 open, 0.0 close); ``stats`` is the
decoder's ``DecodeStats``. The decoder (AR or speculative, chain or tree, acceptance rule) and
the precision come from ``PolicyConfig``; with ``PolicyConfig.kinematic`` set, the kinematic
layer (``edge.kinematic``: KERV, HeiSD, DyQ-VLA, one-pass verification, the step policy) plans
and decodes every step instead, and ``last_info`` holds that step's plan. An instruction with
words the model never saw is an error naming them, not a silent ``<unk>``. ``EdgePolicy(cfg,
share=other)`` reuses ``other``'s engines (benchmarks run several methods on one set).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from edge.acceptance import AcceptRule
from edge.codec import ActionCodec, ActionStats
from edge.decoding import DecodeStats, Models, SpecConfig, decode_ar, decode_speculative
from edge.kinematic import KinematicConfig, apply_dyq_file, build_layer, precisions_needed
from edge.runtime_models import load_models
from edge.tokenizer import Tokenizer

__all__ = ["DecoderConfig", "PolicyConfig", "EdgePolicy", "IMAGE_KEYS"]

IMAGE_KEYS = ("image", "wrist_image")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    method: Literal["ar", "speculative"] = "speculative"  # plain greedy or speculative decoding
    draft: Literal["chain", "tree"] = "tree"  # drafter proposals as a chain or an EAGLE-2 tree
    chain_len: int = 6  # chain: drafts per round
    top_k: int = 4  # tree: children per expansion
    depth: int = 6  # tree: maximum depth
    total_tokens: int = 24  # tree: nodes verified per pass
    threshold_bins: int = 0  # relaxed acceptance |draft - verifier| <= r (0 = exact)
    exact_gripper: bool = True  # the gripper token must match exactly

    def spec(self) -> SpecConfig:
        return SpecConfig(self.draft, self.chain_len, self.top_k, self.depth, self.total_tokens,
                          AcceptRule.relaxed(self.threshold_bins, self.exact_gripper))


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    engines: str = "build/engines"  # engine set directory (python -m export.build_engines)
    precision: str = "fp32"  # verifier precision: fp32, int8, int4, int4a8 (as built)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # ONNX Runtime execution providers
    threads: int | None = 2  # intra-op threads per session (None: the process-wide setting, edge.engine.configure_threads)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    kinematic: KinematicConfig | None = None  # the kinematic layer (None: the plain decoder above)


class EdgePolicy:
    def __init__(self, cfg: PolicyConfig, share: "EdgePolicy | None" = None):
        if cfg.kinematic is not None:
            cfg = dataclasses.replace(cfg, kinematic=apply_dyq_file(cfg.kinematic))
        self.cfg = cfg
        root = Path(cfg.engines)
        need_drafter = cfg.decoder.method == "speculative" or (cfg.kinematic is not None
                                                               and cfg.kinematic.step.decoder == "drafter")
        wanted = [cfg.precision] if cfg.kinematic is None else precisions_needed(cfg.kinematic)
        if share is not None:
            for f in ("engines", "providers", "threads"):
                if getattr(share.cfg, f) != getattr(cfg, f):
                    raise ValueError(f"EdgePolicy(share=...): {f} differs ({getattr(cfg, f)!r} vs the shared "
                                     f"policy's {getattr(share.cfg, f)!r}); engines can only be shared as loaded")
        self.by_precision: dict[str, Models] = dict(share.by_precision) if share is not None else {}
        man = share.manifest if share is not None else None
        for p in wanted:
            if p not in self.by_precision or (need_drafter and self.by_precision[p].draft is None):
                self.by_precision[p], man = load_models(root, p, cfg.providers, need_drafter, cfg.threads)
        self.manifest = man
        self.models = self.by_precision[wanted[0]]
        codec = man["source"]["codec"]
        self.codec = ActionCodec(ActionStats.from_json(codec["action"], f"{root}/engines.json:source.codec.action"),
                                 codec["vocab_size"], codec["n_bins"])
        self.tokenizer = Tokenizer.load(root / "tokenizer.json")
        self.n_views = man["runtime"]["n_views"]
        self._prompts: dict[str, np.ndarray] = {}
        self.layer = build_layer(cfg.kinematic, self.codec) if cfg.kinematic is not None else None
        self.last_info: dict = {}

    def reset(self) -> None:
        if self.layer is not None:
            self.layer.reset()

    def flush(self) -> None:
        """Let the kinematic layer observe the last step (the runtime calls it after publishing
        the action; ``decode`` does it itself when it was not called)."""
        if self.layer is not None:
            self.layer.flush()

    @property
    def reads_state(self) -> bool:
        """Whether observations must carry ``ee_pos`` and ``gripper`` (state tokens in the prompt)."""
        return self.tokenizer.state is not None

    def check_instruction(self, instruction: str) -> np.ndarray:
        """The instruction's prompt words (cached); words the model never saw are an error."""
        ids = self._prompts.get(instruction)
        if ids is None:
            unknown = self.tokenizer.unknown_words(instruction)
            if unknown:
                raise ValueError(f"instruction {instruction!r}: words the model never saw: {unknown}")
            ids = self._prompts[instruction] = np.asarray(self.tokenizer.text_ids(instruction), np.int64)
        return ids

    def prompt_ids(self, obs: dict) -> np.ndarray:
        """The prompt of an observation: its state tokens (``reads_state``), then the instruction's words."""
        ids = self.check_instruction(obs["instruction"])
        if self.tokenizer.state is None:
            return ids
        return np.concatenate([np.asarray(self.tokenizer.state.ids(obs), np.int64), ids])

    def images(self, obs: dict) -> np.ndarray:
        return np.stack([obs[k] for k in IMAGE_KEYS[: self.n_views]])[None]

    def decode(self, obs: dict, decoder: DecoderConfig | None = None) -> tuple[list[int], DecodeStats]:
        """Decode with the configured decoder, or ``decoder`` (benchmarks share one set of engines)."""
        dec = decoder or self.cfg.decoder
        images, prompt = self.images(obs), self.prompt_ids(obs)
        if self.layer is not None and decoder is None:
            tokens, st, self.last_info = self.layer.decode(self.by_precision, images, prompt, obs)
            return tokens, st
        if dec.method == "ar":
            return decode_ar(self.models, images, prompt)
        return decode_speculative(self.models, images, prompt, dec.spec())

    def tokens_to_action(self, tokens: list[int]) -> np.ndarray:
        t = np.clip(np.asarray(tokens, np.int64), self.codec.first_action_token, self.codec.vocab_size - 1)
        action = self.codec.decode(t)
        action[6] = (self.codec.gripper_command(action[6]) + 1.0) / 2.0
        return action.astype(np.float32)

    def infer(self, obs: dict, decoder: DecoderConfig | None = None) -> tuple[np.ndarray, DecodeStats]:
        tokens, stats = self.decode(obs, decoder)
        return self.tokens_to_action(tokens), stats


def make_policy(engines: str = "build/engines", precision: str = "fp32", threads: int = 2, **decoder) -> EdgePolicy:
    """Factory for ``python -m sim.evaluate --policy edge.policy:make_policy --policy-kwargs '{...}'``;
    ``decoder`` holds ``DecoderConfig`` fields (e.g. ``method``, ``draft``, ``threshold_bins``)."""
    return EdgePolicy(PolicyConfig(engines=engines, precision=precision, threads=threads,
                                   decoder=DecoderConfig(**decoder)))
