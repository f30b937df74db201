"""Acceptance rules for verified drafts (METHODS.md 1.4 and 3.4), as short pure functions.

Token ids of action bins satisfy ``|delta id| == |delta bin|`` (``edge.codec``), so every rule
works on ids directly. A draft token at action dimension ``j`` (0..6) is compared with the
verifier's greedy token after the same prefix, ``y``.

- exact:       accept iff ``d == y``
- relaxed:     accept iff ``|d - y| <= r[j]``  (Spec-VLA; per-dimension thresholds; an exact
               gripper is ``r[6] = 0``). Draft tokens are kept, the bonus token is the
               verifier's argmax after the accepted prefix.
- group:       HeiSD's sequence-wise rule over kinematic groups: a group (xyz, rpy, gripper) is
               accepted whole iff ``sum |d - y| <= group_sum[g]`` and every ``|d - y| <= token_max[g]``;
               acceptance stops at the first failing group. ``y`` must come from one verifier pass
               over the draft, so it is conditioned on the draft prefix.

``accept_length`` returns the number of leading draft tokens accepted; ``best_path`` picks the
tree path with the longest accepted prefix (ties: the first path, as Spec-VLA's argmax).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["AcceptRule", "accept_length", "best_path", "GROUPS"]

GROUPS = ((0, 1, 2), (3, 4, 5), (6,))  # xyz, rpy, gripper


@dataclasses.dataclass(frozen=True)
class AcceptRule:
    """How far a draft token may be from the verifier's greedy token and still be kept."""

    threshold_bins: tuple[int, ...] = (0,) * 7  # per action dimension; all 0 = exact
    exact_gripper: bool = True  # overrides threshold_bins[6] with 0
    mode: str = "token"  # token (per position) or group (HeiSD sequence-wise)
    group_sum_bins: tuple[int, ...] = (30, 30, 0)  # per group: max sum of |d - y|
    group_token_max_bins: tuple[int, ...] = (15, 15, 0)  # per group: max |d - y| of any member

    @classmethod
    def relaxed(cls, r: int, exact_gripper: bool = True) -> "AcceptRule":
        return cls(threshold_bins=(int(r),) * 7, exact_gripper=exact_gripper)

    def thresholds(self) -> np.ndarray:
        t = np.asarray(self.threshold_bins, dtype=np.int64)
        if self.exact_gripper:
            t = t.copy()
            t[6] = 0
        return t


def accept_length(drafts: Sequence[int], targets: Sequence[int], start_dim: int, rule: AcceptRule) -> int:
    """Leading drafts accepted. ``drafts[i]`` is action dimension ``start_dim + i`` and is compared
    with ``targets[i]``, the verifier's greedy token after the prefix ending just before it."""
    d = np.asarray(drafts, dtype=np.int64)
    y = np.asarray(targets, dtype=np.int64)[: len(d)]
    dist = np.abs(d - y)
    dims = np.arange(start_dim, start_dim + len(d))
    if rule.mode == "token":
        ok = dist <= rule.thresholds()[dims]
        return int(np.cumprod(ok).sum())
    if rule.mode != "group":
        raise ValueError(f"AcceptRule.mode: expected 'token' or 'group', got {rule.mode!r}")
    n = 0
    for g, members in enumerate(GROUPS):
        idx = [m - start_dim for m in members if start_dim <= m < start_dim + len(d)]
        if not idx:
            continue
        gd = dist[idx]
        if gd.sum() <= rule.group_sum_bins[g] and gd.max() <= rule.group_token_max_bins[g] and idx[0] == n:
            n += len(idx)
            if len(idx) < sum(1 for m in members if m >= start_dim):  # a partial group ends the draft
                break
        else:
            break
    return n


def best_path(path_lengths: Sequence[int]) -> int:
    """Index of the path with the longest accepted prefix (first on ties)."""
    return int(np.argmax(np.asarray(path_lengths)))
