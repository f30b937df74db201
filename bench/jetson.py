"""A Jetson AGX Orin projection of the measured pass counts onto OpenVLA-7B.

The reference model here is small and runs on a CPU; what transfers to a robot is what each
method *counts* per action (verifier passes, drafter passes, skipped steps, the precision of
each pass), not its CPU milliseconds. This module prices those counts with a roofline-style cost
model of OpenVLA-7B on a Jetson AGX Orin 64 GB and reports projected actions per second.

Cost model (every figure is an assumption, stated in ``OrinModel`` / ``VLAModel``):

- A decode or tree-verify pass (up to a few dozen tokens) is memory bound: it streams every
  weight once, ``t = weight_bytes / (bandwidth * bw_efficiency)``. Tree tokens add FLOPs that stay
  far below the compute roof at these sizes, so a verify pass costs one decode pass (as on an
  A100: OpenVLA's decode passes are ~29 ms whatever the handful of tokens).
- The prefill is compute bound: ``t = 2 * params * prefix_tokens / (peak_ops * compute_efficiency)``
  at the precision's tensor-core rate (FP16 for FP16 weights; INT8 for INT8; INT4 weight-only
  kernels compute in FP16, W4A8 decompresses to INT8 and computes at the INT8 rate, as DyQ-VLA's
  8-bit path does), and never less than one memory-bound pass. So INT4 weight-only speeds up the
  memory-bound passes but not the prefill: a method whose cost is mostly prefill (one-pass
  verification, few passes per action) projects faster at INT8 or W4A8 than at INT4.
- The drafter (Spec-VLA: one Llama decoder layer over the frozen embeddings and head) costs its
  own weight bytes (one layer plus the LM head) per pass, at FP16.
- A verify-skipped step costs no verifier pass; CPU-side work (Kalman filter, retrieval, step
  policy) is hidden behind the GPU (measured overlap in the runtime) and priced at zero.

Published figures used: Jetson AGX Orin 64 GB: 204.8 GB/s LPDDR5, GPU 85 TFLOPS FP16 and 170 TOPS
INT8 dense-equivalent tensor throughput with sparsity halved (NVIDIA's 275 TOPS figure includes
the DLAs and 2:4 sparsity). OpenVLA-7B: Llama-2 7B backbone (6.74 B parameters, 32 layers, d =
4096, vocabulary 32 000) and a 0.6 B DINOv2 + SigLIP vision encoder giving 256 patch tokens, plus
about 20 prompt tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["OrinModel", "VLAModel", "pass_costs_ms", "project", "PRECISION_MAP"]

# CPU engine precisions of this project -> the Jetson precision they stand for
PRECISION_MAP = {"fp32": "fp16", "fp16": "fp16", "int8": "int8", "int4": "int4", "int4a8": "w4a8"}
BYTES = {"fp16": 2.0, "int8": 1.0, "int4": 0.5 + 1 / 64,  # int4: 4 bits + an fp16 scale per 128 weights
         "w4a8": 0.5 + 1 / 64}
INT8_COMPUTE = ("int8", "w4a8")


@dataclasses.dataclass(frozen=True)
class OrinModel:
    bandwidth_gbs: float = 204.8  # LPDDR5
    bw_efficiency: float = 0.70  # sustained fraction for large streaming GEMVs
    fp16_tflops: float = 42.5  # dense tensor-core FP16 (85 with 2:4 sparsity)
    int8_tops: float = 85.0  # dense tensor-core INT8 (170 with 2:4 sparsity)
    compute_efficiency: float = 0.5  # sustained fraction for the prefill's GEMMs


@dataclasses.dataclass(frozen=True)
class VLAModel:
    llm_params: float = 6.74e9
    vision_params: float = 0.6e9
    n_layers: int = 32
    d_model: int = 4096
    vocab: int = 32000
    prefix_tokens: int = 276  # 256 patch tokens + ~20 prompt tokens


def pass_costs_ms(precision: str, hw: OrinModel = OrinModel(), m: VLAModel = VLAModel()) -> dict:
    """Milliseconds of one prefill, one decode/verify pass and one drafter pass at ``precision``."""
    p = PRECISION_MAP.get(precision, precision)
    if p not in BYTES:
        raise ValueError(f"precision {precision!r}: expected one of {sorted(PRECISION_MAP)}")
    bw = hw.bandwidth_gbs * 1e9 * hw.bw_efficiency
    decode = m.llm_params * BYTES[p] / bw
    ops = (hw.int8_tops if p in INT8_COMPUTE else hw.fp16_tflops) * 1e12 * hw.compute_efficiency
    prefill_compute = 2 * (m.llm_params * m.prefix_tokens + m.vision_params * 256) / ops
    prefill = max(prefill_compute, (m.llm_params + m.vision_params) * BYTES[p] / bw)
    layer = m.llm_params / m.n_layers - m.vocab * m.d_model * 2 / m.n_layers  # one decoder layer
    draft = (layer + m.vocab * m.d_model) * BYTES["fp16"] / bw
    return {"prefill_ms": 1e3 * prefill, "decode_ms": 1e3 * decode, "draft_ms": 1e3 * draft}


def project(rows: list[dict], precision: str | None = None, hw: OrinModel = OrinModel(),
            m: VLAModel = VLAModel(), default: str = "fp32") -> dict:
    """Projected ms per action and actions per second for one method's episodes (``bench``'s
    rows: ``verifier_passes``, ``drafter_passes`` and, when present, ``steps[*].precision`` per
    action). ``precision`` prices every pass at that precision; ``None`` uses each step's own
    (DyQ-VLA's mix; fp32 on the CPU stands for FP16 on the Jetson), else ``default`` (the
    precision the run used)."""
    times = []
    for r in rows:
        steps = r.get("steps") or [{}] * len(r["verifier_passes"])
        for vp, dp, st in zip(r["verifier_passes"], r["drafter_passes"], steps):
            c = pass_costs_ms(precision or (st or {}).get("precision") or default, hw, m)
            t = 0.0 if vp == 0 else c["prefill_ms"] + (vp - 1) * c["decode_ms"]
            times.append(t + dp * c["draft_ms"])
    t = np.asarray(times, float)
    mean = float(t.mean()) if t.size else float("nan")
    return {"ms_per_action": mean, "actions_per_s": 1e3 / mean if mean > 0 else float("inf")}
