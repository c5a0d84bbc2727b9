"""Waking a controller at a moment it computed (a Lease running out, a quarantine ending)."""

from __future__ import annotations

import asyncio


class WakeTimer:
    """Sets ``event`` after a delay; arming it again replaces the earlier moment."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, delay: float | None) -> None:
        """Wake in ``delay`` seconds of loop time (virtual in the simulator); None: never."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if delay is not None:
            self._handle = asyncio.get_running_loop().call_later(max(0.0, delay),
                                                                 self._event.set)
