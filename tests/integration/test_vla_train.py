"""``python -m vla.train grounding``, ``verifier --init-vision --ground-weight``, then ``drafter`` and
``drafter --init`` end to end on a tiny collected dataset: the files, the handed-over weights and the reported metrics (not the model's quality)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from sim.collect import main as collect
from vla.artifact import load_drafter, load_state
from vla.train import main as train
from vla.train_drafter import FeatureCacheError

MODEL = json.dumps({"coord_channels": True, "film": True, "film_norm": True, "d_model": 64, "n_layers": 1,
                    "n_heads": 2, "ffn_dim": 64})


def test_grounding_then_verifier_then_drafter(tmp_path, caplog):
    data, g, v = tmp_path / "d", tmp_path / "g", tmp_path / "v"
    assert collect(["--suite", "spatial", "--episodes", "2", "--out", str(data)]) == 0
    common = ["--data", str(data), "--model-json", MODEL, "--batch", "4", "--holdout-every", "2", "--threads", "1"]
    assert train(["grounding", "--out", str(g), "--steps", "3", "--warmup", "1", *common]) == 0
    saved = load_state(g / "grounding.pt")
    assert any(k.startswith("ground_head.") for k in saved) and "embed.weight" in saved
    assert not any(k.startswith("layers.") for k in saved)  # the stem and words only, no decoder
    caplog.set_level("INFO")
    assert train(["verifier", "--out", str(v), "--steps", "2", "--warmup", "1", "--init-vision", str(g / "grounding.pt"),
                  "--ground-weight", "1", "--aux-weight", "1", "--eval-every", "0", *common]) == 0
    assert "and its grounding head" in caplog.text
    man = json.loads((v / "manifest.json").read_text())
    metrics = man["training"]["verifier"]["metrics"]
    assert math.isfinite(metrics["final_loss"]) and 0 <= metrics["heldout_first_step_block_error_cm_median"] < 100
    state = load_state(v / "verifier.pt")
    assert not any(k.startswith("ground_head.") for k in state)  # the training heads never reach the artifact
    assert not torch.equal(state["vision.stem.0.weight"], saved["vision.stem.0.weight"])  # trained on from there

    assert train(["drafter", "--out", str(v), "--steps", "2", "--warmup", "1", "--eval-samples", "8", *common]) == 0
    first = load_state(v / "drafter.pt")
    shutil.copy(v / "drafter.pt", tmp_path / "first_drafter.pt")
    # the features cache: written by one run, read by the next, the same drafter either way
    cache = tmp_path / "feats.pt"
    for expect_log in ("cached in", "features from"):
        caplog.clear()
        assert train(["drafter", "--out", str(v), "--steps", "2", "--warmup", "1", "--eval-samples", "8",
                      "--features-cache", str(cache), *common]) == 0
        assert expect_log in caplog.text and cache.exists()
        cached = load_state(v / "drafter.pt")
        assert all(torch.equal(cached[k], first[k]) for k in first)
    with pytest.raises(FeatureCacheError, match="seed=0"):  # built for another row selection: refused
        train(["drafter", "--out", str(v), "--steps", "2", "--seed", "1", "--features-cache", str(cache), *common])
    # at learning rate 0 a re-distilled drafter is exactly the one it started from; a fresh one would not be
    assert train(["drafter", "--out", str(v), "--steps", "1", "--warmup", "1", "--lr", "0", "--eval-samples", "8",
                  "--init", str(tmp_path / "first_drafter.pt"), *common]) == 0
    assert "drafter initialised from" in caplog.text
    again = load_state(v / "drafter.pt")
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
    # --drafter-ffn widens the --init drafter (same function at lr 0) and the manifest records the size
    assert train(["drafter", "--out", str(v), "--steps", "1", "--warmup", "1", "--lr", "0", "--eval-samples", "8",
                  "--init", str(tmp_path / "first_drafter.pt"), "--drafter-ffn", "96", *common]) == 0
    wide = load_state(v / "drafter.pt")
    assert wide["layer.down.weight"].shape[1] == 96 and torch.equal(wide["layer.down.weight"][:, :64],
                                                                     first["layer.down.weight"])
    assert json.loads((v / "manifest.json").read_text())["drafter"] == {"ffn_dim": 96}
    assert load_drafter(v).layer.down.weight.shape[1] == 96


def test_grounding_grows_a_trained_verifier_to_film_order(tmp_path, caplog):
    """``grounding --init`` starts from a verifier (FiLM's new order inputs zero), ``--action-stats`` keeps its
    codec, and grounding.pt hands the word-place gates to ``verifier --init-vision`` unchanged."""
    data, v, g, w = (tmp_path / n for n in ("d", "v", "g", "w"))
    assert collect(["--suite", "long", "--episodes", "2", "--out", str(data)]) == 0
    common = ["--data", str(data), "--batch", "4", "--holdout-every", "2", "--threads", "1", "--warmup", "1"]
    assert train(["verifier", "--out", str(v), "--steps", "1", "--eval-every", "0", "--model-json", MODEL, *common]) == 0
    ordered = json.dumps({**json.loads(MODEL), "film_order": True})
    caplog.set_level("INFO")
    assert train(["grounding", "--out", str(g), "--steps", "2", "--init", str(v / "verifier.pt"), "--action-stats",
                  str(v / "manifest.json"), "--model-json", ordered, *common]) == 0
    assert "vision.film.weight: 64 inputs widened to 128 (zeros)" in caplog.text
    saved = load_state(g / "grounding.pt")
    assert saved["vision.film.weight"].shape[1] == 128 and "word_pos" in saved
    assert train(["verifier", "--out", str(w), "--steps", "1", "--lr", "0", "--eval-every", "0", "--init",
                  str(v / "verifier.pt"), "--init-vision", str(g / "grounding.pt"), "--action-stats",
                  str(v / "manifest.json"), "--model-json", ordered, *common]) == 0
    gates = load_state(w / "verifier.pt")["word_pos"]
    assert torch.allclose(gates, saved["word_pos"].to(gates.dtype), rtol=1e-3, atol=1e-3)  # fp16 in verifier.pt
    man, base = (json.loads((d / "manifest.json").read_text()) for d in (w, v))
    assert man["codec"]["action"] == base["codec"]["action"]
    assert man["data"]["action_stats_from"] == str(v / "manifest.json")
