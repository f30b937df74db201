"""CPU precision variants of an exported graph (ONNX Runtime).

- ``int8``: dynamic quantization of MatMul/Gemm weights (``quantize_dynamic``, QInt8 weights,
  activations quantized per call).
- ``int4``: weight-only 4-bit blocks (``MatMulNBits``, symmetric, block 32) with activations in
  fp32 (``accuracy_level`` 0).
- ``int4a8``: the same int4 weights with int8 activations inside MatMulNBits
  (``accuracy_level`` 4). The two int4 graphs differ only in that attribute, so
  ``shared_int4_initializers`` can hand one set of OrtValues to both sessions: one int4 weight
  copy serving two activation precisions (DyQ-VLA's W4AX on the CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["quantize_int8", "quantize_int4", "set_accuracy_level", "shared_int4_initializers", "PRECISIONS"]

PRECISIONS = ("fp32", "int8", "int4", "int4a8")


def quantize_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return dst


def quantize_int4(src: Path, dst: Path, block_size: int = 32, accuracy_level: int = 0) -> Path:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    q = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True,
                             accuracy_level=accuracy_level)
    q.process()
    onnx.save_model(q.model.model, str(dst))
    return dst


def set_accuracy_level(src: Path, dst: Path, level: int) -> Path:
    """Copy an int4 graph with every MatMulNBits' ``accuracy_level`` set to ``level``."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    n = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend(kept + [helper.make_attribute("accuracy_level", level)])
            n += 1
    if n == 0:
        raise ValueError(f"{src}: no MatMulNBits node to set accuracy_level on")
    onnx.save_model(model, str(dst))
    return dst


def shared_int4_initializers(path: Path) -> dict:
    """OrtValues for every MatMulNBits weight/scale initializer of ``path`` (one copy, shareable)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    names = {i for node in model.graph.node if node.op_type == "MatMulNBits" for i in node.input[1:3]}
    return {init.name: ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(init))
            for init in model.graph.initializer if init.name in names}
