"""The step policy's plan on hand-made signals."""

from edge.step_policy import StepPolicyConfig, StepSignals, plan_step


def test_plan_modes():
    cfg = StepPolicyConfig()
    sure = StepSignals(kf_ready=True, retrieval_ready=True, retrieval_confident=True, fused=0.8, precision="int8",
                       threshold_bins=7)
    plan, st = plan_step(sure, cfg)
    assert plan.mode == "skip" and plan.precision == "int8" and st["retrieval_regime"]
    # a skip never follows the cap of consecutive skips, nor happens outside the retrieval regime
    assert plan_step(StepSignals(**{**sure.__dict__, "skips_in_row": 1}), cfg)[0].mode == "onepass"
    p = plan_step(StepSignals(**{**sure.__dict__, "fused": 0.2}), cfg)[0]
    assert p.mode == "onepass" and p.candidates == ("kf", "retrieval") and p.threshold_bins == 7
    assert plan_step(StepSignals(kf_ready=True), cfg)[0].candidates == ("kf",)
    assert plan_step(StepSignals(), cfg)[0].mode == "drafter"
    assert plan_step(StepSignals(kf_ready=True), StepPolicyConfig(onepass=False, decoder="ar"))[0].mode == "ar"
    assert plan_step(sure, StepPolicyConfig(verify_skip=False))[0].mode == "onepass"


def test_candidate_rule_choice():
    import pytest

    from edge.acceptance import AcceptRule
    from edge.kinematic import candidate_rule
    from edge.retrieval import RetrievalConfig

    step_rule = AcceptRule(threshold_bins=(9,) * 7)
    ret = RetrievalConfig()
    group = candidate_rule(step_rule, StepPolicyConfig(), ret, retrieved=True)
    assert group.mode == "group" and group.group_sum_bins == ret.group_sum_bins
    # a Kalman forecast alone is checked with the step's token rule; so is any tree under candidate_rule=token
    assert candidate_rule(step_rule, StepPolicyConfig(), ret, retrieved=False) == step_rule
    assert candidate_rule(step_rule, StepPolicyConfig(candidate_rule="token"), ret, retrieved=True) == step_rule
    exact = candidate_rule(step_rule, StepPolicyConfig(candidate_rule="token", candidate_threshold_bins=0), ret, True)
    assert exact.mode == "token" and exact.thresholds().tolist() == [0] * 7
    r3 = candidate_rule(step_rule, StepPolicyConfig(candidate_rule="token", candidate_threshold_bins=3), ret, False)
    assert r3.thresholds().tolist() == [3] * 6 + [0]  # the gripper stays exact
    with pytest.raises(ValueError, match="candidate_threshold_bins"):
        StepPolicyConfig(candidate_threshold_bins=-1)
