"""Scripted expert: a state-feedback waypoint follower with a parallel gripper.

``ScriptedExpert(env)`` is a policy (``reset()``, ``infer(obs) -> action``) with privileged access
to the simulator's state (block and plate positions). For each stage of the task (place, stack,
lift) it plans, from the state at the start of the stage, waypoints: above the block, down (while
turning to the block's faces with ``grasp_yaw="block"``), close, up, above the target, down, open, up.

``grasp_yaw="fixed"`` (v6, the default) never turns: the tool keeps its start yaw and the jaws,
8 cm open, close on a 4 cm block at whatever yaw it lies (its 5.7 cm diagonal fits between them;
closing turns the block into the jaws). Measured: 100 of 100 held-out episodes with 8 cm start
jitter. The yaw labels of v5 were the outputs its clones learned worst (held-out mean absolute
error about 0.018 rad against a label standard deviation of 0.025 rad, in every retrain), and
their most common closed-loop failure was a stall above a block waiting for a turn they did not
make. With a fixed yaw the wrist camera's image axes also stay aligned with the base frame, so an
offset in the image means the same motion in every episode. ``grasp_yaw="block"`` (v5) is kept
for comparison:

The turn happens on the way down over the block, not during travel: from the start pose a block
is a few pixels wide in both 64 px cameras and its orientation cannot be seen, so yaw labels given
there cannot be learned from the images (measured: policies trained on the v2 expert, which turned
during the first travel steps, output about zero yaw and arrived misaligned). Over the block the
wrist camera sees its faces, and the yaw step is a visual servo. The descent stops
``PRE_GRASP_ABOVE_M`` above the grasp height while the yaw is more than ``TURN_BEFORE_LOW_RAD``
off, so open fingers never sweep into the block. (v3 turned at hover height with the arm still;
its clones skipped that standstill and went down unturned.)

The gripper closes (opens) in a zone, not at one instant: once the tool point is within
``CLOSE_ZONE_M`` (``OPEN_ZONE_M``) of the grasp (release) height and ``ZONE_XY_M`` of it in x and
y, with the yaw within ``ZONE_YAW_RAD``, the label is "close" ("open") while the last millimetres
of the descent finish. With a switch at the instant the descent converges (v3), a single image per
grasp, indistinguishable from the descent step before it, carried the "close" label; clones never
closed (measured: a v3 clone sat at the grasp pose, aligned, with the gripper open, for 30 steps).

Every action is a function of what the arm can see, never of the time spent in a segment: the
step towards the current waypoint is ``min(v_max, gain * distance)`` (at least ``MIN_STEP_M``,
never past the waypoint), from the *commanded* tool pose the environment integrates; a gripper
waypoint waits, with zero motion, while the fingers are visibly between open and closed on the
block, and is done as soon as they are there (v4 waited until they stopped moving, a velocity no
single image shows: its clones, holding the block, kept outputting the wait and never lifted).
A time-indexed profile (the minimum-jerk segments of format version 1) makes images at the start
of a segment, or during a fixed-length hold, carry several different labels; behaviour cloning then learns to stand still
there (measured: the arm of a policy trained on such data stalled at the start of segments).
"""

from __future__ import annotations

import math

import numpy as np

from sim.env import FINGER_OPEN_M
from sim.scene import BLOCK_HALF_M

__all__ = ["GRASP_YAWS", "ScriptedExpert", "commanded_yaw", "feedback_step", "finger_opening_m", "release_pose"]

HOVER_Z_M = 0.14  # travel height of the tool point
GRASP_Z_M = 0.05  # tool point height when grasping a block resting on the table
V_MAX_M = 0.02  # per control step (0.2 m/s at 10 Hz)
MIN_STEP_M = 0.004
GAIN = 0.5  # fraction of the remaining distance covered per step once within v_max / gain
YAW_MAX_RAD = 0.12
MIN_YAW_RAD = 0.02
MAX_STEPS_PER_WAYPOINT = 40  # a waypoint the workspace clip makes unreachable is given up
GRIP_HELD_MARGIN_M = 0.004  # a close is done once the opening is within this of the block's width
GRIP_OPENED_MARGIN_M = 0.002  # an open is done once the opening is within this of fully open
GRIP_MAX_STEPS = 8
PRE_GRASP_ABOVE_M = 0.035  # the fingertips clear the block's top here
TURN_BEFORE_LOW_RAD = 0.15
CLOSE_ZONE_M = 0.015
OPEN_ZONE_M = 0.008
ZONE_XY_M = 0.006
ZONE_YAW_RAD = 0.1


def feedback_step(err: np.ndarray | float, v_max: float, v_min: float, gain: float = GAIN):
    """Step towards a target ``err`` away: length ``min(|err|, max(v_min, min(v_max, gain |err|)))``."""
    e = np.atleast_1d(np.asarray(err, float))
    d = float(np.linalg.norm(e))
    if d == 0.0:
        return np.zeros_like(e) if np.ndim(err) else 0.0
    step = e / d * min(d, max(v_min, min(v_max, gain * d)))
    return step if np.ndim(err) else float(step[0])


def commanded_yaw(env) -> float:
    """Yaw of the commanded tool pose (``env.target_rot`` = Rz(yaw) @ R_DOWN: the tool's x axis is (cos yaw, sin yaw, 0))."""
    r = env.target_rot
    return math.atan2(r[1, 0], r[0, 0])


def finger_opening_m(env) -> float:
    return float(env.data.qpos[7] + env.data.qpos[8])


def release_pose(stages, index: int, st: dict, yaw: float) -> np.ndarray:
    """Tool point where stage ``index`` (place or stack) lets its block go, from the state ``st``: on the
    target block, or on the plate (with two place stages, the first and the second block side by side
    across the fingers, whose axis is at ``yaw``)."""
    verb, _, target = stages[index]
    if verb == "stack":
        t = st["blocks"][target]
        return np.array([t[0], t[1], t[2] + 2 * BLOCK_HALF_M + GRASP_Z_M - BLOCK_HALF_M + 0.006])
    plate = st["plate"]
    n_on = sum(1 for s in stages[:index] if s[0] == "place")
    across = np.array([math.cos(yaw), math.sin(yaw)])
    two = sum(1 for s in stages if s[0] == "place") > 1
    off = (-0.026 if n_on == 0 else 0.026) if two else 0.0
    xy = plate[:2] + off * across
    return np.array([xy[0], xy[1], 0.008 + GRASP_Z_M + 0.006])


def _yaw_of(quat) -> float:
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


GRASP_YAWS = {"fixed": "feedback-waypoints-v6", "block": "feedback-waypoints-v5"}  # grasp_yaw -> expert name


class ScriptedExpert:
    def __init__(self, env, patience: float = 1.0, grasp_yaw: str = "fixed"):
        """``patience`` (>= 1, may be inf) scales the steps after which a waypoint or a grip wait is
        given up. ``sim.collect --driver`` sets it to 1 / (the expert's share of the executed
        steps): giving up on a waypoint the driver never approached would label the states that
        follow with the next waypoint's action (a grasp in mid-air).

        ``grasp_yaw``: ``"fixed"`` (v6, the default) keeps the tool's yaw from the start of the
        episode and grasps a block at whatever yaw it lies; ``"block"`` (v5) turns to the block's
        faces on the way down (module doc)."""
        if not patience >= 1.0:
            raise ValueError(f"ScriptedExpert: patience expected >= 1, got {patience}")
        if grasp_yaw not in GRASP_YAWS:
            raise ValueError(f"ScriptedExpert: grasp_yaw expected one of {sorted(GRASP_YAWS)}, got {grasp_yaw!r}")
        self.env = env
        self.grasp_yaw = grasp_yaw
        self.max_wp_steps = MAX_STEPS_PER_WAYPOINT * patience
        self.max_grip_steps = GRIP_MAX_STEPS * patience

    def reset(self) -> None:
        self.started = False
        self.queue: list[tuple] = []
        self.stage = 0

    # planning -------------------------------------------------------------------------------
    def _move(self, target_xyz, target_yaw, grip: float, zone: tuple | None = None) -> None:
        """``zone``: ``(zone_m, grip)``, the gripper label within ``zone_m`` of the target (module doc)."""
        self.queue.append(("move", np.asarray(target_xyz, float), float(target_yaw), grip, zone))
        self.plan_yaw = float(target_yaw)

    def _grip(self, grip: float) -> None:
        self.queue.append(("grip", None, self.plan_yaw, grip, None))

    def _aligned_yaw(self, block: str) -> float:
        if self.grasp_yaw == "fixed":
            return self.plan_yaw
        a = self.env._block_qadr[block]
        theta = _yaw_of(self.env.data.qpos[a + 3 : a + 7])
        k = round((self.plan_yaw - theta) / (math.pi / 2))
        return theta + k * math.pi / 2

    def _plan_stage(self, index: int) -> None:
        verb, block, _ = self.env.task.stages[index]
        st = self.env.state()
        b = st["blocks"][block]
        yaw = self._aligned_yaw(block)
        self._move([b[0], b[1], HOVER_Z_M], self.plan_yaw, 1.0)  # travel without turning
        # down while turning, where the wrist camera sees the block; close in the zone
        self._move([b[0], b[1], GRASP_Z_M + b[2] - BLOCK_HALF_M], yaw, 1.0, (CLOSE_ZONE_M, 0.0))
        self._grip(0.0)
        if verb == "lift":
            self._move([b[0], b[1], 0.22], yaw, 0.0)
            return
        self._move([b[0], b[1], HOVER_Z_M + 0.01], yaw, 0.0)
        goal = release_pose(self.env.task.stages, index, st, yaw)
        self._move([goal[0], goal[1], HOVER_Z_M + 0.01], yaw, 0.0)
        self._move(goal, yaw, 0.0, (OPEN_ZONE_M, 1.0))
        self._grip(1.0)
        self._move([goal[0], goal[1], HOVER_Z_M + 0.02], yaw, 1.0)

    # policy ---------------------------------------------------------------------------------
    def _action(self):
        """The action for the head of the queue, or None when that waypoint is done."""
        kind, xyz, yaw, grip, zone = self.queue[0]
        self.wp_steps += 1
        if kind == "grip":
            opening = finger_opening_m(self.env)
            there = (opening >= 2 * FINGER_OPEN_M - GRIP_OPENED_MARGIN_M if grip > 0.5
                     else opening <= 2 * BLOCK_HALF_M + GRIP_HELD_MARGIN_M)
            if there or self.wp_steps > self.max_grip_steps:
                return None
            return np.array([0, 0, 0, 0, 0, 0, grip], float)
        dp = xyz - self.env.target_pos
        dyaw = (yaw - commanded_yaw(self.env) + math.pi) % (2 * math.pi) - math.pi
        if (np.linalg.norm(dp) < 1e-4 and abs(dyaw) < 1e-3) or self.wp_steps > self.max_wp_steps:
            return None
        if zone is not None:
            if abs(dyaw) > TURN_BEFORE_LOW_RAD:  # hold above the block until turned
                dp[2] = max(dp[2], xyz[2] + PRE_GRASP_ABOVE_M - self.env.target_pos[2])
            if abs(dp[2]) < zone[0] and np.linalg.norm(dp[:2]) < ZONE_XY_M and abs(dyaw) < ZONE_YAW_RAD:
                grip = zone[1]
        step = feedback_step(dp, V_MAX_M, MIN_STEP_M)
        ystep = feedback_step(dyaw, YAW_MAX_RAD, MIN_YAW_RAD)
        return np.concatenate([step, [0.0, 0.0, ystep, grip]])

    def infer(self, obs: dict) -> np.ndarray:
        if not self.started:  # first call of the episode: plan from the commanded pose
            self.started = True
            self.plan_yaw = commanded_yaw(self.env)
            self.wp_steps = 0
        while True:
            while not self.queue:
                stages = self.env.task.stages
                if self.stage >= len(stages):  # done: stay put with the last gripper state
                    return np.array([0, 0, 0, 0, 0, 0, 1.0 if stages[-1][0] != "lift" else 0.0], np.float32)
                self._plan_stage(self.stage)
                self.stage += 1
            a = self._action()
            if a is not None:
                return a.astype(np.float32)
            self.queue.pop(0)
            self.wp_steps = 0
