"""export.build_engines on a tiny artifact: parity, precision variants, manifest, refusals."""

import json

import numpy as np
import pytest
import torch

from edge.codec import ActionStats
from edge.engine_cache import EngineKey, EngineSetError, check_engine_key, read_engine_set
from export.build_engines import main as build_main
from vla.artifact import save_state, write_manifest
from vla.drafter import Drafter
from vla.model import VLAConfig, Verifier
from edge.tokenizer import Tokenizer

CFG = VLAConfig(d_model=64, n_layers=2, n_heads=4, ffn_dim=128, n_text=48)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifact")
    torch.manual_seed(0)
    save_state(Verifier(CFG), root / "verifier.pt", dtype=torch.float32)
    save_state(Drafter(CFG), root / "drafter.pt", dtype=torch.float32)
    instr = ["pick up the red block", "put the blue block on the plate"]
    Tokenizer.build(instr, CFG.n_text).save(root / "tokenizer.json")
    stats = ActionStats(q01=(-0.01,) * 6 + (0.0,), q99=(0.01,) * 6 + (1.0,), mask=(True,) * 6 + (False,))
    write_manifest(root, CFG, stats, {"instructions": instr})
    return root


@pytest.fixture(scope="module")
def engine_set(artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("eng") / "set"
    rc = build_main(["--set", f"artifact={artifact}", "--set", f"out={out}", "--set", "measure_memory=false"])
    assert rc == 0
    return out


def test_build_writes_checked_set(engine_set, capsys):
    man = read_engine_set(engine_set)
    by = {(f["graph"], f["precision"]): f for f in man["files"] if f["kind"] == "onnx"}
    assert set(by) == {(g, p) for g in ("prefill", "verify") for p in ("fp32", "int8", "int4", "int4a8")} | {("draft", "fp32")}
    for g in ("prefill", "verify", "draft"):
        assert by[(g, "fp32")]["parity"]["argmax_agreement"] == 1.0
        assert by[(g, "fp32")]["parity"]["max_abs_logit_diff"] < 1e-4
    # quantized variants are smaller and reported (int4 differs more than int8: see the note)
    assert by[("verify", "int4")]["size_mb"] < by[("verify", "fp32")]["size_mb"]
    assert 0.0 <= by[("verify", "int4")]["parity"]["argmax_agreement"] <= 1.0
    assert man["tensorrt"]["available"] is False and not list(engine_set.glob("*.engine"))
    assert not list(engine_set.parent.glob(".set.*"))  # no temporary directory left behind


def test_corrupt_file_is_refused(engine_set, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(engine_set, copy)
    p = copy / "verify.onnx"
    data = bytearray(p.read_bytes())
    data[-10] ^= 0x55
    p.write_bytes(bytes(data))
    with pytest.raises(EngineSetError, match="verify.onnx: sha256 does not match"):
        read_engine_set(copy)


def test_engine_key_mismatch_is_refused():
    built = EngineKey("10.3.0", "8.7", "Orin", "abc", '{"precision": "fp16"}')
    entry = {"file": "verify.fp16.engine", "key": built.__dict__}
    check_engine_key(entry, built)  # same device: accepted
    other = EngineKey("10.3.0", "9.0", "H100", "abc", '{"precision": "fp16"}')
    with pytest.raises(EngineSetError, match="compute_capability: engine has '8.7', this device needs '9.0'"):
        check_engine_key(entry, other)
    with pytest.raises(EngineSetError, match="without a cache key"):
        check_engine_key({"file": "x.engine"}, built)
    assert built.digest() != other.digest()


def test_bad_inputs_fail_cleanly(artifact, tmp_path, capsys):
    out = tmp_path / "o"
    assert build_main(["--set", f"artifact={tmp_path / 'missing'}", "--set", f"out={out}"]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".o.*"))
    assert build_main(["--set", "precisoins=[fp32]"]) == 2
    assert "did you mean 'precisions'" in capsys.readouterr().err
    # a checkpoint whose action-bin layout does not match the codec
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("verifier.pt", "drafter.pt", "tokenizer.json"):
        (bad / f).write_bytes((artifact / f).read_bytes())
    man = json.loads((artifact / "manifest.json").read_text())
    man["codec"]["n_bins"] = 200
    (bad / "manifest.json").write_text(json.dumps(man))
    assert build_main(["--set", f"artifact={bad}", "--set", f"out={out}"]) == 2
    assert "do not match the model's" in capsys.readouterr().err


@pytest.mark.parametrize("order", [False, True], ids=["film", "film_order"])
def test_film_and_coordinate_encoder_export_with_parity(tmp_path, order):
    """The optional encoder inputs (coordinate channels, FiLM on the instruction, with word order: a
    cumulative sum over the prompt and a gather) live inside the prefill graph: the exported graph
    matches PyTorch on prompts of three lengths."""
    import dataclasses

    from edge.engine import OrtEngine
    from export.graphs import PrefillGraph, example_inputs
    from export.onnx_export import compare, export_graph
    from edge.io_contract import PREFILL

    cfg = dataclasses.replace(CFG, film=True, coord_channels=True, film_norm=order, film_order=order)
    torch.manual_seed(0)
    v = Verifier(cfg).eval()
    with torch.no_grad():
        v.vision.film.weight.normal_(0.0, 0.1)
    graph = PrefillGraph(v).eval()
    path = export_graph(graph, PREFILL, example_inputs(cfg)["prefill"], tmp_path / "prefill.onnx")
    sess = OrtEngine(path).session  # the project's session options (the process may have global thread pools)
    feeds = [example_inputs(cfg, prompt_len=n, seed=s)["prefill"] for n, s in ((12, 1), (7, 2), (15, 3))]
    r = compare(graph, sess, PREFILL, feeds)
    assert r["argmax_agreement"] == 1.0 and r["max_abs_logit_diff"] < 1e-4
