"""Native TensorRT 10 engine behind the ``edge.engine.Engine`` interface (imported lazily).

Only constructed on a device with TensorRT and pycuda (JetPack); nothing here is imported by
the rest of ``edge`` unless a config asks for ``backend: tensorrt``. Before an engine file is
deserialized, its ``engines.json`` entry's key (TensorRT version, compute capability, GPU, ONNX
hash, settings) is compared with the running device (``check_engine_key``): a mismatch is
refused with the fields that differ, so an engine built for another GPU is never run.

Execution uses the TensorRT 10 name-based API: ``set_input_shape`` per input,
``set_tensor_address`` for every I/O tensor, ``execute_async_v3`` on a CUDA stream, and device
buffers grown on demand (allocated once per maximum size). ``run`` copies inputs in, launches,
copies outputs out and synchronises; ``launch``/``wait`` split the same work so the caller's CPU
work (Kalman filter, threshold, step policy) overlaps the GPU pass.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from edge.engine import EngineError
from edge.engine_cache import EngineKey, check_engine_key, sha256_file

log = logging.getLogger(__name__)

__all__ = ["TrtEngine", "device_key"]


def device_key(onnx_sha256: str, settings: str) -> EngineKey:
    import pycuda.driver as cuda
    import tensorrt as trt

    dev = cuda.Context.get_device()
    major, minor = dev.compute_capability()
    return EngineKey(trt.__version__, f"{major}.{minor}", dev.name(), onnx_sha256, settings)


class TrtEngine:
    def __init__(self, root: str | Path, entry: dict, name: str | None = None):
        try:
            import pycuda.autoinit  # noqa: F401  (creates the context)
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise EngineError(f"TensorRT backend needs tensorrt and pycuda (JetPack): {exc}") from None
        path = Path(root) / entry["file"]
        if sha256_file(path) != entry["sha256"]:
            raise EngineError(f"{path}: sha256 does not match engines.json")
        check_engine_key(entry, device_key(entry["key"]["onnx_sha256"], entry["key"]["settings"]))
        self.name = name or path.stem
        self.providers = ["TensorRT-native"]
        self._cuda, self._trt = cuda, trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"{path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._buffers: dict[str, tuple[object, int]] = {}
        self._pending: dict[str, np.ndarray] = {}

    def _device(self, name: str, nbytes: int):
        buf, cap = self._buffers.get(name, (None, 0))
        if nbytes > cap:
            buf = self._cuda.mem_alloc(max(nbytes, 1))
            self._buffers[name] = (buf, nbytes)
        return buf

    def launch(self, feeds: Mapping[str, np.ndarray]) -> None:
        trt, cuda = self._trt, self._cuda
        for n in self.inputs:
            a = np.ascontiguousarray(feeds[n])
            self.context.set_input_shape(n, a.shape)
            buf = self._device(n, a.nbytes)
            if a.nbytes:
                cuda.memcpy_htod_async(buf, a, self.stream)
            self.context.set_tensor_address(n, int(buf))
        self._pending = {}
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            host = cuda.pagelocked_empty(shape, trt.nptype(self.engine.get_tensor_dtype(n)))
            self.context.set_tensor_address(n, int(self._device(n, host.nbytes)))
            self._pending[n] = host
        if not self.context.execute_async_v3(self.stream.handle):
            raise EngineError(f"{self.name}: execute_async_v3 failed")
        for n, host in self._pending.items():
            if host.nbytes:
                cuda.memcpy_dtoh_async(host, self._buffers[n][0], self.stream)

    def wait(self) -> dict[str, np.ndarray]:
        self.stream.synchronize()
        return {n: np.array(h) for n, h in self._pending.items()}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.launch(feeds)
        return self.wait()
