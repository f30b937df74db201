"""``python -m edge run --config robot.yaml [--set a.b=value ...]``: the robot runtime service.

Loads engines, connects the controller and runs the inference thread, the fixed-rate control
thread and the serial reader (see ``edge/service.py``). With a simulated world in the config
(``deploy/configs/embedded_default.yaml``) it runs the main job: episodes of each suite, a live
status line, and a summary (success per suite, control Hz, accepted length, latency
percentiles), also written as JSON to ``--summary-json``. Without a world it follows
``job.instruction`` until SIGTERM (systemd) or ``job.duration_s``.

Exit status: 0 after the job or a stop request (SIGTERM/SIGINT), 1 after a fault (safe stop:
one ``SAFE STOP`` log line) or a start failure, 2 for a configuration error.
"""

from __future__ import annotations

import os

# Before numpy loads: OpenBLAS's worker threads spin after each BLAS call (the retrieval search's
# product) and then compete with ONNX Runtime's threads. Measured on 2 cores: a prefill with drafts
# took 30 ms instead of 15 and a verify pass 10.6 ms instead of 6.6. One BLAS thread unless set.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402


def _run(args) -> int:
    from edge.config import ConfigError, load, to_dict
    from edge.job import format_summary, run_episodes, run_instruction, summarize
    from edge.run_config import RunConfig
    from edge.service import Service, ServiceError

    log = logging.getLogger("edge")
    overrides = list(args.set)
    if args.episodes_per_suite is not None:
        overrides.append(f"job.episodes_per_suite={args.episodes_per_suite}")
    try:
        cfg = load(RunConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("config: %s", json.dumps(to_dict(cfg), separators=(",", ":")))
    svc = Service(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: svc.request_stop())
    results = None
    try:
        svc.start()
        if svc.world is not None:
            results = run_episodes(svc)
        else:
            run_instruction(svc)
    except ServiceError as exc:
        svc.fault("start", str(exc))
    except Exception as exc:  # anything unexpected still stops the arm first, then is reported
        svc.fault("runtime", f"{type(exc).__name__}: {exc}")
        log.exception("unexpected error")
    finally:
        svc.safe_stop()
    if results is not None:
        summary = summarize(results, svc.tm.report())
        print(format_summary(summary), flush=True)
        if args.summary_json:
            os.makedirs(os.path.dirname(args.summary_json) or ".", exist_ok=True)
            with open(args.summary_json, "w") as f:
                json.dump({"summary": summary, "episodes": results}, f, indent=1)
    return svc.exit_code


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the runtime service", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--config", default=None, help="YAML config (edge/run_config.py); default: built-in defaults")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. control.command_period_ms=5")
    r.add_argument("--episodes-per-suite", type=int, default=None, help="shortcut for --set job.episodes_per_suite=N")
    r.add_argument("--summary-json", default="runs/edge_summary.json", help="write the job summary here ('' to skip)")
    r.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
