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
