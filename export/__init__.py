"""export: host build step (PyTorch -> checked ONNX -> TensorRT engines on the device)."""
