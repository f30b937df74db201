"""OrtEngine under a process-wide thread pool: a later engine that asks for its own threads still loads.

Runs in a subprocess because ONNX Runtime's global pools are per process and cannot be undone.
"""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, onnx
    from onnx import helper, TensorProto
    from edge.engine import OrtEngine, configure_threads
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = sys.argv[1]
    onnx.save(m, path)
    configure_threads(1)
    shared = OrtEngine(path)
    own = OrtEngine(path, threads=2)   # would raise 'use_per_session_threads must be false'
    for eng in (shared, own):
        out = eng.run({"x": np.array([-1.0, 2.0], np.float32)})["y"]
        assert out.tolist() == [0.0, 2.0], out
    print("ok")
""")


def test_engine_with_threads_after_global_pool(tmp_path):
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "relu.onnx")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")
