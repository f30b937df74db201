"""The committed reference artifact through the exported engines.

- Speculative decoding with r = 0 (chain and tree drafts) returns exactly AR greedy's tokens on
  at least 500 observations recorded from expert episodes of every suite.
- The engines agree with the PyTorch reference verifier.
"""

from pathlib import Path

import numpy as np
import pytest

from edge.decoding import SpecConfig, decode_ar, decode_speculative
from edge.policy import EdgePolicy, PolicyConfig

ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "reference"
pytestmark = pytest.mark.skipif(not (ARTIFACT / "drafter.pt").exists(), reason="reference artifact not trained yet")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from export.build_engines import main

    out = tmp_path_factory.mktemp("ref") / "engines"
    assert main(["--set", f"out={out}", "--set", "precisions=[fp32]", "--set", "measure_memory=false"]) == 0
    return out


@pytest.fixture(scope="module")
def observations():
    from sim.env import ArmEnv
    from sim.expert import ScriptedExpert
    from sim.rollout import episode_plan, run_episode

    obs = []
    for suite, task, seed in episode_plan("all", 3, 200_000):
        env = ArmEnv(suite, task, seed)
        arr = run_episode(env, ScriptedExpert(env), record=True)["arrays"]
        for t in range(len(arr["action"])):
            obs.append({"image": arr["image"][t], "wrist_image": arr["wrist_image"][t],
                        "ee_pos": arr["ee_pos"][t], "gripper": arr["gripper"][t], "instruction": env.task.instruction})
        env.close()
    return obs


def test_r0_speculative_equals_ar_on_500_observations(engines, observations):
    pol = EdgePolicy(PolicyConfig(engines=str(engines)))
    assert len(observations) >= 500
    chain_acc = tree_acc = 0
    for obs in observations[:600]:
        images, prompt = pol.images(obs), pol.prompt_ids(obs)
        ar, _ = decode_ar(pol.models, images, prompt)
        for draft in ("chain", "tree"):
            toks, st = decode_speculative(pol.models, images, prompt, SpecConfig(draft=draft))
            assert toks == ar
            if draft == "chain":
                chain_acc += sum(st.accepted)
            else:
                tree_acc += sum(st.accepted)
    assert chain_acc > 0 and tree_acc > 0


def test_engines_match_pytorch(engines, observations):
    import torch

    from vla.artifact import load_verifier

    model, _ = load_verifier(ARTIFACT)
    pol = EdgePolicy(PolicyConfig(engines=str(engines)))
    for obs in observations[::50]:
        images, prompt = pol.images(obs), pol.prompt_ids(obs)
        ar, _ = decode_ar(pol.models, images, prompt)
        ref = model.greedy_actions(torch.from_numpy(images), torch.from_numpy(prompt)[None])[0].tolist()
        assert ar == ref
