"""Decoders over real ONNX Runtime sessions of a tiny exported model.

r = 0 speculative decoding (chain and tree) must equal AR greedy token for token, and AR must
equal the PyTorch reference; the drafter is distilled for a few steps so drafts are accepted
and the acceptance path is really exercised.
"""

import numpy as np
import pytest
import torch

from edge.acceptance import AcceptRule
from edge.decoding import SpecConfig, decode_ar, decode_speculative
from edge.engine import EngineError, OrtEngine
from edge.runtime_models import load_models
from vla.drafter import Drafter, distill_loss, drafter_inputs

from tests.integration.test_export import CFG, artifact  # noqa: F401  (fixture reuse)


@pytest.fixture(scope="module")
def trained(artifact, tmp_path_factory):  # noqa: F811
    """A tiny verifier with a drafter distilled on its greedy outputs, exported."""
    from export.build_engines import main as build_main
    from vla.artifact import load_verifier, save_state

    torch.manual_seed(0)
    v, _ = load_verifier(artifact)
    for p in v.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (64, CFG.n_views, 64, 64, 3), generator=g, dtype=torch.uint8)
    prompt = torch.randint(4, CFG.n_text, (64, 9), generator=g)
    greedy = v.greedy_actions(imgs, prompt)
    d = Drafter(CFG)
    opt = torch.optim.AdamW(d.parameters(), lr=3e-3)
    batch = drafter_inputs(v, imgs, prompt, greedy)
    for _ in range(150):
        opt.zero_grad()
        loss, _ = distill_loss(d, v, batch)
        loss.backward()
        opt.step()
    root = tmp_path_factory.mktemp("trained")
    for f in ("verifier.pt", "tokenizer.json", "manifest.json"):
        (root / f).write_bytes((artifact / f).read_bytes())
    save_state(d, root / "drafter.pt", dtype=torch.float32)
    from vla.artifact import write_manifest
    from edge.codec import ActionStats
    import json

    man = json.loads((root / "manifest.json").read_text())
    write_manifest(root, CFG, ActionStats.from_json(man["codec"]["action"]), {})
    out = tmp_path_factory.mktemp("eng") / "set"
    assert build_main(["--set", f"artifact={root}", "--set", f"out={out}", "--set", "measure_memory=false",
                       "--set", "precisions=[fp32]"]) == 0
    return v, out, imgs, prompt


def test_r0_speculative_equals_ar_equals_pytorch(trained):
    v, out, imgs, prompt = trained
    models, _ = load_models(out)
    ref = v.greedy_actions(imgs, prompt).tolist()
    accepted = {"chain": 0, "tree": 0}
    for i in range(len(imgs)):
        img, pr = imgs[i : i + 1].numpy(), prompt[i].numpy()
        ar, st = decode_ar(models, img, pr)
        assert ar == ref[i]
        assert st.verifier_passes == 7
        for mode in ("chain", "tree"):
            toks, s = decode_speculative(models, img, pr, SpecConfig(draft=mode, rule=AcceptRule()))
            assert toks == ar, (mode, i)
            assert s.verifier_passes == 1 + len(s.accepted) and s.verifier_passes <= 7
            accepted[mode] += sum(s.accepted)
    assert accepted["chain"] > 0 and accepted["tree"] >= accepted["chain"]


def test_relaxed_acceptance_saves_passes(trained):
    v, out, imgs, prompt = trained
    models, _ = load_models(out)
    exact = relaxed = 0
    for i in range(16):
        img, pr = imgs[i : i + 1].numpy(), prompt[i].numpy()
        exact += decode_speculative(models, img, pr, SpecConfig(draft="chain"))[1].verifier_passes
        toks, s = decode_speculative(models, img, pr, SpecConfig(draft="chain", rule=AcceptRule.relaxed(10**6, False)))
        relaxed += s.verifier_passes
        assert s.verifier_passes == 2  # everything accepted: prefill + one verify pass
    assert relaxed < exact


def test_gpu_fallback_is_refused(trained):
    _, out, _, _ = trained
    with pytest.raises(EngineError, match="Refusing a silent CPU fallback"):
        OrtEngine(out / "verify.onnx", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    e = OrtEngine(out / "verify.onnx")
    assert e.providers == ["CPUExecutionProvider"]
