"""Reference world: predicates on scripted success and failure, determinism, dataset format, errors."""

import json

import numpy as np
import pytest

from sim.env import ArmEnv
from sim.expert import ScriptedExpert
from sim.rollout import run_episode
from sim.tasks import SUITES, TaskError, get_task, list_tasks


class DoNothing:
    def reset(self):
        pass

    def infer(self, obs):
        return np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32)


class WrongBlock:
    """Expert behaviour aimed at another block: must not count as success."""

    def __init__(self, env, other):
        self.env, self.other = env, other
        self.inner = ScriptedExpert(env)

    def reset(self):
        self.inner.reset()
        self.stages = tuple((v, self.other, t) for v, _, t in self.env.task.stages)

    def infer(self, obs):
        real = self.env.task
        self.env.task = type(real)(real.suite, real.name, real.instruction, real.blocks, self.stages,
                                   real.arrangement, real.max_steps)
        try:
            return self.inner.infer(obs)
        finally:
            self.env.task = real


@pytest.mark.parametrize("suite,task,other", [("spatial", "left", "yellow_b"), ("object", "red", "green"),
                                              ("goal", "stack_red_on_blue", "blue"), ("goal", "lift_blue", "red"),
                                              ("long", "red_then_green", "blue")])
def test_predicates_on_scripted_success_and_failure(suite, task, other):
    env = ArmEnv(suite, task, seed=7, render=False)
    assert run_episode(env, ScriptedExpert(env))["success"]
    env = ArmEnv(suite, task, seed=7, render=False)
    res = run_episode(env, DoNothing())
    assert not res["success"] and res["length"] == env.task.max_steps
    if task != "red_then_green":
        env = ArmEnv(suite, task, seed=7, render=False)
        assert not run_episode(env, WrongBlock(env, other))["success"]


def test_determinism_by_seed():
    a = run_episode(e := ArmEnv("object", "blue", 3), ScriptedExpert(e), record=True)["arrays"]
    b = run_episode(e := ArmEnv("object", "blue", 3), ScriptedExpert(e), record=True)["arrays"]
    c = run_episode(e := ArmEnv("object", "blue", 4), ScriptedExpert(e), record=True)["arrays"]
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["image"][0], c["image"][0])


def test_unknown_names_list_valid_ones():
    with pytest.raises(TaskError, match="valid suites: spatial, object, goal, long"):
        list_tasks("kitchen")
    with pytest.raises(TaskError, match="valid: .*red_on_plate: 'put the red block on the plate'"):
        get_task("goal", "put the purple block on the plate")
    assert get_task("goal", "put the red block on the plate").name == "red_on_plate"
    assert sum(len(t) for t in SUITES.values()) == 15
    with pytest.raises(ValueError, match="grasp_yaw expected one of \\['block', 'fixed'\\], got 'side'"):
        ScriptedExpert(ArmEnv("goal", 0, 0, render=False), grasp_yaw="side")


def test_collect_writes_documented_format(tmp_path):
    from sim.collect import main

    assert main(["--suite", "goal", "--episodes", "2", "--out", str(tmp_path / "ds")]) == 0
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert info["fps"] == 10 and info["features"]["action"]["names"][-1] == "gripper"
    assert info["expert"] == "feedback-waypoints-v6"  # the default grasp_yaw "fixed"
    eps = [json.loads(l) for l in (tmp_path / "ds" / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [e["index"] for e in eps] == [0, 1] and all(e["success"] for e in eps)
    with np.load(tmp_path / "ds" / "data" / "episode_000000.npz") as z:
        T = eps[0]["length"]
        assert z["image"].shape == (T, 64, 64, 3) and z["image"].dtype == np.uint8
        assert z["action"].shape == (T, 7) and z["joints"].shape == (T, 7)
        assert set(np.unique(z["action"][:, 6])) <= {0.0, 1.0}
    assert main(["--suite", "kitchen", "--episodes", "1", "--out", str(tmp_path / "x")]) == 2


def make_do_nothing():
    """A driver factory for ``sim.collect --driver`` (the arm stays where the driver leaves it)."""
    return DoNothing()


def test_driver_collection_records_expert_labels_of_the_driven_states(tmp_path):
    """DAgger: the driver moves the arm, the expert labels every state it reaches; the episodes
    are marked relabelled, the trainer's reader keeps them although they failed, calibration's skips them."""
    from calib.dataset import iter_episodes
    from sim.collect import main

    out = tmp_path / "dg"
    assert main(["--suite", "object", "--episodes", "2", "--out", str(out), "--driver-share", "1", "--labels", "plan",
                 "--driver", "tests.integration.test_sim:make_do_nothing"]) == 0
    eps = [json.loads(l) for l in (out / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert all(e["relabelled"] and not e["success"] and e["driver_steps"] == e["length"] for e in eps)
    assert json.loads((out / "meta" / "info.json").read_text())["driver"]["share"] == 1.0
    with np.load(out / "data" / "episode_000000.npz") as z:
        ee, labels = z["ee_pos"], z["action"]
    assert np.ptp(ee, axis=0).max() < 2e-3  # the driver held the arm still
    # while the expert kept saying where to go, never giving the first waypoint up for a grasp in mid-air
    assert np.linalg.norm(labels[:, :3], axis=1).min() > 1e-3 and (labels[:, 6] == 1.0).all()
    assert [r["index"] for r, _ in iter_episodes(out)] == []
    assert [r["index"] for r, _ in iter_episodes(out, relabelled=True)] == [0, 1]

    half = tmp_path / "half"
    assert main(["--suite", "object", "--episodes", "1", "--out", str(half), "--driver-share", "0.5", "--labels", "plan",
                 "--driver", "tests.integration.test_sim:make_do_nothing"]) == 0
    (rec,) = [json.loads(l) for l in (half / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert 0 < rec["driver_steps"] < rec["length"]
    with np.load(half / "data" / "episode_000000.npz") as z:
        assert np.ptp(z["ee_pos"], axis=0).max() > 0.02  # the expert's half of the steps moved it
    react = tmp_path / "react"
    assert main(["--suite", "object", "--episodes", "1", "--out", str(react), "--driver-share", "1",
                 "--driver", "tests.integration.test_sim:make_do_nothing"]) == 0  # reactive labels by default
    assert json.loads((react / "meta" / "info.json").read_text())["driver"]["labels"] == "reactive"
    with np.load(react / "data" / "episode_000000.npz") as z:  # sim.reactive labels the held arm: towards the block
        assert np.linalg.norm(z["action"][:, :3], axis=1).min() > 1e-3 and (z["action"][:, 6] == 1.0).all()
    for bad in (["--driver", "nomodule"], ["--driver", "a:b", "--driver-share", "0"],
                ["--driver", "a:b", "--labels", "reactive", "--grasp-yaw", "block"],
                ["--driver", "a:b", "--noise-m", "0.01"], ["--driver", "a:b", "--driver-kwargs", "[1]"]):
        with pytest.raises(SystemExit) as exc:
            main(["--suite", "object", "--episodes", "1", "--out", str(tmp_path / "bad"), *bad])
        assert exc.value.code == 2


def test_execution_noise_keeps_labels_clean_and_expert_succeeds():
    """DART collection: the executed motion is perturbed, the recorded label is the expert's
    feedback action from the perturbed state, and the expert still completes the task."""
    from sim.collect import ExecNoise

    clean = run_episode(e := ArmEnv("object", "red", 5, render=False), ScriptedExpert(e))
    env = ArmEnv("object", "red", 5)
    executed = []
    noise = ExecNoise(5, 0.006, 0.03)

    def record_exec(a):
        executed.append(noise(a))
        return executed[-1]

    noisy = run_episode(env, ScriptedExpert(env), record=True, exec_noise=record_exec)
    assert clean["success"] and noisy["success"]
    labels = noisy["arrays"]["action"]
    executed = np.asarray(executed)
    move = np.linalg.norm(labels[:, :3], axis=1)
    travel, fine, still = move >= ExecNoise.min_step_m, (move > 1e-6) & (move < ExecNoise.min_step_m), move <= 1e-6
    assert travel.sum() > 5 and fine.sum() > 5
    assert not np.allclose(executed[travel, :3], labels[travel, :3])  # travel steps are perturbed
    fine_err = np.abs(executed[fine, :3] - labels[fine, :3]).max(axis=1)
    assert 0 < (fine_err > 0).sum() < fine.sum()  # the final approach: every other step, small
    assert fine_err.max() <= 2 * ExecNoise.fine_scale * 0.006 + 1e-12
    assert np.array_equal(executed[still], labels[still].astype(np.float64))  # grasps and releases are not
    wait = np.array([0, 0, 0, 0, 0, 0, 0.0])
    assert all(np.array_equal(noise(wait), wait) for _ in range(4))
    assert np.abs(labels[:, :3]).max() <= 0.02 + 1e-6  # labels stay the expert's bounded steps
    # deterministic by seed
    n1, n2 = ExecNoise(9, 0.006, 0.0), ExecNoise(9, 0.006, 0.0)
    a = np.array([0.02, 0, 0, 0, 0, 0, 1.0])
    assert np.array_equal(n1(a), n2(a)) and n1(a)[6] == 1.0


def test_start_jitter_moves_only_the_start_and_the_expert_still_succeeds():
    """Varied starts: the tool starts off home within the box, the seed's layout is unchanged, the
    start is reproducible by seed, and the expert still completes the task from there."""
    from sim.env import MAX_START_JITTER_M

    home = ArmEnv("spatial", "left", 11, render=False)
    obs_home = home.reset()
    starts = []
    for seed in (11, 11, 12):
        env = ArmEnv("spatial", "left", seed, render=False, start_jitter_m=0.08)
        obs = env.reset()
        if seed == 11:
            assert env.layout == home.layout
        starts.append(obs["ee_pos"])
        off = obs["ee_pos"] - obs_home["ee_pos"]
        assert np.all(np.abs(off) <= [0.08 + 2e-3, 0.08 + 2e-3, 0.04 + 2e-3]), off
        assert np.allclose(obs["ee_rot"], obs_home["ee_rot"], atol=2e-2)
    assert np.allclose(starts[0], starts[1]) and np.linalg.norm(starts[0] - obs_home["ee_pos"]) > 5e-3
    assert np.linalg.norm(starts[2] - starts[0]) > 5e-3
    env = ArmEnv("long", "red_then_green", 12, render=False, start_jitter_m=MAX_START_JITTER_M)
    assert run_episode(env, ScriptedExpert(env))["success"]
    with pytest.raises(ValueError, match="start_jitter_m: expected 0..0.15 m, got 0.5"):
        ArmEnv("spatial", "left", 11, render=False, start_jitter_m=0.5)


def test_evaluate_workers_give_the_same_results(tmp_path):
    from sim.evaluate import main

    runs = {}
    for w in (1, 2):
        out = tmp_path / f"w{w}.json"
        assert main(["--policy", "expert", "--suite", "goal", "--episodes", "2", "--workers", str(w),
                     "--json", str(out)]) == 0
        runs[w] = json.loads(out.read_text())
    strip = lambda r: [(e["task"], e["seed"], e["success"], e["length"]) for e in r["episodes"]]
    assert strip(runs[1]) == strip(runs[2])
    assert [e["seed"] for e in runs[1]["episodes"]] == [100000, 100001]
    assert runs[1]["summary"]["goal"]["success_rate"] == 1.0


def test_merge_renumbers_and_refuses_mismatch(tmp_path):
    from sim.collect import main as collect
    from sim.merge import main as merge_main

    assert collect(["--suite", "goal", "--episodes", "1", "--out", str(tmp_path / "a")]) == 0
    assert collect(["--suite", "goal", "--episodes", "1", "--seed-start", "50", "--out", str(tmp_path / "b"),
                    "--noise-m", "0.006"]) == 0
    assert merge_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 0
    eps = [json.loads(l) for l in (tmp_path / "m" / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [(e["index"], e["seed"], e["source"]["index"]) for e in eps] == [(0, 0, 0), (1, 50, 0)]
    with np.load(tmp_path / "m" / "data" / "episode_000001.npz") as z, \
            np.load(tmp_path / "b" / "data" / "episode_000000.npz") as zb:
        assert np.array_equal(z["action"], zb["action"])
    info = json.loads((tmp_path / "m" / "meta" / "info.json").read_text())
    assert [s["exec_noise"]["xyz_m"] for s in info["sources"]] == [0.0, 0.006]
    assert merge_main([str(tmp_path / "a"), "--out", str(tmp_path / "m")]) == 2  # not over a dataset
    info_b = json.loads((tmp_path / "b" / "meta" / "info.json").read_text())
    (tmp_path / "b" / "meta" / "info.json").write_text(json.dumps({**info_b, "image_size": 128}))
    assert merge_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m2")]) == 2


@pytest.mark.parametrize("suite,grasp_yaw", [("object", "block"), ("long", "block"), ("object", "fixed"),
                                              ("long", "fixed")])
def test_expert_turns_over_the_block_and_closes_in_a_zone(suite, grasp_yaw):
    """Yaw labels are given only where the wrist camera sees the block: over it, at or below hover
    height (v5, ``grasp_yaw="block"``), or never (v6, ``"fixed"``: the 8 cm jaws close on a 4 cm
    block at any yaw). The first "close" label comes before the descent ends, within the close
    zone, so more than one image per grasp carries it. A wait with the gripper closing is labelled
    only while the fingers are visibly not yet on the block (never once they hold it: a policy
    cannot tell the last wait from the first lift step otherwise)."""
    from sim.expert import CLOSE_ZONE_M, GRASP_Z_M, GRIP_HELD_MARGIN_M, HOVER_Z_M
    from sim.scene import BLOCK_HALF_M

    env = ArmEnv(suite, 0, 7, render=False)
    obs = env.reset()
    ex = ScriptedExpert(env, grasp_yaw=grasp_yaw)
    ex.reset()
    turns, first_close, prev_grip = 0, [], 1.0
    for _ in range(env.task.max_steps):
        a = ex.infer(obs)
        block = env.state()["blocks"][env.task.stages[ex.stage - 1][1]]
        if abs(a[5]) > 1e-3:  # the expert settles yaw to 1e-3 rad; smaller residuals may ride along
            turns += 1
            assert np.linalg.norm(env.target_pos[:2] - block[:2]) < 0.01, (env.target_pos, block)
            assert env.target_pos[2] < HOVER_Z_M + 2e-3, env.target_pos
        if a[6] < 0.5 <= prev_grip:
            first_close.append(env.target_pos[2] - (GRASP_Z_M + block[2] - BLOCK_HALF_M))
        if a[6] < 0.5 and not np.any(a[:6]):
            assert env.data.qpos[7] + env.data.qpos[8] > 2 * BLOCK_HALF_M + GRIP_HELD_MARGIN_M
        prev_grip = a[6]
        obs, info = env.step(a)
        if info.get("success"):
            break
    assert info.get("success") and (turns > 0 if grasp_yaw == "block" else turns == 0)
    assert first_close and all(1e-3 < dz < CLOSE_ZONE_M for dz in first_close), first_close
    env.close()
