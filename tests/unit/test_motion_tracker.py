"""The after-motion observation's parts: the motion tracker's timing, a camera's ``read_after``
(a real ``file://`` replay source), the control thread's minimum-jerk ramp."""

import threading
import time

import numpy as np
import pytest

from edge.camera import open_camera
from edge.motion_tracker import MotionTracker


def test_observe_time_is_the_motion_end_at_least_min_after_start():
    m = MotionTracker()
    t0 = time.monotonic()
    m.started(3, t0)
    assert m.pending(3) and not m.pending(2)
    m.ended(3, t0 + 0.02)
    assert not m.pending(3)
    t, how = m.observe_time(3, min_s=0.1, wait_s=0.25)
    assert how == "motion_end" and t == pytest.approx(t0 + 0.1)
    m.started(4, t0 + 0.2)
    m.ended(4, t0 + 0.35)
    t, how = m.observe_time(4, min_s=0.1, wait_s=0.25)
    assert how == "motion_end" and t == pytest.approx(t0 + 0.35)  # the motion ended after the minimum


def test_observe_time_waits_for_the_control_thread_then_times_out():
    m = MotionTracker()
    t0 = time.monotonic()
    threading.Timer(0.05, lambda: m.started(7, time.monotonic())).start()
    t, how = m.observe_time(7, min_s=0.01, wait_s=0.1)  # the motion never ends
    waited = time.monotonic() - t0
    assert how == "timeout" and 0.14 <= waited < 0.5 and t == pytest.approx(m._started + 0.1) and t <= time.monotonic()
    assert m.observe_time(8, min_s=0.01, wait_s=0.05) == (None, "unstarted")
    # a motion end that arrives while the inference thread waits ends the wait early
    m.started(9, time.monotonic())
    threading.Timer(0.03, lambda: m.ended(9, time.monotonic())).start()
    t1 = time.monotonic()
    t, how = m.observe_time(9, min_s=0.0, wait_s=1.0)
    assert how == "motion_end" and time.monotonic() - t1 < 0.5


def test_read_after_returns_only_later_frames(tmp_path):
    path = tmp_path / "episode_000000.npz"
    np.savez(path, image=np.zeros((5, 8, 8, 3), np.uint8))
    cam = open_camera(f"file://{path}", replay_fps=20)
    try:
        first = cam.wait_first(2.0)
        t = time.monotonic()
        f = cam.read_after(t, 1.0)
        assert f is not None and f.t_mono >= t and f.seq > first.seq
        assert cam.read_after(time.monotonic() + 5.0, 0.15) is None  # nothing captured that late arrives in time
    finally:
        cam.close()


@pytest.mark.parametrize("dq", [[0.0, 0.033, 0.0, -0.03, 0.0, 0.01, 0.0], [0.3, -0.2, 0.1, 0.0, 0.05, 0.0, 0.4],
                                [1e-4] * 7])
def test_minjerk_ramp_stays_within_the_share_of_the_limits(dq):
    from edge.control_loop import minjerk, ramp_duration_s
    from firmware_bridge.safety import ArmLimits

    lim = ArmLimits.panda()
    T = ramp_duration_s(dq, lim.max_vel_rad_s, lim.max_acc_rad_s2, 0.1, 0.8)
    assert T >= 0.1
    dt = 1e-4
    t = np.arange(0.0, T + dt, dt)
    q = np.array([minjerk(x / T) for x in t])[:, None] * np.asarray(dq)[None, :]
    vel = np.diff(q, axis=0) / dt
    acc = np.diff(vel, axis=0) / dt
    assert q[0] == pytest.approx(np.zeros(7)) and q[-1] == pytest.approx(np.asarray(dq))
    assert np.all(np.abs(vel).max(axis=0) <= 0.8 * np.asarray(lim.max_vel_rad_s) * 1.001)
    assert np.all(np.abs(acc).max(axis=0) <= 0.8 * np.asarray(lim.max_acc_rad_s2) * 1.01)
    if T > 0.1:  # a limit sets the duration: some joint reaches its share of it
        share = np.maximum(np.abs(vel).max(axis=0) / lim.max_vel_rad_s, np.abs(acc).max(axis=0) / lim.max_acc_rad_s2)
        assert share.max() == pytest.approx(0.8, rel=0.02)
