"""Kalman filter: closed-form steady state (random walk), an independent matrix implementation
(constant velocity), and tracking of a ramp."""

import numpy as np

from edge.kalman import KFParams, kf_filter, kf_forecast, steady_state_gain


def test_random_walk_steady_state_gain_closed_form():
    q, r = np.array([1.0, 0.5, 2.0, 1e-3, 1.0, 1.0, 1.0]), np.array([1e-3, 1.0, 0.3, 1.0, 4.0, 1.0, 0.1])
    K = steady_state_gain(KFParams(model="rw", q=tuple(q), r=tuple(r)))[:, 0]
    # P- solves P- = P- - P-^2 / (P- + R) + Q  =>  P- = (Q + sqrt(Q^2 + 4 Q R)) / 2, K = P- / (P- + R)
    Pm = (q + np.sqrt(q**2 + 4 * q * r)) / 2
    assert np.allclose(K, Pm / (Pm + r), rtol=1e-9)


def _reference_cv(zs, q, r, p0):
    """Textbook single-DoF constant-velocity filter written with plain 2x2 matrices."""
    F = np.array([[1.0, 1.0], [0.0, 1.0]])
    H = np.array([[1.0, 0.0]])
    Q = q * np.array([[0.25, 0.5], [0.5, 1.0]])
    x = np.array([zs[0], 0.0])
    P = np.eye(2) * p0
    for z in zs[1:]:
        x = F @ x
        P = F @ P @ F.T + Q
        S = (H @ P @ H.T)[0, 0] + r
        K = (P @ H.T)[:, 0] / S
        x = x + K * (z - x[0])
        P = (np.eye(2) - np.outer(K, H[0])) @ P
    return x, P


def test_constant_velocity_matches_independent_implementation():
    rng = np.random.default_rng(0)
    zs = np.cumsum(rng.normal(1.0, 2.0, size=(40, 7)), axis=0)
    q, r = rng.uniform(0.1, 3, 7), rng.uniform(0.1, 3, 7)
    params = KFParams(model="cv", q=tuple(q), r=tuple(r), p0=50.0)
    s, stats = kf_filter(zs, params)
    for d in range(7):
        x, P = _reference_cv(zs[:, d], q[d], r[d], 50.0)
        assert np.allclose(s.x[d], x) and np.allclose(s.P[d], P)
    assert stats["innovation"].shape == (39, 7)


def test_cv_extrapolates_a_ramp_and_rw_lags():
    t = np.arange(30, dtype=float)
    zs = np.stack([5 + 2 * t] * 7, axis=1)
    cv, _ = kf_filter(zs, KFParams(model="cv", q=(0.01,) * 7, r=(1.0,) * 7))
    rw, _ = kf_filter(zs, KFParams(model="rw", q=(1.0,) * 7, r=(1e-3,) * 7))
    nxt = 5 + 2 * 30
    assert np.all(np.abs(kf_forecast(cv, KFParams(model="cv", q=(0.01,) * 7, r=(1.0,) * 7)) - nxt) < 0.5)
    assert np.all(np.abs(kf_forecast(rw, KFParams(model="rw", q=(1.0,) * 7, r=(1e-3,) * 7)) - (nxt - 2)) < 0.01)
