"""Fused metric on analytic paths, DyQ sensitivity and hysteresis sequences."""

import numpy as np
import pytest

from edge.motion_metrics import (DyQConfig, DyQState, FusedBounds, curvature_radius, dyq_step, fused_metric,
                                 path_length, sensitivity)


@pytest.mark.parametrize("radius", [0.05, 0.2, 1.0])
def test_circle_radius_in_a_tilted_plane(radius):
    t = np.linspace(0, 1.2, 15)
    circle = np.stack([radius * np.cos(t), radius * np.sin(t), np.zeros_like(t)], 1)
    R = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    P = circle @ R.T + np.array([0.4, -0.1, 0.3])
    assert curvature_radius(P) == pytest.approx(radius, rel=1e-6)
    assert path_length(P) == pytest.approx(np.sum(2 * radius * np.sin(np.diff(t) / 2)), rel=1e-9)


def test_straight_line_has_maximal_radius_and_exact_length():
    P = np.linspace([0.3, 0.0, 0.2], [0.6, 0.1, 0.25], 15)
    assert curvature_radius(P, max_radius_m=10.0) == 10.0
    assert path_length(P) == pytest.approx(np.linalg.norm([0.3, 0.1, 0.05]))
    F_line, _ = fused_metric(P, FusedBounds(radius_m=(0.02, 2.0), length_m=(0.0, 0.3)))
    t = np.linspace(0, 0.5, 15)
    small_circle = np.stack([0.03 * np.cos(t), 0.03 * np.sin(t), np.zeros_like(t)], 1)
    F_curve, _ = fused_metric(small_circle, FusedBounds(radius_m=(0.02, 2.0), length_m=(0.0, 0.3)))
    assert F_line == pytest.approx(1.0) and F_curve < 0.1  # fast straight -> retrieval, slow curve -> drafter


def test_sensitivity_fine_and_jerky_motion():
    slow = np.zeros((12, 7))
    fast = np.zeros((12, 7))
    fast[:, :3] = 0.02
    s_slow, st = sensitivity(slow, mu_max=0.0346, nu_max=0.1)
    s_fast, _ = sensitivity(fast, mu_max=0.0346, nu_max=0.1)
    assert st["fineness"] == pytest.approx(1.0) and s_slow == pytest.approx(0.5)
    assert s_fast == pytest.approx(0.0, abs=1e-3)
    jerky = fast.copy()
    jerky[::2, 3] = 0.1
    assert sensitivity(jerky, 0.0346, 0.1)[1]["jerk"] == pytest.approx(1.0)


def test_hysteresis_upgrades_at_once_downgrades_after_delay():
    cfg = DyQConfig(levels=("low", "mid", "high"), bounds=(0.3, 0.6), downgrade_delay=3)
    s = DyQState(0)
    seq = []
    for S in [0.1, 0.7, 0.1, 0.1, 0.1, 0.4, 0.1, 0.4, 0.4, 0.4]:
        s, level, _ = dyq_step(s, S, cfg)
        seq.append(level)
    assert seq == ["low", "high", "high", "high", "low", "mid", "mid", "mid", "mid", "mid"]
    with pytest.raises(ValueError, match="expected 2 values"):
        DyQConfig(levels=("a", "b", "c"), bounds=(0.5,))
