"""The kinematic layer on real exported graphs (a tiny random-weights engine set): the full stack at
r = 0 without compensation returns AR's tokens; retrieved candidates that are right cost exactly
one verifier pass; verify-skip costs none and is bounded; KERV compensation cuts passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.codec import ActionCodec, ActionStats
from edge.decoding import decode_ar
from edge.kerv import KervConfig
from edge.kinematic import KinematicConfig, KinematicLayer
from edge.retrieval import KeySpec, RetrievalConfig, RetrievalStore, image_key
from edge.runtime_models import load_models
from edge.step_policy import StepPolicyConfig
from edge.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def world(tiny_engine_set):
    from sim.env import ArmEnv
    from sim.expert import ScriptedExpert

    models, man = load_models(tiny_engine_set)
    c = man["source"]["codec"]
    codec = ActionCodec(ActionStats.from_json(c["action"], "codec"), c["vocab_size"], c["n_bins"])
    env = ArmEnv("object", "red", 3)
    ex = ScriptedExpert(env)
    obs, frames = env.reset(), []
    ex.reset()
    for _ in range(12):
        frames.append(obs)
        obs, _ = env.step(ex.infer(obs))
    env.close()
    tok = Tokenizer.load(tiny_engine_set / "tokenizer.json")
    prompt = np.asarray(tok.prompt_ids(frames[0]["instruction"]), np.int64)
    images = [np.stack([f["image"], f["wrist_image"]])[None] for f in frames]
    ar = [decode_ar(models, im, prompt)[0] for im in images]
    return {"models": {"fp32": models}, "codec": codec, "frames": frames, "prompt": prompt, "images": images,
            "ar": ar}


def layer(world, cfg, **kw):
    codec = world["codec"]
    return KinematicLayer(cfg, codec.first_action_token, codec.n_bins,
                          action_decode=lambda t: codec.decode(np.asarray(t, np.int64)), **kw)


def run(world, lay):
    lay.reset()
    out = []
    for obs, im in zip(world["frames"], world["images"]):
        out.append(lay.decode(world["models"], im, world["prompt"], obs))
    return out


def store_of(world, tokens_per_step) -> RetrievalStore:
    spec = KeySpec()
    keys = np.stack([image_key([f[v] for v in spec.views], spec.grid) for f in world["frames"]])
    t = np.asarray(tokens_per_step, np.int64)
    values = np.stack([t[np.minimum(np.arange(i, i + 4), len(t) - 1)] for i in range(len(t))])
    n = len(t)
    return RetrievalStore.from_collections({world["frames"][0]["instruction"]: {
        "keys": keys, "values": values, "episode": np.zeros(n, np.int64), "step": np.arange(n)}}, spec)


def test_full_stack_at_r0_without_compensation_equals_ar(world):
    kerv = KervConfig(kf_model="rw", compensate_enabled=False, threshold_enabled=True, r_min_bins=0, r_max_bins=0)
    cfg = KinematicConfig(threshold_bins=0, use_kerv=True, step=StepPolicyConfig(onepass=True, retrieval_candidates=0,
                                                                                  verify_skip=False))
    res = run(world, layer(world, cfg, kerv=kerv))
    assert [t for t, _, _ in res] == world["ar"]
    modes = [i["mode"] for _, _, i in res]
    assert modes[:2] == ["drafter", "drafter"] and set(modes[3:]) == {"onepass"}  # KF ready after 3 actions
    assert all(s.prefill_candidates >= 1 for _, s, i in res if i["mode"] == "onepass")


def test_right_retrieved_candidate_costs_one_pass_and_skip_costs_none(world):
    store = store_of(world, world["ar"])
    rcfg = RetrievalConfig(top_k=2, search_pool=4, skip_min_similarity=2.0, group_sum_bins=(0, 0, 0),
                           group_token_max_bins=(0, 0, 0), fused_window_steps=3)
    cfg = KinematicConfig(threshold_bins=0, use_retrieval=True,
                          step=StepPolicyConfig(onepass=True, kf_candidate=False, retrieval_candidates=1,
                                                verify_skip=False))
    res = run(world, layer(world, cfg, retrieval=rcfg, store=store))
    assert [t for t, _, _ in res] == world["ar"]
    assert [s.verifier_passes for _, s, _ in res] == [1] * len(res)  # the floor of a verified action
    # verify-skip: similarity bound cleared (the frames are in the store), fused regime forced, at most 1 in a row
    rskip = RetrievalConfig(top_k=2, search_pool=4, skip_min_similarity=0.999, skip_agree_neighbours=1,
                            group_sum_bins=(0, 0, 0), group_token_max_bins=(0, 0, 0), fused_window_steps=3,
                            max_consecutive_skips=1)
    cfg = KinematicConfig(threshold_bins=0, use_retrieval=True,
                          step=StepPolicyConfig(onepass=True, kf_candidate=False, retrieval_candidates=1,
                                                verify_skip=True, max_consecutive_skips=1))
    res = run(world, layer(world, cfg, retrieval=rskip, store=store))
    modes = [i["mode"] for _, _, i in res]
    assert modes[:2] == ["onepass", "onepass"]  # the fused metric needs w = 3 positions (calibrated bound: 0)
    assert "skip" in modes and all(not (a == b == "skip") for a, b in zip(modes, modes[1:]))
    for (t, s, i), ar in zip(res, world["ar"]):
        assert t == ar  # the store holds exactly these actions
        assert s.verifier_passes == (0 if i["mode"] == "skip" else 1)


def test_kerv_compensation_fills_rejected_tails(world):
    # branches off: with them the random model's rounds reach its non-action token at dim 4, after
    # which compensation (rightly) leaves the action to the verifier
    kerv = KervConfig(kf_model="rw", cooldown_steps=0, max_consecutive_comps=100, max_fill_dims=6,
                      threshold_enabled=False, r_min_bins=0, r_max_bins=0, branch_enabled=False)
    cfg = KinematicConfig(threshold_bins=0, use_kerv=True, step=StepPolicyConfig(onepass=False))
    res = run(world, layer(world, cfg, kerv=kerv))
    comp = [s.compensated for _, s, _ in res]
    assert sum(comp[3:]) >= 1 and sum(comp[:3]) == 0  # not before the tracker is ready
    # only after a verification rejected a draft: a compensated action went through >= 1 verify round
    assert all(len(s.accepted) >= 1 for _, s, _ in res if s.compensated)
    for (t, s, _), ar in zip(res, world["ar"]):
        if not s.compensated:
            assert t == ar
        else:
            assert t[0] == ar[0]  # the first token is always the verifier's own


def test_store_from_another_codec_is_refused(world):
    from edge.kinematic import check_store_codec

    store = store_of(world, world["ar"])
    store.meta["codec"] = {"vocab_size": world["codec"].vocab_size + 1, "n_bins": 256}
    with pytest.raises(ValueError, match="meta.codec.vocab_size"):
        check_store_codec(store, world["codec"], "store.npz")
    store.meta["codec"] = {"vocab_size": world["codec"].vocab_size, "n_bins": 256,
                           "action": {**world["codec"].stats.to_json(), "q99": [9.0] * 7}}
    with pytest.raises(ValueError, match="other action statistics"):
        check_store_codec(store, world["codec"], "store.npz")


def test_missing_calibration_is_refused(world):
    with pytest.raises(ValueError, match="use_kerv needs a KervConfig"):
        layer(world, KinematicConfig(use_kerv=True))
    with pytest.raises(ValueError, match="use_retrieval needs"):
        layer(world, KinematicConfig(use_retrieval=True))


def test_candidate_rule_token_exact_keeps_ar_where_the_group_rule_takes_wrong_drafts(world):
    """Retrieved actions 3 bins off on every token: HeiSD's group rule at a wide tolerance executes
    them (the tolerance is wider than the vocabulary: the random verifier's greedy tokens after a
    wrong prefix need not be near it); ``candidate_rule: token`` at 0 bins rejects them, and the
    step equals AR's."""
    wrong = [[t + 3 for t in a] for a in world["ar"]]
    store = store_of(world, wrong)
    rcfg = RetrievalConfig(top_k=1, search_pool=4, group_sum_bins=(10**6,) * 3,
                           group_token_max_bins=(10**6,) * 3)
    kerv = KervConfig(kf_model="rw", compensate_enabled=False, threshold_enabled=True, r_min_bins=0, r_max_bins=0)

    def stack(**step):
        cfg = KinematicConfig(threshold_bins=0, use_kerv=True, use_retrieval=True, step=StepPolicyConfig(
            onepass=True, retrieval_candidates=1, verify_skip=False, **step))
        return run(world, layer(world, cfg, kerv=kerv, retrieval=rcfg, store=store))

    group = stack()  # every action a candidate row accepted whole (retrieved, or the Kalman forecast of them)
    assert all(t != ar and s.verifier_passes == 1 for (t, s, _), ar in zip(group, world["ar"]))
    assert group[0][0] == wrong[0] and group[0][2]["whole"] == "retrieval"  # before the Kalman filter is ready
    assert {i["whole"] for _, _, i in group} <= {"kf", "retrieval"}
    exact = stack(candidate_rule="token", candidate_threshold_bins=0)
    assert [t for t, _, _ in exact] == world["ar"]
    assert all(i["mode"] == "onepass" and "retrieval" in i["candidates"] for _, _, i in exact)
    assert all(i.get("whole") != "retrieval" for _, _, i in exact)


def test_tails_decoder_completes_a_rejected_candidate_from_its_own_tail(world):
    """Retrieved actions right except their first token: the prefill rejects each at dim 0 and its
    bonus token is AR's; ``decoder: tails`` then verifies the row's own tail, so every action
    costs two verifier passes, no drafter pass, and equals AR's (exact rule)."""
    off = [[a[0] + 3] + list(a[1:]) for a in world["ar"]]
    store = store_of(world, off)
    rcfg = RetrievalConfig(top_k=1, search_pool=4, group_sum_bins=(0, 0, 0), group_token_max_bins=(0, 0, 0))
    cfg = KinematicConfig(threshold_bins=0, use_retrieval=True, step=StepPolicyConfig(
        decoder="tails", onepass=True, kf_candidate=False, retrieval_candidates=1, verify_skip=False,
        candidate_rule="token", candidate_threshold_bins=0))
    res = run(world, layer(world, cfg, retrieval=rcfg, store=store))
    assert [t for t, _, _ in res] == world["ar"]
    assert [(s.verifier_passes, s.drafter_passes, s.prefill_accepted) for _, s, _ in res] == [(2, 0, 0)] * len(res)
    # without tails (one token per pass after the bonus) the same steps cost 1 + 6 passes
    plain = dataclasses.replace(cfg, step=dataclasses.replace(cfg.step, decoder="ar"))
    res = run(world, layer(world, plain, retrieval=rcfg, store=store))
    assert [t for t, _, _ in res] == world["ar"] and all(s.verifier_passes == 7 for _, s, _ in res)


def test_tails_are_checked_by_the_candidate_rule_not_the_step_rule(world):
    """Retrieved actions 3 bins off on every token, a step rule wide enough to take anything and
    exact candidates: the prefill rejects each row at dim 0, and each tail pass must reject the
    row's tail too (it is a candidate's continuation, checked like the candidate), so the steps
    equal AR's, one token per pass."""
    wrong = [[t + 3 for t in a] for a in world["ar"]]
    store = store_of(world, wrong)
    rcfg = RetrievalConfig(top_k=1, search_pool=4)
    cfg = KinematicConfig(threshold_bins=10**6, use_retrieval=True, step=StepPolicyConfig(
        decoder="tails", onepass=True, kf_candidate=False, retrieval_candidates=1, verify_skip=False,
        candidate_rule="token", candidate_threshold_bins=0))
    res = run(world, layer(world, cfg, retrieval=rcfg, store=store))
    assert [t for t, _, _ in res] == world["ar"]
    assert all(s.verifier_passes == 7 and s.prefill_accepted == 0 for _, s, _ in res)
