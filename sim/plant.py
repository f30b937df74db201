"""The MuJoCo arm as a plant for the controller emulator (``--plant sim.plant:make_plant``).

``MujocoPlant`` has ``reset(q0)`` and ``step(targets, dt) -> (q, qd)``: joint position targets go
to the arm's position actuators (gravity compensated, as a real controller does) and the physics
advances by ``dt`` seconds. ``gripper_open`` is set through ``set_gripper``. The scene is the
reference world's, with the blocks of ``suite``/``task`` laid out from ``seed``.
"""

from __future__ import annotations

import numpy as np

from sim.env import ArmEnv

__all__ = ["MujocoPlant", "make_plant"]


class MujocoPlant:
    def __init__(self, suite: str = "object", task: str | int = 0, seed: int = 0):
        self.env = ArmEnv(suite, task, seed, render=False)
        self.env.reset()
        self.n_joints = 7

    def reset(self, q0) -> None:
        self.env.reset()
        self.env.data.qpos[:7] = np.asarray(q0, float)
        self.env.set_joint_targets(np.asarray(q0, float), self.env.gripper_open)

    def set_gripper(self, open_: bool) -> None:
        self.env.set_joint_targets(self.env.q_cmd, open_)

    def gripper_opening_m(self) -> float:
        """Measured finger opening (the dataset's ``gripper``), reported in the emulator's state."""
        return float(self.env.data.qpos[7] + self.env.data.qpos[8])

    def step(self, targets, dt: float) -> tuple[np.ndarray, np.ndarray]:
        self.env.set_joint_targets(np.asarray(targets, float), self.env.gripper_open)
        return self.env.physics_step(dt)


def make_plant(**kwargs) -> MujocoPlant:
    return MujocoPlant(**kwargs)
