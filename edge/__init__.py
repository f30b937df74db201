"""edge: the robot runtime (decoding, kinematics, codec, control loop).

Imports numpy, pyyaml, onnxruntime and firmware_bridge only; never torch, mujoco,
sim, vla, export or calib (ARCHITECTURE.md).
"""
