"""Small, pure statistics for side-by-side benchmarks.

- ``paired_difference(a, b)``: mean of ``b - a`` over paired outcomes (same seeds) with a 95%
  interval (normal approximation of the paired mean, t quantile for small n).
- ``percentiles(x)``: n / p50 / p99 / max / mean of a latency sample (``edge.telemetry``'s, so the
  runtime and the benchmarks report the same statistics).
- ``speedup(ar_ms, method_ms)``: per-pair ratio ``ar / method`` summarised as min / median / max
  (ratios are taken pair by pair, so machine noise that hits both sides cancels).
- ``throughput_ratio(ar_ms, method_ms)``: per-episode latency lists, paired; AR's mean latency per
  action over all episodes / the method's, with a 95% percentile-bootstrap interval that resamples
  episode pairs (seeded, so a rerun on the same data gives the same interval).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from edge.telemetry import percentiles

__all__ = ["paired_difference", "percentiles", "speedup", "throughput_ratio"]

_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def _t95(dof: int) -> float:
    if dof <= 0:
        return float("nan")
    return _T95[max(k for k in _T95 if k <= dof)]  # between table rows: the smaller dof (wider, conservative)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.shape} and {b.shape}")
    d = b - a
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    half = _t95(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "ci95": (mean - half, mean + half), "half_width": half}


def speedup(ar_ms: Sequence[float], method_ms: Sequence[float]) -> dict:
    r = np.asarray(ar_ms, float) / np.asarray(method_ms, float)
    return {"min": float(r.min()), "median": float(np.median(r)), "max": float(r.max())}


def throughput_ratio(ar_ms: Sequence[Sequence[float]], method_ms: Sequence[Sequence[float]],
                     resamples: int = 2000, seed: int = 0) -> dict:
    if len(ar_ms) != len(method_ms) or not len(ar_ms):
        raise ValueError(f"need the same number (> 0) of paired episodes, got {len(ar_ms)} and {len(method_ms)}")
    sums = np.array([[np.sum(a), len(a), np.sum(b), len(b)] for a, b in zip(ar_ms, method_ms)], float)

    def ratio(s: np.ndarray) -> np.ndarray:  # rows of sums -> (AR mean) / (method mean)
        return (s[..., 0].sum(-1) / s[..., 1].sum(-1)) / (s[..., 2].sum(-1) / s[..., 3].sum(-1))

    idx = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))
    lo, hi = np.percentile(ratio(sums[idx]), [2.5, 97.5])
    return {"ratio": float(ratio(sums)), "ci95": (float(lo), float(hi)), "episodes": len(sums)}
