"""Per-DoF Kalman filters over the action-token history (KERV, METHODS.md section 2.3).

Each of the 7 action dimensions has an independent filter over its sequence of accepted action
values in *bin units* (token id distances are bin distances, so a prediction rounds straight to
a token). Two models, chosen by ``KFParams.model``:

- ``cv`` (constant velocity): state ``[x, v]``, ``F = [[1, 1], [0, 1]]`` (one control step),
  ``H = [1, 0]``, process noise from white acceleration of intensity ``q``:
  ``Q = q [[1/4, 1/2], [1/2, 1]]`` (discrete white-noise acceleration model).
- ``rw`` (random walk, the released KERV code): state ``[x]``, ``F = H = 1``, ``Q = q``.

``R = r`` is the measurement noise. All functions are pure and vectorised over DoFs:
``kf_init``, ``kf_predict``, ``kf_update`` (returns the innovation and its variance, which the
dynamic threshold uses), ``kf_forecast`` (PL-step prediction) and ``steady_state_gain`` (the
limit of the gain recursion, for tests and calibration).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

__all__ = ["KFParams", "KFState", "kf_init", "kf_predict", "kf_update", "kf_forecast", "kf_filter",
           "steady_state_gain"]


@dataclasses.dataclass(frozen=True)
class KFParams:
    model: str = "cv"  # cv (constant velocity) or rw (random walk)
    q: tuple[float, ...] = (1.0,) * 7  # process noise per DoF, bins^2 (per step^2 for cv)
    r: tuple[float, ...] = (1.0,) * 7  # measurement noise per DoF, bins^2
    p0: float = 100.0  # initial state variance

    def matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``F [n, n]``, ``H [1, n]``, ``Q [D, n, n]``, ``R [D]`` for the chosen model (cached, read-only)."""
        return _matrices(self.model, tuple(self.q), tuple(self.r))


@functools.lru_cache(maxsize=32)
def _matrices(model: str, q_t: tuple, r_t: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    q = np.asarray(q_t, float)
    if model == "cv":
        F = np.array([[1.0, 1.0], [0.0, 1.0]])
        H = np.array([[1.0, 0.0]])
        Q = q[:, None, None] * np.array([[0.25, 0.5], [0.5, 1.0]])
    elif model == "rw":
        F, H = np.eye(1), np.eye(1)
        Q = q[:, None, None] * np.ones((1, 1))
    else:
        raise ValueError(f"KFParams.model: expected 'cv' or 'rw', got {model!r}")
    out = (F, H, Q, np.asarray(r_t, float))
    for a in out:
        a.flags.writeable = False  # shared by every caller with the same parameters
    return out


@dataclasses.dataclass(frozen=True)
class KFState:
    x: np.ndarray  # [D, n] state means
    P: np.ndarray  # [D, n, n] state covariances


def kf_init(z0: np.ndarray, params: KFParams) -> KFState:
    F, _, _, _ = params.matrices()
    n = F.shape[0]
    z0 = np.asarray(z0, float)
    x = np.zeros((len(z0), n))
    x[:, 0] = z0
    return KFState(x, np.tile(np.eye(n) * params.p0, (len(z0), 1, 1)))


def kf_predict(s: KFState, params: KFParams) -> KFState:
    F, _, Q, _ = params.matrices()
    return KFState(s.x @ F.T, F @ s.P @ F.T + Q)


def kf_update(s: KFState, z: np.ndarray, params: KFParams) -> tuple[KFState, np.ndarray, np.ndarray]:
    """Update a predicted state with measurements ``z [D]``; returns ``(state, innovation, S)``."""
    _, H, _, R = params.matrices()
    y = np.asarray(z, float) - s.x @ H[0]
    S = np.einsum("i,dij,j->d", H[0], s.P, H[0]) + R
    K = (s.P @ H[0]) / S[:, None]  # [D, n]
    x = s.x + K * y[:, None]
    P = s.P - K[:, :, None] * (H[0] @ s.P)[:, None, :]
    return KFState(x, P), y, S


def kf_forecast(s: KFState, params: KFParams, steps: int = 1) -> np.ndarray:
    """Predicted measurement ``steps`` control steps ahead of the (updated) state."""
    F, H, _, _ = params.matrices()
    x = s.x
    for _ in range(steps):
        x = x @ F.T
    return x @ H[0]


def kf_filter(zs: np.ndarray, params: KFParams) -> tuple[KFState, dict]:
    """Run over a history ``zs [T, D]`` (T >= 1); returns the final state and statistics
    (innovations ``[T-1, D]``, their variances, and the one-step predictions)."""
    zs = np.asarray(zs, float)
    s = kf_init(zs[0], params)
    innov, var, pred = [], [], []
    for z in zs[1:]:
        s = kf_predict(s, params)
        pred.append(s.x @ params.matrices()[1][0])
        s, y, S = kf_update(s, z, params)
        innov.append(y)
        var.append(S)
    stats = {"innovation": np.asarray(innov).reshape(-1, zs.shape[1]),
             "innovation_var": np.asarray(var).reshape(-1, zs.shape[1]),
             "prediction": np.asarray(pred).reshape(-1, zs.shape[1])}
    return s, stats


def steady_state_gain(params: KFParams, iters: int = 2000) -> np.ndarray:
    """Kalman gain ``[D, n]`` after ``iters`` predict/update cycles (its fixed point)."""
    s = kf_init(np.zeros(len(params.q)), params)
    K = None
    _, H, _, R = params.matrices()
    for _ in range(iters):
        s = kf_predict(s, params)
        S = np.einsum("i,dij,j->d", H[0], s.P, H[0]) + R
        K = (s.P @ H[0]) / S[:, None]
        s, _, _ = kf_update(s, np.zeros(len(params.q)), params)
    return K
