"""Hybrid logical clocks: stamps that follow wall time but never go backwards.

A stamp is one integer: milliseconds since the epoch shifted left by 16 bits, plus
a 16-bit logical counter. Ties between writers are broken by the writer's node id,
so ``(stamp, node_id)`` totally orders every write in the cluster.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


class WallClock(Protocol):
    """Where time comes from; ``shoal.sim`` injects a virtual one."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The host's wall clock."""

    def now(self) -> float:
        return time.time()


def physical_ms(stamp: int) -> int:
    return stamp >> LOGICAL_BITS


def stamp_to_seconds(stamp: int) -> float:
    return physical_ms(stamp) / 1000.0


class HybridLogicalClock:
    """Issues strictly increasing stamps and absorbs the stamps of remote writes."""

    def __init__(self, wall: WallClock, last: int = 0) -> None:
        self._wall = wall
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        pt = int(self._wall.now() * 1000) << LOGICAL_BITS
        with self._lock:
            self._last = pt if pt > self._last else self._last + 1
            return self._last

    def observe(self, remote: int) -> None:
        """Move past a stamp seen from a peer, so our next write orders after it."""
        with self._lock:
            if remote > self._last:
                self._last = remote
