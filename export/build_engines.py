"""``python -m export.build_engines [--config export.yaml] [--set a.b=v]``: the host build step.

Exports the verifier (prefill and verify graphs) and the drafter (draft graph) of a model
artifact (default: the committed reference artifact) to ONNX following ``edge.io_contract``,
checks each against PyTorch on a fixed check set (the build fails when fp32 argmax agreement is
below 100% or the logit difference exceeds ``max_abs_logit_diff``), makes the CPU precision
variants (int8 dynamic, int4 weight-only, int4 weights with int8 activations sharing one weight
copy), measures size and resident memory, and builds TensorRT engines where TensorRT is
installed. Everything is written into a temporary directory beside the output and renamed into
place only when complete, with ``engines.json`` listing every file, its hash and its metrics.
Without TensorRT the command says so and writes no engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from edge import config as cfgmod
from edge.engine import OrtEngine
from edge.engine_cache import FORMAT_VERSION, MANIFEST, sha256_file
from edge.io_contract import GRAPHS

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    samples: int = 6  # check-set size per graph
    max_abs_logit_diff: float = 1e-3  # fp32 ONNX vs PyTorch bound (logits)
    min_fp32_agreement: float = 1.0  # argmax agreement required for fp32


@dataclasses.dataclass(frozen=True)
class TensorRTConfig:
    enabled: bool = True  # build engines when TensorRT is importable
    precisions: tuple[str, ...] = ("fp16",)  # fp16, int8w, int4w
    workspace_mb: int = 2048  # builder workspace
    max_prompt_len: int = 64  # profile max for prompt_ids
    max_draft: int = 64  # profile max for draft / tree size
    max_past_len: int = 256  # profile max for the KV length


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    artifact: str = str(ROOT / "artifacts" / "reference")  # model artifact directory (manifest.json)
    out: str = str(ROOT / "build" / "engines")  # engine set directory written by this command
    source: str = "reference"  # reference (vla.artifact) or hf (a local Hugging Face Llama directory)
    precisions: tuple[str, ...] = ("fp32", "int8", "int4", "int4a8")  # CPU variants to build
    opset: int = 17  # ONNX opset
    external_data_min_mb: float = 512.0  # graphs larger than this store weights as external data
    measure_memory: bool = True  # resident memory of each session, in a subprocess
    parity: ParityConfig = dataclasses.field(default_factory=ParityConfig)
    tensorrt: TensorRTConfig = dataclasses.field(default_factory=TensorRTConfig)


def _rss_mb_of_session(path: Path) -> float:
    code = (
        "import onnxruntime as ort, sys\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
        "a = rss(); so = ort.SessionOptions(); so.intra_op_num_threads = 1\n"
        "s = ort.InferenceSession(sys.argv[1], so, providers=['CPUExecutionProvider'])\n"
        "print((rss() - a) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    return float(out.stdout.strip()) if out.returncode == 0 else float("nan")


def load_models(cfg: ExportConfig):
    """``(verifier, drafter_or_None, prompts, meta)`` for the configured source."""
    if cfg.source == "reference":
        from vla.artifact import load_drafter, load_manifest, load_tokenizer, load_verifier

        verifier, man = load_verifier(cfg.artifact)
        drafter = load_drafter(cfg.artifact) if "drafter.pt" in man["files"] else None
        tok = load_tokenizer(cfg.artifact)
        # a model that reads the arm state gets one near the workspace centre, gripper open (ignored otherwise)
        arm = {"ee_pos": (0.5, 0.0, 0.25), "gripper": 0.08}
        prompts = [tok.prompt_ids(i, arm) for i in man.get("instructions", [])[:6]] or None
        return verifier, drafter, prompts, {"artifact": cfg.artifact, "codec": man["codec"], "model": man["model"]}
    if cfg.source == "hf":
        from export.hf_route import load_hf_verifier

        verifier, meta = load_hf_verifier(cfg.artifact)
        return verifier, None, None, meta
    raise cfgmod.ConfigError(f"source: expected 'reference' or 'hf', got {cfg.source!r}")


def build(cfg: ExportConfig) -> dict:

    from export.graphs import DraftGraph, PrefillGraph, VerifyGraph, example_inputs
    from export.onnx_export import ExportError, check_feeds, compare, export_graph
    from export.quantize import quantize_int4, quantize_int8, set_accuracy_level
    from export.tensorrt_build import tensorrt_available

    verifier, drafter, prompts, meta = load_models(cfg)
    vcfg = verifier.cfg
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    rows, files = [], []
    try:
        modules = {"prefill": PrefillGraph(verifier), "verify": VerifyGraph(verifier)}
        if drafter is not None:
            modules["draft"] = DraftGraph(drafter, verifier.lm_head)
        feeds = check_feeds(verifier, drafter, prompts, n=cfg.parity.samples)
        example = example_inputs(vcfg)
        steps = [(g, p) for g in modules for p in cfg.precisions if g != "draft" or p == "fp32"]
        bar = tqdm(steps, desc="build", dynamic_ncols=True)
        for graph, prec in bar:
            bar.set_postfix_str(f"{graph}/{prec}")
            t0 = time.monotonic()
            spec, mod = GRAPHS[graph], modules[graph]
            fp32 = tmp / f"{graph}.onnx"
            path = fp32 if prec == "fp32" else tmp / f"{graph}.{prec}.onnx"
            if prec == "fp32":
                export_graph(mod, spec, example[graph], fp32, cfg.opset, cfg.external_data_min_mb)
            elif prec == "int8":
                quantize_int8(fp32, path)
            elif prec == "int4":
                quantize_int4(fp32, path)
            elif prec == "int4a8":
                int4 = tmp / f"{graph}.int4.onnx"
                if not int4.exists():
                    quantize_int4(fp32, int4)
                set_accuracy_level(int4, path, 4)
            else:
                raise cfgmod.ConfigError(f"precisions: unknown precision {prec!r}; expected fp32, int8, int4, int4a8")
            # through OrtEngine: in a process whose ONNX Runtime already has global thread pools (a test run,
            # a bench) a session may not bring its own threads
            sess = OrtEngine(path, threads=2, name=f"{graph}/{prec}").session
            par = compare(mod, sess, spec, feeds[graph])
            if prec == "fp32" and (par["argmax_agreement"] < cfg.parity.min_fp32_agreement
                                   or par["max_abs_logit_diff"] > cfg.parity.max_abs_logit_diff):
                raise ExportError(
                    f"{graph}: fp32 ONNX disagrees with PyTorch: agreement {par['argmax_agreement']:.4f} "
                    f"(need {cfg.parity.min_fp32_agreement}), max |logit diff| {par['max_abs_logit_diff']:.2e} "
                    f"(bound {cfg.parity.max_abs_logit_diff:.0e})")
            size = sum(p.stat().st_size for p in tmp.glob(path.name + "*"))
            rss = _rss_mb_of_session(path) if cfg.measure_memory else float("nan")
            row = {"graph": graph, "precision": prec, "file": path.name, "size_mb": size / 2**20,
                   "rss_mb": rss, "seconds": time.monotonic() - t0, **par}
            rows.append(row)
            files.append({"file": path.name, "graph": graph, "precision": prec, "kind": "onnx",
                          "sha256": sha256_file(path), "parity": par, "size_mb": row["size_mb"], "rss_mb": rss})
            for extra in tmp.glob(path.name + ".data"):
                files.append({"file": extra.name, "graph": graph, "precision": prec, "kind": "external_data",
                              "sha256": sha256_file(extra)})
        import numpy as np

        tok_file = Path(cfg.artifact) / "tokenizer.json"
        if cfg.source == "reference" and tok_file.is_file():
            shutil.copyfile(tok_file, tmp / "tokenizer.json")
            files.append({"file": "tokenizer.json", "graph": "tokenizer", "precision": "-", "kind": "tokenizer",
                          "sha256": sha256_file(tmp / "tokenizer.json")})
        emb = tmp / "token_embeddings.npy"  # the drafter's next-token inputs, looked up on the CPU
        np.save(emb, verifier.embed.weight.detach().float().numpy())
        files.append({"file": emb.name, "graph": "embeddings", "precision": "fp32", "kind": "array",
                      "sha256": sha256_file(emb)})
        trt_ok, trt_msg = tensorrt_available()
        trt_status = {"available": trt_ok, "detail": trt_msg, "engines": []}
        if trt_ok and cfg.tensorrt.enabled:
            trt_status["engines"] = _build_trt(cfg, tmp, vcfg, list(modules), files)
        elif not trt_ok:
            print(f"TensorRT: not available here ({trt_msg}). Built ONNX Runtime artifacts only; "
                  "engines are built on the device that runs them.")
        (tmp / "io_contract.json").write_text(json.dumps(
            {g: {"inputs": [dataclasses.asdict(t) for t in GRAPHS[g].inputs],
                 "outputs": [dataclasses.asdict(t) for t in GRAPHS[g].outputs]} for g in modules}, indent=1))
        runtime = {"kv_row_shape": [vcfg.n_layers, 2, vcfg.n_heads, vcfg.head_dim],
                   "draft_kv_row_shape": [2, vcfg.n_heads, vcfg.head_dim], "max_seq": vcfg.max_seq,
                   "vocab_size": vcfg.vocab_size, "n_bins": vcfg.n_bins, "n_views": vcfg.n_views,
                   "image_size_px": vcfg.image_size_px}
        manifest = {"format_version": FORMAT_VERSION, "source": meta, "runtime": runtime, "config": cfgmod.to_dict(cfg),
                    "files": files, "tensorrt": trt_status, "created_unix": time.time()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_table(rows)
    return manifest


def _build_trt(cfg: ExportConfig, tmp: Path, vcfg, graphs: list[str], files: list) -> list:
    from export.tensorrt_build import build_engine, profile_shapes

    t = cfg.tensorrt
    fixed = {"views": vcfg.n_views, "height": vcfg.image_size_px, "width": vcfg.image_size_px,
             "layers": vcfg.n_layers, "heads": vcfg.n_heads, "head_dim": vcfg.head_dim, "d_model": vcfg.d_model}
    dims = {"prompt_len": (1, 24, t.max_prompt_len), "num_draft": (0, 7, t.max_draft),
            "num_new": (1, 7, t.max_draft), "past_len": (0, 64, t.max_past_len)}
    built = []
    for graph in graphs:
        for prec in t.precisions:
            entry = build_engine(tmp / f"{graph}.onnx", tmp / f"{graph}.{prec}.engine", GRAPHS[graph],
                                 profile_shapes(GRAPHS[graph], dims, fixed), prec, tmp / "timing.cache",
                                 t.workspace_mb)
            files.append(entry)
            built.append(entry["file"])
    return built


def print_table(rows: list[dict]) -> None:
    print(f"\n{'graph':<8} {'precision':<9} {'size MB':>8} {'RSS MB':>7} {'agree':>7} {'max|dlogit|':>12} {'time s':>7}")
    for r in rows:
        print(f"{r['graph']:<8} {r['precision']:<9} {r['size_mb']:>8.2f} {r['rss_mb']:>7.1f} "
              f"{100 * r['argmax_agreement']:>6.1f}% {r['max_abs_logit_diff']:>12.2e} {r['seconds']:>7.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.build_engines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="export YAML (fields of ExportConfig); default: the reference artifact")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = cfgmod.load(ExportConfig, args.config, args.set)
        print(f"export config: {json.dumps(cfgmod.to_dict(cfg))}")
        t0 = time.monotonic()
        build(cfg)
        print(f"\nengine set written to {cfg.out} in {time.monotonic() - t0:.1f} s")
        return 0
    except Exception as exc:  # report any failure as one clear line; the temp dir is already gone
        from edge.config import ConfigError
        from export.onnx_export import ExportError

        known = (ConfigError, ExportError, FileNotFoundError, ValueError)
        if not isinstance(exc, known):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
