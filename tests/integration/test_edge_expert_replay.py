"""The runtime's control path completes tasks: the scripted expert's actions, acted out through it.

The expert's action sequence is recorded in the simulator (in this process), then the runtime
service drives the world process with it: actions go through the control thread (pose ramp at
100 Hz, IK), the bridge's safety clamps, the serial link and the emulator's servo loop into the
MuJoCo arm, and the world's success predicate decides. The real engines still run every step
(their tokens are replaced by the expert's action), so timing and threads are the real ones.
This checks the runtime keeps the simulator's control convention (sim/README.md), independently
of how good a trained model is.
"""

import time
from pathlib import Path

import numpy as np
import pytest

from edge.config import load
from edge.run_config import RunConfig
from edge.sd_notify import Notifier
from edge.service import Service
from edge.world_link import start_world

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "configs" / "embedded_default.yaml"
WORLD = ("python", "-m", "sim.world", "--fps", "20")
SEED = 100_000


def expert_actions(suite: str, task: str, seed: int) -> list[np.ndarray]:
    from sim.env import ArmEnv
    from sim.expert import ScriptedExpert

    env = ArmEnv(suite, task, seed, render=False)
    obs, expert, actions = env.reset(), ScriptedExpert(env), []
    expert.reset()
    for _ in range(env.task.max_steps):
        actions.append(np.asarray(expert.infer(obs), np.float32))
        obs, info = env.step(actions[-1])
        if info["done"]:
            break
    assert info["success"], f"the expert itself fails {suite}/{task} seed {seed}"
    return actions


class ExpertReplay:
    """The engine-backed policy, whose decoded action is replaced by the recorded expert's."""

    def __init__(self, inner, actions):
        self.inner, self.actions, self.i = inner, actions, 0
        self.cfg = inner.cfg

    @property
    def reads_state(self):
        return self.inner.reads_state

    def check_instruction(self, instruction):
        return self.inner.check_instruction(instruction)

    def reset(self):
        self.i = 0

    def decode(self, obs):
        return self.inner.decode(obs)

    def flush(self):  # the loop's post-publish update (EdgePolicy's interface)
        self.inner.flush()

    def tokens_to_action(self, tokens):
        a = self.actions[min(self.i, len(self.actions) - 1)]
        self.i += 1
        return a


@pytest.mark.parametrize("suite,task", [("goal", "lift_blue"), ("spatial", "left")])
def test_expert_actions_complete_the_task_through_the_runtime(suite, task, tiny_engine_set, tmp_path):
    actions = expert_actions(suite, task, SEED)
    w = start_world(WORLD, 120)
    svc = None
    try:
        b = w.banner
        cfg = load(RunConfig, CONFIG, [f"policy.engines={tiny_engine_set}", "world.command=[]",
                                       f"world.control_socket={b['control']}", f"serial.url={b['serial']}",
                                       f"camera.uri={b['camera']}", f"telemetry.steps_jsonl={tmp_path / 's.jsonl'}",
                                       "telemetry.status_line=false",
                                       # this test is about the action path; the staleness limits are the
                                       # HIL test's, and a busy 2-core CI machine can starve the emulator
                                       "serial.state_max_age_ms=1000"])
        svc = Service(cfg, Notifier(None)).start()
        svc.inference.policy = ExpertReplay(svc.policy, actions)
        info = svc.world.start_episode(suite, task, SEED)
        svc.begin(info["instruction"])
        t0, success = time.monotonic(), False
        # a step budget, as the job's (after_motion runs at 4-10 actions a second), and a wall-clock backstop
        while (not success and svc.inference.episode_steps < len(actions) + 10
               and time.monotonic() - t0 < len(actions) / 2 + 10 and not svc.stopped.is_set()):
            time.sleep(0.1)
            success = svc.world.status()["success"]
        steps = svc.inference.episode_steps
    finally:
        if svc is not None:
            svc.request_stop()
            svc.safe_stop()
        w.stop()
    assert svc.fault_info is None, svc.fault_info
    assert success, f"{suite}/{task}: not done after {steps} steps (the expert needs {len(actions)} in the simulator)"
    assert steps <= len(actions) + 10
