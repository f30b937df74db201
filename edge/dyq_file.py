"""The DyQ-VLA calibration file that ``python -m calib dyq`` writes and the runtime reads.

``{"kind": "dyq", "version": 1, "source": {...}, "sensitivity": {"mu_max_m", "nu_max_rad",
"w_macro", "w_micro", "lambda"}, "ladder": {"levels": [lowest .. highest], "bounds": [S between
consecutive levels], "downgrade_delay"}, "report": {...}}``. ``read_dyq_file(path)`` returns the
validated ``DyQCalibration``; a bad file raises ``DyQFileError`` naming the file, the field, what
was expected and what it got. numpy-free, stdlib only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge.files import field_error, read_versioned_json

__all__ = ["DyQCalibration", "DyQFileError", "read_dyq_file", "KIND", "FORMAT_VERSION"]

KIND = "dyq"
FORMAT_VERSION = 1


class DyQFileError(ValueError):
    """A DyQ calibration file that cannot be used."""


@dataclasses.dataclass(frozen=True)
class DyQCalibration:
    mu_max_m: float  # 95th percentile of the translation per step (motion fineness scale)
    nu_max_rad: float  # 95th percentile of the rotation-delta change per step (angular jerk scale)
    w_macro: int
    w_micro: int
    lam: float
    levels: tuple[str, ...]  # precisions, lowest first
    bounds: tuple[float, ...]  # S thresholds between consecutive levels
    downgrade_delay: int


def read_dyq_file(path: str | Path) -> DyQCalibration:
    doc = read_versioned_json(path, DyQFileError, KIND, FORMAT_VERSION,
                              missing="not found (write it with `python -m calib dyq`)")
    fail = field_error(path, DyQFileError)

    def num(block: str, key: str, kind=float, positive=True):
        d = doc.get(block)
        if not isinstance(d, dict) or key not in d:
            fail(f"{block}.{key}", "present", "missing")
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
            fail(f"{block}.{key}", f"a {'whole ' if kind is int else ''}number", v)
        if positive and not v > 0:
            fail(f"{block}.{key}", "> 0", v)
        return kind(v)

    ladder = doc.get("ladder")
    if not isinstance(ladder, dict):
        fail("ladder", "an object", ladder)
    levels, bounds = ladder.get("levels"), ladder.get("bounds")
    if not isinstance(levels, list) or len(levels) < 2 or not all(isinstance(x, str) and x for x in levels):
        fail("ladder.levels", "a list of at least 2 precision names", levels)
    if not isinstance(bounds, list) or len(bounds) != len(levels) - 1 \
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
        fail("ladder.bounds", f"a list of {len(levels) - 1} numbers (one between each pair of levels)", bounds)
    if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        fail("ladder.bounds", "strictly increasing", bounds)
    lam = num("sensitivity", "lambda", positive=False)
    if not 0.0 <= lam <= 1.0:
        fail("sensitivity.lambda", "in [0, 1]", lam)
    return DyQCalibration(
        mu_max_m=num("sensitivity", "mu_max_m"), nu_max_rad=num("sensitivity", "nu_max_rad"),
        w_macro=num("sensitivity", "w_macro", int), w_micro=num("sensitivity", "w_micro", int), lam=lam,
        levels=tuple(levels), bounds=tuple(float(b) for b in bounds),
        downgrade_delay=num("ladder", "downgrade_delay", int))
