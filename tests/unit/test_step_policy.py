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
