"""The fixed-rate control thread: newest action -> tool pose -> IK -> clamped joint command.

``ControlLoop(bridge, chain, actions, cfg, telemetry, notifier, on_fault, motion=None)``. Every
``command_period_ms`` on monotonic deadlines it:

1. reads the newest ``StepAction`` (never waits for inference). A new action moves the goal tool
   pose by its delta (clipped per axis, the goal clipped to the workspace box), as the model was
   trained (``sim/README.md``): translation added, rotation ``R <- R(drpy) R``. With
   ``interpolation: linear`` the commanded pose ramps from the previous goal to the new one over
   one policy period; with ``step`` it jumps; with ``minjerk`` it follows a minimum-jerk profile
   (at rest at both ends) over ``ramp_duration_s``: the policy period, or longer when the joint
   move (one IK solve of the goal) needs it to stay within ``ramp_limit_share`` of the joints'
   velocity and acceleration limits, so the bridge's safety clamps do not shape the motion;
2. solves IK warm-started from the previous joint target (``edge.kinematics``, at most
   ``ik_max_iters`` iterations) and sends the joint command through the bridge (which clamps it
   to the arm's limits and refuses to send on a stale state);
3. records the command period, frame-to-wire latency (frame capture time to the first command
   of that action written to the port) and frame age at every command, clamps and overruns;
4. with ``inference.observe: after_motion``, tells ``motion`` (``edge.motion_tracker``) when an
   action's first command went out and when its commanded motion ended (the ramp reached the
   goal; with ``step`` at once).

No fresh action for ``action_max_age_ms``: the pose stops where it is (the last target is sent
again: the arm holds) and ``holds`` is counted; for ``stale_stop_ms``: fault ``inference: ...``.
A late tick is an overrun: ``skip`` drops the missed deadlines, ``catch_up`` runs them back to
back; ``max_consecutive_overruns`` in a row is a fault. A bridge error is a fault
``controller: ...``. ``WATCHDOG=1`` goes to systemd only from this thread, only after
``watchdog_healthy_cycles`` healthy cycles in a row (on time, fresh action, command sent), at
half the watchdog period: a stalled loop or pipeline stops it. ``pause()``/``resume_episode(q)``
bracket an episode change; ``wire_log`` keeps ``(t_wire, frame_t_mono, first_of_action)`` per
command for the latency report.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Callable

import numpy as np

from edge.kinematics import axis_angle, rpy_to_rot
from edge.motion_tracker import MotionTracker
from edge.run_config import RunConfig

log = logging.getLogger(__name__)

__all__ = ["ControlLoop", "ramp_duration_s", "minjerk"]

# peak speed and acceleration of the minimum-jerk profile s(t/T) = 10u^3 - 15u^4 + 6u^5, times distance / T (^2)
MINJERK_PEAK_VEL, MINJERK_PEAK_ACC = 1.875, 5.7735


def minjerk(u: float) -> float:
    """Minimum-jerk progress in [0, 1] at normalised time ``u`` (clipped to [0, 1])."""
    u = min(max(u, 0.0), 1.0)
    return u * u * u * (10.0 + u * (-15.0 + 6.0 * u))


def ramp_duration_s(dq, max_vel, max_acc, min_s: float, share: float) -> float:
    """Shortest minimum-jerk duration, at least ``min_s``, moving joints by ``dq`` within ``share`` of the limits."""
    dq = np.abs(np.asarray(dq, float))
    t_vel = MINJERK_PEAK_VEL * dq / (share * np.asarray(max_vel, float))
    t_acc = np.sqrt(MINJERK_PEAK_ACC * dq / (share * np.asarray(max_acc, float)))
    return float(max(min_s, t_vel.max(initial=0.0), t_acc.max(initial=0.0)))


class ControlLoop:
    def __init__(self, bridge, chain, actions, cfg: RunConfig, telemetry, notifier, on_fault: Callable[[str, str], None],
                 motion: MotionTracker | None = None):
        self.bridge, self.chain, self.actions, self.motion = bridge, chain, actions, motion
        self._track = motion is not None and cfg.inference.observe == "after_motion"
        self.cfg, self.c, self.tm, self.notifier, self.on_fault = cfg, cfg.control, telemetry, notifier, on_fault
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = True
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self.wire_log: collections.deque = collections.deque(maxlen=200_000)
        self.healthy_streak = 0
        self.watchdog_sent = 0
        self._last_wd = 0.0
        self._last_cmd_t: float | None = None

    def start(self) -> "ControlLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.cfg.service.stop_timeout_s)

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume_episode(self, q) -> None:
        """Start commanding from joint positions ``q`` (the arm's state after an episode reset)."""
        with self._lock:
            self.q_cmd = np.asarray(q, float).copy()
            self.goal_pos, self.goal_rot = self.chain.fk(self.q_cmd)
            self.from_pos, self.from_rot = self.goal_pos.copy(), self.goal_rot.copy()
            self.t_goal = time.monotonic()
            self.ramp_s = self.c.policy_period_ms / 1e3
            self.gripper_open = True
            self.version = self.actions.get()[2]
            self.action_t = time.monotonic()
            self.frame_t = None
            self._paused = False

    # --- one cycle -----------------------------------------------------------------------------
    def _new_action(self, act) -> None:
        c = self.c
        d = np.asarray(act.delta, float)
        self.from_pos, self.from_rot = self._pose(time.monotonic())
        self.goal_pos = np.clip(self.goal_pos + np.clip(d[:3], -c.max_delta_m, c.max_delta_m),
                                c.workspace_min_m, c.workspace_max_m)
        self.goal_rot = rpy_to_rot(np.clip(d[3:6], -c.max_delta_rad, c.max_delta_rad)) @ self.goal_rot
        self.gripper_open = act.gripper_open
        self.ramp_s = c.policy_period_ms / 1e3
        if c.interpolation == "minjerk":
            q_goal, _ = self.chain.ik(self.goal_pos, self.goal_rot, self.q_cmd, max_iters=self.c.ik_max_iters)
            lim = self.bridge.limits
            self.ramp_s = ramp_duration_s(q_goal - self.q_cmd, lim.max_vel_rad_s, lim.max_acc_rad_s2, self.ramp_s,
                                          c.ramp_limit_share)
        self.t_goal = time.monotonic()
        self.frame_t = act.frame_t_mono

    def _pose(self, now: float):
        if self.c.interpolation == "step":
            return self.goal_pos, self.goal_rot
        a = min(1.0, (now - self.t_goal) / self.ramp_s)
        if self.c.interpolation == "minjerk":
            a = minjerk(a)
        pos = self.from_pos + a * (self.goal_pos - self.from_pos)
        if a >= 1.0:
            return pos, self.goal_rot
        # rotation: fraction a of the relative rotation (axis-angle), from the previous goal
        E = self.goal_rot @ self.from_rot.T
        angle = np.arccos(np.clip((np.trace(E) - 1) / 2, -1.0, 1.0))
        if angle < 1e-9:
            return pos, self.goal_rot
        axis = np.array([E[2, 1] - E[1, 2], E[0, 2] - E[2, 0], E[1, 0] - E[0, 1]]) / (2 * np.sin(angle))
        return pos, axis_angle(axis, a * angle) @ self.from_rot

    def _tick(self) -> bool:
        """One cycle; returns whether it was healthy (fresh action, command sent)."""
        now = time.monotonic()
        act, t_act, version = self.actions.get()
        first = False
        if version != self.version:
            self.version, self.action_t = version, t_act
            self._new_action(act)
            first = True
        stale_ms = (now - self.action_t) * 1e3
        fresh = stale_ms <= self.c.action_max_age_ms
        if not fresh:
            self.tm.count("holds")
            if stale_ms > self.c.stale_stop_ms:
                self.on_fault("inference", f"no new action for {stale_ms:.0f} ms (camera or inference stalled); arm held")
                self._stop.set()
                return False
            target = self.q_cmd  # hold the last target
        else:
            t0 = time.perf_counter()
            pos, rot = self._pose(now)
            target, _ = self.chain.ik(pos, rot, self.q_cmd, max_iters=self.c.ik_max_iters)
            self.tm.sample("ik_ms", (time.perf_counter() - t0) * 1e3)
        sent = self.bridge.send_joint_command(target, self.gripper_open)
        t_wire = time.monotonic()
        self.q_cmd = sent.positions
        if sent.report.fired:
            self.tm.count("clamps")
            for name in sent.report.fired:
                self.tm.tally("clamp", name)
        self.tm.count("commands")
        if self._last_cmd_t is not None:
            self.tm.sample("command_period_ms", (t_wire - self._last_cmd_t) * 1e3)
        self._last_cmd_t = t_wire
        if self.frame_t is not None:
            self.tm.sample("frame_age_at_command_ms", (t_wire - self.frame_t) * 1e3)
            if first:
                self.tm.sample("frame_to_wire_ms", (t_wire - self.frame_t) * 1e3)
            self.wire_log.append((t_wire, self.frame_t, first))
        if self._track:
            self._track_motion(first, t_wire)
        return fresh

    def _track_motion(self, first: bool, t_wire: float) -> None:
        if first:
            self.motion.started(self.version, t_wire)
        done = self.c.interpolation == "step" or t_wire - self.t_goal >= self.ramp_s
        if done and self.motion.pending(self.version):
            self.motion.ended(self.version, t_wire)

    def _watchdog(self, healthy: bool) -> None:
        self.healthy_streak = self.healthy_streak + 1 if healthy else 0
        interval = self.notifier.watchdog_interval_s() if self.notifier is not None else None
        if interval is None or self.healthy_streak < self.cfg.service.watchdog_healthy_cycles:
            return
        now = time.monotonic()
        if now - self._last_wd >= interval:
            self._last_wd = now
            if self.notifier.watchdog():
                self.watchdog_sent += 1

    # --- the thread ----------------------------------------------------------------------------
    def _set_priority(self) -> None:
        if self.c.rt_priority <= 0:
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(self.c.rt_priority))
            log.info("control thread: SCHED_FIFO priority %d", self.c.rt_priority)
        except (PermissionError, OSError) as exc:
            log.warning("control thread: real-time priority %d refused (%s); running at normal priority "
                        "(the systemd unit grants it with LimitRTPRIO)", self.c.rt_priority, exc)

    def _run(self) -> None:
        self._set_priority()
        period = self.c.command_period_ms / 1e3
        next_t = time.monotonic() + period
        late_streak = 0
        while not self._stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            late = now - next_t
            self.tm.sample("tick_lateness_ms", late * 1e3)
            overrun = late > period
            if overrun:
                self.tm.count("overruns")
                late_streak += 1
                if late_streak >= self.c.max_consecutive_overruns:
                    self.on_fault("control", f"{late_streak} control cycles in a row more than a period late")
                    return
                next_t = now if self.c.overrun_policy == "skip" else next_t
            else:
                late_streak = 0
            next_t += period
            try:
                with self._lock:
                    healthy = self._paused or self._tick()
            except Exception as exc:  # the bridge: link lost, stale state (it e-stopped), handshake
                self.on_fault("controller", f"{type(exc).__name__}: {exc}")
                return
            crc = self.bridge.link.decoder.counters.crc_errors if self.bridge.link is not None else 0
            if crc != self.tm.counters["crc_errors"]:
                self.tm.count("crc_errors", crc - self.tm.counters["crc_errors"])
            self._watchdog(healthy and not overrun)
