"""The Hugging Face route: a tiny random LlamaConfig saved locally, mapped, exported, checked."""

import json

import pytest

transformers = pytest.importorskip("transformers")

from edge.engine_cache import read_engine_set  # noqa: E402
from export.build_engines import main as build_main  # noqa: E402
from export.hf_route import HFRouteError, hf_parity, load_hf_verifier  # noqa: E402


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=48 + 256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(path)
    return path


def test_mapped_model_matches_hugging_face(hf_dir):
    v, meta = load_hf_verifier(hf_dir)
    par = hf_parity(v)
    assert par["argmax_agreement"] == 1.0 and par["max_abs_logit_diff"] < 1e-4
    assert v.cfg.n_text == 48 and meta["codec"]["vocab_size"] == 304


def test_build_engines_hf_route(hf_dir, tmp_path):
    out = tmp_path / "set"
    rc = build_main(["--set", f"artifact={hf_dir}", "--set", "source=hf", "--set", f"out={out}",
                     "--set", "precisions=[fp32, int8]", "--set", "measure_memory=false",
                     "--set", "external_data_min_mb=0"])
    assert rc == 0
    man = read_engine_set(out)
    fp32 = [f for f in man["files"] if f["precision"] == "fp32" and f["kind"] == "onnx"]
    assert {f["graph"] for f in fp32} == {"prefill", "verify"}
    assert all(f["parity"]["argmax_agreement"] == 1.0 for f in fp32)
    assert any(f["kind"] == "external_data" for f in man["files"])  # weights stored beside the graph


def test_unsupported_architecture_is_refused(hf_dir, tmp_path):
    bad = tmp_path / "gqa"
    bad.mkdir()
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["num_key_value_heads"] = 2
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFRouteError, match="num_key_value_heads: expected 4"):
        load_hf_verifier(bad)
    with pytest.raises(HFRouteError, match="config.json: not found"):
        load_hf_verifier(tmp_path / "nothing")
