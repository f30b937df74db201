"""The runtime's link to a simulated world process (``python -m sim.world``), never an import.

``start_world(command, timeout_s)`` starts the world as a subprocess (``python`` as the first
word means this interpreter) and reads its banner, the first stdout line: ``{"serial": PTY,
"camera": "sim://...", "control": PATH, "pid": ...}``. ``WorldClient(path)`` speaks the world's
control socket (JSON lines, one request one reply): ``tasks(suites)``, ``start_episode(suite,
task, seed)``, ``status()``, ``freeze_camera(on)``. A reply with ``ok: false`` raises
``WorldError`` with the world's message. On a real robot there is no world: the job follows one
instruction instead.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

__all__ = ["WorldError", "WorldClient", "WorldProcess", "start_world"]


class WorldError(RuntimeError):
    """The world did not start, or refused a request."""


class WorldClient:
    def __init__(self, path: str, timeout_s: float = 5.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(path)
        except OSError as exc:
            raise WorldError(f"{path}: cannot connect to the world's control socket: {exc}") from None
        self.file = self.sock.makefile("rwb")
        self._lock = threading.Lock()

    def request(self, **req) -> dict:
        with self._lock:
            try:
                self.file.write((json.dumps(req) + "\n").encode())
                self.file.flush()
                line = self.file.readline()
            except OSError as exc:
                raise WorldError(f"world request {req.get('cmd')!r} failed: {exc}") from None
        if not line:
            raise WorldError(f"world closed the control socket during {req.get('cmd')!r}")
        reply = json.loads(line)
        if not reply.pop("ok", False):
            raise WorldError(f"world refused {req}: {reply.get('error')}")
        return reply

    def tasks(self, suites) -> list[dict]:
        out = []
        for s in suites:
            out += self.request(cmd="tasks", suite=s)["tasks"]
        return out

    def start_episode(self, suite: str, task: str, seed: int) -> dict:
        return self.request(cmd="episode", suite=suite, task=task, seed=int(seed))

    def status(self) -> dict:
        return self.request(cmd="status")

    def freeze_camera(self, on: bool = True) -> dict:
        return self.request(cmd="freeze_camera", on=on)

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class WorldProcess:
    """A started world: ``banner`` (serial, camera, control), ``proc``; ``stop()`` ends it."""

    def __init__(self, proc: subprocess.Popen, banner: dict):
        self.proc, self.banner = proc, banner

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_world(command, timeout_s: float = 120.0) -> WorldProcess:
    cmd = [sys.executable if i == 0 and c == "python" else c for i, c in enumerate(command)]
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    log.info("starting the world: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            if line:
                try:
                    return WorldProcess(proc, json.loads(line))
                except json.JSONDecodeError:
                    log.info("world: %s", line.rstrip())
                    continue
        if proc.poll() is not None:
            raise WorldError(f"the world exited with status {proc.returncode} before its banner: {' '.join(cmd)}")
    proc.kill()
    raise WorldError(f"no banner from the world within {timeout_s:.0f} s: {' '.join(cmd)}")
