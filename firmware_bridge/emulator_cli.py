"""``python -m firmware_bridge.emulator``: serve an emulated arm controller on a pseudo-terminal.

Prints the pty path as the first line of stdout (``--print-port``), then runs until SIGINT or
SIGTERM, logging a summary line every ``--report-s`` seconds. ``--plant MODULE:FACTORY`` swaps
the numpy servo model for another plant (``sim.plant:make_plant`` drives the MuJoCo arm);
``--inject drop=0.01,flip=0.01`` corrupts what the emulator sends, to test the host's decoder.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time


def main(argv=None) -> int:
    from firmware_bridge.emulator import EmulatorConfig, start_in_thread
    from firmware_bridge.faults import FaultInjector, parse_spec

    p = argparse.ArgumentParser(prog="python -m firmware_bridge.emulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print-port", action="store_true", help="print only the pty path on the first line")
    p.add_argument("--plant", default="", help="MODULE:FACTORY of a plant (default: numpy servo model)")
    p.add_argument("--inject", default="", help="faults on sent frames, e.g. drop=0.01,flip=0.01")
    p.add_argument("--seed", type=int, default=0, help="fault injection seed")
    p.add_argument("--heartbeat-timeout-ms", type=float, default=100.0)
    p.add_argument("--command-timeout-ms", type=float, default=200.0)
    p.add_argument("--report-s", type=float, default=5.0)
    p.add_argument("--duration-s", type=float, default=0.0, help="stop after this long (0: run until signalled)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    plant = None
    if args.plant:
        mod, fn = args.plant.split(":", 1)
        plant = getattr(importlib.import_module(mod), fn)()
    tx = FaultInjector(parse_spec(args.inject), args.seed) if args.inject else None
    cfg = EmulatorConfig(heartbeat_timeout_ms=args.heartbeat_timeout_ms, command_timeout_ms=args.command_timeout_ms)
    h = start_in_thread(cfg, plant, tx)
    print(h.path if args.print_port else f"emulator serving {h.path}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    t0 = time.monotonic()
    while not done.wait(args.report_s):
        e = h.emulator
        logging.getLogger("firmware_bridge.emulator").info("mode %d faults 0x%04x %s decoder %s", e.mode, e.faults, e.counters, e.link.decoder.counters)
        if args.duration_s and time.monotonic() - t0 > args.duration_s:
            break
    h.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
