"""``python -m sim.world``: the simulated world the robot runtime drives, as a separate process.

The runtime (``edge``) never imports MuJoCo; it talks to this process the way it talks to a
robot: serial to a controller, frames from a camera. One process holds:

- the MuJoCo arm (``ArmEnv``, rendering on) as the plant of the controller emulator
  (``firmware_bridge.emulator``) serving a pseudo-terminal; the emulator's 500 Hz servo loop
  steps the physics in real time;
- a frame server on a unix stream socket (``sim://PATH``): every ``1/fps`` seconds the front and
  wrist cameras are rendered and sent to each connected client as one frame
  (``edge.camera.FRAME_HEADER``: magic, seq, capture ``time.monotonic()`` (the clock is
  system-wide), views, height, width; then the RGB bytes of each view);
- a control socket (JSON lines, one request one reply): ``tasks`` (the suites' tasks),
  ``episode`` (lay out suite/task/seed, arm back home, controller in hold with the ``rebooted``
  fault until the host resumes it), ``status`` (episode id, success latched from the task's
  physics predicate, checked at the frame rate), ``freeze_camera`` (stop sending frames: the
  frozen-camera fault), ``stop``.

On start it prints one JSON line on stdout, ``{"serial": PTY, "camera": "sim://...", "control":
PATH, "pid": PID}``, then logs to stderr until SIGTERM/SIGINT, ``stop``, or the death of the
process that started it. Rendering runs on the main thread
(the OpenGL context belongs to the thread that made it); the physics and renderer share a lock
held only while the scene is copied, not while it is drawn.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

import numpy as np

log = logging.getLogger("sim.world")

FRAME_MAGIC = b"VLAF"
REBOOTED = 0x0010  # firmware_bridge.protocol.FAULT_BITS: the host must resume explicitly
FRAME_HEADER = struct.Struct("<4sQdHHH")  # magic, seq, t_mono_s, n_views, height, width (edge.camera reads it)


class WorldPlant:
    """The emulator's plant: the env's arm, stepped under ``lock`` (shared with the renderer)."""

    def __init__(self, env, lock: threading.Lock):
        self.env, self.lock = env, lock
        self._opening_m = float(env.data.qpos[7] + env.data.qpos[8])

    def reset(self, q0) -> None:
        with self.lock:
            self.env.data.qpos[:7] = np.asarray(q0, float)
            self.env.set_joint_targets(np.asarray(q0, float), self.env.gripper_open)

    def set_gripper(self, open_: bool) -> None:
        with self.lock:
            self.env.set_joint_targets(self.env.q_cmd, open_)

    def gripper_opening_m(self) -> float:
        """Measured finger opening (the dataset's ``gripper``) after the last step, for the emulator's state."""
        return self._opening_m

    def step(self, targets, dt: float):
        with self.lock:
            self.env.set_joint_targets(np.asarray(targets, float), self.env.gripper_open)
            out = self.env.physics_step(dt)
            self._opening_m = float(self.env.data.qpos[7] + self.env.data.qpos[8])
            return out


class World:
    def __init__(self, suite: str, task: str, seed: int, image_size: int, fps: float, socket_dir: str):
        from firmware_bridge.emulator import EmulatorConfig, start_in_thread
        from sim.env import ArmEnv

        self.env = ArmEnv(suite, task, seed, image_size=image_size, render=True)
        self.env.reset()
        self.lock = threading.Lock()
        self.emu_handle = start_in_thread(EmulatorConfig(q0_rad=tuple(self.env.data.qpos[:7])),
                                          plant=WorldPlant(self.env, self.lock))
        self.fps = fps
        self.episode, self.success, self.frozen = 0, False, False
        self.stop_event = threading.Event()
        self.parent_pid = os.getppid()  # a world started by a runtime that died must not linger
        self.socket_dir = socket_dir
        self.frames_path = os.path.join(socket_dir, "frames.sock")
        self.control_path = os.path.join(socket_dir, "control.sock")
        self.clients: list[socket.socket] = []
        self.clients_lock = threading.Lock()
        self._frames_srv = self._listen(self.frames_path)
        self._control_srv = self._listen(self.control_path)
        threading.Thread(target=self._accept, args=(self._frames_srv, self._add_frame_client),
                         name="world-frames-accept", daemon=True).start()
        threading.Thread(target=self._accept, args=(self._control_srv, self._start_control_client),
                         name="world-control", daemon=True).start()

    @staticmethod
    def _listen(path: str) -> socket.socket:
        if os.path.exists(path):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(4)
        return s

    def banner(self) -> dict:
        return {"serial": self.emu_handle.path, "camera": f"sim://{self.frames_path}", "control": self.control_path,
                "pid": os.getpid()}

    # --- episodes ------------------------------------------------------------------------------
    def start_episode(self, suite: str, task: str, seed: int) -> dict:
        from sim.tasks import get_task

        t = get_task(suite, task)
        emu = self.emu_handle.emulator
        with emu._lock, self.lock:  # the emulator's servo tick and the renderer both wait
            self.env.task, self.env.seed = t, int(seed)
            renderer, self.env.renderer = self.env.renderer, None  # reset() renders; GL stays on the main thread
            try:
                self.env.reset()
            finally:
                self.env.renderer = renderer
            q = self.env.data.qpos[:7].copy()
            emu.plant.env.set_joint_targets(q, True)
            emu.q, emu.qd, emu.target, emu.gripper_m = q, np.zeros(7), q.copy(), 0.04
            emu.mode, emu.faults = 0, emu.faults | REBOOTED  # hold, "rebooted" until SetMode(position)
            self.episode += 1
            self.success = False
        log.info("episode %d: %s/%s seed %d: %s", self.episode, suite, t.name, seed, t.instruction)
        return {"episode": self.episode, "instruction": t.instruction, "max_steps": t.max_steps}

    def _request(self, req: dict) -> dict:
        from sim.tasks import list_tasks

        cmd = req.get("cmd")
        if cmd == "tasks":
            return {"tasks": [{"suite": t.suite, "task": t.name, "instruction": t.instruction, "max_steps": t.max_steps}
                              for t in list_tasks(req.get("suite", "all"))]}
        if cmd == "episode":
            return self.start_episode(req["suite"], req["task"], int(req["seed"]))
        if cmd == "status":
            return {"episode": self.episode, "success": self.success, "frozen": self.frozen}
        if cmd == "freeze_camera":
            self.frozen = bool(req.get("on", True))
            log.warning("camera %s", "frozen" if self.frozen else "running")
            return {"frozen": self.frozen}
        if cmd == "stop":
            self.stop_event.set()
            return {}
        raise ValueError(f"unknown request {cmd!r}; expected tasks, episode, status, freeze_camera or stop")

    # --- sockets -------------------------------------------------------------------------------
    def _accept(self, srv: socket.socket, on_client) -> None:
        """Accept clients of ``srv`` until stopped (or the socket is closed), handing each to ``on_client``."""
        while not self.stop_event.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return
            on_client(c)

    def _add_frame_client(self, c: socket.socket) -> None:
        c.settimeout(0.2)
        with self.clients_lock:
            self.clients.append(c)

    def _start_control_client(self, c: socket.socket) -> None:
        threading.Thread(target=self._serve_control, args=(c,), name="world-control-client", daemon=True).start()

    def _serve_control(self, c: socket.socket) -> None:
        with c, c.makefile("rwb") as f:
            for line in f:
                try:
                    reply = {"ok": True, **self._request(json.loads(line))}
                except Exception as exc:  # a bad request is answered, never fatal to the world
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def _broadcast(self, data: bytes) -> None:
        with self.clients_lock:
            for c in list(self.clients):
                try:
                    c.sendall(data)
                except OSError:  # the client went away or is too slow: drop it
                    self.clients.remove(c)
                    c.close()

    # --- the main thread: render, check success, send ------------------------------------------
    def run(self) -> None:
        r = self.env.renderer
        seq, period = 0, 1.0 / self.fps
        next_t = time.monotonic()
        while not self.stop_event.is_set():
            if os.getppid() != self.parent_pid:
                log.warning("the process that started the world is gone: stopping")
                break
            views = []
            with self.lock:
                t_cap = time.monotonic()
                episode, success = self.episode, self.env.task.success(self.env.state())
                r.update_scene(self.env.data, "front")
            views.append(r.render().copy())
            with self.lock:
                r.update_scene(self.env.data, "wrist")
            views.append(r.render().copy())
            with self.lock:  # latch only for the episode the state belonged to
                if episode == self.episode:
                    self.success = self.success or success
            if not self.frozen:
                h, w = views[0].shape[:2]
                seq += 1
                self._broadcast(FRAME_HEADER.pack(FRAME_MAGIC, seq, t_cap, len(views), h, w)
                                + b"".join(v.tobytes() for v in views))
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                next_t = time.monotonic()

    def close(self) -> None:
        self.stop_event.set()
        for s in (self._frames_srv, self._control_srv):
            s.close()
        self.emu_handle.stop()
        self.env.close()
        for p in (self.frames_path, self.control_path):
            if os.path.exists(p):
                os.unlink(p)
        try:
            os.rmdir(self.socket_dir)  # only when empty (a directory we made, or the caller's)
        except OSError:
            pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.world", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket-dir", default="", help="directory for frames.sock and control.sock (default: a new temp dir)")
    p.add_argument("--fps", type=float, default=20.0, help="camera frame rate")
    p.add_argument("--image-size", type=int, default=64, help="camera image side, px")
    p.add_argument("--suite", default="object", help="initial suite (the host picks episodes over the control socket)")
    p.add_argument("--task", default="0")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sock_dir = args.socket_dir or tempfile.mkdtemp(prefix="vla-world-")
    os.makedirs(sock_dir, exist_ok=True)
    world = World(args.suite, args.task, args.seed, args.image_size, args.fps, sock_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: world.stop_event.set())
    print(json.dumps(world.banner()), flush=True)
    try:
        world.run()
    finally:
        world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
