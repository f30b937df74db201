"""Reactive expert: the scripted expert's motions, chosen every step from the world's current state.

``ScriptedExpert`` plans a stage's waypoints once, from the state at the stage's start, and follows
them in order. That is right for demonstrations, where it moves the arm itself. Under a driver
(``sim.collect --driver``, DAgger) its label of a state depends on the waypoints it has passed, not
only on the state: a block the driver knocked or carried off keeps its planned position, a grasp
the driver interrupted is waited for until the give-up limit. DAgger assumes the expert's label is
a function of the state alone; this expert's is. Measured with artifact v3 driving 75% of the steps
(``sim.collect --suite all --episodes 50 --seed-start 40000 --start-jitter-m 0.08 --driver-share
0.75``): the planning expert's quarter of the steps brought 27 of 200 episodes to success, this
one's 186.

``ReactiveExpert(env)`` has the same interface and the same motion primitives (``feedback_step``
towards a target from the commanded tool pose, the gripper zones, the grip waits) but no queue.
Each step it takes the first stage of the task that is not done (``Task.stage_done``) and reads
the phase from the state:

- the named block not grasped: fingers not open and not closing on it -> open, standing still;
  tool low (more than ``LOW_M`` below travel height) and more than ``FAR_XY_M`` off the block in
  x/y -> straight up; off by more than ``ZONE_XY_M`` -> to the block (above it at travel height,
  or level when low); else down to the grasp height, "close" in the zone; touching the block
  while the fingers close -> wait;
- grasped: ``lift`` -> up; otherwise the goal (the plate, beside an earlier block, or on the
  target block, as ``ScriptedExpert``): low and far from it -> straight up, then over it at
  travel height, then down, "open" in the zone;
- the block where the stage wants it but still touched by a finger (a release under way) -> open,
  standing still;
- every stage done: straight up to travel height, then stand still with the last gripper label.

Only ``grasp_yaw="fixed"`` (expert v6): the tool keeps its start yaw.
"""

from __future__ import annotations

import math

import numpy as np

from sim.env import FINGER_OPEN_M
from sim.expert import (CLOSE_ZONE_M, GRASP_Z_M, GRIP_HELD_MARGIN_M, GRIP_OPENED_MARGIN_M, HOVER_Z_M, MIN_STEP_M,
                        MIN_YAW_RAD, OPEN_ZONE_M, V_MAX_M, YAW_MAX_RAD, ZONE_XY_M, commanded_yaw, feedback_step,
                        finger_opening_m, release_pose)
from sim.scene import BLOCK_HALF_M

__all__ = ["ReactiveExpert"]

LOW_M = 0.03  # below travel height by more than this, the tool first rises before travelling
FAR_XY_M = 0.02  # ... when it is farther than this from where it goes down
GRASPED_OPENING_M = 2 * BLOCK_HALF_M + 0.01  # fingers in contact and at most this open: the block is held


class ReactiveExpert:
    def __init__(self, env):
        self.env = env

    def reset(self) -> None:
        self.started = False

    # motion ---------------------------------------------------------------------------------
    def _toward(self, target, grip: float, zone: tuple | None = None) -> np.ndarray:
        dp = np.asarray(target, float) - self.env.target_pos
        if zone is not None and abs(dp[2]) < zone[0] and np.linalg.norm(dp[:2]) < ZONE_XY_M:
            grip = zone[1]
        dyaw = (self.plan_yaw - commanded_yaw(self.env) + math.pi) % (2 * math.pi) - math.pi
        step = feedback_step(dp, V_MAX_M, MIN_STEP_M) if np.linalg.norm(dp) >= 1e-4 else np.zeros(3)
        ystep = feedback_step(dyaw, YAW_MAX_RAD, MIN_YAW_RAD) if abs(dyaw) >= 1e-3 else 0.0
        return np.concatenate([step, [0.0, 0.0, ystep, grip]])

    def _over(self, xyz_down, travel_z: float, grip: float, zone: tuple) -> np.ndarray:
        """Towards ``xyz_down`` from above: up first when low and far, over it, then down."""
        pos = self.env.target_pos
        dxy = float(np.linalg.norm(pos[:2] - xyz_down[:2]))
        if dxy > FAR_XY_M and pos[2] < travel_z - LOW_M:
            return self._toward([pos[0], pos[1], travel_z], grip)
        if dxy > ZONE_XY_M:
            return self._toward([xyz_down[0], xyz_down[1], max(pos[2], travel_z) if dxy > FAR_XY_M else pos[2]], grip)
        return self._toward(xyz_down, grip, zone)

    def _stand(self, grip: float) -> np.ndarray:
        return np.array([0, 0, 0, 0, 0, 0, grip], float)

    def infer(self, obs: dict) -> np.ndarray:
        if not self.started:
            self.started = True
            self.plan_yaw = commanded_yaw(self.env)
        return self._label().astype(np.float32)

    def _label(self) -> np.ndarray:
        env, st = self.env, self.env.state()
        stages = env.task.stages
        todo = [i for i, s in enumerate(stages) if not env.task.stage_done(s, st)]
        opening = finger_opening_m(self.env)
        pos = env.target_pos
        if not todo:
            grip = 0.0 if stages[-1][0] == "lift" else 1.0
            if grip > 0.5 and pos[2] < HOVER_Z_M + 0.02 - 1e-3:
                return self._toward([pos[0], pos[1], HOVER_Z_M + 0.02], grip)
            return self._stand(grip)
        i = todo[0]
        verb, block, _ = stages[i]
        b = st["blocks"][block]
        touching = block in st["held"]
        if touching and env.task.stage_done(stages[i], {**st, "held": st["held"] - {block}}):
            return self._stand(1.0)  # released where it belongs: open until the fingers let go
        if not (touching and opening <= GRASPED_OPENING_M):  # the named block is not in the hand
            grasp = np.array([b[0], b[1], GRASP_Z_M + b[2] - BLOCK_HALF_M])
            at_grasp = (np.linalg.norm(pos[:2] - grasp[:2]) < FAR_XY_M and abs(pos[2] - grasp[2]) < CLOSE_ZONE_M)
            if touching and at_grasp:  # closing on it (the jaws may turn and shift it): wait for the fingers
                return self._stand(0.0)
            if opening < 2 * FINGER_OPEN_M - GRIP_OPENED_MARGIN_M and not at_grasp:
                return self._stand(1.0)  # closed on nothing (or on another block): open first
            return self._over(grasp, HOVER_Z_M, 1.0, (CLOSE_ZONE_M, 0.0))
        if opening > 2 * BLOCK_HALF_M + GRIP_HELD_MARGIN_M and pos[2] < b[2] + 0.02:
            return self._stand(0.0)  # still closing on the block
        if verb == "lift":
            return self._toward([pos[0], pos[1], 0.22], 0.0)
        goal = release_pose(stages, i, st, self.plan_yaw)
        return self._over(goal, HOVER_Z_M + 0.01, 0.0, (OPEN_ZONE_M, 1.0))
