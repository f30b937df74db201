"""Decoders of the 7 action tokens: plain AR greedy and speculative (chain or EAGLE-2 tree).

Each decoder is one function ``decode_*(models, images, prompt_ids, ...) -> (tokens, DecodeStats)``
over engines that follow ``edge.io_contract`` (batch 1). ``Models`` bundles the engines, the
token embedding table the drafter's inputs need, and preallocated KV caches.

Speculative round (EAGLE / Spec-VLA): the verifier's cache holds every position before
``t_last`` (the newest token). The drafter proposes a chain or a tree under ``t_last``; one
verify pass over ``[t_last, drafts...]`` with the tree mask gives the verifier's greedy token
after each node; ``AcceptRule`` keeps the longest acceptable prefix of the best path (draft
tokens kept), and the verifier's token after it is the bonus. Accepted rows are gathered into
the verifier cache; the drafter's cache is rolled back to the committed prefix and catches up
on the verifier's true features. With an exact rule the result equals AR greedy token for token.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from edge.acceptance import AcceptRule, accept_length
from edge.draft_tree import Tree, add_branch, chain_tree, grow_tree, log_softmax, paths, tree_mask
from edge.kv_cache import KVCache

__all__ = ["Models", "SpecConfig", "DecodeStats", "decode_ar", "decode_speculative", "ACTION_DIM"]

ACTION_DIM = 7


@dataclasses.dataclass(frozen=True)
class SpecConfig:
    """Speculative decoding settings."""

    draft: str = "tree"  # chain or tree
    chain_len: int = 6  # chain: drafts per round
    top_k: int = 4  # tree: children per expansion and frontier width
    depth: int = 6  # tree: maximum depth
    total_tokens: int = 24  # tree: nodes kept for verification
    rule: AcceptRule = dataclasses.field(default_factory=AcceptRule)  # acceptance rule


@dataclasses.dataclass
class DecodeStats:
    verifier_passes: int = 0  # prefill and verify forward passes
    drafter_passes: int = 0  # drafter forward passes
    accepted: list[int] = dataclasses.field(default_factory=list)  # accepted drafts per verify round
    verified_tokens: int = 0  # tokens sent through verify passes (tree size)
    prefill_ms: float = 0.0
    verify_ms: float = 0.0
    draft_ms: float = 0.0
    total_ms: float = 0.0
    prefill_candidates: int = 0  # whole-action draft nodes verified inside the prefill (one-pass)
    prefill_accepted: int = 0  # of their best path, tokens accepted
    compensated: int = 0  # 1 when a rejected tail was filled by the kinematic compensation (KERV)

    @property
    def host_ms(self) -> float:
        return self.total_ms - self.prefill_ms - self.verify_ms - self.draft_ms

    @property
    def tokens_per_pass(self) -> float:
        return ACTION_DIM / max(self.verifier_passes, 1)


class Models:
    """Engines + embedding table + caches for one verifier (and optionally its drafter)."""

    def __init__(self, prefill, verify, draft=None, embeddings: np.ndarray | None = None,
                 kv_row_shape: tuple[int, ...] = (), draft_row_shape: tuple[int, ...] = (), max_len: int = 256):
        self.prefill, self.verify, self.draft = prefill, verify, draft
        self.embeddings = embeddings
        self.vkv = KVCache(max_len, kv_row_shape)
        self.dkv = KVCache(max_len, draft_row_shape) if draft is not None else None


def _timed(stats: DecodeStats, field: str, fn, feeds):
    t0 = time.perf_counter()
    out = fn(feeds)
    setattr(stats, field, getattr(stats, field) + (time.perf_counter() - t0) * 1e3)
    return out


def _prefill_feeds(images, prompt_ids, drafts=None, mask=None, depth=None):
    k = 0 if drafts is None else len(drafts)
    return {"images": images, "prompt_ids": np.asarray(prompt_ids, np.int64).reshape(1, -1),
            "draft_ids": np.asarray(drafts if k else [], np.int64).reshape(1, k),
            "draft_mask": (np.asarray(mask, bool) if k else np.zeros((0, 0), bool)).reshape(1, k, k),
            "draft_depth": np.asarray(depth if k else [], np.int64).reshape(1, k)}


def _verify(models: Models, stats: DecodeStats, tokens, positions, mask):
    stats.verifier_passes += 1
    stats.verified_tokens += len(tokens)
    return _timed(stats, "verify_ms", models.verify.run, {
        "tokens": np.asarray(tokens, np.int64)[None], "positions": np.asarray(positions, np.int64)[None],
        "tree_mask": np.asarray(mask, bool)[None], "past_kv": models.vkv.view()})


def _draft(models: Models, stats: DecodeStats, feat, tokens_next, positions, mask, embeds_next=None):
    stats.drafter_passes += 1
    nxt = embeds_next if embeds_next is not None else models.embeddings[np.asarray(tokens_next, np.int64)]
    return _timed(stats, "draft_ms", models.draft.run, {
        "feat": np.ascontiguousarray(feat, np.float32)[None], "next_embeds": np.ascontiguousarray(nxt, np.float32)[None],
        "positions": np.asarray(positions, np.int64)[None], "mask": np.asarray(mask, bool)[None],
        "past_kv": models.dkv.view()})


def _one_per_pass(models: Models, st: DecodeStats, tokens: list[int]) -> None:
    """Complete ``tokens`` greedily, one single-token verifier pass each (the cache holds all but the last)."""
    while len(tokens) < ACTION_DIM:
        v = _verify(models, st, [tokens[-1]], [models.vkv.n], np.ones((1, 1), bool))
        models.vkv.append(v["new_kv"])
        tokens.append(int(v["logits"][0, -1].argmax()))


def _verify_tree(models: Models, st: DecodeStats, tokens: list[int], tree: Tree, rule: AcceptRule):
    """One verify pass over ``[tokens[-1], tree...]``: appends the accepted drafts and the bonus
    token to ``tokens`` and their rows to the cache; returns ``(pass outputs, kept rows)``."""
    P = models.vkv.n  # position of t_last = tokens[-1]
    v = _verify(models, st, np.concatenate([[tokens[-1]], tree.token]), P + np.concatenate([[0], tree.depth]),
                tree_mask(tree))
    y = v["logits"][0].argmax(-1)  # verifier's greedy token after each node (index 0 = t_last)
    best_n, best = _best_path(tree, y, len(tokens), rule)
    st.accepted.append(best_n)
    keep = np.concatenate([[0], best + 1])
    models.vkv.append(v["new_kv"], keep=keep)
    tokens += [int(t) for t in tree.token[best]] + [int(y[keep[-1]])]
    return v, keep


Tails = Callable[[list[int]], "list[list[int]]"]
Compensate = Callable[[list[int]], "list[int] | None"]


def _compensated(st: DecodeStats, tokens: list[int], compensate: Compensate | None) -> bool:
    """KERV: ask ``compensate`` to complete ``tokens`` (filled in place, counted); True when it did."""
    full = None if compensate is None else compensate(tokens)
    if full is None:
        return False
    st.compensated += 1
    tokens[:] = [int(t) for t in full]
    return True


def _tail_passes(models: Models, st: DecodeStats, tokens: list[int], tails: Tails, rule: AcceptRule,
                 compensate: Compensate | None) -> None:
    """Complete ``tokens`` without a drafter: each verify pass checks, as one tree, the
    continuations ``tails(tokens)`` proposes for the remaining dims (e.g. the Kalman forecast and
    the retrieved actions' own tails) and keeps the accepted prefix plus the bonus token; with no
    continuation a pass is a plain decode step. With an exact rule the result is AR's."""
    while len(tokens) < ACTION_DIM:
        max_depth = ACTION_DIM - len(tokens) - 1  # the bonus token completes the action
        tree = chain_tree(np.zeros(0, np.int64))
        if max_depth > 0:
            for tail in tails(tokens):
                if len(tail):
                    tree = add_branch(tree, np.asarray(tail[:max_depth], np.int64))
        _verify_tree(models, st, tokens, tree, rule)
        if len(tokens) < ACTION_DIM and len(tree):  # a pass that verified (and rejected) drafts
            _compensated(st, tokens, compensate)


def decode_ar(models: Models, images: np.ndarray, prompt_ids) -> tuple[list[int], DecodeStats]:
    """Plain greedy: the prefill gives token 1, then 6 single-token decode passes."""
    st = DecodeStats()
    t0 = time.perf_counter()
    st.verifier_passes += 1
    out = _timed(st, "prefill_ms", models.prefill.run, _prefill_feeds(images, prompt_ids))
    models.vkv.reset(out["kv"])
    tokens = [int(out["logits"][0, -1].argmax())]
    _one_per_pass(models, st, tokens)
    st.total_ms = (time.perf_counter() - t0) * 1e3
    return tokens, st


def _chain_drafts(models, st, root_feat, root_logits, P, k):
    """Run the drafter ``k - 1`` more steps on its own features; returns a chain tree."""
    toks = []
    feat, logits = root_feat, root_logits
    for j in range(k):
        toks.append(int(logits.argmax()))
        if j == k - 1:
            break
        d = _draft(models, st, feat, [toks[-1]], [P + j], np.ones((1, 1), bool))
        models.dkv.append(d["new_kv"])
        feat, logits = d["feat_out"][0], d["logits"][0, -1]
    return chain_tree(np.asarray(toks))


def _tree_drafts(models, st, root_feat, root_logits, P, cfg: SpecConfig, max_depth: int):
    out_feat: dict[int, np.ndarray] = {}

    def expand(tree: Tree, frontier: np.ndarray) -> np.ndarray:
        n = len(tree)
        feats = np.stack([root_feat[0] if tree.parent[i] < 0 else out_feat[int(tree.parent[i])] for i in range(n)])
        d = _draft(models, st, feats, tree.token, P + tree.depth - 1, tree_mask(tree)[1:, 1:])
        for i in range(n):
            out_feat[i] = d["feat_out"][0, i]
        return log_softmax(d["logits"][0, frontier].astype(np.float64))

    return grow_tree(log_softmax(root_logits.astype(np.float64)), expand, cfg.top_k,
                     min(cfg.depth, max_depth), cfg.total_tokens)


def _best_path(tree: Tree, y: np.ndarray, start_dim: int, rule: AcceptRule) -> tuple[int, np.ndarray]:
    """Longest acceptable path prefix. ``y[0]`` is the verifier's token after the root, ``y[i + 1]``
    its token after node ``i``; returns ``(accepted, node indices)`` (first path on ties)."""
    best_n, best = 0, np.zeros(0, np.int64)
    for path in paths(tree):
        before = np.concatenate([[0], path[:-1] + 1])  # row of each node's parent
        n = accept_length(tree.token[path], y[before], start_dim, rule)
        if n > best_n:
            best_n, best = n, path[:n]
    return best_n, best



def decode_speculative(models: Models, images: np.ndarray, prompt_ids, cfg: SpecConfig,
                       candidates: Tree | None = None, candidate_rule: AcceptRule | None = None,
                       compensate: Compensate | None = None,
                       branch: Compensate | None = None, use_drafter: bool = True,
                       tails: Tails | None = None) -> tuple[list[int], DecodeStats]:
    """Speculative decoding; with ``candidates`` (a tree of whole-action drafts, depth 1 = the
    first action token, e.g. Kalman forecasts and retrieved actions) the first verifier pass is
    *one-pass verification*: the candidates ride in the prefill and are checked in the same
    forward pass (``candidate_rule``, default ``cfg.rule``), so a fully accepted action costs one
    verifier pass. What is left is decoded by the drafter (``models.draft``) or, without one, one
    token per pass. ``compensate(tokens)`` is asked after every verification that rejected a
    draft (a drafter round, or the prefill's candidate check; never after a plain prefill, where
    nothing was drafted yet: METHODS 2.3) (KERV): a 7-token list it returns ends decoding,
    ``None`` continues. ``branch(tokens)`` may return a predicted
    continuation (KERV's Kalman forecast) that is added to every draft tree as one more branch.
    Without the drafter, ``tails(tokens)`` (continuations for the remaining dims) are verified
    per pass instead (``_tail_passes``), under the candidates' rule: they are the candidates'
    own continuations, not drafter guesses; without either, one token per pass."""
    st = DecodeStats()
    t0 = time.perf_counter()
    st.verifier_passes += 1
    if candidates is not None and len(candidates):
        feeds = _prefill_feeds(images, prompt_ids, candidates.token, tree_mask(candidates)[1:, 1:],
                               candidates.depth - 1)
        st.prefill_candidates = len(candidates)
    else:
        feeds, candidates = _prefill_feeds(images, prompt_ids), None
    out = _timed(st, "prefill_ms", models.prefill.run, feeds)
    T = out["embeds"].shape[1]
    y0 = out["logits"][0].argmax(-1)  # [1 + K]: after the prefix, then after each candidate node
    if candidates is None:
        models.vkv.reset(out["kv"])
        tokens, best = [int(y0[0])], np.zeros(0, np.int64)
    else:
        n, best = _best_path(candidates, y0, 0, candidate_rule or cfg.rule)
        st.prefill_accepted = n
        models.vkv.reset()
        models.vkv.append(out["kv"], keep=np.concatenate([np.arange(T), T + best]))
        tokens = candidates.token[best].tolist()
        if n < ACTION_DIM:
            tokens.append(int(y0[0 if n == 0 else best[-1] + 1]))
    tokens = [int(t) for t in tokens]
    if len(tokens) < ACTION_DIM and candidates is not None:
        # KERV fills a tail rejected by a verification; a plain prefill has verified no draft yet
        _compensated(st, tokens, compensate)
    if len(tokens) >= ACTION_DIM:
        st.total_ms = (time.perf_counter() - t0) * 1e3
        return tokens[:ACTION_DIM], st
    if models.draft is None or not use_drafter:  # candidates' continuations, or one token per verifier pass
        if tails is not None:
            _tail_passes(models, st, tokens, tails, candidate_rule or cfg.rule, compensate)
        else:
            _one_per_pass(models, st, tokens)
        st.total_ms = (time.perf_counter() - t0) * 1e3
        return tokens, st
    # drafter over the committed sequence: row t pairs f_t with the input embedding of t+1
    rows = models.vkv.n
    kept = np.arange(T) if candidates is None else np.concatenate([np.arange(T), T + best])
    hidden = out["hidden"][0, kept]
    nxt = np.concatenate([out["embeds"][0, 1:], models.embeddings[np.asarray(tokens, np.int64)]])
    models.dkv.reset()
    d = _draft(models, st, hidden, None, np.arange(rows), np.tril(np.ones((rows, rows), bool)), embeds_next=nxt)
    models.dkv.append(d["new_kv"])
    root_feat, root_logits = d["feat_out"][0, -1:], d["logits"][0, -1]
    while len(tokens) < ACTION_DIM:
        P = models.vkv.n  # position of t_last = tokens[-1]
        max_depth = ACTION_DIM - len(tokens) - 1  # the bonus token completes the action
        if max_depth == 0:
            tree = chain_tree(np.zeros(0, np.int64))
        elif cfg.draft == "chain":
            tree = _chain_drafts(models, st, root_feat, root_logits, P, min(cfg.chain_len, max_depth))
        else:
            tree = _tree_drafts(models, st, root_feat, root_logits, P, cfg, max_depth)
        if branch is not None and max_depth > 0:
            extra = branch(tokens)
            if extra:
                tree = add_branch(tree, np.asarray(extra[:max_depth], np.int64))
        n_before = len(tokens)
        v, keep = _verify_tree(models, st, tokens, tree, cfg.rule)
        new = tokens[n_before:]
        if len(tokens) >= ACTION_DIM:
            break
        if _compensated(st, tokens, compensate):
            break
        models.dkv.rollback(P)
        d = _draft(models, st, v["hidden"][0, keep], new, P + np.arange(len(keep)),
                   np.tril(np.ones((len(keep), len(keep)), bool)))
        models.dkv.append(d["new_kv"])
        root_feat, root_logits = d["feat_out"][0, -1:], d["logits"][0, -1]
    st.total_ms = (time.perf_counter() - t0) * 1e3
    return [int(t) for t in tokens[:ACTION_DIM]], st
