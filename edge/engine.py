"""One engine interface over ONNX Runtime (CPU, CUDA, TensorRT EPs) and native TensorRT.

Contract:
- ``Engine.run(feeds) -> dict[name, np.ndarray]`` with the names of ``edge.io_contract``;
  ``Engine.providers`` lists what the engine really runs on.
- ``OrtEngine(path, providers=("CPUExecutionProvider",), threads=...)``: a GPU provider that was
  asked for but did not come up is a ``EngineError`` at construction, never a silent CPU run
  (onnxruntime-gpu lists CUDA/TensorRT as *available* even without a GPU and then falls back;
  only ``session.get_providers()`` tells the truth).
- Sessions share one global thread pool (``configure_threads`` once per process) so a verifier
  and a drafter session do not fight over 2 cores (ENVIRONMENT.md: 6.9 ms vs 2.9 ms decode).
- ``shared_initializers``: OrtValues added to the session instead of the graph's own copies, so
  several sessions over graphs that differ only in activation precision (MatMulNBits
  ``accuracy_level``) hold one int4 weight copy: DyQ-VLA's "W4AX" on the CPU.
- ``edge.trt_engine.TrtEngine`` (lazy import) implements the same interface with TensorRT 10.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineError", "OrtEngine", "configure_threads", "GPU_PROVIDERS"]

GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider"})
_THREADS_CONFIGURED: int | None = None


class EngineError(RuntimeError):
    """An engine that cannot run as asked (missing file, fallback, wrong key, bad feeds)."""


class Engine(Protocol):
    name: str
    providers: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def configure_threads(intra_op: int, inter_op: int = 1) -> None:
    """Create ONNX Runtime's global thread pools once per process (later calls must agree)."""
    global _THREADS_CONFIGURED
    import onnxruntime as ort

    if _THREADS_CONFIGURED is None:
        ort.set_global_thread_pool_sizes(intra_op, inter_op) if hasattr(ort, "set_global_thread_pool_sizes") else None
        _THREADS_CONFIGURED = intra_op
    elif _THREADS_CONFIGURED != intra_op:
        log.warning("ONNX Runtime thread pool already has %d threads; ignoring request for %d",
                    _THREADS_CONFIGURED, intra_op)


class OrtEngine:
    def __init__(self, path: str | Path, providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
                 threads: int | None = None, shared_initializers: Mapping[str, object] | None = None,
                 name: str | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise EngineError(f"{path}: ONNX graph not found")
        self.name = name or path.stem
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if _THREADS_CONFIGURED is not None:  # the process has global pools: a session may not bring its own
            if threads is not None and threads != _THREADS_CONFIGURED:
                log.warning("%s: %d threads asked, but the process-wide pool has %d; using the pool",
                            path.name, threads, _THREADS_CONFIGURED)
            so.use_per_session_threads = False
        elif threads is not None:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        for key, value in (shared_initializers or {}).items():
            so.add_initializer(key, value)
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise EngineError(f"{path}: ONNX Runtime could not load the graph: {exc}") from None
        self.providers = self.session.get_providers()
        missing = [p for p in wanted if p in GPU_PROVIDERS and p not in self.providers]
        if missing:
            raise EngineError(
                f"{path}: asked for {wanted} but the session runs on {self.providers}; "
                f"{missing} did not come up (no GPU, or a CUDA/TensorRT library missing). Refusing a silent "
                f"CPU fallback: pass providers=['CPUExecutionProvider'] to run on the CPU")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("engine %s on %s", self.name, self.providers)

        # IO binding where it pays: on a GPU provider outputs stay on the device until copied once
        self._device = "cuda" if self.providers[0] in GPU_PROVIDERS else None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._device is None:  # CPU: contiguous numpy inputs are wrapped without a copy
            outs = self.session.run(self.output_names, dict(feeds))
            return dict(zip(self.output_names, outs))
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name, self._device)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))
