"""Run one episode: ``run_episode(env, policy, record=False) -> result``.

The policy has ``reset()`` and ``infer(obs)`` returning an action or ``(action, stats)``. The
episode ends on success or when the task's step budget runs out. With ``record=True`` the result
carries the per-step arrays of the dataset format (observation before each action, the action).
``exec_noise(action) -> action`` (DART-style data collection) perturbs, or with
``sim.collect --driver`` replaces, the action the environment executes; the recorded action stays the policy's, so a feedback expert's labels show how to
recover from the perturbed states a learned policy will visit.
``episode_plan(suite, n, seed_start)`` lists ``(suite, task, seed)`` deterministically: tasks in
turn within a suite, seeds consecutive.
"""

from __future__ import annotations

import time

import numpy as np

from sim.tasks import SUITES, list_tasks

__all__ = ["run_episode", "episode_plan"]

RECORD_KEYS = ("image", "wrist_image", "joints", "gripper", "ee_pos")


def episode_plan(suite: str, n: int, seed_start: int) -> list[tuple[str, str, int]]:
    suites = list(SUITES) if suite == "all" else [suite]
    plan = []
    for s in suites:
        tasks = list_tasks(s)
        for i in range(n):
            plan.append((s, tasks[i % len(tasks)].name, seed_start + i))
    return plan


def run_episode(env, policy, record: bool = False, exec_noise=None) -> dict:
    obs = env.reset()
    policy.reset()
    steps: dict[str, list] = {k: [] for k in RECORD_KEYS + ("action", "timestamp")} if record else {}
    stats, info = [], {"success": False, "step": 0}
    t0 = time.monotonic()
    for _ in range(env.task.max_steps):
        out = policy.infer(obs)
        action, st = out if isinstance(out, tuple) else (out, None)
        if st is not None:
            stats.append(st)
        if record:
            for k in RECORD_KEYS:
                steps[k].append(obs[k])
            steps["action"].append(np.asarray(action, np.float32))
            steps["timestamp"].append(env.step_count / 10.0)
        obs, info = env.step(action if exec_noise is None else exec_noise(np.asarray(action, np.float64)))
        if info["done"]:
            break
    result = {"suite": env.task.suite, "task": env.task.name, "instruction": env.task.instruction,
              "seed": env.seed, "success": bool(info["success"]), "length": int(info["step"]),
              "wall_s": time.monotonic() - t0, "stats": stats}
    if record:
        result["arrays"] = {k: np.asarray(v) for k, v in steps.items()}
    return result
