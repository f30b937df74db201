"""KV-cache buffers allocated once, with rollback (sequence-major, see ``edge.io_contract``).

``KVCache(max_len, row_shape)`` owns one float32 buffer ``[max_len, *row_shape]``; ``view()`` is
its first ``n`` rows (contiguous, passed to the engines without a copy). ``append(rows)`` writes
new rows at ``n``; ``append(rows, keep=idx)`` writes only the rows of an accepted draft path (a
gather), so a rejected branch never enters the cache; ``rollback(n)`` forgets everything after
row ``n``. Overflow is an error naming the sizes, never a silent reallocation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KVCache", "KVCacheError"]


class KVCacheError(RuntimeError):
    pass


class KVCache:
    def __init__(self, max_len: int, row_shape: tuple[int, ...], dtype=np.float32):
        self.buf = np.zeros((max_len,) + tuple(row_shape), dtype=dtype)
        self.n = 0

    @property
    def max_len(self) -> int:
        return self.buf.shape[0]

    def view(self) -> np.ndarray:
        return self.buf[: self.n]

    def reset(self, rows: np.ndarray | None = None) -> None:
        self.n = 0
        if rows is not None:
            self.append(rows)

    def append(self, rows: np.ndarray, keep: np.ndarray | list[int] | None = None) -> None:
        if keep is not None:
            rows = rows[np.asarray(keep, dtype=np.int64)]
        k = rows.shape[0]
        if rows.shape[1:] != self.buf.shape[1:]:
            raise KVCacheError(f"rows: expected shape [K, {', '.join(map(str, self.buf.shape[1:]))}], got {rows.shape}")
        if self.n + k > self.max_len:
            raise KVCacheError(f"KV cache overflow: {self.n} + {k} rows > max_len {self.max_len}")
        self.buf[self.n : self.n + k] = rows
        self.n += k

    def rollback(self, n: int) -> None:
        if not 0 <= n <= self.n:
            raise KVCacheError(f"rollback to {n}: expected 0 <= n <= {self.n}")
        self.n = n
