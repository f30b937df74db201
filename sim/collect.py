"""``python -m sim.collect --suite SUITE|all --episodes N --out DIR``: expert demonstrations.

Writes a LeRobot-style dataset (documented in sim/README.md)::

    DIR/meta/info.json         format version, control rate, image size, features, action
                               convention, versions of mujoco and this package
    DIR/meta/episodes.jsonl    one line per episode: index, suite, task, instruction, seed,
                               length, success
    DIR/data/episode_000000.npz  per-step arrays (observation before each action, the action)

Episodes are deterministic by seed (same seed, same arrays). All episodes are recorded with
their success flag; trainers keep the successful ones. ``--workers`` runs episodes in parallel
processes; the output does not depend on it.

``--driver MODULE:FACTORY`` (DAgger): a learned policy (``vla.policy:make_policy`` with
``--driver-kwargs '{"artifact": "runs/refN"}'``) moves the arm on a seeded ``--driver-share`` of
the steps and the expert on the others, while the expert labels every state. The states are the
ones the learned policy reaches (its own drift, a wrong block, a grasp too low), the labels how to
recover from them. Such episodes are marked ``"relabelled": true`` with ``driver_steps``; trainers
keep them whether or not they succeeded, calibration (which fits the arm's motion) skips them.
The driver is asked only on the steps it executes. ``--labels reactive`` (the default) labels with
``sim.reactive``'s expert, which reads the task's phase from the current state every step;
``--labels plan`` with ``ScriptedExpert``, whose waypoints are planned at each stage's start (its
give-up limits are then scaled by 1 / (its share of the steps), so it does not skip a waypoint the
driver kept it from reaching). Under the same v3 driver the reactive expert's share of the steps
completed 186 of 200 episodes, the planning one's 27; a fine-tune on the reactive labels gave
artifact v4 (+39 points), one on the planning labels lost 17.5 points.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

FORMAT_VERSION = 1
# Expert names (sim.expert.GRASP_YAWS): v6 grasps at the start yaw; v5 ends a grip wait on the
# visible finger opening; v4 turned on the way down and switched the gripper in a zone; v3 turned at
# hover height, v2 during travel; v1 was the time-indexed minimum-jerk expert


class ExecNoise:
    """DART-style execution noise: Gaussian on dx, dy, dz (``xyz_m``) and dyaw (``yaw_rad``),
    clipped at 2 sigma, on travel steps (at least ``min_step_m`` long), from a generator seeded by
    the episode seed, so a dataset stays deterministic. Shorter moves (the final approach to a
    waypoint: the last centimetre above a grasp or a release) get ``fine_scale`` times the xyz
    noise on every other one of them, so the demonstrations show the corrections a policy needs
    a few millimetres off the grasp pose and the expert still converges on the undisturbed steps;
    steps without motion (a grasp, a release) are never disturbed. The first
    ``first_steps`` travel steps get ``first_scale`` times the noise: there the arm's offset from
    its home pose is otherwise a perfect cue for the next step, and a policy that copies its own
    past motion instead of looking at the blocks goes the wrong way from the first frame."""

    min_step_m = 0.01
    first_steps, first_scale = 3, 2.5
    fine_scale = 0.25

    def __init__(self, seed: int, xyz_m: float, yaw_rad: float):
        self.rng = np.random.default_rng(1_000_003 + int(seed))
        self.xyz_m, self.yaw_rad = float(xyz_m), float(yaw_rad)
        self.travel_steps = self.fine_steps = 0

    def __call__(self, action: np.ndarray) -> np.ndarray:
        a = np.array(action, np.float64)
        move = float(np.linalg.norm(a[:3]))
        if move < self.min_step_m:
            if move < 1e-6 or self.fine_scale <= 0:
                return a
            self.fine_steps += 1
            if self.fine_steps % 2:
                s = self.fine_scale * self.xyz_m
                a[:3] += np.clip(self.rng.normal(0.0, s, 3), -2 * s, 2 * s)
            return a
        self.travel_steps += 1
        k = self.first_scale if self.travel_steps <= self.first_steps else 1.0
        a[:3] += np.clip(self.rng.normal(0.0, k * self.xyz_m, 3), -2 * k * self.xyz_m, 2 * k * self.xyz_m)
        a[5] += float(np.clip(self.rng.normal(0.0, self.yaw_rad), -2 * self.yaw_rad, 2 * self.yaw_rad))
        return a


class DriverMix:
    """A policy for ``run_episode`` that returns the expert's label of every state, and an
    execution hook (``execute``, passed as ``exec_noise``) that swaps in the driver's action on a
    ``share`` of the steps, chosen by a generator seeded by the episode seed."""

    def __init__(self, expert, driver, share: float, seed: int):
        self.expert, self.driver, self.share = expert, driver, float(share)
        self.rng = np.random.default_rng(2_000_003 + int(seed))
        self.driver_steps = 0
        self._executed = None

    def reset(self) -> None:
        self.expert.reset()
        self.driver.reset()
        self.driver_steps = 0

    def infer(self, obs: dict) -> np.ndarray:
        label = np.asarray(self.expert.infer(obs), np.float64)
        self._executed = label
        if self.rng.random() < self.share:
            out = self.driver.infer(obs)
            self._executed = np.asarray(out[0] if isinstance(out, tuple) else out, np.float64)
            self.driver_steps += 1
        return label

    def execute(self, label: np.ndarray) -> np.ndarray:
        return self._executed


def _one(args):
    index, suite, task, seed, image_size, out, noise, jitter, driver, grasp_yaw = args
    from sim.env import ArmEnv
    from sim.evaluate import worker_policy
    from sim.expert import ScriptedExpert
    from sim.rollout import run_episode

    env = ArmEnv(suite, task, seed, image_size=image_size, start_jitter_m=jitter)
    extra = {}
    try:
        if driver is None:
            exec_noise = ExecNoise(seed, *noise) if any(noise) else None
            res = run_episode(env, ScriptedExpert(env, grasp_yaw=grasp_yaw), record=True, exec_noise=exec_noise)
        else:
            spec, kwargs, share, labels = driver
            if labels == "reactive":
                from sim.reactive import ReactiveExpert

                expert = ReactiveExpert(env)
            else:
                patience = 1.0 / (1.0 - share) if share < 1.0 else float("inf")
                expert = ScriptedExpert(env, patience, grasp_yaw)
            mix = DriverMix(expert, worker_policy(spec, kwargs), share, seed)
            res = run_episode(env, mix, record=True, exec_noise=mix.execute)
            extra = {"relabelled": True, "driver_steps": mix.driver_steps}
    finally:
        env.close()
    arr = res.pop("arrays")
    np.savez_compressed(Path(out) / "data" / f"episode_{index:06d}.npz",
                        image=arr["image"], wrist_image=arr["wrist_image"], joints=arr["joints"].astype(np.float32),
                        gripper=arr["gripper"].astype(np.float32), ee_pos=arr["ee_pos"].astype(np.float32),
                        action=arr["action"].astype(np.float32), timestamp=arr["timestamp"].astype(np.float32))
    res.pop("stats")
    return {"index": index, **{k: res[k] for k in ("suite", "task", "instruction", "seed", "length", "success")}, **extra}


def info_json(image_size: int, noise: tuple[float, float] = (0.0, 0.0), start_jitter_m: float = 0.0,
              driver: tuple | None = None, grasp_yaw: str = "fixed") -> dict:
    import mujoco

    from sim.env import CONTROL_HZ
    from sim.expert import GRASP_YAWS

    return {
        "format_version": FORMAT_VERSION, "fps": CONTROL_HZ, "image_size": image_size,
        "features": {
            "image": {"dtype": "uint8", "shape": ["T", image_size, image_size, 3], "camera": "front"},
            "wrist_image": {"dtype": "uint8", "shape": ["T", image_size, image_size, 3], "camera": "wrist"},
            "joints": {"dtype": "float32", "shape": ["T", 7], "unit": "rad"},
            "gripper": {"dtype": "float32", "shape": ["T"], "unit": "m (finger opening)"},
            "ee_pos": {"dtype": "float32", "shape": ["T", 3], "unit": "m, base frame"},
            "action": {"dtype": "float32", "shape": ["T", 7],
                       "names": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
                       "unit": "m and rad per control step (base frame); gripper 1 open, 0 close"},
            "timestamp": {"dtype": "float32", "shape": ["T"], "unit": "s"},
        },
        "mujoco_version": mujoco.__version__,
        "expert": GRASP_YAWS[grasp_yaw],
        "exec_noise": {"xyz_m": noise[0], "yaw_rad": noise[1]},
        "start_jitter_m": start_jitter_m,
        "driver": None if driver is None else {"policy": driver[0], "kwargs": driver[1], "share": driver[2],
                                               "labels": driver[3]},
    }


def main(argv=None) -> int:
    from sim.expert import GRASP_YAWS

    p = argparse.ArgumentParser(prog="python -m sim.collect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, help="spatial, object, goal, long or all")
    p.add_argument("--episodes", type=int, required=True, help="episodes per suite")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--seed-start", type=int, default=0, help="first seed (evaluation uses 100000+)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--noise-m", type=float, default=0.0,
                   help="execution noise sigma on dx, dy, dz in m per step (DART; labels stay clean)")
    p.add_argument("--noise-rad", type=float, default=0.0, help="execution noise sigma on dyaw in rad per step")
    p.add_argument("--start-jitter-m", type=float, default=0.0,
                   help="start each episode with the tool up to this far from home in x/y (half in z), seeded")
    p.add_argument("--grasp-yaw", choices=sorted(GRASP_YAWS), default="fixed",
                   help="fixed: the expert keeps the start yaw and grasps a block at whatever yaw it lies "
                   "(v6); block: it turns to the block's faces on the way down (v5)")
    p.add_argument("--driver", help="MODULE:FACTORY of a learned policy that moves the arm on a share of the steps "
                   "while the expert labels every state (DAgger), e.g. vla.policy:make_policy")
    p.add_argument("--driver-kwargs", default="{}", help="JSON keyword arguments for the driver's factory")
    p.add_argument("--driver-share", type=float, default=0.5,
                   help="fraction of the steps the driver executes (seeded per episode); the expert executes the rest")
    p.add_argument("--labels", choices=("reactive", "plan"), default="reactive",
                   help="with --driver: who labels the states. reactive (sim.reactive): the step chosen from the "
                   "current state every step; plan: ScriptedExpert, waypoints planned at each stage's start (the "
                   "labels of the first DAgger rounds, which did not help)")
    args = p.parse_args(argv)
    from sim.env import MAX_START_JITTER_M

    if not 0.0 <= args.start_jitter_m <= MAX_START_JITTER_M:
        p.error(f"--start-jitter-m: expected 0..{MAX_START_JITTER_M} m, got {args.start_jitter_m}")
    if args.noise_m < 0 or args.noise_rad < 0:
        p.error(f"--noise-m/--noise-rad: expected >= 0, got {args.noise_m}, {args.noise_rad}")
    driver = None
    if args.driver is not None:
        if ":" not in args.driver:
            p.error(f"--driver: expected MODULE:FACTORY, got {args.driver!r}")
        if not 0.0 < args.driver_share <= 1.0:
            p.error(f"--driver-share: expected a fraction in (0, 1], got {args.driver_share}")
        if any((args.noise_m, args.noise_rad)):
            p.error("--driver: the driver's own errors are the perturbation; leave --noise-m/--noise-rad at 0")
        try:
            kwargs = json.loads(args.driver_kwargs)
        except json.JSONDecodeError as exc:
            p.error(f"--driver-kwargs: not valid JSON: {exc}")
        if not isinstance(kwargs, dict):
            p.error(f"--driver-kwargs: expected a JSON object, got {args.driver_kwargs!r}")
        if args.labels == "reactive" and args.grasp_yaw != "fixed":
            p.error("--labels reactive: only with --grasp-yaw fixed (expert v6)")
        driver = (args.driver, kwargs, args.driver_share, args.labels)
    from sim.rollout import episode_plan
    from sim.tasks import TaskError

    try:
        plan = episode_plan(args.suite, args.episodes, args.seed_start)
    except TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(exist_ok=True)
    noise = (args.noise_m, args.noise_rad)
    info = info_json(args.image_size, noise, args.start_jitter_m, driver, args.grasp_yaw)
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=1))
    jobs = [(i, s, t, seed, args.image_size, str(out), noise, args.start_jitter_m, driver, args.grasp_yaw)
            for i, (s, t, seed) in enumerate(plan)]
    records = []
    bar = tqdm(total=len(jobs), desc="collect", dynamic_ncols=True)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            for rec in pool.map(_one, jobs):
                records.append(rec)
                bar.update(1)
    else:
        for job in jobs:
            records.append(_one(job))
            bar.update(1)
    bar.close()
    with open(out / "meta" / "episodes.jsonl", "w") as f:
        for rec in sorted(records, key=lambda r: r["index"]):
            f.write(json.dumps(rec) + "\n")
    ok = sum(r["success"] for r in records)
    print(f"{len(records)} episodes ({ok} successful) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
