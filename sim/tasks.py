"""Four task suites mirroring LIBERO's (spatial, object, goal, long), with physics predicates.

A ``Task`` has an instruction, the blocks it places on the table, a goal as a list of
``(verb, block, target)`` stages (``place`` on the plate, ``stack`` on another block, ``lift``),
a layout sampler and a step budget. Success is decided by ``success(state)`` from the physics
state only (block and plate positions, finger contacts), never from the expert's bookkeeping.

"Left" and "right" are as seen in the front camera (image left is world -y); "front" is nearer
the camera (larger x). Layouts are sampled from a seeded ``numpy`` generator: the same seed
gives the same scene.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from sim.scene import BLOCK_HALF_M, PLATE_RADIUS_M

__all__ = ["Task", "SUITES", "get_task", "list_tasks", "stage_targets", "TaskError", "PLATE_TOP_M"]

PLATE_TOP_M = 0.008
X_RANGE_M = (0.38, 0.62)
Y_RANGE_M = (-0.22, 0.22)


class TaskError(ValueError):
    """An unknown suite, task or instruction; the message lists the valid ones."""


@dataclasses.dataclass(frozen=True)
class Task:
    suite: str
    name: str
    instruction: str
    blocks: tuple[str, ...]  # blocks on the table
    stages: tuple[tuple[str, str, str | None], ...]  # (verb, block, target) in order
    arrangement: str = "free"  # free, lr (side by side), fb (one behind the other)
    max_steps: int = 110  # control steps before the episode fails

    def layout(self, rng: np.random.Generator) -> dict:
        """Block poses ``{name: (x, y, yaw)}`` and the plate position ``(x, y)``."""
        for _ in range(1000):
            plate = np.array([rng.uniform(*X_RANGE_M), rng.uniform(*Y_RANGE_M)])
            pts = [plate]
            poses = {}
            ok = True
            order = list(self.blocks)
            if self.arrangement in ("lr", "fb"):
                c = np.array([rng.uniform(0.42, 0.58), rng.uniform(-0.12, 0.12)])
                gap = rng.uniform(0.13, 0.18)
                off = np.array([0.0, gap / 2]) if self.arrangement == "lr" else np.array([gap / 2, 0.0])
                cand = {order[0]: c - off, order[1]: c + off}  # [0]: left / back, [1]: right / front
                for name, xy in cand.items():
                    if np.linalg.norm(xy - plate) < 0.15:
                        ok = False
                    poses[name] = (float(xy[0]), float(xy[1]), float(rng.uniform(-0.5, 0.5)))
                pts += list(cand.values())
                if not ok:
                    continue
            else:
                for name in order:
                    for _ in range(200):
                        xy = np.array([rng.uniform(*X_RANGE_M), rng.uniform(*Y_RANGE_M)])
                        need = [0.15 if i == 0 else 0.09 for i in range(len(pts))]
                        if all(np.linalg.norm(xy - p) >= n for p, n in zip(pts, need)):
                            break
                    else:
                        ok = False
                        break
                    pts.append(xy)
                    poses[name] = (float(xy[0]), float(xy[1]), float(rng.uniform(-0.5, 0.5)))
            if ok:
                return {"blocks": poses, "plate": (float(plate[0]), float(plate[1]))}
        raise RuntimeError(f"{self.name}: could not sample a layout")

    def stage_done(self, stage, state: dict) -> bool:
        verb, block, target = stage
        p = state["blocks"][block]
        free = block not in state["held"]
        if verb == "lift":
            return p[2] > 0.10
        if verb == "place":
            d = np.linalg.norm(p[:2] - state["plate"][:2])
            return free and d < PLATE_RADIUS_M - 0.01 and abs(p[2] - (PLATE_TOP_M + BLOCK_HALF_M)) < 0.01
        if verb == "stack":
            q = state["blocks"][target]
            return (free and np.linalg.norm(p[:2] - q[:2]) < 0.025
                    and -0.006 < p[2] - q[2] - 2 * BLOCK_HALF_M < 0.012 and q[2] < 0.03)
        raise ValueError(f"unknown verb {verb!r}")

    def success(self, state: dict) -> bool:
        return all(self.stage_done(s, state) for s in self.stages)


def _t(suite, name, instr, blocks, stages, arrangement="free", max_steps=110):
    return Task(suite, name, instr, tuple(blocks), tuple(stages), arrangement, max_steps)


_PLACE = "pick up the {} block and place it on the plate"
SUITES: dict[str, tuple[Task, ...]] = {
    "spatial": (
        _t("spatial", "left", "pick up the left yellow block and place it on the plate", ["yellow_a", "yellow_b"],
           [("place", "yellow_a", None)], "lr"),
        _t("spatial", "right", "pick up the right yellow block and place it on the plate", ["yellow_a", "yellow_b"],
           [("place", "yellow_b", None)], "lr"),
        _t("spatial", "back", "pick up the back yellow block and place it on the plate", ["yellow_a", "yellow_b"],
           [("place", "yellow_a", None)], "fb"),
        _t("spatial", "front", "pick up the front yellow block and place it on the plate", ["yellow_a", "yellow_b"],
           [("place", "yellow_b", None)], "fb"),
    ),
    "object": tuple(
        _t("object", c, _PLACE.format(c.split("_")[0]), ["red", "green", "blue", "yellow_a"], [("place", c, None)])
        for c in ("red", "green", "blue", "yellow_a")
    ),
    "goal": (
        _t("goal", "red_on_plate", "put the red block on the plate", ["red", "blue"], [("place", "red", None)]),
        _t("goal", "blue_on_plate", "put the blue block on the plate", ["red", "blue"], [("place", "blue", None)]),
        _t("goal", "stack_red_on_blue", "stack the red block on the blue block", ["red", "blue"],
           [("stack", "red", "blue")]),
        _t("goal", "lift_blue", "lift the blue block", ["red", "blue"], [("lift", "blue", None)]),
    ),
    "long": (
        _t("long", "red_then_green", "put the red block on the plate and then put the green block on the plate",
           ["red", "green", "blue"], [("place", "red", None), ("place", "green", None)], max_steps=220),
        _t("long", "stack_then_green", "stack the blue block on the red block and then put the green block on the plate",
           ["red", "green", "blue"], [("stack", "blue", "red"), ("place", "green", None)], max_steps=220),
        _t("long", "green_then_stack", "put the green block on the plate and then stack the red block on the blue block",
           ["red", "green", "blue"], [("place", "green", None), ("stack", "red", "blue")], max_steps=220),
    ),
}


def stage_targets(task: Task, seed: int, gripper_labels) -> np.ndarray:
    """``[T, 4]`` float32, per step of a recorded episode of ``task`` from ``seed``: the x, y (m) of the
    block the stage in progress picks and of where it puts it (the plate's centre, the block it stacks
    on, or the block itself for a lift), from the seed's layout. The stage in progress is the number
    of releases so far (a gripper label going from close, < 0.5, to open), capped at the last stage.
    Training labels for an auxiliary loss only: a block's position is read where it started."""
    lay = task.layout(np.random.default_rng(int(seed)))
    blocks, plate = lay["blocks"], np.asarray(lay["plate"], np.float64)
    g = np.asarray(gripper_labels, np.float64) >= 0.5
    releases = np.cumsum(np.r_[False, g[1:] & ~g[:-1]])
    stage = np.minimum(releases, len(task.stages) - 1)
    out = np.zeros((g.shape[0], 4), np.float32)
    for k, (verb, block, target) in enumerate(task.stages):
        pick = np.asarray(blocks[block][:2])
        place = plate if verb == "place" else np.asarray(blocks[target][:2]) if verb == "stack" else pick
        out[stage == k] = np.r_[pick, place]
    return out


def list_tasks(suite: str | None = None) -> list[Task]:
    if suite is None or suite == "all":
        return [t for ts in SUITES.values() for t in ts]
    if suite not in SUITES:
        raise TaskError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)} (or 'all')")
    return list(SUITES[suite])


def get_task(suite: str, task: str | int) -> Task:
    tasks = list_tasks(suite)
    if isinstance(task, int) or (isinstance(task, str) and task.isdigit()):
        i = int(task)
        if not 0 <= i < len(tasks):
            raise TaskError(f"task index {i} out of range for suite {suite!r} (0..{len(tasks) - 1})")
        return tasks[i]
    for t in tasks:
        if task in (t.name, t.instruction):
            return t
    valid = "; ".join(f"{t.name}: '{t.instruction}'" for t in tasks)
    raise TaskError(f"unknown task or instruction {task!r} in suite {suite!r}; valid: {valid}")
