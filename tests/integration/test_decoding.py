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


def test_onepass_candidates_in_the_prefill(trained):
    """Whole-action candidates verified inside the prefill: a right candidate costs one pass, a
    wrong one never changes the exact result, and a partial match continues from the right row."""
    from edge.draft_tree import Tree, chain_tree

    v, out, imgs, prompt = trained
    models, _ = load_models(out)
    no_drafter, _ = load_models(out, with_drafter=False)
    for i in range(8):
        img, pr = imgs[i : i + 1].numpy(), prompt[i].numpy()
        ar, _ = decode_ar(models, img, pr)
        toks, s = decode_speculative(models, img, pr, SpecConfig(), candidates=chain_tree(np.asarray(ar)))
        assert toks == ar and s.verifier_passes == 1 and s.prefill_accepted == 7
        wrong = list(ar)
        wrong[3] = ar[3] + 1 if ar[3] + 1 < CFG.vocab_size else ar[3] - 1
        for m in (models, no_drafter):
            toks, s = decode_speculative(m, img, pr, SpecConfig(), candidates=chain_tree(np.asarray(wrong)))
            assert toks == ar and s.prefill_accepted == 3 and 2 <= s.verifier_passes <= 4
        # two branches sharing the first 3 tokens: the right one wins in a single pass
        tree = Tree(np.asarray(ar[:3] + wrong[3:] + ar[3:]), np.asarray([-1, 0, 1, 2, 3, 4, 5, 2, 7, 8, 9]),
                    np.asarray([1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]), np.zeros(11))
        toks, s = decode_speculative(models, img, pr, SpecConfig(), candidates=tree)
        assert toks == ar and s.verifier_passes == 1 and s.prefill_candidates == 11
        # KERV-style compensation: a rejected tail is filled without more verifier passes
        toks, s = decode_speculative(no_drafter, img, pr, SpecConfig(), candidates=chain_tree(np.asarray(wrong)),
                                     compensate=lambda t: t + wrong[len(t):])
        assert toks == ar[:4] + wrong[4:] and s.verifier_passes == 1 and s.compensated == 1


def test_onepass_equals_prefill_then_verify(trained):
    """The prefill's logits after appended drafts equal a plain prefill followed by a verify pass."""
    from edge.decoding import _prefill_feeds
    from edge.draft_tree import chain_tree, tree_mask

    v, out, imgs, prompt = trained
    models, _ = load_models(out)
    img, pr = imgs[:1].numpy(), prompt[0].numpy()
    ar, _ = decode_ar(models, img, pr)
    tree = chain_tree(np.asarray(ar[:6]))
    one = models.prefill.run(_prefill_feeds(img, pr, tree.token, tree_mask(tree)[1:, 1:], tree.depth - 1))
    plain = models.prefill.run(_prefill_feeds(img, pr))
    T = plain["embeds"].shape[1]
    ver = models.verify.run({"tokens": np.asarray(ar[:6], np.int64)[None], "positions": (T + np.arange(6))[None],
                             "tree_mask": np.tril(np.ones((6, 6), bool))[None], "past_kv": plain["kv"]})
    np.testing.assert_allclose(one["logits"][0, 0], plain["logits"][0, 0], atol=1e-4)
    np.testing.assert_allclose(one["logits"][0, 1:], ver["logits"][0], atol=1e-4)
    np.testing.assert_allclose(one["kv"][T:], ver["new_kv"], atol=1e-4)
