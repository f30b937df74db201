"""The I/O contract of the exported graphs: names, dtypes and axes, written once.

``export`` builds graphs that satisfy it, ``edge`` engines bind by these names, and the tests
check both against it. The robot runs batch 1, so every graph has batch 1; the KV cache is
*sequence-major* (``[S, L, 2, H, Dh]``) so that the runtime's preallocated cache buffer's first
``n`` rows are a contiguous view: graphs take the valid past as input and return only the
entries of the new positions, which the runtime writes at rows ``n .. n + K`` (rollback of
rejected positions is moving ``n`` back; keeping an accepted tree path is a row gather).

Graphs (axes: T prefix length, P prompt length, K new tokens, S past length):

prefill(images, prompt_ids, draft_ids, draft_mask, draft_depth)
    -> logits [1, 1 + K, V]    at the last prefix position, then at each appended draft token
       hidden [1, T + K, D]    final-norm features of every position (the drafter's f_t)
       embeds [1, T, D]        input embeddings of the prefix (the drafter's e_t)
       kv     [T + K, L, 2, H, Dh]
    The prefix is [BOS, visual tokens, prompt]; draft tokens are appended after it with
    ``draft_mask`` [1, K, K] (True = may attend: self and ancestors; a lower triangle for a
    chain) and positions ``T + draft_depth``. K may be 0 (a plain prefill).

verify(tokens, positions, tree_mask, past_kv)
    -> logits [1, K, V], hidden [1, K, D], new_kv [K, L, 2, H, Dh]
    Every new token sees the whole past plus the new tokens ``tree_mask`` [1, K, K] allows.

draft(feat, next_embeds, positions, mask, past_kv)       (the drafter, one decoder layer)
    -> logits [1, K, V], feat_out [1, K, D], new_kv [K, 2, H, Dh]
    Input t pairs the feature f_t with the embedding of token t+1 (EAGLE); ``logits`` come
    from the verifier's LM head applied to ``feat_out``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["TensorSpec", "GraphSpec", "GRAPHS", "ContractError", "check_feeds"]


class ContractError(ValueError):
    """Arrays that do not satisfy a graph's contract (name, dtype or rank)."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    axes: tuple[str | int, ...]  # symbolic axis names or fixed sizes


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """For ``torch.onnx.export``: the axes that vary between calls (not the model's sizes)."""
        return {t.name: {i: a for i, a in enumerate(t.axes) if isinstance(a, str) and a not in MODEL_AXES}
                for t in self.inputs + self.outputs}


F32, I64, U8, BOOL = "float32", "int64", "uint8", "bool"

# Axes fixed by the model (its config); every other symbolic axis varies between calls.
MODEL_AXES = frozenset({"views", "height", "width", "vocab", "d_model", "layers", "heads", "head_dim"})

PREFILL = GraphSpec(
    "prefill",
    inputs=(
        TensorSpec("images", U8, (1, "views", "height", "width", 3)),
        TensorSpec("prompt_ids", I64, (1, "prompt_len")),
        TensorSpec("draft_ids", I64, (1, "num_draft")),
        TensorSpec("draft_mask", BOOL, (1, "num_draft", "num_draft")),
        TensorSpec("draft_depth", I64, (1, "num_draft")),
    ),
    outputs=(
        TensorSpec("logits", F32, (1, "num_logits", "vocab")),
        TensorSpec("hidden", F32, (1, "total_len", "d_model")),
        TensorSpec("embeds", F32, (1, "prefix_len", "d_model")),
        TensorSpec("kv", F32, ("total_len", "layers", 2, "heads", "head_dim")),
    ),
)

VERIFY = GraphSpec(
    "verify",
    inputs=(
        TensorSpec("tokens", I64, (1, "num_new")),
        TensorSpec("positions", I64, (1, "num_new")),
        TensorSpec("tree_mask", BOOL, (1, "num_new", "num_new")),
        TensorSpec("past_kv", F32, ("past_len", "layers", 2, "heads", "head_dim")),
    ),
    outputs=(
        TensorSpec("logits", F32, (1, "num_new", "vocab")),
        TensorSpec("hidden", F32, (1, "num_new", "d_model")),
        TensorSpec("new_kv", F32, ("num_new", "layers", 2, "heads", "head_dim")),
    ),
)

DRAFT = GraphSpec(
    "draft",
    inputs=(
        TensorSpec("feat", F32, (1, "num_new", "d_model")),
        TensorSpec("next_embeds", F32, (1, "num_new", "d_model")),
        TensorSpec("positions", I64, (1, "num_new")),
        TensorSpec("mask", BOOL, (1, "num_new", "num_new")),
        TensorSpec("past_kv", F32, ("past_len", 2, "heads", "head_dim")),
    ),
    outputs=(
        TensorSpec("logits", F32, (1, "num_new", "vocab")),
        TensorSpec("feat_out", F32, (1, "num_new", "d_model")),
        TensorSpec("new_kv", F32, ("num_new", 2, "heads", "head_dim")),
    ),
)

GRAPHS = {g.name: g for g in (PREFILL, VERIFY, DRAFT)}


def check_feeds(graph: GraphSpec, feeds: dict[str, np.ndarray]) -> None:
    """Raise ``ContractError`` naming the tensor when ``feeds`` do not match ``graph``'s inputs."""
    names = set(graph.input_names)
    if set(feeds) != names:
        raise ContractError(f"{graph.name}: expected inputs {sorted(names)}, got {sorted(feeds)}")
    for spec in graph.inputs:
        a = feeds[spec.name]
        if a.dtype != np.dtype(spec.dtype):
            raise ContractError(f"{graph.name}.{spec.name}: expected dtype {spec.dtype}, got {a.dtype}")
        if a.ndim != len(spec.axes):
            raise ContractError(f"{graph.name}.{spec.name}: expected rank {len(spec.axes)} {spec.axes}, got shape {a.shape}")
        for i, ax in enumerate(spec.axes):
            if isinstance(ax, int) and a.shape[i] != ax:
                raise ContractError(f"{graph.name}.{spec.name}: axis {i} expected {ax}, got shape {a.shape}")
