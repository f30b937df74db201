"""The HeiSD retrieval store (METHODS.md section 3): image keys, per-task collections, the
file format and exact nearest-neighbour search. numpy only.

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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["KeySpec", "RetrievalStore", "RetrievalFileError", "image_key", "trajectory_tokens",
           "FORMAT_VERSION", "STORE_KIND", "HORIZON", "ACTION_DIM", "KEY_METHOD"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STORE_KIND = "retrieval_store"
HORIZON = 4  # current action + the next 3 (HeiSD's payload)
ACTION_DIM = 7
KEY_METHOD = "area-mean-l2"
_ARRAYS = ("keys", "values", "episode", "step", "offsets")


class RetrievalFileError(ValueError):
    """A store or calibration file that cannot be used, naming the file and the field."""


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
