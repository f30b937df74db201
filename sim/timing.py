"""``python -m sim.timing``: physics time per step and render time per frame, measured here.

Runs the expert on one episode per suite without rendering (physics + IK per control step), then
renders the front camera at each ``--sizes`` (median over ``--frames`` frames).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.timing", description=__doc__)
    p.add_argument("--sizes", default="64,128", help="image sizes to render")
    p.add_argument("--frames", type=int, default=200)
    args = p.parse_args(argv)
    from sim.env import SUBSTEPS, ArmEnv
    from sim.expert import ScriptedExpert

    ctrl, phys = [], []
    for suite in ("spatial", "object", "goal", "long"):
        env = ArmEnv(suite, 0, 1, render=False)
        obs, pol = env.reset(), ScriptedExpert(env)
        pol.reset()
        for _ in range(40):
            a = pol.infer(obs)
            t0 = time.perf_counter()
            obs, info = env.step(a)
            ctrl.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        env.physics_step(0.2)
        phys.append((time.perf_counter() - t0) / 100)
    print(f"physics step (2 ms of simulated time): {1e3 * np.median(phys):.3f} ms")
    print(f"control step (IK + {SUBSTEPS} physics steps + predicate): {1e3 * np.median(ctrl):.2f} ms")
    for size in map(int, args.sizes.split(",")):
        env = ArmEnv("object", 0, 1, image_size=size)
        env.reset()
        ts = []
        for _ in range(args.frames):
            t0 = time.perf_counter()
            env.render("front")
            ts.append(time.perf_counter() - t0)
        print(f"render {size}x{size} front camera: {1e3 * np.median(ts):.2f} ms per frame (median of {args.frames})")
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
