"""``python -m sim.evaluate --policy expert|MODULE:FACTORY --suite all --episodes N``.

Closed-loop evaluation on seeds disjoint from the demonstrations' (``--seed-start`` 100000 by
default; ``sim.collect`` starts at 0). The policy is the scripted expert or any object with
``reset()`` and ``infer(obs)`` made by ``MODULE:FACTORY`` (called with ``--policy-kwargs`` as
keyword arguments, JSON), e.g. ``vla.policy:make_policy`` for the reference VLA. Prints the
success rate per suite and writes every episode to ``--json``. ``--workers N`` runs episodes in N
processes, one policy each (results do not depend on N: every episode is seeded and the policies
are deterministic).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import numpy as np
from tqdm import tqdm

EVAL_SEED_START = 100_000
_WORKER_POLICY: dict = {}


def make_policy(spec: str, env, kwargs: dict):
    if spec == "expert":
        from sim.expert import ScriptedExpert

        return ScriptedExpert(env)
    if ":" not in spec:
        raise ValueError(f"--policy: expected 'expert' or MODULE:FACTORY, got {spec!r}")
    mod, fn = spec.split(":", 1)
    return getattr(importlib.import_module(mod), fn)(**kwargs)


def worker_policy(spec: str, kwargs: dict):
    """A learned policy ``MODULE:FACTORY`` built once per process and reused (loading a model is
    the slow part); a different spec or kwargs replaces it."""
    key = (spec, json.dumps(kwargs, sort_keys=True))
    if key not in _WORKER_POLICY:
        _WORKER_POLICY.clear()
        _WORKER_POLICY[key] = make_policy(spec, None, kwargs)
    return _WORKER_POLICY[key]


def run_one(job: tuple) -> dict:
    """One episode ``(policy_spec, kwargs, suite, task, seed, image_size, start_jitter_m)``; the policy (not the
    expert, which is bound to its environment) is built once per process and reused."""
    from sim.env import ArmEnv
    from sim.rollout import run_episode

    spec, kwargs, suite, task, seed, image_size, jitter = job
    env = ArmEnv(suite, task, seed, image_size=image_size, render=spec != "expert", start_jitter_m=jitter)
    try:
        policy = make_policy(spec, env, kwargs) if spec == "expert" else worker_policy(spec, kwargs)
        res = run_episode(env, policy)
    finally:
        env.close()
    res.pop("stats")
    return res


def summarize(results: list[dict]) -> dict:
    out = {}
    for suite in dict.fromkeys(r["suite"] for r in results):
        rs = [r for r in results if r["suite"] == suite]
        out[suite] = {"episodes": len(rs), "success_rate": float(np.mean([r["success"] for r in rs])),
                      "mean_length": float(np.mean([r["length"] for r in rs]))}
    out["all"] = {"episodes": len(results), "success_rate": float(np.mean([r["success"] for r in results]))}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="expert", help="expert or MODULE:FACTORY")
    p.add_argument("--policy-kwargs", default="{}", help="JSON keyword arguments for the factory")
    p.add_argument("--suite", default="all")
    p.add_argument("--episodes", type=int, default=10, help="episodes per suite")
    p.add_argument("--seed-start", type=int, default=EVAL_SEED_START)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--start-jitter-m", type=float, default=0.0,
                   help="start each episode with the tool up to this far from home in x/y (half in z); 0: at home")
    p.add_argument("--json", help="write per-episode results here")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one policy each)")
    args = p.parse_args(argv)
    from sim.env import MAX_START_JITTER_M

    if not 0.0 <= args.start_jitter_m <= MAX_START_JITTER_M:
        p.error(f"--start-jitter-m: expected 0..{MAX_START_JITTER_M} m, got {args.start_jitter_m}")
    if args.workers < 1:
        p.error(f"--workers: expected >= 1, got {args.workers}")
    from sim.rollout import episode_plan
    from sim.tasks import TaskError

    try:
        plan = episode_plan(args.suite, args.episodes, args.seed_start)
        kwargs = json.loads(args.policy_kwargs)
    except (TaskError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = []
    t0 = time.monotonic()
    jobs = [(args.policy, kwargs, suite, task, seed, args.image_size, args.start_jitter_m) for suite, task, seed in plan]
    bar = tqdm(total=len(jobs), desc=f"evaluate {args.policy}", dynamic_ncols=True)
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers) as pool:
            it = pool.map(run_one, jobs)
            for res in it:
                results.append(res)
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([r['success'] for r in results]):.2f}")
    else:
        for job in jobs:
            results.append(run_one(job))
            bar.update(1)
            bar.set_postfix(success=f"{np.mean([r['success'] for r in results]):.2f}")
    bar.close()
    summary = summarize(results)
    for suite, s in summary.items():
        print(f"{suite:>8}: success {100 * s['success_rate']:5.1f}% over {s['episodes']} episodes")
    print(f"wall time {time.monotonic() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"policy": args.policy, "summary": summary, "episodes": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
