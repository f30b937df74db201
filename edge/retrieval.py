"""HeiSD retrieval drafts (METHODS.md section 3): image keys, the per-task store, top-K drafts,
the draft tree, verify-skip and the retrieval/drafter boundary. numpy only; functions are pure.

Key (``image_key``). HeiSD keys on the verifier's DINOv2 + SigLIP features of both cameras; we
use a documented cheaper embedding that needs no extra engine output: for each camera view
(``KeySpec.views``, default front ``image`` then ``wrist_image``, uint8 ``[..., H, W, 3]``),
area-average to ``grid x grid`` cells per channel (8 x 8 x 3 = 192 values at grid 8), subtract
the view's mean over all cells and channels (brightness), L2-normalise the view, concatenate the
views and divide by ``sqrt(n_views)``: a unit vector (zero for a uniform image), so the dot
product of two keys is their cosine similarity, with each camera weighing the same. On the
reference dataset (64 x 64 images) grid 8 and grid 16 retrieve nearly equally well (held-out
top-1 group acceptance 26.0 % vs 27.1 %, front + wrist) at a quarter of the size; the front
camera alone drops to 16.3 %.

Store (``RetrievalStore``). One collection per task, routed by the instruction string (HeiSD
assumes the task is known). Row ``i`` holds ``keys[i]`` (float32 ``[d]``, unit norm),
``values[i]`` (int64 ``[4, 7]``: action tokens of the current step and the next 3, the last step
repeated past the episode end, see ``trajectory_tokens``), ``episode[i]`` and ``step[i]``.
Collections are contiguous: rows ``offsets[c]:offsets[c + 1]`` belong to ``instructions[c]``.

File: one ``.npz`` (``allow_pickle=False``) with arrays ``header`` (uint8, UTF-8 JSON),
``keys``, ``values``, ``episode``, ``step``, ``offsets``. The header is
``{"version": 1, "kind": "retrieval_store", "key": {"method", "views", "grid", "dim"},
"horizon": 4, "instructions": [...], "meta": {...}}`` (``meta`` holds the codec and the source);
``load`` checks every field and shape and raises ``RetrievalFileError`` naming the file, the
field, what was expected and what it got. ``save`` writes a temporary file and renames it.

Search. Exact cosine search in numpy: one matrix-vector product over the collection and an
``argpartition`` for the top k. Measured on the reference store (49,872 rows from the 720
non-held-out episodes of data/demos, 15 collections of 1.4k-7.5k rows, d = 384, 76 MB of keys):
median 0.097 ms wall per query (p90 0.14 ms, k = 16, 1000 held-out queries) on a 2-core x86
machine busy with training, 0.22 ms of CPU time (OpenBLAS threads the product; pin it to one
thread on the robot); the key itself takes 0.4 ms. At this size exact numpy search is the
choice: an HNSW index (faiss is not available here; Qdrant is a service) would save a fraction
of a millisecond at the price of a dependency and approximate results.

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
import json
import logging
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from edge.acceptance import AcceptRule, accept_length
from edge.draft_tree import Tree
from edge.files import field_error, read_versioned_json
from edge.motion_metrics import FusedBounds

__all__ = ["RetrievalConfig", "KeySpec", "RetrievalStore", "RetrievalFileError", "image_key", "trajectory_tokens",
           "retrieval_drafts", "verify_skip", "drafts_agree", "drafts_to_tree", "recombine_groups", "heisd_choose",
           "load_retrieval_config", "read_retrieval_file", "FORMAT_VERSION", "STORE_KIND", "CALIB_KIND",
           "HORIZON", "ACTION_DIM"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STORE_KIND = "retrieval_store"
CALIB_KIND = "retrieval"
HORIZON = 4  # current action + the next 3 (HeiSD's payload)
ACTION_DIM = 7
KEY_METHOD = "area-mean-l2"
_ARRAYS = ("keys", "values", "episode", "step", "offsets")


class RetrievalFileError(ValueError):
    """A store or calibration file that cannot be used, naming the file and the field."""


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


# ---------------------------------------------------------------- the key


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """How keys were computed: the runtime must compute its queries the same way."""

    views: tuple[str, ...] = ("image", "wrist_image")  # observation images, in this order
    grid: int = 8  # cells per side of the area-averaged image

    @property
    def dim(self) -> int:
        return len(self.views) * self.grid * self.grid * 3

    def to_json(self) -> dict:
        return {"method": KEY_METHOD, "views": list(self.views), "grid": self.grid, "dim": self.dim}


def _area_mean(x: np.ndarray, grid: int) -> np.ndarray:
    """``[..., H, W, C]`` -> ``[..., grid, grid, C]`` float32 cell means (cells differ by at most one
    pixel per side when ``grid`` does not divide H or W)."""
    H, W = x.shape[-3], x.shape[-2]
    if H < grid or W < grid:
        raise ValueError(f"image_key: images of {H}x{W} are smaller than the {grid}x{grid} grid")
    if H % grid == 0 and W % grid == 0:
        s = x.reshape(*x.shape[:-3], grid, H // grid, grid, W // grid, x.shape[-1])
        return s.mean(axis=(-4, -2), dtype=np.float32)
    r = np.linspace(0, H, grid + 1).astype(int)
    c = np.linspace(0, W, grid + 1).astype(int)
    s = np.add.reduceat(np.add.reduceat(x.astype(np.float32), r[:-1], axis=-3), c[:-1], axis=-2)
    return s / (np.diff(r)[:, None, None] * np.diff(c)[None, :, None]).astype(np.float32)


def image_key(images: Sequence[np.ndarray], grid: int = 8) -> np.ndarray:
    """The key of one observation (views uint8 ``[H, W, 3]``) or of a batch (``[..., H, W, 3]``,
    same leading shape for every view): float32 ``[..., n_views * grid * grid * 3]``, unit norm
    (module docstring)."""
    if len(images) == 0:
        raise ValueError("image_key: expected at least one view, got none")
    parts = []
    for v in images:
        v = np.asarray(v)
        if v.ndim < 3 or v.shape[-1] != 3:
            raise ValueError(f"image_key: expected views of shape [..., H, W, 3], got {v.shape}")
        a = _area_mean(v, grid)
        a = a.reshape(*a.shape[:-3], -1)
        a = a - a.mean(-1, keepdims=True)
        n = np.linalg.norm(a, axis=-1, keepdims=True)
        parts.append(a / np.maximum(n, 1e-6))
    return (np.concatenate(parts, -1) / np.float32(math.sqrt(len(parts)))).astype(np.float32)


def trajectory_tokens(tokens: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """``[T, 7]`` tokens of one episode -> ``[T, horizon, 7]``: row t holds steps t..t+horizon-1,
    the last step repeated past the episode's end."""
    t = np.asarray(tokens, np.int64)
    if t.ndim != 2 or len(t) == 0:
        raise ValueError(f"trajectory_tokens: expected [T >= 1, D], got {t.shape}")
    idx = np.minimum(np.arange(len(t))[:, None] + np.arange(horizon)[None, :], len(t) - 1)
    return t[idx]


# ---------------------------------------------------------------- the store


class RetrievalStore:
    """Per-task collections of (key, current + next actions); see the module docstring."""

    def __init__(self, instructions: Sequence[str], keys: np.ndarray, values: np.ndarray, episode: np.ndarray,
                 step: np.ndarray, offsets: np.ndarray, key_spec: KeySpec = KeySpec(), meta: dict | None = None,
                 source: str = "<store>"):
        self.instructions = tuple(instructions)
        self.keys = np.ascontiguousarray(keys, np.float32)
        self.values = np.ascontiguousarray(values, np.int64)
        self.episode = np.asarray(episode, np.int64)
        self.step = np.asarray(step, np.int64)
        self.offsets = np.asarray(offsets, np.int64)
        self.key_spec = key_spec
        self.meta = dict(meta or {})
        _check_arrays(self, source)
        self._index = {s: i for i, s in enumerate(self.instructions)}

    @classmethod
    def from_collections(cls, collections: Mapping[str, Mapping[str, np.ndarray]], key_spec: KeySpec = KeySpec(),
                         meta: dict | None = None) -> "RetrievalStore":
        """``{instruction: {"keys", "values", "episode", "step"}}`` (collections in this order)."""
        names = [s for s, c in collections.items() if len(c["keys"])]
        if not names:
            raise ValueError("RetrievalStore: no rows to build a store from")
        cat = {k: np.concatenate([np.asarray(collections[s][k]) for s in names]) for k in ("keys", "values", "episode", "step")}
        offsets = np.concatenate([[0], np.cumsum([len(collections[s]["keys"]) for s in names])])
        return cls(names, cat["keys"], cat["values"], cat["episode"], cat["step"], offsets, key_spec, meta)

    def __len__(self) -> int:
        return len(self.keys)

    def collection(self, instruction: str) -> slice:
        """Rows of ``instruction``'s collection; an unknown instruction lists the known ones."""
        c = self._index.get(instruction)
        if c is None:
            known = "\n  ".join(self.instructions)
            raise KeyError(f"retrieval store: no collection for instruction {instruction!r}; known:\n  {known}")
        return slice(int(self.offsets[c]), int(self.offsets[c + 1]))

    def key_of(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The query key of an observation dict, computed as the store's keys were."""
        missing = [v for v in self.key_spec.views if v not in obs]
        if missing:
            raise KeyError(f"retrieval store: observation lacks image view(s) {missing} (keys use {list(self.key_spec.views)})")
        return image_key([obs[v] for v in self.key_spec.views], self.key_spec.grid)

    def search(self, instruction: str, key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows int64 [m], similarities float32 [m])``, ``m = min(k, collection size)``, best
        first (ties: lower row first). Rows index ``keys``/``values``/``episode``/``step``."""
        if k < 1:
            raise ValueError(f"search: k: expected >= 1, got {k}")
        sl = self.collection(instruction)
        q = np.asarray(key, np.float32)
        if q.shape != (self.keys.shape[1],):
            raise ValueError(f"search: key: expected shape ({self.keys.shape[1]},), got {q.shape}")
        sims = self.keys[sl] @ q
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.lexsort((top, -sims[top]))]
        return top + sl.start, sims[top]

    # ------------------------------------------------------------ file

    def header(self) -> dict:
        return {"version": FORMAT_VERSION, "kind": STORE_KIND, "key": self.key_spec.to_json(), "horizon": HORIZON,
                "instructions": list(self.instructions), "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = np.frombuffer(json.dumps(self.header()).encode(), np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, header=head, keys=self.keys, values=self.values, episode=self.episode, step=self.step,
                     offsets=self.offsets)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RetrievalStore":
        path = Path(path)

        def fail(field, expected, got):
            raise RetrievalFileError(f"{path}: field '{field}': expected {expected}, got {got}")

        try:
            z = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise RetrievalFileError(f"{path}: not found (build it with `python -m calib retrieval`)") from None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise RetrievalFileError(f"{path}: not a readable .npz store: {exc}") from None
        with z:
            if "header" not in z.files:
                fail("header", "a JSON header array", f"arrays {sorted(z.files)}")
            try:
                head = json.loads(z["header"].tobytes().decode())
            except (ValueError, UnicodeDecodeError) as exc:
                raise RetrievalFileError(f"{path}: field 'header': not valid JSON: {exc}") from None
            if not isinstance(head, dict):
                fail("header", "a JSON object", type(head).__name__)
            if head.get("kind") != STORE_KIND:
                fail("kind", repr(STORE_KIND), repr(head.get("kind")))
            if head.get("version") != FORMAT_VERSION:
                fail("version", FORMAT_VERSION, repr(head.get("version")))
            if head.get("horizon") != HORIZON:
                fail("horizon", HORIZON, repr(head.get("horizon")))
            key = head.get("key")
            if not isinstance(key, dict) or key.get("method") != KEY_METHOD:
                fail("key.method", repr(KEY_METHOD), repr(key.get("method") if isinstance(key, dict) else key))
            views, grid = key.get("views"), key.get("grid")
            if not (isinstance(views, list) and views and all(isinstance(v, str) for v in views)):
                fail("key.views", "a non-empty list of image names", repr(views))
            if not (isinstance(grid, int) and grid >= 1):
                fail("key.grid", "an integer >= 1", repr(grid))
            spec = KeySpec(tuple(views), grid)
            if key.get("dim") != spec.dim:
                fail("key.dim", spec.dim, repr(key.get("dim")))
            ins = head.get("instructions")
            if not (isinstance(ins, list) and all(isinstance(s, str) for s in ins) and len(set(ins)) == len(ins)):
                fail("instructions", "a list of distinct strings", repr(ins))
            meta = head.get("meta", {})
            if not isinstance(meta, dict):
                fail("meta", "a JSON object", type(meta).__name__)
            arrays = {}
            for name in _ARRAYS:
                if name not in z.files:
                    fail(name, "an array", f"missing (has {sorted(z.files)})")
                arrays[name] = z[name]
        return cls(ins, key_spec=spec, meta=meta, source=str(path), **arrays)


def _check_arrays(s: RetrievalStore, source: str) -> None:
    """Shapes, dtypes and ranges of a store's arrays (raises ``RetrievalFileError``)."""

    def fail(field, expected, got):
        raise RetrievalFileError(f"{source}: field '{field}': expected {expected}, got {got}")

    n, d = len(s.keys), s.key_spec.dim
    if s.keys.ndim != 2 or s.keys.shape[1] != d:
        fail("keys", f"float32 [N, {d}]", f"shape {s.keys.shape}")
    if not np.all(np.isfinite(s.keys)):
        fail("keys", "finite values", "NaN or inf")
    norms = np.linalg.norm(s.keys, axis=1)
    if n and float(norms.max()) > 1.0 + 1e-3:
        fail("keys", "unit-norm rows", f"a row of norm {float(norms.max()):.4f}")
    if s.values.shape != (n, HORIZON, ACTION_DIM):
        fail("values", f"int64 [{n}, {HORIZON}, {ACTION_DIM}]", f"shape {s.values.shape}")
    for name in ("episode", "step"):
        if getattr(s, name).shape != (n,):
            fail(name, f"int64 [{n}]", f"shape {getattr(s, name).shape}")
    off = s.offsets
    if (off.shape != (len(s.instructions) + 1,) or off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 1)):
        fail("offsets", f"{len(s.instructions) + 1} increasing values from 0 to {n} (one non-empty collection per "
                        f"instruction)", off.tolist() if off.size <= 20 else f"shape {off.shape}")
    codec = s.meta.get("codec") or {}
    if "vocab_size" in codec and "n_bins" in codec and n:
        lo, hi = codec["vocab_size"] - codec["n_bins"], codec["vocab_size"] - 1
        vmin, vmax = int(s.values.min()), int(s.values.max())
        if vmin < lo or vmax > hi:
            fail("values", f"action token ids in [{lo}, {hi}] (meta.codec)", f"range [{vmin}, {vmax}]")


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
