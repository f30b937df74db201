"""The runtime service: bring up, run, fault, safe stop. ``python -m edge run`` drives it.

``Service(cfg).start()`` in order: the world (started from ``world.command`` or connected at
``world.control_socket``; absent on a real robot), the camera (first frame awaited), the
engines (``EdgePolicy``), the bridge (handshake, position mode), the inference and control
threads, then ``READY=1`` to systemd. Any failure there raises ``ServiceError`` naming the part.

Threads report faults through ``fault(source, message)``; the first one wins and sets
``stopped``. ``safe_stop()`` (also the path of SIGTERM, with ``reason=None``) stops the
inference and control threads, then stops the arm: an e-stop attempt when the controller link
failed (the controller's heartbeat timeout holds the arm if it cannot arrive), hold (SetMode
hold) for a frozen camera, a stalled pipeline or a failing engine, logs ONE line
``SAFE STOP (<source>): <message>``, flushes the telemetry, sends ``STOPPING=1``, closes the
camera and ends a world it started. ``exit_code`` is 0 after a clean stop, 1 after a fault (so
systemd's ``Restart=on-failure`` restarts it; a fresh start resumes: nothing is carried over).
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from edge.camera import open_camera
from edge.control_loop import ControlLoop
from edge.inference_loop import InferenceLoop
from edge.kinematics import ArmChain
from edge.motion_tracker import MotionTracker
from edge.run_config import RunConfig
from edge.sd_notify import Notifier
from edge.telemetry import Telemetry
from edge.world_link import WorldClient, start_world

log = logging.getLogger(__name__)

__all__ = ["Service", "ServiceError"]


class ServiceError(RuntimeError):
    """The service could not start: the message names the part (world, camera, engines, controller)."""


class Service:
    def __init__(self, cfg: RunConfig, notifier: Notifier | None = None):
        self.cfg = cfg
        self.notifier = notifier or Notifier.from_env()
        self.tm = Telemetry(cfg.telemetry)
        self.stopped = threading.Event()  # a fault or a stop request
        self.fault_info: tuple[str, str] | None = None
        self._fault_lock = threading.Lock()
        self.world_proc = self.world = self.camera = self.policy = self.bridge = None
        self.inference = self.control = None
        self._safe_stopped = False

    # --- bring-up ------------------------------------------------------------------------------
    def _step(self, part: str, fn):
        t0 = time.monotonic()
        try:
            out = fn()
        except Exception as exc:  # any failure at start names its part
            raise ServiceError(f"{part}: {type(exc).__name__}: {exc}") from exc
        log.info("%s up in %.2f s", part, time.monotonic() - t0)
        return out

    def start(self) -> "Service":
        cfg = self.cfg
        sys.setswitchinterval(cfg.control.switch_interval_s)
        serial_url, camera_uri, control_path = cfg.serial.url, cfg.camera.uri, cfg.world.control_socket
        if cfg.world.command:
            self.world_proc = self._step("world", lambda: start_world(cfg.world.command, cfg.world.ready_timeout_s))
            b = self.world_proc.banner
            serial_url = serial_url or b["serial"]
            camera_uri = b["camera"] if camera_uri in ("", "sim://") else camera_uri
            control_path = b["control"]
        if control_path:
            self.world = self._step("world link", lambda: WorldClient(control_path))
        if not serial_url:
            raise ServiceError("controller: serial.url is empty and no world gives one")
        self.camera = self._step("camera", lambda: open_camera(camera_uri, cfg.camera.replay_fps,
                                                               cfg.camera.image_size_px))
        first = self._step("camera first frame", lambda: self.camera.wait_first(5.0))
        from edge.policy import EdgePolicy

        self.policy = self._step("engines", lambda: EdgePolicy(cfg.policy))
        self._check_frames(first)
        from firmware_bridge.bridge import Bridge, BridgeConfig

        chain = ArmChain.load()
        bcfg = BridgeConfig(url=serial_url, baudrate=cfg.serial.baudrate,
                            heartbeat_period_ms=cfg.serial.heartbeat_period_ms,
                            handshake_timeout_ms=cfg.serial.handshake_timeout_ms,
                            state_max_age_ms=cfg.serial.state_max_age_ms,
                            command_period_ms=cfg.control.command_period_ms)
        self.bridge = self._step("controller", lambda: Bridge(bcfg, fk=lambda q: chain.fk(q)[0]).connect())
        motion = MotionTracker()  # when each action's motion started and ended (inference.observe: after_motion)
        self.inference = InferenceLoop(self.policy, self.camera, self.bridge, chain, cfg, self.tm, self.fault,
                                       motion).start()
        self.control = ControlLoop(self.bridge, chain, self.inference.actions, cfg, self.tm, self.notifier,
                                   self.fault, motion).start()
        self.notifier.ready(f"engines {cfg.policy.engines} ({cfg.policy.precision}), controller {serial_url}")
        log.info("ready: camera %s, controller %s, engines %s", camera_uri, serial_url, cfg.policy.engines)
        return self

    def _check_frames(self, frame) -> None:
        """The camera must give the views and image size the model was exported for."""
        from edge.files import read_json
        from edge.policy import IMAGE_KEYS

        size = read_json(f"{self.cfg.policy.engines}/engines.json", ServiceError)["runtime"].get("image_size_px")
        for key in IMAGE_KEYS[: self.policy.n_views]:
            view = frame.views.get(key)
            if view is None:
                raise ServiceError(f"camera: the model needs views {list(IMAGE_KEYS[: self.policy.n_views])}, "
                                   f"{self.camera.name} gives {list(frame.views)}")
            if size and view.shape[:2] != (size, size):
                raise ServiceError(f"camera: {key} is {view.shape[1]}x{view.shape[0]} px, the model was exported "
                                   f"for {size}x{size} (camera.image_size_px, or the world's --image-size)")

    # --- episodes ------------------------------------------------------------------------------
    def begin(self, instruction: str) -> None:
        """Put the arm in position mode from where it is and follow ``instruction``."""
        self.control.pause()
        self.inference.set_task(None)
        self.bridge.resume()
        q = self.bridge.latest_state(self.cfg.serial.state_max_age_ms).positions
        self.inference.set_task(instruction)
        self.control.resume_episode(q)

    def end(self) -> None:
        """Stop following: no new actions; the controller holds when commands stop."""
        self.inference.set_task(None)
        self.control.pause()

    # --- faults and stopping -------------------------------------------------------------------
    def fault(self, source: str, message: str) -> None:
        with self._fault_lock:
            if self.fault_info is None and not self.stopped.is_set():
                self.fault_info = (source, message)
                self.stopped.set()

    def request_stop(self) -> None:
        """SIGTERM: a clean stop (the arm is held, the logs flushed)."""
        self.stopped.set()

    @property
    def exit_code(self) -> int:
        return 1 if self.fault_info is not None else 0

    def safe_stop(self) -> None:
        if self._safe_stopped:
            return
        self._safe_stopped = True
        self.notifier.stopping()
        for part in (self.inference, self.control):
            if part is not None:
                part.stop()
        how = "held" if self.bridge is not None else "not connected"
        if self.bridge is not None:
            source = self.fault_info[0] if self.fault_info else None
            try:
                if source == "controller":  # the link itself failed: try an e-stop
                    self.bridge.estop(reason=3)
                    how = "e-stopped"
            except Exception as exc:  # the link is gone: the controller's own timeouts hold the arm
                how = f"left to the controller's heartbeat timeout ({type(exc).__name__})"
            self.bridge.close()
        if self.fault_info:
            log.error("SAFE STOP (%s): %s; arm %s; exiting with status 1 (a restart resumes)",
                      self.fault_info[0], self.fault_info[1], how)
        else:
            log.info("stopped on request; arm %s", how)
        log.info("summary: %s", self.tm.summary_line())
        self.tm.close()
        if self.camera is not None:
            self.camera.close()
        if self.world is not None:
            self.world.close()
        if self.world_proc is not None:
            self.world_proc.stop()
