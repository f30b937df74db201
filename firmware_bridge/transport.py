"""Byte transports and the framed ``Link`` over them.

- ``open_port(url)``: pyserial's ``serial_for_url`` (device paths such as ``/dev/ttyTHS0``,
  ``loop://``, ``spy://PORT`` for hex dumps, ``socket://``), opened raw at ``baudrate``.
- ``PtyPair``: a pseudo-terminal pair (``os.openpty``, raw mode); the controller side uses
  ``master`` (an ``FdPort``), the host opens ``path`` with pyserial like a real device.
- ``Link(port_factory)``: a reader thread decodes frames into messages and hands them to
  ``on_message(seq, msg)``; writes are serialised by a lock and numbered; frames that fail CRC
  or parsing are dropped and counted (``decoder.counters``, ``protocol_errors``). An exception in
  the reader thread is stored and re-raised on the caller's thread by ``check()`` (and by
  ``send``); with ``reconnect=True`` the link reopens the port with exponential backoff instead
  and counts ``reconnects``.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import tty
from typing import Callable

from firmware_bridge.framing import FrameDecoder, encode_frame
from firmware_bridge.protocol import ProtocolError, decode, encode

log = logging.getLogger(__name__)

__all__ = ["open_port", "PtyPair", "FdPort", "Link", "LinkError"]


class LinkError(RuntimeError):
    """The serial link failed (port gone, write error); raised on the control thread."""


def open_port(url: str, baudrate: int = 1_000_000, timeout_s: float = 0.005):
    import serial

    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s, write_timeout=0.5)
    except (serial.SerialException, ValueError) as exc:
        raise LinkError(f"cannot open serial port {url!r}: {exc}") from None


class FdPort:
    """The minimal pyserial surface (read, write, in_waiting, close) over a file descriptor."""

    def __init__(self, fd: int, timeout_s: float = 0.005):
        self.fd, self.timeout = fd, timeout_s
        self.is_open = True

    @property
    def in_waiting(self) -> int:
        r, _, _ = select.select([self.fd], [], [], 0)
        return 1 if r else 0

    def read(self, n: int = 1) -> bytes:
        r, _, _ = select.select([self.fd], [], [], self.timeout)
        if not r:
            return b""
        try:
            return os.read(self.fd, max(n, 4096))
        except OSError as exc:  # EIO when the other side closed
            raise LinkError(f"pty read failed: {exc}") from None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        return len(data)

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            os.close(self.fd)


class PtyPair:
    def __init__(self):
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        self.path = os.ttyname(self.slave_fd)

    def master(self) -> FdPort:
        return FdPort(self.master_fd)

    def close(self) -> None:
        for fd in (self.slave_fd,):
            try:
                os.close(fd)
            except OSError:
                pass


class Link:
    def __init__(self, port_factory: Callable[[], object], on_message: Callable[[int, object], None],
                 reconnect: bool = False, backoff_s: tuple[float, float] = (0.05, 2.0), name: str = "link",
                 tx_filter: Callable[[bytes], bytes] | None = None):
        self.port_factory, self.on_message = port_factory, on_message
        self.reconnect, self.backoff_s, self.name = reconnect, backoff_s, name
        self.tx_filter = tx_filter  # fault injection on the bytes this side sends
        self.decoder = FrameDecoder()
        self.protocol_errors = 0
        self.reconnects = 0
        self.frames_sent = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.port = port_factory()
        self._thread = threading.Thread(target=self._reader, name=f"{name}-reader", daemon=True)
        self._thread.start()

    # --- sending ----------------------------------------------------------------------------
    def send(self, msg) -> int:
        self.check()
        with self._lock:
            seq = self._seq
            self._seq = (self._seq + 1) & 0xFFFF
            frame = encode_frame(encode(msg, seq))
            if self.tx_filter is not None:
                frame = self.tx_filter(frame)
            try:
                if frame:
                    self.port.write(frame)
            except (OSError, LinkError) as exc:
                if not self.reconnect:
                    raise LinkError(f"{self.name}: write failed: {exc}") from None
                log.warning("%s: write failed (%s); the reader will reconnect", self.name, exc)
            except Exception as exc:  # pyserial's SerialException and timeouts
                if not self.reconnect:
                    raise LinkError(f"{self.name}: write failed: {exc}") from None
            self.frames_sent += 1
        return seq

    def check(self) -> None:
        """Re-raise on the caller's thread an error the reader thread hit."""
        if self._error is not None:
            raise LinkError(f"{self.name}: reader thread failed: {self._error}") from self._error

    # --- receiving --------------------------------------------------------------------------
    def _reader(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
                delay = self.backoff_s[0]
            except Exception as exc:  # port vanished: pyserial, OSError or LinkError
                if self._stop.is_set():
                    return
                if not self.reconnect:
                    self._error = exc
                    return
                log.warning("%s: read failed (%s); reconnecting in %.2f s", self.name, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])
                try:
                    self.port.close()
                except Exception:  # closing a dead port may fail in several ways
                    pass
                try:
                    self.port = self.port_factory()
                    self.reconnects += 1
                    self.decoder.buf.clear()
                except Exception as exc2:  # noqa: BLE001 - keep trying with backoff
                    log.warning("%s: reconnect failed: %s", self.name, exc2)
                continue
            if not data:
                continue
            for body in self.decoder.feed(data):
                try:
                    seq, msg = decode(body)
                except ProtocolError as exc:
                    self.protocol_errors += 1
                    log.debug("%s: dropped frame: %s", self.name, exc)
                    continue
                try:
                    self.on_message(seq, msg)
                except Exception as exc:  # a handler bug must reach the control thread
                    self._error = exc
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        try:
            self.port.close()
        except Exception:  # already closed or gone
            pass
