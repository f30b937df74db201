"""Camera sources by URI: file:// replay freshness, a closed source reads stale, clear errors."""

import time

import numpy as np
import pytest

from edge.camera import CameraError, open_camera
from edge.config import ConfigError, load
from edge.run_config import RunConfig


def test_file_replay_is_fresh_then_stale_when_stopped(tmp_path):
    path = tmp_path / "ep.npz"
    imgs = np.arange(5 * 8 * 8 * 3, dtype=np.uint8).reshape(5, 8, 8, 3)
    np.savez(path, image=imgs, wrist_image=imgs[::-1])
    cam = open_camera(f"file://{path}", replay_fps=50)
    try:
        first = cam.wait_first(2.0)
        assert set(first.views) == {"image", "wrist_image"} and first.views["image"].shape == (8, 8, 3)
        time.sleep(0.2)
        f = cam.read_latest(max_age_ms=100)
        assert f is not None and f.seq > first.seq and time.monotonic() - f.t_mono < 0.1
    finally:
        cam.close()
    time.sleep(0.15)
    assert cam.read_latest(max_age_ms=100) is None  # a stopped camera never hands out an old frame
    assert cam.counters["frames"] >= 5


def test_camera_uri_errors(tmp_path):
    with pytest.raises(CameraError, match="unknown scheme 'rtsp'"):
        open_camera("rtsp://x")
    with pytest.raises(CameraError, match="expected sim://"):
        open_camera("/dev/video0")
    with pytest.raises(CameraError, match="cannot read a recorded episode"):
        open_camera(f"file://{tmp_path / 'missing.npz'}")
    with pytest.raises(CameraError, match="cannot connect to the world's frame socket"):
        open_camera(f"sim://{tmp_path / 'no.sock'}")
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(CameraError, match="needs OpenCV"):
            open_camera("v4l2:///dev/video0")


def test_shipped_config_loads_and_typos_are_named():
    cfg = load(RunConfig, "deploy/configs/embedded_default.yaml")
    assert cfg.world.command[:3] == ("python", "-m", "sim.world") and cfg.control.command_period_ms <= 10
    with pytest.raises(ConfigError, match="did you mean 'command_period_ms'"):
        load(RunConfig, "deploy/configs/embedded_default.yaml", ["control.command_period=5"])
