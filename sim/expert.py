"""Scripted expert: minimum-jerk end-effector motions with a parallel gripper.

``ScriptedExpert(env)`` is a policy (``reset()``, ``infer(obs) -> action``) with privileged access
to the simulator's state (block and plate positions). For each stage of the task (place, stack,
lift) it plans, from the state at the start of the stage, a sequence of segments: above the
block with the yaw aligned to its faces, down, close, up, above the target, down, open, up.
Each motion segment follows the minimum-jerk profile ``s(t) = 10 t^3 - 15 t^4 + 6 t^5`` from the
commanded pose to the waypoint, so the emitted actions (deltas of the commanded pose) are smooth.
"""

from __future__ import annotations

import math

import numpy as np

from sim.scene import BLOCK_HALF_M

__all__ = ["ScriptedExpert", "min_jerk"]

HOVER_Z_M = 0.14  # travel height of the tool point
GRASP_Z_M = 0.05  # tool point height when grasping a block resting on the table
SPEED_M_PER_STEP = 0.016  # average speed of a segment
YAW_RAD_PER_STEP = 0.12


def min_jerk(n: int) -> np.ndarray:
    """Cumulative progress ``s(k / n)`` for k = 1..n (ends at exactly 1)."""
    t = np.arange(1, n + 1) / n
    return 10 * t**3 - 15 * t**4 + 6 * t**5


def _yaw_of(quat) -> float:
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class ScriptedExpert:
    def __init__(self, env):
        self.env = env

    def reset(self) -> None:
        self.pos = None
        self.queue: list[np.ndarray] = []
        self.stage = 0

    # planning -------------------------------------------------------------------------------
    def _move(self, target_xyz, target_yaw, grip: float, min_steps: int = 3) -> None:
        start, yaw0 = self.plan_pos.copy(), self.plan_yaw
        d = np.linalg.norm(np.asarray(target_xyz) - start)
        n = max(min_steps, math.ceil(d / SPEED_M_PER_STEP), math.ceil(abs(target_yaw - yaw0) / YAW_RAD_PER_STEP))
        prev_p, prev_y = start, yaw0
        for s in min_jerk(n):
            p = start + (np.asarray(target_xyz) - start) * s
            y = yaw0 + (target_yaw - yaw0) * s
            self.queue.append(np.concatenate([p - prev_p, [0.0, 0.0, y - prev_y, grip]]))
            prev_p, prev_y = p, y
        self.plan_pos, self.plan_yaw = np.asarray(target_xyz, float), target_yaw

    def _hold(self, n: int, grip: float) -> None:
        self.queue += [np.array([0, 0, 0, 0, 0, 0, grip], float)] * n

    def _aligned_yaw(self, block: str) -> float:
        a = self.env._block_qadr[block]
        theta = _yaw_of(self.env.data.qpos[a + 3 : a + 7])
        k = round((self.plan_yaw - theta) / (math.pi / 2))
        return theta + k * math.pi / 2

    def _plan_stage(self, stage) -> None:
        verb, block, target = stage
        st = self.env.state()
        b = st["blocks"][block]
        yaw = self._aligned_yaw(block)
        self._move([b[0], b[1], HOVER_Z_M], yaw, 1.0)
        self._move([b[0], b[1], GRASP_Z_M + b[2] - BLOCK_HALF_M], yaw, 1.0)
        self._hold(4, 0.0)
        if verb == "lift":
            self._move([b[0], b[1], 0.22], yaw, 0.0, min_steps=6)
            self._hold(6, 0.0)
            return
        self._move([b[0], b[1], HOVER_Z_M + 0.01], yaw, 0.0, min_steps=5)
        if verb == "stack":
            t = st["blocks"][target]
            goal = np.array([t[0], t[1], t[2] + 2 * BLOCK_HALF_M + GRASP_Z_M - BLOCK_HALF_M + 0.006])
        else:  # place on the plate; a second block goes beside the first, across the fingers
            plate = st["plate"]
            n_on = sum(1 for v in self.placed if v)
            across = np.array([math.cos(yaw), math.sin(yaw)])
            two = sum(1 for s in self.env.task.stages if s[0] == "place") > 1
            off = (-0.026 if n_on == 0 else 0.026) if two else 0.0
            xy = plate[:2] + off * across
            goal = np.array([xy[0], xy[1], 0.008 + GRASP_Z_M + 0.006])
        self._move([goal[0], goal[1], HOVER_Z_M + 0.01], yaw, 0.0)
        self._move(goal, yaw, 0.0, min_steps=4)
        self._hold(3, 1.0)
        self._move([goal[0], goal[1], HOVER_Z_M + 0.02], yaw, 1.0, min_steps=4)
        self.placed.append(verb == "place")

    # policy ---------------------------------------------------------------------------------
    def infer(self, obs: dict) -> np.ndarray:
        if self.pos is None:  # first call of the episode: start from the commanded pose
            self.pos = True
            self.plan_pos = self.env.target_pos.copy()
            self.plan_yaw = 0.0
            self.placed: list[bool] = []
        while not self.queue:
            stages = self.env.task.stages
            if self.stage >= len(stages):
                self._hold(1, 1.0 if stages[-1][0] != "lift" else 0.0)
                break
            self._plan_stage(stages[self.stage])
            self.stage += 1
        return self.queue.pop(0).astype(np.float32)
