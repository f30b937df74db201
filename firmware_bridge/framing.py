"""Byte framing: COBS with a 0x00 delimiter and CRC-16/CCITT-FALSE, plus a streaming decoder.

Contract:
- ``crc16(data)``: CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0);
  ``crc16(b"123456789") == 0x29B1``.
- ``encode_frame(body)`` appends the CRC (little-endian) to ``body``, COBS-encodes it and appends
  the 0x00 delimiter. The encoded frame contains no other zero byte.
- ``FrameDecoder.feed(chunk) -> list[bytes]`` returns the bodies of complete, valid frames.
  Anything else is dropped and counted by reason (``cobs_errors``, ``crc_errors``,
  ``length_errors``, ``overflows``) with ``bytes_dropped``; decoding resynchronises at the next
  0x00, so garbage costs at most the frame it hit. It never raises on any input, and never
  yields a body whose CRC fails.
"""

from __future__ import annotations

import dataclasses

__all__ = ["crc16", "cobs_encode", "cobs_decode", "encode_frame", "FrameDecoder", "DecoderCounters", "MAX_BODY"]

MAX_BODY = 512  # bytes of one frame body (header + payload), before CRC and COBS


def _table() -> list[int]:
    out = []
    for b in range(256):
        c = b << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        out.append(c & 0xFFFF)
    return out


_CRC_TABLE = _table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    t = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ t[(crc >> 8) ^ b]
    return crc


def cobs_encode(data: bytes) -> bytes:
    out = bytearray([0])
    code_idx, code = 0, 1
    for b in data:
        if b == 0:
            out[code_idx] = code
            code_idx, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_idx] = code
                code_idx, code = len(out), 1
                out.append(0)
    out[code_idx] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Decode one COBS block (without the delimiter); ``None`` if malformed."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            return None
        end = i + code
        if end > n:
            return None
        chunk = data[i + 1 : end]
        if 0 in chunk:
            return None
        out += chunk
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError(f"frame body: expected at most {MAX_BODY} bytes, got {len(body)}")
    crc = crc16(body)
    return cobs_encode(body + bytes((crc & 0xFF, crc >> 8))) + b"\x00"


@dataclasses.dataclass
class DecoderCounters:
    frames_ok: int = 0
    cobs_errors: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    overflows: int = 0
    bytes_dropped: int = 0

    @property
    def errors(self) -> int:
        return self.cobs_errors + self.crc_errors + self.length_errors + self.overflows


class FrameDecoder:
    def __init__(self, max_body: int = MAX_BODY):
        self.max_encoded = max_body + 2 + (max_body + 2) // 254 + 2
        self.buf = bytearray()
        self.discarding = False  # after an overflow, drop until the next delimiter
        self.counters = DecoderCounters()

    def feed(self, chunk: bytes) -> list[bytes]:
        out = []
        c = self.counters
        for part_end in _split_keep(chunk):
            piece, complete = part_end
            if self.discarding:
                c.bytes_dropped += len(piece) + (1 if complete else 0)
                if complete:
                    self.discarding = False
                continue
            self.buf += piece
            if len(self.buf) > self.max_encoded:
                c.overflows += 1
                c.bytes_dropped += len(self.buf)
                self.buf.clear()
                self.discarding = not complete
                continue
            if not complete:
                continue
            raw = bytes(self.buf)
            self.buf.clear()
            if not raw:
                continue  # back-to-back delimiters: idle line
            body = cobs_decode(raw)
            if body is None:
                c.cobs_errors += 1
                c.bytes_dropped += len(raw) + 1
                continue
            if len(body) < 3:
                c.length_errors += 1
                c.bytes_dropped += len(raw) + 1
                continue
            payload, crc = body[:-2], body[-2] | (body[-1] << 8)
            if crc16(payload) != crc:
                c.crc_errors += 1
                c.bytes_dropped += len(raw) + 1
                continue
            c.frames_ok += 1
            out.append(payload)
        return out


def _split_keep(chunk: bytes):
    """Yield ``(piece, ended_by_delimiter)`` for the pieces of ``chunk`` between 0x00 bytes."""
    start = 0
    while True:
        i = chunk.find(b"\x00", start)
        if i < 0:
            if start < len(chunk):
                yield chunk[start:], False
            return
        yield chunk[start:i], True
        start = i + 1
