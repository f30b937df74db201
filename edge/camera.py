"""Camera sources by URI, each with ``read_latest(max_age_ms) -> Frame | None``.

- ``sim://PATH``: frames from the simulated world (``python -m sim.world``) over a unix stream
  socket: ``FRAME_HEADER`` (magic ``VLAF``, seq, capture ``time.monotonic()`` in seconds (the
  clock is system-wide, so it compares with this process's), views, height, width), then each
  view's RGB bytes. Views are ``image`` (front) and ``wrist_image``.
- ``v4l2:///dev/video0`` and ``gst://PIPELINE`` (a GStreamer pipeline ending in ``appsink``):
  OpenCV's ``VideoCapture`` where OpenCV is installed (an error naming the package otherwise);
  frames are converted to RGB, resized to ``image_size_px`` and stamped when read.
- ``file://EPISODE.npz``: replay of a recorded episode (``sim`` dataset format: ``image``
  [T, H, W, 3] and optionally ``wrist_image``) at ``replay_fps``, looping, stamped when published.

A reader thread per source puts every frame into a latest-value ``Mailbox``; ``read_latest``
returns the newest frame if it is at most ``max_age_ms`` old by its capture time, else ``None``
(a frozen or dead camera reads as ``None``, never as an old frame); ``read_after(t_mono,
timeout_s)`` waits for a frame captured at or after ``t_mono`` (the runtime's after-motion
observation), ``None`` when none arrives in time. ``counters`` holds frames received, reconnects
and errors.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import struct
import threading
import time

import numpy as np

from edge.mailbox import Mailbox

log = logging.getLogger(__name__)

__all__ = ["Frame", "CameraSource", "open_camera", "FRAME_HEADER", "CameraError"]

FRAME_MAGIC = b"VLAF"
FRAME_HEADER = struct.Struct("<4sQdHHH")  # magic, seq, t_mono_s, n_views, height, width
VIEW_NAMES = ("image", "wrist_image")


class CameraError(RuntimeError):
    """A camera URI that cannot be opened (unknown scheme, missing file, missing OpenCV)."""


@dataclasses.dataclass(frozen=True)
class Frame:
    seq: int  # frame number from the source
    t_mono: float  # capture time, time.monotonic() seconds
    views: dict  # name -> uint8 [H, W, 3]


class CameraSource:
    """Base: a reader thread calls ``_read_one()`` (blocking) and publishes into the mailbox."""

    def __init__(self, name: str):
        self.name = name
        self.box: Mailbox[Frame] = Mailbox()
        self.counters = {"frames": 0, "errors": 0, "reconnects": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"camera-{name}", daemon=True)

    def start(self) -> "CameraSource":
        self._thread.start()
        return self

    def read_latest(self, max_age_ms: float) -> Frame | None:
        frame = self.box.get()[0]
        if frame is None or (time.monotonic() - frame.t_mono) * 1e3 > max_age_ms:
            return None
        return frame

    def read_after(self, t_mono: float, timeout_s: float) -> Frame | None:
        """The newest frame captured at or after ``t_mono``, waiting up to ``timeout_s`` for one."""
        deadline = time.monotonic() + timeout_s
        frame, _, version = self.box.get()
        while frame is None or frame.t_mono < t_mono:
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                return None
            frame, _, version = self.box.wait_newer(version, min(left, 0.05))
        return frame

    def wait_first(self, timeout_s: float) -> Frame:
        frame, _, _ = self.box.wait_newer(0, timeout_s)
        if frame is None:
            raise CameraError(f"{self.name}: no frame within {timeout_s:.1f} s")
        return frame

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._read_one()
            except Exception as exc:  # a source failure is counted and retried; staleness is the signal
                if self._stop.is_set():
                    return
                self.counters["errors"] += 1
                if self.counters["errors"] == 1 or self.counters["errors"] % 50 == 0:
                    log.warning("camera %s: %s (retrying)", self.name, exc)
                self._stop.wait(0.2)
                self._reopen()
                continue
            if frame is not None:
                self.counters["frames"] += 1
                self.box.put(frame, frame.t_mono)

    def _read_one(self) -> Frame | None:
        raise NotImplementedError

    def _reopen(self) -> None:
        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class SimCamera(CameraSource):
    def __init__(self, path: str):
        super().__init__(f"sim://{path}")
        self.path = path
        self.sock: socket.socket | None = None
        self._connect()

    def _connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(self.path)
        except OSError as exc:
            s.close()
            raise CameraError(f"sim://{self.path}: cannot connect to the world's frame socket: {exc}") from None
        self.sock = s

    def _reopen(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        try:
            self._connect()
            self.counters["reconnects"] += 1
        except CameraError:
            pass

    def _recv(self, n: int) -> bytes:
        if self.sock is None:
            raise CameraError("not connected")
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                if self._stop.is_set():
                    raise CameraError("closed") from None
                if not buf:
                    return b""
                continue
            if not chunk:
                raise CameraError("the world closed the frame socket")
            buf += chunk
        return bytes(buf)

    def _read_one(self) -> Frame | None:
        head = self._recv(FRAME_HEADER.size)
        if not head:
            return None  # no frame this second (a frozen camera): keep waiting
        magic, seq, t, n, h, w = FRAME_HEADER.unpack(head)
        if magic != FRAME_MAGIC:
            raise CameraError(f"bad frame magic {magic!r}")
        data = self._recv(n * h * w * 3)
        arr = np.frombuffer(data, np.uint8).reshape(n, h, w, 3)
        return Frame(seq, t, {VIEW_NAMES[i]: arr[i] for i in range(min(n, len(VIEW_NAMES)))})

    def close(self) -> None:
        self._stop.set()
        if self.sock is not None:
            self.sock.close()
        super().close()


class FileCamera(CameraSource):
    def __init__(self, path: str, fps: float):
        super().__init__(f"file://{path}")
        try:
            with np.load(path) as z:
                self.views = {k: z[k] for k in VIEW_NAMES if k in z}
        except (OSError, ValueError) as exc:
            raise CameraError(f"file://{path}: cannot read a recorded episode: {exc}") from None
        if "image" not in self.views:
            raise CameraError(f"file://{path}: no 'image' array (sim dataset format)")
        self.period, self.i, self.next_t = 1.0 / fps, 0, time.monotonic()

    def _read_one(self) -> Frame:
        delay = self.next_t - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
        self.next_t = max(self.next_t + self.period, time.monotonic() - self.period)
        k = self.i % len(self.views["image"])
        self.i += 1
        return Frame(self.i, time.monotonic(), {n: v[k] for n, v in self.views.items()})


class OpenCVCamera(CameraSource):
    def __init__(self, uri: str, target: str, backend: str, size_px: int):
        super().__init__(uri)
        try:
            import cv2
        except ImportError:
            raise CameraError(f"{uri}: needs OpenCV (pip install opencv-python-headless, or the distribution's "
                              f"python3-opencv with GStreamer)") from None
        self.cv2, self.size = cv2, size_px
        api = cv2.CAP_V4L2 if backend == "v4l2" else cv2.CAP_GSTREAMER
        self.cap = cv2.VideoCapture(target, api)
        if not self.cap.isOpened():
            raise CameraError(f"{uri}: OpenCV could not open it")
        self.seq = 0

    def _read_one(self) -> Frame:
        ok, bgr = self.cap.read()
        t = time.monotonic()
        if not ok:
            raise CameraError("read failed")
        rgb = self.cv2.cvtColor(self.cv2.resize(bgr, (self.size, self.size)), self.cv2.COLOR_BGR2RGB)
        self.seq += 1
        return Frame(self.seq, t, {"image": rgb})

    def close(self) -> None:
        super().close()
        self.cap.release()


def open_camera(uri: str, replay_fps: float = 10.0, image_size_px: int = 64) -> CameraSource:
    """Open (and start) the source named by ``uri``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise CameraError(f"camera URI {uri!r}: expected sim://, v4l2://, gst:// or file://")
    if scheme == "sim":
        return SimCamera(rest).start()
    if scheme == "file":
        return FileCamera(rest, replay_fps).start()
    if scheme == "v4l2":
        return OpenCVCamera(uri, rest, "v4l2", image_size_px).start()
    if scheme == "gst":
        return OpenCVCamera(uri, rest, "gst", image_size_px).start()
    raise CameraError(f"camera URI {uri!r}: unknown scheme {scheme!r}; expected sim, v4l2, gst or file")
