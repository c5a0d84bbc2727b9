"""Memory a burst of requests took is given back to the system.

glibc's malloc keeps what Python frees: a large block (a list's body) freed after being
mmapped raises the mmap threshold to its size (up to 32 MiB), so the next ones come
from the heap and stay there; each thread may get an arena of its own; and free pages
inside the heap are kept until ``malloc_trim``. Under 200 concurrent clients that kept
RSS above 1 GB after the load stopped. So: a fixed mmap threshold (blocks above it are
mmapped and unmapped on free), at most two arenas, and :class:`HeapTrimmer`, which
runs ``malloc_trim(0)`` whenever the RSS has grown by a few MB since the last trim or a
burst ends (large lists and small requests alike). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
"""Blocks from this size on are mmapped: list bodies, serialized chunks, big documents."""
ARENAS = 2

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


HEAP_CHECK_INTERVAL = 5.0
"""Seconds between two looks at the RSS (a read of ``/proc/self/statm``) and the CPU time."""
HEAP_GROWTH = 4 * 1024 * 1024
"""RSS growth since the last trim that makes a trim worth it."""
BUSY = 0.2
"""Share of a core the process used over an interval that makes it busy."""


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class HeapTrimmer:
    """Gives back what the heap holds free, whatever freed it (``malloc_trim(0)``).

    Every ``interval`` it reads the RSS and the process's CPU time, and trims when the RSS
    has grown by ``growth`` since the last trim, or when a busy interval is followed by a
    quiet one (a burst is over: what it freed is free now). The RSS after a trim is the new
    mark, so a node whose memory is all in use trims once per ``growth`` it takes, and an
    idle node never trims. At the end of a burst it first runs a full garbage collection:
    the node's thresholds (``cli.node``) make those rare, and the burst's cyclic garbage
    (requests' futures, exceptions and their frames) would otherwise hold its memory for
    hours; the node is quiet then, so the pause waits on nothing.
    """

    def __init__(self, interval: float = HEAP_CHECK_INTERVAL, growth: int = HEAP_GROWTH,
                 rss: Callable[[], int] = rss_bytes, cpu: Callable[[], float] = time.process_time,
                 trim: Callable[[], None] = trim, collect: Callable[[], int] = gc.collect
                 ) -> None:
        self.interval = interval
        self.growth = growth
        self._rss = rss
        self._cpu = cpu
        self._trim = trim
        self._collect = collect
        self.collections = 0
        self.mark: int | None = None
        self._cpu_last: float | None = None
        self._was_busy = False
        self.trims = 0
        self.given_back = 0
        """Bytes of RSS the trims took off, in total."""

    def check(self) -> bool:
        """Trim if the RSS grew enough since the last mark or a burst just ended; True if
        it did."""
        now, cpu = self._rss(), self._cpu()
        busy = self._cpu_last is not None and cpu - self._cpu_last >= BUSY * self.interval
        burst_over, self._was_busy = self._was_busy and not busy, busy
        self._cpu_last = cpu
        if self.mark is None:
            self.mark = now
            return False
        if now < self.mark + self.growth and not burst_over:
            self.mark = min(self.mark, now)
            return False
        start = time.perf_counter()
        if burst_over:
            self._collect()
            self.collections += 1
        self._trim()
        after = self._rss()
        self.trims += 1
        self.given_back += max(0, now - after)
        self.mark = after
        log.debug("malloc_trim: RSS %.1f -> %.1f MB in %.1f ms", now / 2**20, after / 2**20,
                  (time.perf_counter() - start) * 1e3)
        return True

    async def run(self) -> None:
        if _libc is None:
            return
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except OSError as e:  # no /proc: nothing to watch
                log.debug("heap trimmer stopped: %s", e)
                return
