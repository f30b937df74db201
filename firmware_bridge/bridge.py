"""The host side of the arm link: handshake, heartbeat, clamped commands, fresh state, e-stop.

``Bridge(url, limits, fk=None, ...)``:
- ``connect()`` opens the port (``transport.open_port``), sends Hello and waits for HelloAck
  (a version or joint-count mismatch is a ``BridgeError`` naming both values), sends Limits and
  SetMode(position), starts the heartbeat thread and waits for a first JointState, which seeds
  the safety clamp's previous command.
- ``send_joint_command(q, gripper_open)`` runs ``safety.clamp_command`` against the previous
  command and returns a ``SentCommand`` with what was actually sent and which limits fired. A
  stale state (older than ``state_max_age_ms``) refuses to send and e-stops.
- ``latest_state(max_age_ms)`` returns the newest JointState or raises ``StaleStateError``.
- ``estop()`` sends EStop; ``close()`` holds the arm (SetMode(hold)) and stops the threads.
Errors of the reader thread reach the caller through ``link.check()`` on every call.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Optional

import numpy as np

from firmware_bridge.protocol import (PROTOCOL_VERSION, Ack, EStop, Fault, Heartbeat, Hello, HelloAck,
                                      JointCommand, JointState, Limits, Nack, SetMode)
from firmware_bridge.safety import ArmLimits, ClampReport, clamp_command
from firmware_bridge.transport import Link, open_port

log = logging.getLogger(__name__)

__all__ = ["Bridge", "BridgeConfig", "BridgeError", "StaleStateError", "SentCommand"]


class BridgeError(RuntimeError):
    """The controller cannot be driven (handshake failed, link lost, e-stopped)."""


class StaleStateError(BridgeError):
    """No JointState newer than the asked age."""


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    url: str  # serial URL: /dev/ttyTHS0, a pty path, loop://, spy://...
    baudrate: int = 1_000_000  # serial speed
    heartbeat_period_ms: float = 20.0  # host heartbeat period (controller timeout must be larger)
    handshake_timeout_ms: float = 2000.0  # wait for HelloAck and the first state
    state_max_age_ms: float = 100.0  # older state refuses commands and e-stops
    command_period_ms: float = 10.0  # nominal command period, used by the velocity clamp
    reconnect: bool = True  # reopen the port with backoff when it fails


@dataclasses.dataclass(frozen=True)
class SentCommand:
    seq: int
    positions: np.ndarray  # what was sent, after clamping
    gripper_m: float
    requested: np.ndarray  # what the caller asked for
    report: ClampReport  # which limits fired
    t_mono: float  # when it was written


class Bridge:
    def __init__(self, cfg: BridgeConfig, limits: ArmLimits | None = None,
                 fk: Optional[Callable[[np.ndarray], np.ndarray]] = None, tx_filter=None):
        self.cfg = cfg
        self.tx_filter = tx_filter  # fault injection on what the host sends (tests)
        self.limits = limits or ArmLimits.panda()
        self.fk = fk
        if fk is None:
            log.info("no forward kinematics given: the workspace box check is skipped")
        self.link: Link | None = None
        self._state: tuple[JointState, float] | None = None
        self._state_cv = threading.Condition()
        self._hello: HelloAck | Nack | None = None
        self._prev_cmd: np.ndarray | None = None
        self._prev_vel: np.ndarray | None = None
        self._prev_t: float | None = None
        self._stop = threading.Event()
        self.counters = {"commands": 0, "clamped": 0, "nacks": 0, "faults": 0, "estops": 0}
        self.last_nack: Nack | None = None
        self.last_fault: Fault | None = None
        self.controller_heartbeat_t = 0.0
        self.last_heartbeat_sent_t = 0.0

    # --- lifecycle ------------------------------------------------------------------------
    def connect(self) -> "Bridge":
        self.link = Link(lambda: open_port(self.cfg.url, self.cfg.baudrate), self._on_message,
                         reconnect=self.cfg.reconnect, name="bridge", tx_filter=self.tx_filter)
        deadline = time.monotonic() + self.cfg.handshake_timeout_ms / 1000
        with self._state_cv:  # a Hello lost on the line is sent again every 100 ms
            while self._hello is None and time.monotonic() < deadline:
                self.link.send(Hello(PROTOCOL_VERSION, self.limits.n_joints))
                self._state_cv.wait(0.1)
        if self._hello is None:
            self.close()
            raise BridgeError(f"{self.cfg.url}: no HelloAck within {self.cfg.handshake_timeout_ms:.0f} ms")
        if isinstance(self._hello, Nack) or self._hello.version != PROTOCOL_VERSION or \
                self._hello.n_joints != self.limits.n_joints:
            got = self._hello
            self.close()
            raise BridgeError(f"{self.cfg.url}: handshake refused: host speaks protocol {PROTOCOL_VERSION} with "
                              f"{self.limits.n_joints} joints, controller answered {got}")
        self.link.send(Limits(self.limits.lower_rad, self.limits.upper_rad, self.limits.max_vel_rad_s,
                              self.limits.max_acc_rad_s2))
        threading.Thread(target=self._heartbeat, name="bridge-heartbeat", daemon=True).start()
        st = self._enter_position_mode(deadline)
        self._prev_cmd = np.asarray(st.positions, float)
        self._prev_vel = np.zeros(self.limits.n_joints)
        log.info("connected to %s: firmware 0x%08x, %d joints", self.cfg.url, self._hello.firmware_id,
                 self._hello.n_joints)
        return self

    def _enter_position_mode(self, deadline: float) -> JointState:
        """Send SetMode(position) until a JointState confirms it (a lost frame is retried)."""
        while time.monotonic() < deadline:
            self.link.send(SetMode(1))
            t_sent = time.monotonic()
            while time.monotonic() - t_sent < 0.1:
                st = self._state
                if st is not None and st[1] > t_sent and st[0].mode == 1:
                    return st[0]
                time.sleep(0.002)
        raise BridgeError(f"{self.cfg.url}: controller did not enter position mode")

    def close(self) -> None:
        if self.link is not None:
            try:
                self.link.send(SetMode(0))
            except Exception as exc:  # closing after a link failure: report, do not mask
                log.warning("could not hold the arm on close: %s", exc)
            self._stop.set()
            self.link.close()
            self.link = None

    # --- incoming -------------------------------------------------------------------------
    def _on_message(self, seq: int, msg) -> None:
        if isinstance(msg, JointState):
            with self._state_cv:
                self._state = (msg, time.monotonic())
                self._state_cv.notify_all()
        elif isinstance(msg, (HelloAck, Nack)) and self._hello is None and (
                isinstance(msg, HelloAck) or msg.msg_type == Hello.TYPE):
            with self._state_cv:
                self._hello = msg
                self._state_cv.notify_all()
        elif isinstance(msg, Nack):
            self.counters["nacks"] += 1
            self.last_nack = msg
        elif isinstance(msg, Fault):
            self.counters["faults"] += 1
            self.last_fault = msg
            log.warning("controller fault 0x%04x: %s", msg.flags, msg.text)
        elif isinstance(msg, Heartbeat):
            self.controller_heartbeat_t = time.monotonic()

    def stop_heartbeat(self) -> None:
        """Stop sending heartbeats (what a hung runtime looks like to the controller)."""
        self._stop.set()

    def _heartbeat(self) -> None:
        n = 0
        while not self._stop.wait(self.cfg.heartbeat_period_ms / 1000):
            try:
                self.link.send(Heartbeat(int(time.monotonic() * 1e6), n))
                self.last_heartbeat_sent_t = time.monotonic()
            except Exception as exc:  # the control thread sees the link error through check()
                log.debug("heartbeat send failed: %s", exc)
            n += 1

    # --- state ----------------------------------------------------------------------------
    def wait_state(self, timeout_ms: float) -> JointState:
        deadline = time.monotonic() + timeout_ms / 1000
        with self._state_cv:
            while self._state is None and time.monotonic() < deadline:
                self._state_cv.wait(0.01)
        if self._state is None:
            raise StaleStateError(f"{self.cfg.url}: no JointState within {timeout_ms:.0f} ms")
        return self._state[0]

    def latest_state(self, max_age_ms: float) -> JointState:
        if self.link is not None:
            self.link.check()
        st = self._state
        if st is None:
            raise StaleStateError(f"{self.cfg.url}: no JointState received yet")
        age_ms = (time.monotonic() - st[1]) * 1000
        if age_ms > max_age_ms:
            raise StaleStateError(f"{self.cfg.url}: newest JointState is {age_ms:.0f} ms old (limit {max_age_ms:.0f} ms)")
        return st[0]

    # --- commands -------------------------------------------------------------------------
    def send_joint_command(self, positions, gripper_open: bool = True, velocities=None) -> SentCommand:
        if self.link is None:
            raise BridgeError("send_joint_command before connect()")
        self.link.check()
        try:
            self.latest_state(self.cfg.state_max_age_ms)
        except StaleStateError:
            self.estop(reason=2)
            raise
        now = time.monotonic()
        dt = self.cfg.command_period_ms / 1000 if self._prev_t is None else max(now - self._prev_t, 1e-3)
        requested = np.asarray(positions, float)
        safe, report = clamp_command(requested, self._prev_cmd, self._prev_vel, dt, self.limits, self.fk)
        gripper = self.limits.gripper_max_m if gripper_open else 0.0
        vel = None if velocities is None else tuple(np.clip(velocities, -np.asarray(self.limits.max_vel_rad_s),
                                                            self.limits.max_vel_rad_s).tolist())
        seq = self.link.send(JointCommand(int(now * 1e6), tuple(safe.tolist()), gripper, vel))
        self._prev_vel = (safe - self._prev_cmd) / dt
        self._prev_cmd, self._prev_t = safe, now
        self.counters["commands"] += 1
        if report.fired:
            self.counters["clamped"] += 1
        return SentCommand(seq, safe, gripper, requested, report, now)

    def estop(self, reason: int = 0) -> None:
        self.counters["estops"] += 1
        if self.link is not None:
            self.link.send(EStop(reason))
        log.warning("e-stop sent (reason %d)", reason)

    def resume(self) -> None:
        """Leave e-stop/hold explicitly; the next command is clamped from the current state."""
        st = self._enter_position_mode(time.monotonic() + self.cfg.handshake_timeout_ms / 1000)
        self._prev_cmd = np.asarray(st.positions, float)
        self._prev_vel = np.zeros(self.limits.n_joints)
        self._prev_t = None
