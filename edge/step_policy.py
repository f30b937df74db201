"""The step policy: per control step, how to get a verified action, at what precision.

Contract: ``plan_step(signals, cfg) -> (StepPlan, stats)`` is a pure function of the kinematic
signals the CPU has *before* the camera frame's verifier pass (it runs while the previous pass
is still on the accelerator). The modes, cheapest first:

``skip``     the retrieved action is used without any verifier pass (HeiSD's verify-skip).
             Only when retrieval is enabled, the best similarity clears the calibrated bound,
             the top retrieved actions agree, the arm is in the retrieval regime of HeiSD's
             fused metric (fast, straight motion), and fewer than ``max_consecutive_skips``
             steps were skipped in a row (a skipped step never sees the camera's verdict).
``onepass``  whole-action candidates (the Kalman forecast of KERV; the top retrieved actions)
             ride in the verifier's prefill and are checked in that same forward pass; when one
             is accepted whole, the action costs exactly one verifier pass (the floor for any
             verified action). What is rejected continues with the drafter tree, the candidates'
             own continuations (``decoder: tails``) or one token per pass, with KERV's
             compensation of the rejected tail.
``drafter``  Spec-VLA: prefill, then drafter trees verified with the relaxed rule.
``ar``       plain greedy decoding (a baseline, and the fallback while nothing is warmed up).

The precision is DyQ-VLA's pick from its sensitivity signal (``edge.motion_metrics.dyq_step``),
the acceptance threshold KERV's dynamic threshold; both are passed through as signals so this
function stays the single place where the step's plan is decided.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["StepPolicyConfig", "StepSignals", "StepPlan", "plan_step"]

Mode = Literal["skip", "onepass", "drafter", "ar"]


@dataclasses.dataclass(frozen=True)
class StepPolicyConfig:
    # what completes an action the candidates leave unfinished (and decodes it when there are none): "drafter"
    # (Spec-VLA trees), "ar" (one token per pass) or "tails" (no drafter: each pass verifies the candidates' own
    # continuations, the Kalman forecast and the retrieved actions' tails; plain AR where there are no candidates)
    decoder: Literal["ar", "drafter", "tails"] = "drafter"
    onepass: bool = True  # verify whole-action candidates inside the prefill
    kf_candidate: bool = True  # KERV: the Kalman forecast is a candidate (needs kf_ready)
    retrieval_candidates: int = 2  # HeiSD: top retrieved actions used as candidates (0 = off)
    verify_skip: bool = True  # HeiSD: skip verification when retrieval is confident
    max_consecutive_skips: int = 1  # steps in a row that may go unverified
    fused_min: float = 0.5  # HeiSD fused metric at or above which the arm is in the retrieval regime
    # how whole-action candidates in the prefill are checked: "group" (HeiSD's sequence-wise rule, whenever a
    # retrieved row rides; a Kalman forecast alone uses the token rule) or "token" (per token, every source)
    candidate_rule: Literal["group", "token"] = "group"
    candidate_threshold_bins: int | None = None  # token rule's threshold for candidates (None: the step's own)

    def __post_init__(self):
        if self.candidate_threshold_bins is not None and self.candidate_threshold_bins < 0:
            raise ValueError(f"StepPolicyConfig.candidate_threshold_bins: expected >= 0 or None, "
                             f"got {self.candidate_threshold_bins}")


@dataclasses.dataclass(frozen=True)
class StepSignals:
    kf_ready: bool = False  # the Kalman filters have seen enough actions to forecast
    retrieval_ready: bool = False  # a store is loaded and holds this instruction
    retrieval_confident: bool = False  # best similarity >= calibrated bound and top-K agree
    fused: float | None = None  # HeiSD fused metric over the recent path (None: too few steps)
    skips_in_row: int = 0  # consecutive skipped steps just before this one
    precision: str = "fp32"  # DyQ-VLA's choice for this step
    threshold_bins: int = 0  # KERV's dynamic threshold (or the fixed relaxed r)


@dataclasses.dataclass(frozen=True)
class StepPlan:
    mode: Mode
    precision: str
    threshold_bins: int
    candidates: tuple[str, ...] = ()  # which candidate sources go into the prefill: "kf", "retrieval"


def plan_step(sig: StepSignals, cfg: StepPolicyConfig) -> tuple[StepPlan, dict]:
    retrieval_regime = sig.fused is not None and sig.fused >= cfg.fused_min
    stats = {"retrieval_regime": retrieval_regime}
    if (cfg.verify_skip and sig.retrieval_ready and sig.retrieval_confident and retrieval_regime
            and sig.skips_in_row < cfg.max_consecutive_skips):
        return StepPlan("skip", sig.precision, sig.threshold_bins, ("retrieval",)), stats
    cands = []
    if cfg.onepass and cfg.kf_candidate and sig.kf_ready:
        cands.append("kf")
    if cfg.onepass and cfg.retrieval_candidates > 0 and sig.retrieval_ready:
        cands.append("retrieval")
    if cands:
        return StepPlan("onepass", sig.precision, sig.threshold_bins, tuple(cands)), stats
    return StepPlan("ar" if cfg.decoder == "tails" else cfg.decoder, sig.precision, sig.threshold_bins), stats
