"""systemd's notify protocol, written directly (no libsystemd): READY=1, WATCHDOG=1, STATUS=...

``Notifier.from_env()`` reads ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an abstract
socket) and ``WATCHDOG_USEC``; without them every call is a no-op, so the runtime behaves the
same outside systemd. ``notify("READY=1")`` sends one datagram; ``watchdog_interval_s()`` is half
the configured watchdog period (systemd's recommendation).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.sock = None
        if address:
            if address.startswith("@"):
                address = "\0" + address[1:]
            elif not address.startswith("/"):
                raise ValueError(f"NOTIFY_SOCKET: expected an absolute path or @abstract name, got {address!r}")
            self._target = address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls) -> "Notifier":
        wd = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            wd = None  # the watchdog is meant for another process
        return cls(os.environ.get("NOTIFY_SOCKET"), int(wd) if wd else None)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, *fields: str) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(fields).encode(), self._target)
            return True
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog_interval_s(self) -> float | None:
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None
