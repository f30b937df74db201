"""sim.reactive: the DAgger labeller completes tasks on its own, and labels the state a driver leaves the arm
in (fingers opened over the block, tool carried away) with the way back to the block."""

import numpy as np
import pytest

from sim.env import ArmEnv
from sim.reactive import ReactiveExpert
from sim.rollout import run_episode


@pytest.mark.parametrize("suite,task", [("spatial", 0), ("object", 0), ("goal", 0), ("long", 0)])
def test_reactive_expert_completes_a_task_of_every_suite(suite, task):
    env = ArmEnv(suite, task, 50000, image_size=32, start_jitter_m=0.08)
    try:
        res = run_episode(env, ReactiveExpert(env))
    finally:
        env.close()
    assert res["success"], (suite, task, res["length"])


def labels_after_an_interrupted_grasp():
    """The expert drives until it says "close" over the block; then a driver opens the fingers and
    moves the tool up 6 cm and 10 cm sideways; the expert's label of the state it reaches."""
    env = ArmEnv("spatial", 0, 50002, image_size=32)
    try:
        env.reset()
        expert = ReactiveExpert(env)
        expert.reset()
        for _ in range(80):
            a = expert.infer(None)
            if a[6] == 0.0:
                break
            env.step(a)
        assert a[6] == 0.0, "the expert never reached the grasp"
        block = env.state()["blocks"][env.task.stages[0][1]]
        away = 1.0 if block[1] < 0 else -1.0
        for k in range(8):
            expert.infer(None)  # the labeller sees every state, as under sim.collect --driver
            env.step(np.array([0, 0, 0.02, 0, 0, 0, 1.0]) if k < 3 else np.array([0, 0.02 * away, 0, 0, 0, 0, 1.0]))
        label = np.asarray(expert.infer(None), float)
        return label, block[:2] - env.target_pos[:2]
    finally:
        env.close()


def test_reactive_labels_lead_back_to_the_block_after_an_interrupted_grasp():
    label, to_block = labels_after_an_interrupted_grasp()
    assert np.linalg.norm(to_block) > 0.05  # the driver moved the tool well off the block
    cos = label[:2] @ to_block / (np.linalg.norm(label[:2]) * np.linalg.norm(to_block))
    assert cos > 0.9 and label[6] == 1.0, label  # back towards it, fingers open
