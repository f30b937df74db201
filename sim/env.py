"""``ArmEnv``: one task episode in the MuJoCo scene, driven by OpenVLA-form actions.

Contract:
- ``ArmEnv(suite, task, seed, image_size=64, start_jitter_m=0.0)``; ``reset() -> obs``;
  ``step(action) -> (obs, info)``.
- Each episode starts at ``HOME_Q``, or, with ``start_jitter_m > 0``, with the tool moved from home by
  a seeded uniform offset of up to that many metres in x and y and half of it in z (same orientation).
  The layout of a seed does not depend on the jitter. A policy cloned from home-start demonstrations
  can read its direction of travel off its own displacement from home instead of off the target;
  varied starts remove that shortcut.
- ``action = [dx, dy, dz, droll, dpitch, dyaw, gripper]``: end-effector deltas per control step in
  the arm's base frame (metres; radians, extrinsic X-Y-Z applied as ``R <- R(drpy) @ R``) and the
  gripper command (>= 0.5 open, < 0.5 close: OpenVLA's LIBERO dataset convention, 1 open 0 close).
  Deltas are added to the *commanded* tool pose (clipped to the workspace box), which
  ``edge.kinematics`` inverts to joint targets (joint-limited) for the position actuators; the
  physics then runs ``SUBSTEPS`` steps of 2 ms (control at ``CONTROL_HZ``), with gravity
  compensation as a real arm controller provides.
- ``obs``: ``image`` (front camera) and ``wrist_image`` uint8 HxWx3, ``joints`` [7], ``gripper``
  (finger opening, m), ``ee_pos`` [3], ``ee_rot`` [3, 3] (measured), ``instruction``.
- ``info``: ``success`` (the task's physics predicate), ``step``, ``done`` (success or budget).
- ``set_joint_targets(q, gripper_open)`` + ``physics_step(dt)`` is the joint-level interface the
  controller emulator's MuJoCo plant uses.
"""

from __future__ import annotations

import numpy as np

from sim.scene import BLOCK_HALF_M, BLOCKS, PARK_Z_M, set_gl_backend

set_gl_backend()

import mujoco  # noqa: E402

from edge.kinematics import ArmChain, axis_angle, rpy_to_rot  # noqa: E402
from sim.scene import build_model, make_renderer  # noqa: E402
from sim.tasks import Task, get_task  # noqa: E402

__all__ = ["ArmEnv", "CONTROL_HZ", "SUBSTEPS", "HOME_Q", "R_DOWN"]

CONTROL_HZ = 10
SUBSTEPS = 50  # x 2 ms
HOME_Q = np.array([0.0, -0.184, 0.0, -2.497, 0.0, 0.743, 0.0])
R_DOWN = axis_angle((1, 0, 0), np.pi)  # tool z pointing down, fingers opening along world y
WORKSPACE_M = np.array([[0.2, -0.4, 0.045], [0.8, 0.4, 0.45]])
MAX_DELTA_M = 0.05  # per control step, per axis
MAX_DELTA_RAD = 0.3
FINGER_OPEN_M = 0.04
MAX_START_JITTER_M = 0.15


def _add_wrist_camera(xml: str):
    spec = mujoco.MjSpec.from_string(xml)
    hand = spec.body("panda0_link7")
    c, s = np.cos(-np.pi / 4), np.sin(-np.pi / 4)
    side = np.array([c, s, 0.0])  # the tool's x axis in link7: across the fingers' opening direction
    cam = hand.add_camera()
    cam.name = "wrist"
    cam.pos = (0.075 * side + np.array([0, 0, 0.09])).tolist()
    # look along +z (the fingers), tilted towards the grasp point
    tilt = axis_angle(np.cross([0, 0, 1], side), -0.45)
    R = tilt @ axis_angle((1, 0, 0), np.pi) @ axis_angle((0, 0, 1), -np.pi / 4 + np.pi / 2)
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, R.reshape(-1))
    cam.quat = q.tolist()
    cam.fovy = 75
    return spec.compile()


class ArmEnv:
    def __init__(self, suite: str, task: str | int, seed: int, image_size: int = 64, render: bool = True,
                 start_jitter_m: float = 0.0):
        self.task: Task = get_task(suite, task)
        self.seed = int(seed)
        if not 0.0 <= start_jitter_m <= MAX_START_JITTER_M:
            raise ValueError(f"start_jitter_m: expected 0..{MAX_START_JITTER_M} m, got {start_jitter_m}")
        self.start_jitter_m = float(start_jitter_m)
        self.image_size = int(image_size)
        from sim.scene import scene_xml

        self.model = _add_wrist_camera(scene_xml())
        self.model.vis.global_.offwidth = self.model.vis.global_.offheight = max(self.image_size, 64)
        self.data = mujoco.MjData(self.model)
        self.chain = ArmChain.load()
        self.renderer = make_renderer(self.model, self.image_size) if render else None
        self._site = self.model.site("end_effector").id
        self._block_qadr = {n: int(self.model.jnt_qposadr[self.model.joint(f"block_{n}").id]) for n in BLOCKS}
        self._block_geom = {n: self.model.geom(f"block_{n}").id for n in BLOCKS}
        self._finger_bodies = {self.model.body("panda0_leftfinger").id, self.model.body("panda0_rightfinger").id}
        self.step_count = 0

    # --- episode -------------------------------------------------------------------------
    def reset(self) -> dict:
        rng = np.random.default_rng(self.seed)
        lay = self.task.layout(rng)
        mujoco.mj_resetData(self.model, self.data)
        for i, n in enumerate(BLOCKS):
            a = self._block_qadr[n]
            if n in lay["blocks"]:
                x, y, yaw = lay["blocks"][n]
                self.data.qpos[a : a + 3] = (x, y, BLOCK_HALF_M + 0.001)
                self.data.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0, 0, np.sin(yaw / 2))
            else:
                self.data.qpos[a : a + 3] = (-0.2 - 0.1 * i, 0.0, PARK_Z_M)
                self.data.qpos[a + 3 : a + 7] = (1, 0, 0, 0)
        self.data.mocap_pos[0] = (lay["plate"][0], lay["plate"][1], 0.004)
        self.layout = lay
        self.q_cmd = HOME_Q.copy()
        if self.start_jitter_m > 0:  # drawn after the layout, so a seed's layout is the same with or without
            p0, r0 = self.chain.fk(HOME_Q)
            off = rng.uniform(-1.0, 1.0, 3) * self.start_jitter_m * np.array([1.0, 1.0, 0.5])
            self.q_cmd, _ = self.chain.ik(np.clip(p0 + off, *WORKSPACE_M), r0, HOME_Q, max_iters=100)
        self.data.qpos[:7] = self.q_cmd
        self.data.qpos[7:9] = FINGER_OPEN_M
        self.target_pos, self.target_rot = self.chain.fk(self.q_cmd)
        self.gripper_open = True
        self._apply_ctrl()
        mujoco.mj_forward(self.model, self.data)
        for _ in range(25):  # let the blocks settle
            self._substep()
        self.step_count = 0
        return self.observe()

    def step(self, action) -> tuple[dict, dict]:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action: expected 7 finite values [dx, dy, dz, droll, dpitch, dyaw, gripper], got {action!r}")
        self.target_pos = np.clip(self.target_pos + np.clip(a[:3], -MAX_DELTA_M, MAX_DELTA_M), *WORKSPACE_M)
        self.target_rot = rpy_to_rot(np.clip(a[3:6], -MAX_DELTA_RAD, MAX_DELTA_RAD)) @ self.target_rot
        q, _ = self.chain.ik(self.target_pos, self.target_rot, self.q_cmd, max_iters=30)
        self.q_cmd = q
        self.gripper_open = bool(a[6] >= 0.5)
        self._apply_ctrl()
        for _ in range(SUBSTEPS):
            self._substep()
        self.step_count += 1
        success = self.task.success(self.state())
        info = {"success": success, "step": self.step_count,
                "done": success or self.step_count >= self.task.max_steps}
        return self.observe(), info

    # --- joint-level interface (controller emulator plant) --------------------------------
    def set_joint_targets(self, q: np.ndarray, gripper_open: bool = True) -> None:
        self.q_cmd = self.chain.clip(np.asarray(q, float))
        self.gripper_open = gripper_open
        self._apply_ctrl()

    def physics_step(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(max(1, int(round(dt_s / self.model.opt.timestep)))):
            self._substep()
        return self.data.qpos[:7].copy(), self.data.qvel[:7].copy()

    # --- internals -------------------------------------------------------------------------
    def _apply_ctrl(self) -> None:
        self.data.ctrl[:7] = self.q_cmd
        self.data.ctrl[7:9] = FINGER_OPEN_M if self.gripper_open else 0.0

    def _substep(self) -> None:
        self.data.qfrc_applied[:7] = self.data.qfrc_bias[:7]  # gravity and Coriolis compensation
        mujoco.mj_step(self.model, self.data)

    def state(self) -> dict:
        blocks = {n: self.data.qpos[a : a + 3].copy() for n, a in self._block_qadr.items()}
        held = set()
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            b1, b2 = self.model.geom_bodyid[c.geom1], self.model.geom_bodyid[c.geom2]
            for n, g in self._block_geom.items():
                if (c.geom1 == g and b2 in self._finger_bodies) or (c.geom2 == g and b1 in self._finger_bodies):
                    held.add(n)
        return {"blocks": blocks, "plate": self.data.mocap_pos[0].copy(), "held": held,
                "ee_pos": self.data.site_xpos[self._site].copy()}

    def render(self, camera: str) -> np.ndarray:
        self.renderer.update_scene(self.data, camera)
        return self.renderer.render().copy()

    def observe(self) -> dict:
        obs = {"joints": self.data.qpos[:7].copy(), "gripper": float(self.data.qpos[7] + self.data.qpos[8]),
               "ee_pos": self.data.site_xpos[self._site].copy(),
               "ee_rot": self.data.site_xmat[self._site].reshape(3, 3).copy(),
               "instruction": self.task.instruction}
        if self.renderer is not None:
            obs["image"] = self.render("front")
            obs["wrist_image"] = self.render("wrist")
        return obs

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
