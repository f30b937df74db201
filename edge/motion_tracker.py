"""When each action's commanded motion started and ended: the runtime's after-motion observation.

A model trained on stepped simulation (``sim.env``: the commanded pose moves by the action, one
policy period of physics runs, then the cameras render) only ever saw images taken after its
previous action had been carried out. A free-running loop shows it an arm at the start of that
action's motion (the frame is older than the action), a state it never saw in training.
``inference.observe: after_motion`` restores the convention: each action is computed from a frame
captured after the previous action's commanded motion ended.

``MotionTracker``: the control thread records ``started(version, t)`` (the first command of
action ``version`` on the wire) and ``ended(version, t)`` (its commanded pose reached the goal:
the ramp is over); ``pending(version)`` says whether the end is still to come. The inference
thread asks ``observe_time(version, min_s, wait_s)`` for the earliest capture time of the frame
of the next action: ``max(end, start + min_s)`` (``how == "motion_end"``); when the motion has not
ended ``wait_s`` after it started, ``max(start + wait_s, start + min_s)`` (``"timeout"``);
``(None, "unstarted")`` when the action was not sent within ``wait_s`` (control paused or stalled).
"""

from __future__ import annotations

import threading
import time

__all__ = ["MotionTracker"]


class MotionTracker:
    def __init__(self):
        self._cv = threading.Condition()
        self._version = -1
        self._started: float | None = None
        self._ended: float | None = None

    def started(self, version: int, t_mono: float) -> None:
        with self._cv:
            self._version, self._started, self._ended = version, t_mono, None
            self._cv.notify_all()

    def ended(self, version: int, t_mono: float) -> None:
        with self._cv:
            if version == self._version and self._ended is None:
                self._ended = t_mono
                self._cv.notify_all()

    def pending(self, version: int) -> bool:
        with self._cv:
            return version == self._version and self._ended is None

    def observe_time(self, version: int, min_s: float, wait_s: float) -> tuple[float | None, str]:
        """Earliest capture time of the next action's frame, and how it was set (motion_end, timeout, unstarted)."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._version == version and self._started is not None, wait_s):
                return None, "unstarted"
            started = self._started
            give_up = started + wait_s
            self._cv.wait_for(lambda: self._ended is not None or self._version != version,
                              max(0.0, give_up - time.monotonic()))
            if self._version == version and self._ended is not None:
                return max(self._ended, started + min_s), "motion_end"
            return max(give_up, started + min_s), "timeout"
