"""Controller emulator: speaks the protocol over a pseudo-terminal and moves a simulated arm.

``Emulator(port, cfg, plant)`` runs a fixed-rate loop (``tick_hz``): it applies valid
JointCommands as servo targets, answers Hello/SetMode/Limits/EStop, streams JointState and
Heartbeat, and *holds position* (targets = current position, the servo decelerates at its
acceleration limit) when commands go stale (``command_timeout_ms``), when the host's heartbeat is
lost (``heartbeat_timeout_ms``) and on e-stop; the fault flags say why. A command is applied only
if its frame passed CRC, parses, has the configured joint count, is finite and inside the joint
limits; anything else is Nacked and counted, never applied.

Plants: ``ServoPlant`` (numpy: per-joint rate and acceleration limited servo) or any object with
``reset(q0)`` and ``step(targets, dt) -> (q, qd)`` (``--plant sim.plant:make_plant`` drives the
MuJoCo arm). JointState's ``gripper_m`` is the plant's measured finger opening when it has
``gripper_opening_m()`` (a block between the fingers shows), else the commanded opening. ``start_in_thread(...)`` serves a fresh pty from a thread for tests and the main job;
``python -m firmware_bridge.emulator`` serves one from a process and prints its path first.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np

from firmware_bridge.protocol import (FAULT_BITS, PROTOCOL_VERSION, Ack, EStop, Fault, Heartbeat, Hello, HelloAck,
                                      JointCommand, JointState, Limits, Nack, SetMode)
from firmware_bridge.safety import ArmLimits
from firmware_bridge.transport import Link, PtyPair

log = logging.getLogger(__name__)

__all__ = ["EmulatorConfig", "ServoPlant", "Emulator", "start_in_thread", "EmulatorHandle"]

BIT = {v: k for k, v in FAULT_BITS.items()}
FIRMWARE_ID = 0x0E1A0001


@dataclasses.dataclass(frozen=True)
class EmulatorConfig:
    n_joints: int = 7  # joints of the arm
    tick_hz: float = 500.0  # servo loop rate
    state_hz: float = 250.0  # JointState rate
    heartbeat_hz: float = 50.0  # controller heartbeat rate
    command_timeout_ms: float = 200.0  # hold when no valid command for this long (in position mode)
    heartbeat_timeout_ms: float = 100.0  # hold when the host's heartbeat is silent this long
    q0_rad: tuple[float, ...] = (0.0, -0.184, 0.0, -2.497, 0.0, 0.743, 0.0)  # initial joint positions
    servo_gain_1_s: float = 25.0  # servo velocity = gain * position error (then limited)


class ServoPlant:
    """Per-joint servo: velocity follows ``gain * error`` within velocity and acceleration limits."""

    def __init__(self, limits: ArmLimits, gain_1_s: float = 25.0):
        self.vmax = np.asarray(limits.max_vel_rad_s)
        self.amax = np.asarray(limits.max_acc_rad_s2)
        self.gain = gain_1_s
        self.q = np.zeros(limits.n_joints)
        self.qd = np.zeros(limits.n_joints)

    def reset(self, q0) -> None:
        self.q = np.asarray(q0, float).copy()
        self.qd = np.zeros_like(self.q)

    def step(self, targets, dt: float):
        v_des = np.clip(self.gain * (np.asarray(targets) - self.q), -self.vmax, self.vmax)
        self.qd = self.qd + np.clip(v_des - self.qd, -self.amax * dt, self.amax * dt)
        self.q = self.q + self.qd * dt
        return self.q.copy(), self.qd.copy()


class Emulator:
    def __init__(self, port_factory, cfg: EmulatorConfig = EmulatorConfig(), plant=None,
                 limits: ArmLimits | None = None, tx_filter=None):
        self.cfg = cfg
        self.limits = limits or ArmLimits.panda()
        if self.limits.n_joints != cfg.n_joints or len(cfg.q0_rad) != cfg.n_joints:
            raise ValueError(f"emulator: n_joints {cfg.n_joints} but limits have {self.limits.n_joints} joints "
                             f"and q0_rad {len(cfg.q0_rad)}")
        self.plant = plant or ServoPlant(self.limits, cfg.servo_gain_1_s)
        self.plant.reset(cfg.q0_rad)
        self.q = np.asarray(cfg.q0_rad, float)
        self.qd = np.zeros(cfg.n_joints)
        self.target = self.q.copy()
        self.gripper_m = 0.04
        self.mode = 0  # hold until the host asks for position mode
        self.faults = 0
        self.last_cmd_seq = 0
        t = time.monotonic()
        self.last_cmd_t = t
        self.last_hb_t = t
        self.hb_seen = False
        self.counters = {"commands_applied": 0, "commands_rejected": 0, "frames_missing": 0, "holds": 0,
                         "estops": 0}
        self._last_rx_seq: int | None = None
        self._session_cmds = 0  # commands applied since the last Hello (a new host session)
        self.applied: list[tuple[int, tuple[float, ...]]] = []  # (seq, positions) when recording
        self.record_applied = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.link = Link(port_factory, self._on_message, reconnect=True, name="emulator", tx_filter=tx_filter)

    # --- messages from the host -----------------------------------------------------------
    def _on_message(self, seq: int, msg) -> None:
        with self._lock:
            if self._last_rx_seq is not None and not isinstance(msg, Hello):
                gap = (seq - self._last_rx_seq - 1) & 0xFFFF  # frames lost or corrupted on the way
                if gap < 0x8000:
                    self.counters["frames_missing"] += gap
            self._last_rx_seq = seq
            if isinstance(msg, Hello):
                if msg.version != PROTOCOL_VERSION or msg.n_joints != self.cfg.n_joints:
                    self.link.send(Nack(seq, Hello.TYPE, 6 if msg.version != PROTOCOL_VERSION else 5))
                else:
                    self._session_cmds = 0  # the host's sequence numbers start afresh
                    self.link.send(HelloAck(PROTOCOL_VERSION, self.cfg.n_joints, FIRMWARE_ID))
                    self.last_hb_t = time.monotonic()
            elif isinstance(msg, Heartbeat):
                self.last_hb_t = time.monotonic()
                self.hb_seen = True
                self.faults &= ~BIT["heartbeat_lost"]
            elif isinstance(msg, JointCommand):
                self._command(seq, msg)
            elif isinstance(msg, EStop):
                self.mode = 2
                self.faults |= BIT["estop"]
                self.counters["estops"] += 1
                self._hold()
                self.link.send(Ack(seq, EStop.TYPE))
            elif isinstance(msg, SetMode):
                self.mode = msg.mode
                if msg.mode == 1:
                    self.faults &= ~(BIT["estop"] | BIT["command_timeout"] | BIT["rebooted"])
                    self.last_cmd_t = time.monotonic()
                self._hold()
                self.link.send(Ack(seq, SetMode.TYPE))
            elif isinstance(msg, Limits):
                self.link.send(Ack(seq, Limits.TYPE))  # the emulator keeps its own (stricter) limits

    def _command(self, seq: int, msg: JointCommand) -> None:
        reason = 0
        pos = np.asarray(msg.positions, float)
        ahead = (seq - self.last_cmd_seq) & 0xFFFF
        if self._session_cmds and (ahead == 0 or ahead >= 0x8000):
            reason = 7  # a duplicate or an older command than the one applied: never go back
        elif len(pos) != self.cfg.n_joints:
            reason = 5
        elif not (np.all(np.isfinite(pos)) and np.isfinite(msg.gripper_m)):
            reason = 2
        elif np.any(pos < self.limits.lower_rad) or np.any(pos > self.limits.upper_rad):
            reason = 3
        elif self.mode != 1:
            reason = 4
        if reason:
            self.counters["commands_rejected"] += 1
            self.counters["rejected_reason_%d" % reason] = self.counters.get("rejected_reason_%d" % reason, 0) + 1
            self.link.send(Nack(seq, JointCommand.TYPE, reason))
            return
        self.target = pos
        self.gripper_m = float(np.clip(msg.gripper_m, 0.0, self.limits.gripper_max_m))
        self.last_cmd_seq = seq
        self._session_cmds += 1
        self.last_cmd_t = time.monotonic()
        self.faults &= ~BIT["command_timeout"]
        self.counters["commands_applied"] += 1
        if self.record_applied:
            self.applied.append((seq, msg.positions))

    def _hold(self) -> None:
        self.target = self.q.copy()
        self.counters["holds"] += 1

    # --- the servo loop -------------------------------------------------------------------
    def run(self) -> None:
        dt = 1.0 / self.cfg.tick_hz
        next_t = time.monotonic()
        next_state = next_hb = next_t
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                if self.mode == 1 and now - self.last_cmd_t > self.cfg.command_timeout_ms / 1000:
                    if not self.faults & BIT["command_timeout"]:
                        self.faults |= BIT["command_timeout"]
                        self._hold()
                if now - self.last_hb_t > self.cfg.heartbeat_timeout_ms / 1000 and self.mode == 1:
                    if not self.faults & BIT["heartbeat_lost"]:
                        self.faults |= BIT["heartbeat_lost"]
                        self.mode = 0
                        self._hold()
                if self.mode != 1:  # hold: zero velocity demand, the servo decelerates to rest
                    self.target = self.q.copy()
                self.q, self.qd = self.plant.step(self.target, dt)
                if hasattr(self.plant, "set_gripper"):
                    self.plant.set_gripper(self.gripper_m > 0.02)
                measured = getattr(self.plant, "gripper_opening_m", None)  # a plant with fingers reports them
                state = JointState(int(now * 1e6), self.last_cmd_seq, self.faults, self.mode,
                                   tuple(self.q.tolist()), tuple(self.qd.tolist()),
                                   float(measured()) if measured is not None else self.gripper_m)
            try:
                if now >= next_state:
                    self.link.send(state)
                    next_state += 1.0 / self.cfg.state_hz
                if now >= next_hb:
                    self.link.send(Heartbeat(int(now * 1e6), 0))
                    next_hb += 1.0 / self.cfg.heartbeat_hz
            except Exception as exc:  # the host side vanished; the link reconnects
                log.debug("emulator send failed: %s", exc)
            next_t += dt
            sleep = next_t - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
            else:
                next_t = time.monotonic()

    def reboot(self) -> None:
        """Emulate a controller reboot: state lost, mode hold, ``rebooted`` fault until SetMode."""
        with self._lock:
            self.plant.reset(self.q)
            self.qd = np.zeros_like(self.q)
            self.target = self.q.copy()
            self.mode = 0
            self.faults = BIT["rebooted"]

    def stop(self) -> None:
        self._stop.set()
        self.link.close()

    def send_fault(self, text: str) -> None:
        self.link.send(Fault(self.faults, text))


@dataclasses.dataclass
class EmulatorHandle:
    path: str
    emulator: Emulator
    thread: threading.Thread
    pty: PtyPair

    def stop(self) -> None:
        self.emulator.stop()
        self.thread.join(timeout=2.0)
        self.pty.close()


def start_in_thread(cfg: EmulatorConfig = EmulatorConfig(), plant=None, tx_filter=None,
                    limits: ArmLimits | None = None) -> EmulatorHandle:
    pty = PtyPair()
    master = pty.master()
    emu = Emulator(lambda: master, cfg, plant, limits=limits, tx_filter=tx_filter)
    t = threading.Thread(target=emu.run, name="emulator", daemon=True)
    t.start()
    return EmulatorHandle(pty.path, emu, t, pty)


if __name__ == "__main__":
    import sys

    from firmware_bridge.emulator_cli import main

    sys.exit(main())
