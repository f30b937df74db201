"""Shared pytest options: ``--serial-url`` runs the link tests against a real controller.

Without it, tests that need a controller get the emulator on a pseudo-terminal (in a thread).
Markers: ``hil`` (hardware-in-the-loop latency tests), ``slow`` (runs by default; ``-m "not slow"``
skips them).
"""

import pytest


def pytest_addoption(parser):
    parser.addoption("--serial-url", default=None,
                     help="serial URL of a real arm controller (default: the emulator on a pty)")


def pytest_configure(config):
    config.addinivalue_line("markers", "hil: hardware-in-the-loop latency tests (emulator by default)")
    config.addinivalue_line("markers", "slow: long-running test (runs by default)")


@pytest.fixture
def controller(request):
    """``(url, emulator_or_None)``: a controller to talk to. The emulator is stopped afterwards."""
    url = request.config.getoption("--serial-url")
    if url:
        yield url, None
        return
    from firmware_bridge.emulator import start_in_thread

    h = start_in_thread()
    yield h.path, h.emulator
    h.stop()


@pytest.fixture
def emulator_only(request):
    if request.config.getoption("--serial-url"):
        pytest.skip("needs the emulator's internals (fault injection or counters), not a real controller")


@pytest.fixture(scope="session")
def tiny_engine_set(tmp_path_factory):
    """An fp32 engine set built from a tiny random-weights artifact whose tokenizer knows every
    task instruction of the simulated world (runtime plumbing tests; success is not expected)."""
    import torch

    from edge.codec import ActionStats
    from edge.tokenizer import Tokenizer
    from export.build_engines import main as build_main
    from sim.tasks import list_tasks
    from vla.artifact import save_state, write_manifest
    from vla.drafter import Drafter
    from vla.model import VLAConfig, Verifier

    cfg = VLAConfig(d_model=64, n_layers=2, n_heads=4, ffn_dim=128, n_text=48)
    root = tmp_path_factory.mktemp("tiny_artifact")
    torch.manual_seed(0)
    save_state(Verifier(cfg), root / "verifier.pt", dtype=torch.float32)
    save_state(Drafter(cfg), root / "drafter.pt", dtype=torch.float32)
    instr = [t.instruction for t in list_tasks("all")]
    Tokenizer.build(instr, cfg.n_text).save(root / "tokenizer.json")
    stats = ActionStats(q01=(-0.01,) * 6 + (0.0,), q99=(0.01,) * 6 + (1.0,), mask=(True,) * 6 + (False,))
    write_manifest(root, cfg, stats, {"instructions": instr})
    out = tmp_path_factory.mktemp("tiny_engines") / "set"
    assert build_main(["--set", f"artifact={root}", "--set", f"out={out}", "--set", "measure_memory=false",
                       "--set", "precisions=[fp32]"]) == 0
    return out
