"""OpenVLA action codec: continuous 7-D actions <-> action token ids (METHODS.md section 5.1).

Contract (exactly OpenVLA's ``ActionTokenizer`` + ``BOUNDS_Q99`` normalisation):
- Normalise each masked dimension with its dataset quantiles,
  ``x~ = clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)``; unmasked dimensions (the gripper,
  already in [0, 1] with 1 = open, 0 = close) pass through unchanged.
- Discretise with ``bins = linspace(-1, 1, n_bins)`` and ``b = digitize(clip(x~, -1, 1), bins)``
  in ``[1, n_bins]``; ``token = vocab_size - b``. Token ids therefore lie in
  ``[vocab_size - n_bins, vocab_size - 1]`` and ``|delta token| == |delta bin|``.
- Decode with ``idx = clip(vocab_size - token - 1, 0, n_bins - 2)`` and the bin centres
  ``(bins[:-1] + bins[1:]) / 2``, then un-normalise masked dimensions with
  ``a = 0.5 (x~ + 1)(q99 - q01) + q01``.
- ``gripper_command(a)`` is OpenVLA's LIBERO post-processing: ``sign(2 a - 1)``, +1 open, -1 close
  (0.5 maps to open, so an undecided gripper never closes on its own).

Statistics are data (``ActionStats``, written by ``calib`` into the model manifest), never code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

__all__ = ["ActionStats", "ActionCodec", "CodecError"]


class CodecError(ValueError):
    """Bad statistics or tokens, with the field and the value that is wrong."""


@dataclasses.dataclass(frozen=True)
class ActionStats:
    """Per-dimension quantiles of a dataset's actions (units of the action dimensions)."""

    q01: tuple[float, ...]  # 1st percentile per dimension
    q99: tuple[float, ...]  # 99th percentile per dimension
    mask: tuple[bool, ...]  # True where the dimension is normalised (False for the gripper)
    mean: tuple[float, ...] = ()  # informational
    std: tuple[float, ...] = ()  # informational
    num_samples: int = 0  # number of action rows the statistics came from

    def __post_init__(self):
        n = len(self.q01)
        if n == 0:
            raise CodecError("ActionStats.q01: expected at least one dimension, got none")
        for name in ("q99", "mask"):
            if len(getattr(self, name)) != n:
                raise CodecError(f"ActionStats.{name}: expected {n} values (as q01), got {len(getattr(self, name))}")
        q01, q99 = np.asarray(self.q01, float), np.asarray(self.q99, float)
        if not (np.all(np.isfinite(q01)) and np.all(np.isfinite(q99))):
            raise CodecError("ActionStats: q01/q99 must be finite")
        bad = np.nonzero(np.asarray(self.mask) & (q99 < q01))[0]
        if bad.size:
            raise CodecError(f"ActionStats: q99 < q01 in dimension(s) {bad.tolist()}")

    @classmethod
    def from_actions(cls, actions: np.ndarray, mask: tuple[bool, ...] | None = None) -> "ActionStats":
        """Statistics of an ``[N, D]`` action array; by default the last dimension is unmasked."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0:
            raise CodecError(f"actions: expected a non-empty [N, D] array, got shape {a.shape}")
        if mask is None:
            mask = (True,) * (a.shape[1] - 1) + (False,)
        return cls(
            q01=tuple(np.quantile(a, 0.01, axis=0).tolist()),
            q99=tuple(np.quantile(a, 0.99, axis=0).tolist()),
            mask=tuple(bool(m) for m in mask),
            mean=tuple(a.mean(0).tolist()),
            std=tuple(a.std(0).tolist()),
            num_samples=int(a.shape[0]),
        )

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict, source: str = "<stats>") -> "ActionStats":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise CodecError(f"{source}: unknown field(s) {sorted(unknown)}; expected {sorted(fields)}")
        for req in ("q01", "q99", "mask"):
            if req not in data:
                raise CodecError(f"{source}: missing field '{req}'")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> "ActionStats":
        from edge.files import read_json

        data = read_json(path, CodecError, "action statistics file not found")
        return cls.from_json(data.get("action", data), str(path))


class ActionCodec:
    """Encode/decode actions for a vocabulary whose last ``n_bins`` ids are action bins."""

    def __init__(self, stats: ActionStats, vocab_size: int, n_bins: int = 256):
        if n_bins < 2:
            raise CodecError(f"n_bins: expected >= 2, got {n_bins}")
        if vocab_size < n_bins:
            raise CodecError(f"vocab_size: expected >= n_bins ({n_bins}), got {vocab_size}")
        self.stats = stats
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.dim = len(stats.q01)
        self.bins = np.linspace(-1.0, 1.0, self.n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self._q01 = np.asarray(stats.q01, dtype=np.float64)
        self._q99 = np.asarray(stats.q99, dtype=np.float64)
        self._mask = np.asarray(stats.mask, dtype=bool)

    @property
    def first_action_token(self) -> int:
        """Smallest action token id (``vocab_size - n_bins``)."""
        return self.vocab_size - self.n_bins

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        n = 2.0 * (a - self._q01) / (self._q99 - self._q01 + 1e-8) - 1.0
        n = np.clip(n, -1.0, 1.0)
        return np.where(self._mask, n, a)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        n = np.asarray(normalized, dtype=np.float64)
        a = 0.5 * (n + 1.0) * (self._q99 - self._q01) + self._q01
        return np.where(self._mask, a, n)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """``[..., D]`` actions -> ``[..., D]`` int64 token ids."""
        a = np.asarray(actions, dtype=np.float64)
        if a.shape[-1] != self.dim:
            raise CodecError(f"actions: expected last dimension {self.dim}, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise CodecError("actions: non-finite value (NaN or inf) cannot be encoded")
        b = np.digitize(np.clip(self.normalize(a), -1.0, 1.0), self.bins)
        return (self.vocab_size - b).astype(np.int64)

    def token_to_bin(self, tokens: np.ndarray) -> np.ndarray:
        """Bin index ``b`` in ``[1, n_bins]`` of each token (raises on non-action tokens)."""
        t = np.asarray(tokens, dtype=np.int64)
        if np.any((t < self.first_action_token) | (t >= self.vocab_size)):
            bad = t[(t < self.first_action_token) | (t >= self.vocab_size)].ravel()[:5].tolist()
            raise CodecError(
                f"tokens: expected action ids in [{self.first_action_token}, {self.vocab_size - 1}], got {bad}"
            )
        return self.vocab_size - t

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """``[..., D]`` token ids -> ``[..., D]`` float64 actions (through bin centres)."""
        t = np.asarray(tokens, dtype=np.int64)
        if t.shape[-1] != self.dim:
            raise CodecError(f"tokens: expected last dimension {self.dim}, got shape {t.shape}")
        idx = np.clip(self.token_to_bin(t) - 1, 0, self.n_bins - 2)
        return self.unnormalize(self.bin_centers[idx])

    @staticmethod
    def gripper_command(gripper: np.ndarray | float) -> np.ndarray:
        """OpenVLA LIBERO post-processing of the decoded gripper: +1 open, -1 close."""
        g = 2.0 * np.asarray(gripper, dtype=np.float64) - 1.0
        return np.where(g >= 0.0, 1.0, -1.0)
