"""Serial-arm kinematics in numpy: forward kinematics, geometric Jacobian, damped-least-squares IK.

Contract:
- ``ArmChain.load(path)`` reads a chain description (YAML, generated from the arm's MJCF by
  ``python -m sim.arm_description``): per revolute joint the fixed transform of its body
  relative to the parent (``pos`` metres, ``quat`` w-x-y-z), the joint ``axis`` in that body's
  frame and its ``range_rad``; then the ``tool`` frame (position and quaternion in the last
  body). Everything is expressed in the arm's base frame.
- ``fk(q) -> (pos[3], rot[3, 3])`` of the tool frame; ``jacobian(q) -> [6, n]`` (linear rows
  first, angular rows second, both in the base frame).
- ``ik(target_pos, target_rot, q_init) -> (q, IKInfo)``: damped least squares with joint-limit
  clamping, at most ``max_iters`` iterations; ``IKInfo`` says whether both tolerances were met
  and what the residuals are. It never returns a ``q`` outside the joint limits.
- ``rpy_to_rot`` / ``rot_to_rpy`` (extrinsic X-Y-Z, i.e. ``R = Rz @ Ry @ Rx``) and
  ``small_rotation(drpy)`` for the action convention ``[droll, dpitch, dyaw]``.

No MuJoCo, no torch: the robot runtime imports this module.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import yaml

__all__ = ["ArmChain", "IKInfo", "quat_to_rot", "rpy_to_rot", "rot_to_rpy", "axis_angle", "rot_error",
           "DEFAULT_CHAIN"]

DEFAULT_CHAIN = Path(__file__).resolve().parent / "data" / "panda.yaml"


def quat_to_rot(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def axis_angle(axis, angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * (K @ K)


def rpy_to_rot(rpy) -> np.ndarray:
    r, p, y = rpy
    return axis_angle((0, 0, 1), y) @ axis_angle((0, 1, 0), p) @ axis_angle((1, 0, 0), r)


def rot_to_rpy(R: np.ndarray) -> np.ndarray:
    p = -np.arcsin(np.clip(R[2, 0], -1.0, 1.0))
    r = np.arctan2(R[2, 1], R[2, 2])
    y = np.arctan2(R[1, 0], R[0, 0])
    return np.array([r, p, y])


def rot_error(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, base frame) taking ``R`` to ``R_target``."""
    E = R_target @ R.T
    cos = np.clip((np.trace(E) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    v = np.array([E[2, 1] - E[1, 2], E[0, 2] - E[2, 0], E[1, 0] - E[0, 1]])
    if angle < 1e-9:
        return 0.5 * v
    if np.pi - angle < 1e-6:  # near pi: axis from the symmetric part
        axis = np.sqrt(np.maximum((np.diag(E) + 1) / 2, 0))
        return axis * angle
    return v * angle / (2 * np.sin(angle))


@dataclasses.dataclass(frozen=True)
class IKInfo:
    converged: bool  # both tolerances met
    iterations: int
    pos_err_m: float  # final position error
    rot_err_rad: float  # final orientation error


class ArmChain:
    def __init__(self, links: list[dict], tool: dict, name: str = "arm"):
        self.name = name
        self.pos = [np.asarray(l["pos"], float) for l in links]
        self.rot = [quat_to_rot(l["quat"]) for l in links]
        self.axis = [np.asarray(l["axis"], float) / np.linalg.norm(l["axis"]) for l in links]
        self.lower = np.array([l["range_rad"][0] for l in links], float)
        self.upper = np.array([l["range_rad"][1] for l in links], float)
        self.tool_pos = np.asarray(tool["pos"], float)
        self.tool_rot = quat_to_rot(tool["quat"])
        self.n = len(links)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_CHAIN) -> "ArmChain":
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: arm chain description not found (python -m sim.arm_description)") from None
        for key in ("links", "tool"):
            if key not in d:
                raise ValueError(f"{path}: missing field '{key}'")
        for i, l in enumerate(d["links"]):
            for key in ("pos", "quat", "axis", "range_rad"):
                if key not in l:
                    raise ValueError(f"{path}: links[{i}]: missing field '{key}'")
        return cls(d["links"], d["tool"], d.get("name", path.stem))

    def clip(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q, self.lower, self.upper)

    def _frames(self, q):
        R, p = np.eye(3), np.zeros(3)
        axes, origins = [], []
        for i in range(self.n):
            p = p + R @ self.pos[i]
            R = R @ self.rot[i]
            axes.append(R @ self.axis[i])
            origins.append(p.copy())
            R = R @ axis_angle(self.axis[i], q[i])
        tool_p = p + R @ self.tool_pos
        return tool_p, R @ self.tool_rot, axes, origins

    def fk(self, q) -> tuple[np.ndarray, np.ndarray]:
        p, R, _, _ = self._frames(np.asarray(q, float))
        return p, R

    def jacobian(self, q) -> np.ndarray:
        p, _, axes, origins = self._frames(np.asarray(q, float))
        J = np.zeros((6, self.n))
        for i, (a, o) in enumerate(zip(axes, origins)):
            J[:3, i] = np.cross(a, p - o)
            J[3:, i] = a
        return J

    def ik(self, target_pos, target_rot, q_init, pos_tol_m: float = 1e-4, rot_tol_rad: float = 1e-3,
           max_iters: int = 100, damping: float = 1e-2, rot_weight: float = 0.5,
           nullspace_gain: float = 0.0, q_rest=None) -> tuple[np.ndarray, IKInfo]:
        q = self.clip(np.asarray(q_init, float).copy())
        target_pos = np.asarray(target_pos, float)
        W = np.diag([1, 1, 1, rot_weight, rot_weight, rot_weight])
        pe = re = np.inf
        for it in range(1, max_iters + 1):
            p, R, axes, origins = self._frames(q)
            e_p = target_pos - p
            e_r = rot_error(target_rot, R)
            pe, re = float(np.linalg.norm(e_p)), float(np.linalg.norm(e_r))
            if pe < pos_tol_m and re < rot_tol_rad:
                return q, IKInfo(True, it - 1, pe, re)
            J = np.zeros((6, self.n))
            for i, (a, o) in enumerate(zip(axes, origins)):
                J[:3, i] = np.cross(a, p - o)
                J[3:, i] = a
            JW = W @ J
            e = W @ np.concatenate([e_p, e_r])
            dq = JW.T @ np.linalg.solve(JW @ JW.T + damping**2 * np.eye(6), e)
            if nullspace_gain and q_rest is not None:
                N = np.eye(self.n) - np.linalg.pinv(JW) @ JW
                dq = dq + nullspace_gain * N @ (np.asarray(q_rest) - q)
            q = self.clip(q + dq)
        p, R = self.fk(q)
        pe, re = float(np.linalg.norm(target_pos - p)), float(np.linalg.norm(rot_error(target_rot, R)))
        return q, IKInfo(pe < pos_tol_m and re < rot_tol_rad, max_iters, pe, re)
