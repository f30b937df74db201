"""HeiSD retrieval drafts (METHODS.md section 3): image keys, the per-task store, top-K drafts,
the draft tree, verify-skip and the retrieval/drafter boundary. numpy only; functions are pure.

The store, its key and its file format are in ``edge.retrieval_store`` (re-exported here).

Drafts. ``retrieval_drafts`` returns the current-step actions of the nearest neighbours,
deduplicated, best first. ``drafts_to_tree`` merges them into one draft tree (shared prefixes
become shared nodes), so every candidate is verified in one verifier pass under the group rule
of ``edge.acceptance`` (``RetrievalConfig.accept_rule``). ``recombine_groups`` optionally adds
HeiSD's sequence-level recombination: xyz groups of one neighbour with rpy + gripper of another.

Verify-skip (ours; METHODS.md 3.3 says HeiSD's rule is not executable as written).
``verify_skip`` says the best retrieved action may be executed without any verifier pass iff all
hold: verify-skip is enabled; the best similarity is at least ``skip_min_similarity`` (calibrated
by ``calib retrieval``: the lowest bound at which, on held-out demonstrations, the top-1
retrieved action is within the group tolerance of the true action for at least 95 % of the steps
above it); the first ``skip_agree_neighbours`` raw neighbours (duplicates included) each lie
within the group tolerance of the best one (the store is not ambiguous here); and fewer than
``max_consecutive_skips`` steps in a row were skipped (a skipped step never sees the camera's
verdict). On the reference data no bound reaches 95 % with this key (the best 1.6 % of
held-out steps reach 90 %), so the calibrated file disables verify-skip there. The bound is
fixed, not adapted online from success feedback as HeiSD's Algorithm 1 intends (no such signal
exists mid-episode). Like HeiSD's, it does not preserve the verifier's distribution.

Boundary (``heisd_choose``). ``edge.motion_metrics.fused_metric`` over the last ``w = 15``
end-effector positions; F at or above the calibrated ``fused_threshold`` (fast, straight motion)
picks retrieval, below it (slow, curved, fine motion) the drafter; F unknown (fewer than w
positions) picks the drafter. On the reference data F barely predicts whether a retrieval draft
is accepted (held-out AUC 0.52; ``calib retrieval`` reports it).

``load_retrieval_config(path, **overrides)`` reads the ``calib retrieval`` JSON
(``{"version": 1, "kind": "retrieval", ...}``) into a ``RetrievalConfig``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np

from edge.acceptance import AcceptRule, accept_length
from edge.draft_tree import Tree
from edge.files import field_error, read_versioned_json
from edge.motion_metrics import FusedBounds
from edge.retrieval_store import (ACTION_DIM, FORMAT_VERSION, HORIZON, STORE_KIND, KeySpec,
                                  RetrievalFileError, RetrievalStore, image_key, trajectory_tokens)

__all__ = ["RetrievalConfig", "KeySpec", "RetrievalStore", "RetrievalFileError", "image_key", "trajectory_tokens",
           "retrieval_drafts", "verify_skip", "drafts_agree", "drafts_to_tree", "recombine_groups", "heisd_choose",
           "load_retrieval_config", "read_retrieval_file", "FORMAT_VERSION", "STORE_KIND", "CALIB_KIND",
           "HORIZON", "ACTION_DIM"]

log = logging.getLogger(__name__)

CALIB_KIND = "retrieval"


# ---------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """HeiSD retrieval at runtime; the calibrated fields come from ``calib retrieval``."""

    store_path: str = ""  # store .npz written by `python -m calib retrieval` ("" = no store)
    enabled: bool = True  # use retrieval drafts at all
    verify_skip: bool = True  # HeiSD verify-skip: execute a confident retrieved action unverified
    top_k: int = 4  # deduplicated current-step drafts put in the draft tree
    search_pool: int = 16  # raw neighbours searched; drafts are deduplicated from these
    recombine_groups: bool = False  # HeiSD: also verify xyz of one neighbour with rpy+gripper of another
    max_tree_rows: int = 16  # recombination: at most this many candidate rows in the tree
    skip_min_similarity: float = 1.01  # calibrated cosine bound for verify-skip (> 1: never skip)
    skip_agree_neighbours: int = 3  # top raw neighbours that must agree with the best (group tolerance)
    max_consecutive_skips: int = 1  # control steps in a row that may go unverified
    group_sum_bins: tuple[int, ...] = (30, 30, 0)  # per group xyz/rpy/gripper: max sum of |bin distance|
    group_token_max_bins: tuple[int, ...] = (15, 15, 0)  # per group: max |bin distance| of any member
    fused_alpha: float = 0.5  # weight of the curvature radius in the fused metric F
    fused_window_steps: int = 15  # end-effector positions in the fused metric's window
    fused_radius_m: tuple[float, float] = (0.02, 2.0)  # calibrated normalisation bounds of the radius, m
    fused_length_m: tuple[float, float] = (0.0, 0.3)  # calibrated normalisation bounds of the path length, m
    fused_threshold: float = 0.5  # calibrated: F >= this picks retrieval, below it the drafter

    def __post_init__(self):
        def bad(field, expected):
            raise ValueError(f"RetrievalConfig.{field}: expected {expected}, got {getattr(self, field)!r}")

        for f in ("top_k", "search_pool", "max_tree_rows", "skip_agree_neighbours", "fused_window_steps"):
            if int(getattr(self, f)) < 1:
                bad(f, ">= 1")
        if self.search_pool < self.top_k:
            bad("search_pool", f">= top_k ({self.top_k})")
        if self.skip_agree_neighbours > self.search_pool:
            bad("skip_agree_neighbours", f"<= search_pool ({self.search_pool})")
        if self.max_consecutive_skips < 0:
            bad("max_consecutive_skips", ">= 0")
        for f in ("group_sum_bins", "group_token_max_bins"):
            if len(getattr(self, f)) != 3:
                bad(f, "3 values (xyz, rpy, gripper)")
        if not 0.0 <= self.fused_alpha <= 1.0:
            bad("fused_alpha", "a value in [0, 1]")
        for f in ("fused_radius_m", "fused_length_m"):
            lo, hi = getattr(self, f)
            if not hi > lo:
                bad(f, "(lo, hi) with hi > lo")

    def accept_rule(self) -> AcceptRule:
        """HeiSD's sequence-wise rule, for the verifier pass and for draft agreement."""
        return AcceptRule(mode="group", group_sum_bins=tuple(self.group_sum_bins),
                          group_token_max_bins=tuple(self.group_token_max_bins))

    def fused_bounds(self) -> FusedBounds:
        return FusedBounds(radius_m=tuple(self.fused_radius_m), length_m=tuple(self.fused_length_m))


# ---------------------------------------------------------------- drafts


def retrieval_drafts(store: RetrievalStore, instruction: str, key: np.ndarray, k: int,
                     pool: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Top-``k`` distinct current-step drafts: ``(tokens int64 [m, 7], sims float32 [m], stats)``,
    ``m <= k``, best first. ``pool`` raw neighbours (default ``4 k``) are searched; a draft
    repeated by a lower-ranked neighbour is dropped. ``stats``: ``rows`` (store rows of the drafts),
    ``neighbours`` / ``neighbour_sims`` (current-step tokens and similarities of all raw
    neighbours, for ``verify_skip``), ``best_similarity``, ``search_ms``."""
    t0 = time.perf_counter()
    rows, sims = store.search(instruction, key, pool or 4 * k)
    search_ms = (time.perf_counter() - t0) * 1e3
    cur = store.values[rows, 0]
    _, first = np.unique(cur, axis=0, return_index=True)
    keep = np.sort(first)[:k]
    stats = {"rows": rows[keep], "neighbours": cur, "neighbour_sims": sims,
             "best_similarity": float(sims[0]), "search_ms": search_ms}
    return cur[keep], sims[keep], stats


def drafts_agree(neighbours: np.ndarray, n: int, rule: AcceptRule) -> bool:
    """The first ``n`` rows of ``neighbours [m, 7]`` each lie within ``rule`` of row 0 (all 7
    tokens accepted with row 0 as the target). False when there are fewer than ``n`` rows."""
    nb = np.asarray(neighbours, np.int64)
    if len(nb) < n:
        return False
    return all(accept_length(nb[i], nb[0], 0, rule) == ACTION_DIM for i in range(1, n))


def verify_skip(best_similarity: float, cfg: RetrievalConfig, neighbours: np.ndarray | None = None,
                skips_in_row: int = 0) -> bool:
    """HeiSD's verify-skip, our rule (module docstring): execute the best retrieved action without
    a verifier pass. ``neighbours`` are the raw neighbours' current-step tokens, best first
    (``retrieval_drafts`` stats); without them agreement is unknown and only
    ``skip_agree_neighbours <= 1`` can skip. ``skips_in_row``: consecutive skipped steps just
    before this one."""
    if not (cfg.enabled and cfg.verify_skip) or skips_in_row >= cfg.max_consecutive_skips:
        return False
    if not best_similarity >= cfg.skip_min_similarity:
        return False
    if cfg.skip_agree_neighbours <= 1:
        return True
    return neighbours is not None and drafts_agree(neighbours, cfg.skip_agree_neighbours, cfg.accept_rule())


def recombine_groups(tokens: np.ndarray, max_rows: int) -> np.ndarray:
    """HeiSD's sequence-level recombination: every pairing of a distinct xyz group (tokens 0..2) with
    a distinct rpy + gripper tail (tokens 3..6; the gripper is not recombined apart from the
    rotation it was retrieved with), ordered so that all pairings among the top r drafts come
    before any involving draft r + 1; at most ``max_rows`` rows. Row 0 is draft 0."""
    t = np.asarray(tokens, np.int64)
    if t.ndim != 2 or t.shape[1] != ACTION_DIM:
        raise ValueError(f"recombine_groups: expected [k, {ACTION_DIM}] tokens, got {t.shape}")

    def distinct(a):
        _, first = np.unique(a, axis=0, return_index=True)
        return a[np.sort(first)]

    heads, tails = distinct(t[:, :3]), distinct(t[:, 3:])
    pairs = sorted(((i, j) for i in range(len(heads)) for j in range(len(tails))), key=lambda p: (max(p), p))
    return np.asarray([np.concatenate([heads[i], tails[j]]) for i, j in pairs[:max_rows]], np.int64)


def drafts_to_tree(tokens: np.ndarray, scores: np.ndarray | None = None) -> Tree:
    """One draft tree holding every row of ``tokens [k, n]`` as a root-to-leaf path; rows sharing a
    prefix share its nodes. A node's ``score`` is the highest score of the rows through it
    (default ``-rank``: row 0 scores 0), so an ancestor never scores below its descendants.
    Nodes are in creation order (rows in order, each from depth 1), so parents come first and
    ``paths(tree)`` lists the distinct rows in their first-appearance order."""
    t = np.asarray(tokens, np.int64)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"drafts_to_tree: expected non-empty [k, n] tokens, got {t.shape}")
    sc = -np.arange(len(t), dtype=np.float64) if scores is None else np.asarray(scores, np.float64)
    if sc.shape != (len(t),):
        raise ValueError(f"drafts_to_tree: scores: expected shape ({len(t)},), got {sc.shape}")
    tok, par, dep, score = [], [], [], []
    children: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    for row, s in zip(t, sc):
        node = -1
        for d, x in enumerate(row.tolist(), 1):
            child = children.get((node, x))
            if child is None:
                child = children[(node, x)] = len(tok)
                tok.append(x), par.append(node), dep.append(d), score.append(s)
            else:
                score[child] = max(score[child], s)
            node = child
    return Tree(np.asarray(tok, np.int64), np.asarray(par, np.int64), np.asarray(dep, np.int64),
                np.asarray(score, np.float64))


def heisd_choose(fused_F: float | None, cfg: RetrievalConfig) -> Literal["retrieval", "drafter"]:
    """HeiSD's hybrid boundary: retrieval at or above the calibrated F threshold (fast, straight
    motion), the drafter below it or while F is unknown (``None``: fewer than w positions)."""
    if cfg.enabled and fused_F is not None and fused_F >= cfg.fused_threshold:
        return "retrieval"
    return "drafter"


# ---------------------------------------------------------------- calibration file


def read_retrieval_file(path: str | Path) -> dict:
    """Read and validate a ``calib retrieval`` file; returns the parsed document."""
    doc = read_versioned_json(path, RetrievalFileError, CALIB_KIND, FORMAT_VERSION,
                              missing="not found (write it with `python -m calib retrieval`)")
    fail = field_error(path, RetrievalFileError)

    def num(d, key, prefix):
        v = d.get(key) if isinstance(d, dict) else None
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            fail(prefix + key, "a finite number", v)
        return v

    if not isinstance(doc.get("store"), str):
        fail("store", "the store file name", doc.get("store"))
    num(doc.get("skip"), "min_similarity", "skip.")
    fused = doc.get("fused")
    for key in ("alpha", "threshold", "window_steps"):
        num(fused, key, "fused.")
    for key in ("radius_m", "length_m"):
        v = fused.get(key)
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[1] > v[0]):
            fail("fused." + key, "[lo, hi] with hi > lo", v)
    return doc


def load_retrieval_config(path: str | Path, **overrides) -> RetrievalConfig:
    """``RetrievalConfig`` from a ``calib retrieval`` file (the store path resolved next to it);
    ``overrides`` set any field (enables, top_k, caps)."""
    doc = read_retrieval_file(path)
    fused = doc["fused"]
    fields = {"store_path": str(Path(path).parent / doc["store"]),
              "skip_min_similarity": float(doc["skip"]["min_similarity"]),
              "fused_alpha": float(fused["alpha"]), "fused_window_steps": int(fused["window_steps"]),
              "fused_radius_m": tuple(float(x) for x in fused["radius_m"]),
              "fused_length_m": tuple(float(x) for x in fused["length_m"]),
              "fused_threshold": float(fused["threshold"])}
    for key in ("skip_agree_neighbours", "group_sum_bins", "group_token_max_bins"):
        if key in doc["skip"]:
            v = doc["skip"][key]
            fields[key] = tuple(v) if isinstance(v, list) else v
    for key in ("top_k", "search_pool"):  # the settings the held-out report was measured with
        if isinstance(doc.get("retrieval"), dict) and key in doc["retrieval"]:
            fields[key] = int(doc["retrieval"][key])
    unknown = set(overrides) - {f.name for f in dataclasses.fields(RetrievalConfig)}
    if unknown:
        raise ValueError(f"load_retrieval_config: unknown RetrievalConfig field(s) {sorted(unknown)}")
    calibrated = [k for k in ("skip_agree_neighbours", "group_sum_bins", "group_token_max_bins")
                  if k in overrides and k in fields and overrides[k] != fields[k]]
    if calibrated:
        log.warning("%s: overriding %s; the similarity bound was calibrated under the file's values", path, calibrated)
    fields.update(overrides)
    return RetrievalConfig(**fields)
