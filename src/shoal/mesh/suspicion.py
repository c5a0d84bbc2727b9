"""The suspicion timer (Lifeguard): a suspect is declared dead when it expires.

It starts at the maximum timeout and shrinks toward the minimum as independent
members confirm the suspicion: with ``n`` of ``k`` expected confirmations the
timeout is ``max - (max - min) × log(n + 1) / log(k + 1)``. A suspicion that many
members share is acted on quickly; one raised by a single struggling node waits.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class Suspicion:
    def __init__(
        self,
        source: str,
        k: int,
        low: float,
        high: float,
        on_timeout: Callable[[], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._k = k
        self._low = low
        self._high = high if k >= 1 else low
        self._confirmers = {source}
        self._start = self._loop.time()
        self._on_timeout = on_timeout
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._high, self._fire)

    @property
    def confirmations(self) -> int:
        return len(self._confirmers) - 1

    def timeout(self) -> float:
        n = self.confirmations
        if self._k < 1:
            return self._low
        frac = math.log(n + 1) / math.log(self._k + 1)
        return max(self._low, self._high - (self._high - self._low) * frac)

    def confirm(self, source: str) -> bool:
        """Count an independent confirmation; True if it was new and shortened the timer."""
        if self._handle is None or source in self._confirmers or self.confirmations >= self._k:
            return False
        self._confirmers.add(source)
        self._handle.cancel()
        remaining = self._start + self.timeout() - self._loop.time()
        self._handle = self._loop.call_later(max(0.0, remaining), self._fire)
        return True

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._on_timeout()
