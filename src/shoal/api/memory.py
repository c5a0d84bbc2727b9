"""Memory a burst of requests took is given back to the system.

glibc's malloc keeps what Python frees: a large block (a list's body) freed after being
mmapped raises the mmap threshold to its size (up to 32 MiB), so the next ones come
from the heap and stay there; each thread may get an arena of its own; and free pages
inside the heap are kept until ``malloc_trim``. Under 200 concurrent clients that kept
RSS above 1 GB after the load stopped. So: a fixed mmap threshold (blocks above it are
mmapped and unmapped on free), at most two arenas, and a ``malloc_trim(0)`` shortly
after a burst of large responses. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
"""Blocks from this size on are mmapped: list bodies, serialized chunks, big documents."""
ARENAS = 2
TRIM_AFTER_BYTES = 8 * 1024 * 1024
"""Large responses served since the last trim that make a trim worth it."""
TRIM_DELAY = 1.0
"""Seconds after the burst's last large response (trims at most that often)."""

_libc: ctypes.CDLL | None = None
try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _libc.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):
    _libc = None

_tuned = False


def tune_malloc() -> bool:
    """Fix the mmap threshold and the arena count, once per process (False: not glibc)."""
    global _tuned
    if _libc is None:
        return False
    if not _tuned:
        _tuned = True
        _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _libc.mallopt(M_ARENA_MAX, ARENAS)
    return True


def trim() -> None:
    if _libc is not None:
        _libc.malloc_trim(0)


class Trimmer:
    """Calls ``malloc_trim`` once a burst of large responses is over."""

    def __init__(self, after_bytes: int = TRIM_AFTER_BYTES, delay: float = TRIM_DELAY) -> None:
        self.after_bytes = after_bytes
        self.delay = delay
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def note(self, nbytes: int) -> None:
        """A response of ``nbytes`` was built: trim soon if enough went by."""
        if _libc is None:
            return
        self._bytes += nbytes
        if self._bytes < self.after_bytes:
            return
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(self.delay, self._trim)

    def _trim(self) -> None:
        self._timer = None
        self._bytes = 0
        start = time.perf_counter()
        trim()
        self.trims += 1
        log.debug("malloc_trim after a burst took %.1f ms", (time.perf_counter() - start) * 1e3)
