"""Safety limits applied to every joint command before it leaves the process (pure functions).

``clamp_command(target, prev, prev_vel, dt_s, limits, fk) -> (safe, report)``:

1. NaN/inf guard: a non-finite target is replaced by the previous command (hold) and reported.
2. Position limits: targets are clipped into ``[lower + margin, upper - margin]``.
3. Maximum step per command: ``|safe - prev| <= max_step_rad``.
4. Velocity limit: ``|safe - prev| / dt <= max_vel_rad_s``.
5. Braking: near a position limit the velocity is capped at ``sqrt(2 a d)`` (d: distance left),
   so the joint can stop at the limit; the acceleration limit then bounds the change of the
   implied velocity to ``max_acc_rad_s2 * dt``. Where both cannot hold (a joint already too fast
   at its limit), the position limit wins and the report says so.
6. Workspace box: when a forward-kinematics callable ``fk(q) -> (x, y, z)`` is given, a command
   whose tool point leaves the box is not sent as is: the previous command is held (the arm
   stops where it is, inside the box) and reported. Without ``fk`` the check is skipped.

The report lists which limits fired, so the caller can count clamps. ``ArmLimits.panda()`` holds
the Franka Panda's published joint limits.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

__all__ = ["ArmLimits", "ClampReport", "clamp_command"]


@dataclasses.dataclass(frozen=True)
class ArmLimits:
    lower_rad: tuple[float, ...]  # joint position lower limits
    upper_rad: tuple[float, ...]  # joint position upper limits
    max_vel_rad_s: tuple[float, ...]  # joint velocity limits
    max_acc_rad_s2: tuple[float, ...]  # joint acceleration limits
    max_step_rad: float = 0.2  # largest change of a target between two commands
    margin_rad: float = 0.01  # keep targets this far inside the position limits
    workspace_min_m: tuple[float, float, float] = (0.15, -0.5, 0.02)  # tool point box, base frame
    workspace_max_m: tuple[float, float, float] = (0.85, 0.5, 0.7)
    gripper_max_m: float = 0.04  # widest gripper opening command

    def __post_init__(self):
        n = len(self.lower_rad)
        for f in ("upper_rad", "max_vel_rad_s", "max_acc_rad_s2"):
            if len(getattr(self, f)) != n:
                raise ValueError(f"ArmLimits.{f}: expected {n} values (as lower_rad), got {len(getattr(self, f))}")
        if any(lo >= hi for lo, hi in zip(self.lower_rad, self.upper_rad)):
            raise ValueError("ArmLimits: every lower_rad must be below its upper_rad")

    @property
    def n_joints(self) -> int:
        return len(self.lower_rad)

    @classmethod
    def panda(cls, **kw) -> "ArmLimits":
        return cls(
            lower_rad=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
            upper_rad=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
            max_vel_rad_s=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
            max_acc_rad_s2=(15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0),
            **kw,
        )


@dataclasses.dataclass(frozen=True)
class ClampReport:
    non_finite: bool = False
    position: bool = False
    step: bool = False
    velocity: bool = False
    acceleration: bool = False
    workspace: bool = False

    @property
    def fired(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]


def clamp_command(target, prev, prev_vel, dt_s: float, limits: ArmLimits,
                  fk: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> tuple[np.ndarray, ClampReport]:
    prev = np.asarray(prev, dtype=np.float64)
    prev_vel = np.asarray(prev_vel, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if t.shape != prev.shape:
        raise ValueError(f"joint target: expected {prev.shape[0]} values, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        return prev.copy(), ClampReport(non_finite=True)
    lo = np.asarray(limits.lower_rad) + limits.margin_rad
    hi = np.asarray(limits.upper_rad) - limits.margin_rad
    pos = np.clip(t, lo, hi)
    flags = {"position": bool(np.any(pos != t))}
    step = np.clip(pos - prev, -limits.max_step_rad, limits.max_step_rad)
    flags["step"] = bool(np.any(step != pos - prev))
    dt = max(dt_s, 1e-4)
    vmax = np.asarray(limits.max_vel_rad_s)
    vel = np.clip(step / dt, -vmax, vmax)
    flags["velocity"] = bool(np.any(np.abs(step / dt) > vmax + 1e-12))
    acc = np.asarray(limits.max_acc_rad_s2)
    # brake before a position limit: never faster than the speed that can stop within the distance
    v_hi = np.sqrt(2 * acc * np.maximum(hi - prev, 0.0))
    v_lo = -np.sqrt(2 * acc * np.maximum(prev - lo, 0.0))
    braked = np.clip(vel, v_lo, v_hi)
    flags["position"] |= bool(np.any(braked != vel))
    amax = acc * dt
    vel_a = np.clip(braked, prev_vel - amax, prev_vel + amax)
    flags["acceleration"] = bool(np.any(vel_a != vel))
    unclipped = prev + vel_a * dt
    safe = np.clip(unclipped, lo, hi)
    flags["position"] |= bool(np.any(safe != unclipped))
    if fk is not None:
        p = np.asarray(fk(safe), dtype=np.float64)
        if np.any(p < np.asarray(limits.workspace_min_m)) or np.any(p > np.asarray(limits.workspace_max_m)):
            return prev.copy(), ClampReport(workspace=True, **{k: v for k, v in flags.items()})
    return safe, ClampReport(**flags)
