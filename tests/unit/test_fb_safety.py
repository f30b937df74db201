"""Safety clamps: every limit on a hand-made case; nothing unsafe ever comes out."""

import numpy as np
import pytest

from firmware_bridge.safety import ArmLimits, clamp_command

L = ArmLimits.panda()
HOME = np.array([0.0, -0.184, 0.0, -2.497, 0.0, 0.743, 0.0])


def test_within_limits_passes_unchanged():
    t = HOME + 0.0001  # 0.01 rad/s reached in 10 ms: 1 rad/s^2, under every limit
    safe, rep = clamp_command(t, HOME, np.zeros(7), 0.01, L)
    assert np.allclose(safe, t) and rep.fired == []


def test_non_finite_holds_previous():
    t = HOME.copy()
    t[2] = np.nan
    safe, rep = clamp_command(t, HOME, np.zeros(7), 0.01, L)
    assert np.array_equal(safe, HOME) and rep.fired == ["non_finite"]
    safe, rep = clamp_command(np.full(7, np.inf), HOME, np.zeros(7), 0.01, L)
    assert np.array_equal(safe, HOME) and rep.non_finite


def test_position_step_velocity_acceleration():
    far = HOME.copy()
    far[0] = 10.0
    safe, rep = clamp_command(far, HOME, np.zeros(7), 0.01, L)
    assert rep.position and rep.step and rep.velocity and rep.acceleration
    # from rest, one 10 ms step may change velocity by at most max_acc * dt
    assert abs(safe[0] - HOME[0]) <= L.max_acc_rad_s2[0] * 0.01 * 0.01 + 1e-12
    # at full speed already, the velocity limit binds
    v = np.array(L.max_vel_rad_s)
    safe, rep = clamp_command(HOME + 1.0, HOME, v, 0.01, L)
    assert np.all(np.abs(safe - HOME) <= v * 0.01 + 1e-12)


def test_fuzzed_targets_always_inside_every_limit():
    rng = np.random.default_rng(0)
    prev, vel = HOME.copy(), np.zeros(7)
    lo, hi = np.array(L.lower_rad), np.array(L.upper_rad)
    hard_stops = 0
    for _ in range(5000):
        t = rng.normal(prev, 2.0)
        if rng.random() < 0.05:
            t[rng.integers(7)] = rng.choice([np.nan, np.inf, -np.inf])
        dt = 0.01
        safe, rep = clamp_command(t, prev, vel, dt, L)
        assert np.all(np.isfinite(safe)) and np.all(safe >= lo) and np.all(safe <= hi)
        new_vel = (safe - prev) / dt
        assert np.all(np.abs(safe - prev) <= L.max_step_rad + 1e-12)
        assert np.all(np.abs(new_vel) <= np.array(L.max_vel_rad_s) + 1e-9)
        if not rep.non_finite:  # a hold (non-finite input) deliberately stops at the last target
            over = np.abs(new_vel - vel) > np.array(L.max_acc_rad_s2) * dt + 1e-9
            # only a joint stopped at its position limit may brake harder (position wins, reported)
            at_limit = (np.abs(safe - (lo + L.margin_rad)) < 1e-9) | (np.abs(safe - (hi - L.margin_rad)) < 1e-9)
            assert np.all(~over | at_limit) and (not over.any() or rep.position)
            hard_stops += int(over.any())
        prev, vel = safe, new_vel
    assert hard_stops < 50  # braking keeps stops at the limits rare even under random targets


def test_workspace_box_holds_previous():
    def fk(q):  # a fake arm whose tool x is joint 0 (radians read as metres)
        return np.array([0.5 + q[0], 0.0, 0.3])

    t = HOME.copy()
    t[0] = 0.001
    safe, rep = clamp_command(t, HOME, np.zeros(7), 0.01, L, fk)
    assert not rep.workspace
    prev = HOME.copy()
    prev[0] = 0.349  # tool at x = 0.849, box max 0.85
    t = prev.copy()
    t[0] = 0.36
    safe, rep = clamp_command(t, prev, np.zeros(7), 0.01, L, fk)
    assert rep.workspace and np.array_equal(safe, prev)


def test_bad_limits_refused():
    with pytest.raises(ValueError, match="upper_rad: expected 2 values"):
        ArmLimits((0.0, 0.0), (1.0,), (1.0, 1.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="joint target: expected 7 values"):
        clamp_command(np.zeros(6), HOME, np.zeros(7), 0.01, L)
