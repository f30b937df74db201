"""The inference thread: frame + state -> policy -> action mailbox, one step per policy period.

``InferenceLoop(policy, camera, bridge, chain, cfg, telemetry, on_fault)``; ``set_task(
instruction)`` starts an episode (``None`` pauses); ``actions`` is the latest-value mailbox the
control thread reads (``StepAction``: end-effector delta, gripper, the frame's capture time).

Each step (at monotonic deadlines ``policy_period_ms`` apart; a late step starts at once):
read the newest frame no older than ``camera.max_age_ms`` (none: no action, and after
``camera.stale_stop_ms`` a fault ``camera: ...``); with ``inference.observe: after_motion`` the
frame must instead be captured after the previous action's commanded motion ended and at least
``observe_min_ms`` after its first command (``edge.motion_tracker``; an episode's first frame:
after the episode began), waited for up to ``camera.max_age_ms`` once that time is known
(``observe_wait_ms``, ``observe_timeouts``); then run the step's CPU work (the previous
step's JSON line and histograms, the tool position from forward kinematics) on a helper thread
*while* the decoder runs (ONNX Runtime releases the GIL) with
``inference.cpu_work: overlapped``, before it with ``serial``, alternately with ``ab``. Per step
it records ``infer_ms``, ``cpu_work_ms``, ``step_wall_ms`` and, when overlapped,
``overlap_hidden_pct`` (the share of the CPU work that did not lengthen the step:
``(cpu + infer - wall) / cpu``; contention that slows the verifier counts as hidden there, so
``ab`` also records ``ab_{wall,infer,cpu}_{overlap,serial}_ms`` for the side-by-side estimate
``(wall_serial - wall_overlap) / cpu_serial``). The kinematic layer's update from the step's
tokens (``EdgePolicy.flush``: Kalman filter, DyQ state, the commanded path) runs after the action
is published, in the period's slack, off the frame-to-command path (``kin_update_ms``); its plan
for a step (mode, precision, threshold) is in that step's JSON line. An exception from the
engines is a fault ``engine: ...``: the service stops the arm.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

import numpy as np

from edge.mailbox import Mailbox
from edge.motion_tracker import MotionTracker
from edge.run_config import RunConfig

log = logging.getLogger(__name__)

__all__ = ["StepAction", "InferenceLoop"]


@dataclasses.dataclass(frozen=True)
class StepAction:
    step: int  # policy step number in the episode
    delta: np.ndarray  # [dx, dy, dz, droll, dpitch, dyaw] for one policy period
    gripper_open: bool
    frame_t_mono: float  # capture time of the frame it was computed from
    frame_seq: int


class _Helper:
    """One persistent helper thread running one submitted call at a time."""

    def __init__(self):
        self._go, self._done = threading.Event(), threading.Event()
        self._fn, self.result, self.error = None, None, None
        self.t_start = self.t_end = 0.0
        threading.Thread(target=self._loop, name="step-work", daemon=True).start()

    def submit(self, fn) -> None:
        self._fn, self.result, self.error = fn, None, None
        self._done.clear()
        self._go.set()

    def join(self):
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.result

    def _loop(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            self.t_start = time.perf_counter()
            try:
                self.result = self._fn()
            except Exception as exc:  # re-raised on the inference thread by join()
                self.error = exc
            self.t_end = time.perf_counter()
            self._done.set()


class InferenceLoop:
    def __init__(self, policy, camera, bridge, chain, cfg: RunConfig, telemetry, on_fault: Callable[[str, str], None],
                 motion: MotionTracker | None = None):
        self.policy, self.camera, self.bridge, self.chain = policy, camera, bridge, chain
        self.motion = motion if motion is not None else MotionTracker()
        self._published: int | None = None  # mailbox version of this episode's last action
        self._episode_t0 = time.monotonic()
        # after_motion: how the current step's frame was chosen, the wait for it, the earliest capture time allowed
        self._observed, self._observe_wait_ms, self._observe_t = "", 0.0, 0.0
        self.cfg, self.tm, self.on_fault = cfg, telemetry, on_fault
        self.actions: Mailbox[StepAction] = Mailbox()
        self.helper = _Helper()
        self._instruction: str | None = None
        self._task_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self.episode_steps = 0
        self.last_frame_ok_t = time.monotonic()
        self._prev: dict | None = None  # previous step's record for the CPU work
        self.ee_pos: np.ndarray | None = None  # tool position (forward kinematics of the newest state)

    def start(self) -> "InferenceLoop":
        self._thread.start()
        return self

    def set_task(self, instruction: str | None) -> None:
        with self._task_lock:
            if instruction is not None:
                self.policy.check_instruction(instruction)  # unknown words fail here, before the arm moves
            if self._prev is not None:
                self.tm.step(self._prev["record"])  # the last step of the previous episode
            self._instruction = instruction
            self.episode_steps = 0
            self._prev = None
            self._published = None
            self.policy.reset()
            self.last_frame_ok_t = self._episode_t0 = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.cfg.service.stop_timeout_s)

    # --- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        period = self.cfg.control.policy_period_ms / 1e3
        next_t = time.monotonic()
        while not self._stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            next_t = max(next_t + period, time.monotonic() - period)
            with self._task_lock:
                if self._instruction is None:
                    self.last_frame_ok_t = time.monotonic()
                    continue
                try:
                    self._step(self._instruction)
                except Exception as exc:  # any failure of the engines or decoder stops the arm
                    self.on_fault("engine", f"{type(exc).__name__}: {exc}")
                    return

    def _cpu_work(self, prev: dict | None, q: np.ndarray) -> None:
        self.ee_pos, _ = self.chain.fk(q)
        if prev is not None:
            self.tm.step(prev["record"])  # the previous step's JSON line and histograms

    def _observe_after(self) -> float | None:
        """After-motion observation: the earliest capture time of this step's frame (None: no action went out)."""
        ic = self.cfg.inference
        if self._published is None:
            self._observed = "episode_start"
            return self._episode_t0
        t_obs, how = self.motion.observe_time(self._published, ic.observe_min_ms / 1e3, ic.observe_wait_max_ms / 1e3)
        if how == "timeout":
            self.tm.count("observe_timeouts")
        self._observed = how
        return t_obs

    def _read_frame(self):
        ccfg = self.cfg.camera
        if self.cfg.inference.observe == "newest":
            return self.camera.read_latest(ccfg.max_age_ms)
        t0 = time.monotonic()
        t_obs = self._observe_after()
        self._observe_t = t_obs or 0.0
        frame = None if t_obs is None else self.camera.read_after(
            t_obs, max(0.0, t_obs - time.monotonic()) + ccfg.max_age_ms / 1e3)
        if frame is not None:
            self._observe_wait_ms = (time.monotonic() - t0) * 1e3
            self.tm.sample("observe_wait_ms", self._observe_wait_ms)
        return frame

    def _step(self, instruction: str) -> None:
        ccfg = self.cfg.camera
        frame = self._read_frame()
        now = time.monotonic()
        if frame is None:
            self.tm.count("stale_frames")
            stale_ms = (now - self.last_frame_ok_t) * 1e3
            if stale_ms > ccfg.stale_stop_ms:
                self.on_fault("camera", f"no frame newer than {ccfg.max_age_ms:.0f} ms for {stale_ms:.0f} ms "
                                        f"({self.camera.name}: frozen or disconnected)")
                self._stop.set()
            return
        self.last_frame_ok_t = now
        self.tm.sample("frame_age_ms", (now - frame.t_mono) * 1e3)
        state = self.bridge.wait_state(100)
        q = np.asarray(state.positions)
        obs = {**frame.views, "instruction": instruction}
        if self.policy.reads_state:  # the prompt carries the arm state: the tool point and finger opening
            obs["ee_pos"], obs["gripper"] = self.chain.fk(q)[0], float(state.gripper_m)
        prev = self._prev
        t0 = time.perf_counter()
        mode = self.cfg.inference.cpu_work
        overlap = mode == "overlapped" or (mode == "ab" and self.episode_steps % 2 == 0)
        if overlap:
            self.helper.submit(lambda: self._cpu_work(prev, q))
            t1 = time.perf_counter()
            tokens, stats = self.policy.decode(obs)
            t2 = time.perf_counter()
            self.helper.join()
            cpu_ms = (self.helper.t_end - self.helper.t_start) * 1e3
        else:
            self._cpu_work(prev, q)
            cpu_ms = (time.perf_counter() - t0) * 1e3
            t1 = time.perf_counter()
            tokens, stats = self.policy.decode(obs)
            t2 = time.perf_counter()
        action = self.policy.tokens_to_action(tokens)
        wall_ms = (time.perf_counter() - t0) * 1e3
        infer_ms = (t2 - t1) * 1e3
        self.actions.put(StepAction(self.episode_steps, action[:6].astype(float), bool(action[6] >= 0.5),
                                    frame.t_mono, frame.seq))
        self._published = self.actions.get()[2]
        self.tm.sample("infer_ms", infer_ms)
        self.tm.sample("step_wall_ms", wall_ms)
        if prev is not None:
            self.tm.sample("cpu_work_ms", cpu_ms)
            if overlap:
                hidden = (cpu_ms + infer_ms - wall_ms) / max(cpu_ms, 1e-6)
                self.tm.sample("overlap_hidden_pct", 100 * float(np.clip(hidden, 0, 1)))
            if mode == "ab":  # with and without the overlap, side by side (alternate steps)
                side = "overlap" if overlap else "serial"
                for name, v in (("wall", wall_ms), ("infer", infer_ms), ("cpu", cpu_ms)):
                    self.tm.sample(f"ab_{name}_{side}_ms", v)
        info = getattr(self.policy, "last_info", None) or {}
        precision = info.get("precision", self.policy.cfg.precision)
        if info.get("mode"):
            self.tm.tally("mode", info["mode"])
        self.tm.tally("precision", precision)
        record = {"t": round(time.monotonic(), 4), "step": self.episode_steps, "frame_seq": frame.seq,
                  "frame_age_ms": round((now - frame.t_mono) * 1e3, 2), "infer_ms": round(infer_ms, 2),
                  "cpu_work_ms": round(cpu_ms, 3), "wall_ms": round(wall_ms, 2), "tokens": [int(t) for t in tokens],
                  "action": [round(float(a), 5) for a in action], "verifier_passes": stats.verifier_passes,
                  "accepted": list(stats.accepted), "precision": precision,
                  "plan": {k: info[k] for k in ("mode", "threshold_bins", "candidates") if k in info} or None}
        if self.cfg.inference.observe == "after_motion":  # why this frame: the motion ended, or the wait timed out
            record["observe"] = {"after": self._observed, "wait_ms": round(self._observe_wait_ms, 2),
                                 "not_before_s": round(self._observe_t, 4), "frame_t_s": round(frame.t_mono, 4)}
        t3 = time.perf_counter()
        self.policy.flush()  # the kinematic layer's update, after the action is out
        record["kin_update_ms"] = round((time.perf_counter() - t3) * 1e3, 3)
        self._prev = {"record": record}
        self.episode_steps += 1
