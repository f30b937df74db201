"""Messages of the arm-controller protocol (layouts in PROTOCOL.md), pure encode/decode.

Every frame body is ``header | payload`` with the header ``<BBH``: protocol version, message
type, sequence number (per sender, wraps at 65536). ``encode(msg, seq)`` gives the body;
``decode(body)`` returns ``(seq, msg)`` or raises ``ProtocolError`` naming the message type and
the problem (unknown type, wrong version, wrong length, joint count over ``MAX_JOINTS``).
All numbers are little-endian; joint values are float32 radians (rad/s, rad/s^2), the gripper a
float32 opening in metres, times microseconds of the sender's monotonic clock.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import ClassVar

__all__ = ["PROTOCOL_VERSION", "ProtocolError", "Hello", "HelloAck", "JointCommand", "JointState", "Heartbeat",
           "Ack", "Nack", "Fault", "EStop", "SetMode", "Limits", "encode", "decode", "MODES", "FAULT_BITS",
           "NACK_REASONS", "MAX_JOINTS"]

PROTOCOL_VERSION = 1
MAX_JOINTS = 16
HEADER = struct.Struct("<BBH")

MODES = {0: "hold", 1: "position", 2: "estop"}
FAULT_BITS = {0x0001: "estop", 0x0002: "heartbeat_lost", 0x0004: "command_timeout", 0x0008: "limit_violation",
              0x0010: "rebooted"}
NACK_REASONS = {1: "bad_length", 2: "non_finite", 3: "out_of_limits", 4: "estopped", 5: "wrong_joint_count",
                6: "unsupported", 7: "stale_seq"}


class ProtocolError(ValueError):
    """A frame body that is not a valid message."""


def _floats(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}f")


@dataclasses.dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[int] = 0x01
    version: int = PROTOCOL_VERSION
    n_joints: int = 7

    def payload(self) -> bytes:
        return struct.pack("<BB", self.version, self.n_joints)

    @classmethod
    def parse(cls, p: bytes) -> "Hello":
        _need(cls, p, 2)
        return cls(*struct.unpack("<BB", p))


@dataclasses.dataclass(frozen=True)
class HelloAck:
    TYPE: ClassVar[int] = 0x02
    version: int
    n_joints: int
    firmware_id: int  # u32, the controller's build

    def payload(self) -> bytes:
        return struct.pack("<BBI", self.version, self.n_joints, self.firmware_id)

    @classmethod
    def parse(cls, p: bytes) -> "HelloAck":
        _need(cls, p, 6)
        return cls(*struct.unpack("<BBI", p))


@dataclasses.dataclass(frozen=True)
class JointCommand:
    TYPE: ClassVar[int] = 0x10
    t_us: int  # host monotonic time of the command
    positions: tuple[float, ...]  # joint position targets, rad
    gripper_m: float = 0.04  # gripper opening target, m
    velocities: tuple[float, ...] | None = None  # optional velocity feed-forward, rad/s

    def payload(self) -> bytes:
        n = len(self.positions)
        flags = 1 if self.velocities is not None else 0
        out = struct.pack("<QBB", self.t_us, flags, n) + _floats(n).pack(*self.positions)
        if self.velocities is not None:
            out += _floats(n).pack(*self.velocities)
        return out + struct.pack("<f", self.gripper_m)

    @classmethod
    def parse(cls, p: bytes) -> "JointCommand":
        _need(cls, p, 10, exact=False)
        t_us, flags, n = struct.unpack_from("<QBB", p)
        _joints(cls, n)
        has_v = bool(flags & 1)
        _need(cls, p, 10 + 4 * n * (2 if has_v else 1) + 4)
        pos = _floats(n).unpack_from(p, 10)
        vel = _floats(n).unpack_from(p, 10 + 4 * n) if has_v else None
        (g,) = struct.unpack_from("<f", p, len(p) - 4)
        return cls(t_us, tuple(pos), g, tuple(vel) if vel is not None else None)


@dataclasses.dataclass(frozen=True)
class JointState:
    TYPE: ClassVar[int] = 0x11
    t_us: int  # controller monotonic time
    last_cmd_seq: int  # sequence number of the last JointCommand applied
    fault_flags: int  # FAULT_BITS
    mode: int  # MODES
    positions: tuple[float, ...]
    velocities: tuple[float, ...]
    gripper_m: float

    def payload(self) -> bytes:
        n = len(self.positions)
        return (struct.pack("<QHHBB", self.t_us, self.last_cmd_seq, self.fault_flags, self.mode, n)
                + _floats(n).pack(*self.positions) + _floats(n).pack(*self.velocities) + struct.pack("<f", self.gripper_m))

    @classmethod
    def parse(cls, p: bytes) -> "JointState":
        _need(cls, p, 14, exact=False)
        t_us, seq, flags, mode, n = struct.unpack_from("<QHHBB", p)
        _joints(cls, n)
        _need(cls, p, 14 + 8 * n + 4)
        return cls(t_us, seq, flags, mode, _floats(n).unpack_from(p, 14), _floats(n).unpack_from(p, 14 + 4 * n),
                   struct.unpack_from("<f", p, 14 + 8 * n)[0])


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[int] = 0x20
    t_us: int
    counter: int

    def payload(self) -> bytes:
        return struct.pack("<QI", self.t_us, self.counter & 0xFFFFFFFF)

    @classmethod
    def parse(cls, p: bytes) -> "Heartbeat":
        _need(cls, p, 12)
        return cls(*struct.unpack("<QI", p))


@dataclasses.dataclass(frozen=True)
class Ack:
    TYPE: ClassVar[int] = 0x21
    seq: int  # acknowledged sequence number
    msg_type: int  # acknowledged message type

    def payload(self) -> bytes:
        return struct.pack("<HB", self.seq, self.msg_type)

    @classmethod
    def parse(cls, p: bytes) -> "Ack":
        _need(cls, p, 3)
        return cls(*struct.unpack("<HB", p))


@dataclasses.dataclass(frozen=True)
class Nack:
    TYPE: ClassVar[int] = 0x22
    seq: int
    msg_type: int
    reason: int  # NACK_REASONS

    def payload(self) -> bytes:
        return struct.pack("<HBB", self.seq, self.msg_type, self.reason)

    @classmethod
    def parse(cls, p: bytes) -> "Nack":
        _need(cls, p, 4)
        return cls(*struct.unpack("<HBB", p))


@dataclasses.dataclass(frozen=True)
class Fault:
    TYPE: ClassVar[int] = 0x23
    flags: int
    text: str = ""

    def payload(self) -> bytes:
        t = self.text.encode()[:200]
        return struct.pack("<HB", self.flags, len(t)) + t

    @classmethod
    def parse(cls, p: bytes) -> "Fault":
        _need(cls, p, 3, exact=False)
        flags, n = struct.unpack_from("<HB", p)
        _need(cls, p, 3 + n)
        return cls(flags, p[3:].decode(errors="replace"))


@dataclasses.dataclass(frozen=True)
class EStop:
    TYPE: ClassVar[int] = 0x30
    reason: int = 0  # 0 operator, 1 runtime fault, 2 stale state, 3 shutdown

    def payload(self) -> bytes:
        return struct.pack("<B", self.reason)

    @classmethod
    def parse(cls, p: bytes) -> "EStop":
        _need(cls, p, 1)
        return cls(p[0])


@dataclasses.dataclass(frozen=True)
class SetMode:
    TYPE: ClassVar[int] = 0x31
    mode: int  # MODES; leaving estop needs an explicit SetMode(position)

    def payload(self) -> bytes:
        return struct.pack("<B", self.mode)

    @classmethod
    def parse(cls, p: bytes) -> "SetMode":
        _need(cls, p, 1)
        if p[0] not in MODES:
            raise ProtocolError(f"SetMode: mode expected one of {sorted(MODES)}, got {p[0]}")
        return cls(p[0])


@dataclasses.dataclass(frozen=True)
class Limits:
    TYPE: ClassVar[int] = 0x32
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_vel: tuple[float, ...]
    max_acc: tuple[float, ...]

    def payload(self) -> bytes:
        n = len(self.lower)
        f = _floats(n)
        return struct.pack("<B", n) + f.pack(*self.lower) + f.pack(*self.upper) + f.pack(*self.max_vel) + f.pack(*self.max_acc)

    @classmethod
    def parse(cls, p: bytes) -> "Limits":
        _need(cls, p, 1, exact=False)
        n = p[0]
        _joints(cls, n)
        _need(cls, p, 1 + 16 * n)
        f = _floats(n)
        return cls(*(f.unpack_from(p, 1 + 4 * n * k) for k in range(4)))


MESSAGES = {m.TYPE: m for m in (Hello, HelloAck, JointCommand, JointState, Heartbeat, Ack, Nack, Fault, EStop,
                                SetMode, Limits)}


def _need(cls, p: bytes, n: int, exact: bool = True) -> None:
    if (len(p) != n) if exact else (len(p) < n):
        raise ProtocolError(f"{cls.__name__}: payload expected {'' if exact else 'at least '}{n} bytes, got {len(p)}")


def _joints(cls, n: int) -> None:
    if not 0 < n <= MAX_JOINTS:
        raise ProtocolError(f"{cls.__name__}: joint count expected 1..{MAX_JOINTS}, got {n}")


def encode(msg, seq: int) -> bytes:
    return HEADER.pack(PROTOCOL_VERSION, msg.TYPE, seq & 0xFFFF) + msg.payload()


def decode(body: bytes):
    if len(body) < HEADER.size:
        raise ProtocolError(f"frame: expected at least {HEADER.size} header bytes, got {len(body)}")
    version, mtype, seq = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"frame: protocol version expected {PROTOCOL_VERSION}, got {version}")
    cls = MESSAGES.get(mtype)
    if cls is None:
        raise ProtocolError(f"frame: unknown message type 0x{mtype:02x}")
    try:
        return seq, cls.parse(body[HEADER.size:])
    except struct.error as exc:
        raise ProtocolError(f"{cls.__name__}: {exc}") from None
