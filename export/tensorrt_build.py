"""TensorRT 10 engines from the exported ONNX graphs (runs only where TensorRT is installed).

``tensorrt_available()`` says whether ``import tensorrt`` works; nothing here is imported at
module load. ``build_engine`` parses the ONNX graph, adds one optimisation profile covering the
contract's dynamic axes (prompt length, draft/tree size, KV length), sets FP16 (and INT8 weight
handling where asked), reuses a timing cache file and writes the serialized engine with
``build_serialized_network``. ``current_key`` reads the TensorRT version and the GPU's compute
capability (through ``torch.cuda`` or ``cuda-python`` when present) so the cache key in
``engines.json`` can be checked by ``edge`` before an engine is ever deserialized.

The ONNX Runtime TensorRT execution provider is the second route: ``ep_context_options`` gives
the provider options that make ORT build, cache (``trt_engine_cache_enable``, timing cache) and
dump an EP-context model beside the ONNX graph.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edge.engine_cache import EngineKey, sha256_file
from edge.io_contract import GraphSpec

log = logging.getLogger(__name__)

__all__ = ["tensorrt_available", "current_key", "build_engine", "profile_shapes", "ep_context_options"]


def tensorrt_available() -> tuple[bool, str]:
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as exc:
        return False, f"TensorRT is not installed ({exc}); on a Jetson it comes with JetPack"
    return True, trt.__version__


def _gpu() -> tuple[str, str]:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}", torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python

        _, props = cudart.cudaGetDeviceProperties(0)
        return f"{props.major}.{props.minor}", props.name.decode()
    except ImportError as exc:
        raise RuntimeError("cannot read the GPU's compute capability: install torch with CUDA or cuda-python") from exc


def current_key(onnx_path: Path, settings: dict) -> EngineKey:
    import tensorrt as trt

    cc, name = _gpu()
    return EngineKey(trt.__version__, cc, name, sha256_file(onnx_path), json.dumps(settings, sort_keys=True))


def profile_shapes(spec: GraphSpec, dims: dict[str, tuple[int, int, int]], fixed: dict[str, int]) -> dict:
    """(min, opt, max) shape per input from per-axis ranges ``dims`` and model sizes ``fixed``."""
    out = {}
    for t in spec.inputs:
        shapes = []
        for k in range(3):
            shapes.append(tuple(a if isinstance(a, int) else (fixed[a] if a in fixed else dims[a][k]) for a in t.axes))
        out[t.name] = tuple(shapes)
    return out


def build_engine(onnx_path: Path, out_path: Path, spec: GraphSpec, shapes: dict, precision: str,
                 timing_cache: Path, workspace_mb: int = 2048) -> dict:
    """Build and write a serialized engine; returns the ``engines.json`` entry (with key)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8w", "int4w"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision in ("int8w", "int4w"):
        # weight-only quantized graphs carry Q/DQ nodes on the weights (strongly typed INT8/INT4)
        config.set_flag(trt.BuilderFlag.INT8) if precision == "int8w" else None
    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in shapes.items():
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build a {precision} engine")
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    out_path.write_bytes(memoryview(blob))
    settings = {"precision": precision, "profiles": {k: [list(s) for s in v] for k, v in shapes.items()},
                "workspace_mb": workspace_mb}
    key = current_key(onnx_path, settings)
    return {"file": out_path.name, "graph": spec.name, "precision": precision, "kind": "tensorrt",
            "sha256": sha256_file(out_path), "key": key.__dict__}


def ep_context_options(cache_dir: Path, fp16: bool = True) -> dict:
    """ONNX Runtime TensorRT EP options: engine + timing cache on disk, EP-context model dump."""
    return {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True, "trt_dump_ep_context_model": True,
            "trt_ep_context_file_path": str(cache_dir)}
