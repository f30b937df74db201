"""Small, pure statistics for side-by-side benchmarks.

- ``paired_difference(a, b)``: mean of ``b - a`` over paired outcomes (same seeds) with a 95%
  interval (normal approximation of the paired mean, t quantile for small n).
- ``percentiles(x)``: n / p50 / p99 / max / mean of a latency sample (``edge.telemetry``'s, so the
  runtime and the benchmarks report the same statistics).
- ``speedup(ar_ms, method_ms)``: per-pair ratio ``ar / method`` summarised as min / median / max
  (ratios are taken pair by pair, so machine noise that hits both sides cancels).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from edge.telemetry import percentiles

__all__ = ["paired_difference", "percentiles", "speedup"]

_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 15: 2.13,
        20: 2.09, 30: 2.04, 60: 2.00}


def _t95(dof: int) -> float:
    if dof <= 0:
        return float("nan")
    keys = sorted(_T95)
    for k in keys:
        if dof <= k:
            return _T95[k]
    return 1.96


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
