"""Latest-value mailboxes between threads: a value and its monotonic timestamp under a lock.

``put(value)`` replaces the value (no queue: a slow reader sees only the newest); ``get()`` returns
``(value, t_mono, version)``; ``get_fresh(max_age_ms)`` returns the value or ``None`` when it is
older than ``max_age_ms`` (or absent); ``wait_newer(version, timeout_s)`` blocks until a value
newer than ``version`` arrives.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Mailbox"]


class Mailbox(Generic[T]):
    def __init__(self):
        self._cv = threading.Condition()
        self._value: T | None = None
        self._t = 0.0
        self._version = 0

    def put(self, value: T, t_mono: float | None = None) -> None:
        with self._cv:
            self._value = value
            self._t = time.monotonic() if t_mono is None else t_mono
            self._version += 1
            self._cv.notify_all()

    def get(self) -> tuple[T | None, float, int]:
        with self._cv:
            return self._value, self._t, self._version

    def get_fresh(self, max_age_ms: float) -> T | None:
        value, t, version = self.get()
        if version == 0 or (time.monotonic() - t) * 1000 > max_age_ms:
            return None
        return value

    def wait_newer(self, version: int, timeout_s: float) -> tuple[T | None, float, int]:
        with self._cv:
            self._cv.wait_for(lambda: self._version > version, timeout_s)
            return self._value, self._t, self._version
