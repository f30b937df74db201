"""Kinematic signals that steer decoding: HeiSD's fused metric and DyQ-VLA's sensitivity.

HeiSD (METHODS.md 3.5), over the last ``w`` end-effector positions ``P [w, 3]``:
- ``curvature_radius(P)``: centre the points, project them on their best-fit plane (SVD), fit a
  circle (algebraic fit, then Gauss-Newton refinement of the centre) and return the mean distance
  to the centre; a straight path returns ``max_radius_m``.
- ``path_length(P)``: ``D = sum ||P[i+1] - P[i]||``.
- ``fused_metric(P, bounds, alpha)``: ``F = alpha Norm(R) + (1 - alpha) Norm(D)`` with min-max
  normalisation clipped to calibrated bounds (5th/95th percentiles from ``calib``). Large F
  (fast, straight motion) favours retrieval drafts; small F (slow, curved) the drafter.

DyQ-VLA (METHODS.md 4.3-4.4), over recent predicted actions:
- ``sensitivity(actions, ...)``: ``M = 1 - ||a_xyz|| / mu_max`` averaged over ``w_macro``,
  ``J = ||a_rot_t - a_rot_{t-1}|| / nu_max`` averaged over ``w_micro``, ``S = max(0, lam M + (1 - lam) J)``.
- ``dyq_step(state, S, cfg)``: precision ladder lookup (``bounds`` between ``levels``, highest level
  above ``theta_fp``) with asymmetric hysteresis: an upgrade applies at once, a downgrade only
  after ``downgrade_delay`` consecutive steps asking for it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["curvature_radius", "path_length", "fused_metric", "FusedBounds", "sensitivity", "DyQConfig",
           "DyQState", "dyq_step"]


def curvature_radius(P: np.ndarray, max_radius_m: float = 10.0, iters: int = 10) -> float:
    P = np.asarray(P, float)
    c = P - P.mean(0)
    if len(P) < 3 or np.linalg.norm(c) < 1e-9:
        return max_radius_m
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    if s[1] < 1e-9 * max(s[0], 1e-12):
        return max_radius_m  # collinear
    uv = c @ vt[:2].T  # [w, 2] in the best-fit plane
    # algebraic (Kasa) fit: u^2 + v^2 = 2 a u + 2 b v + k
    A = np.column_stack([2 * uv, np.ones(len(uv))])
    sol, *_ = np.linalg.lstsq(A, (uv**2).sum(1), rcond=None)
    centre = sol[:2]
    for _ in range(iters):  # Gauss-Newton on sum (||p - c|| - mean ||p - c||)^2
        d = uv - centre
        r = np.linalg.norm(d, axis=1)
        if np.any(r < 1e-12):
            break
        J = -d / r[:, None] + (d / r[:, None]).mean(0)
        res = r - r.mean()
        step, *_ = np.linalg.lstsq(J, -res, rcond=None)
        centre = centre + step
        if np.linalg.norm(step) < 1e-12:
            break
    return float(min(np.linalg.norm(uv - centre, axis=1).mean(), max_radius_m))


def path_length(P: np.ndarray) -> float:
    P = np.asarray(P, float)
    return float(np.linalg.norm(np.diff(P, axis=0), axis=1).sum())


@dataclasses.dataclass(frozen=True)
class FusedBounds:
    """Normalisation bounds fitted by ``calib`` (5th and 95th percentiles over demonstrations)."""

    radius_m: tuple[float, float] = (0.02, 2.0)
    length_m: tuple[float, float] = (0.0, 0.3)


def _norm(x: float, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0))


def fused_metric(P: np.ndarray, bounds: FusedBounds = FusedBounds(), alpha: float = 0.5) -> tuple[float, dict]:
    R, D = curvature_radius(P), path_length(P)
    F = alpha * _norm(R, bounds.radius_m) + (1 - alpha) * _norm(D, bounds.length_m)
    return F, {"radius_m": R, "length_m": D}


def sensitivity(actions: np.ndarray, mu_max: float, nu_max: float, w_macro: int = 10, w_micro: int = 5,
                lam: float = 0.5) -> tuple[float, dict]:
    """DyQ's S_t from the recent actions ``[T, 7]`` (newest last; T >= 2 for the jerk term)."""
    a = np.asarray(actions, float)
    m = 1.0 - np.linalg.norm(a[-w_macro:, :3], axis=1) / max(mu_max, 1e-12)
    rot = a[-(w_micro + 1):, 3:6]
    j = np.linalg.norm(np.diff(rot, axis=0), axis=1) / max(nu_max, 1e-12) if len(rot) > 1 else np.zeros(1)
    M, J = float(m.mean()), float(j.mean())
    return max(0.0, lam * M + (1 - lam) * J), {"fineness": M, "jerk": J}


@dataclasses.dataclass(frozen=True)
class DyQConfig:
    levels: tuple[str, ...] = ("int4a8", "int8", "int4", "fp32")  # lowest to highest precision
    bounds: tuple[float, ...] = (0.2, 0.35, 0.5)  # S thresholds between consecutive levels (last = theta_fp)
    downgrade_delay: int = 3  # consecutive steps wanting a lower level before it is taken

    def __post_init__(self):
        if len(self.bounds) != len(self.levels) - 1:
            raise ValueError(f"DyQConfig.bounds: expected {len(self.levels) - 1} values for {len(self.levels)} levels")


@dataclasses.dataclass(frozen=True)
class DyQState:
    level: int  # index into DyQConfig.levels
    lower_count: int = 0  # consecutive steps that asked for a lower level


def dyq_step(state: DyQState, S: float, cfg: DyQConfig) -> tuple[DyQState, str, dict]:
    want = int(np.searchsorted(np.asarray(cfg.bounds), S, side="left"))  # S > bound_k -> level k + 1
    if want >= state.level:  # upgrade (or stay): immediately
        new = DyQState(want, 0)
    elif state.lower_count + 1 >= cfg.downgrade_delay:
        new = DyQState(want, 0)
    else:
        new = DyQState(state.level, state.lower_count + 1)
    return new, cfg.levels[new.level], {"wanted": cfg.levels[want], "S": S}
