"""Noticing that this peer stood still: frozen (``kill -STOP``, a paused VM), suspended, or starved.

A peer whose event loop did not run for a while missed every Lease renewal that arrived
meanwhile (the others may even have held it dead and stopped pushing to it), so when it
resumes every other node's Lease looks as old as the stall was long. Judged then, the
healthy nodes are unreachable and their pods leave the endpoints everywhere (a trial froze
one of three peers for 60 s: for a second the other two were NotReady on every peer).

So the Lease judges count from the moment this peer resumed, as they count from the moment
it started (``NodeLifecycle``'s ``_seen``, ``ownership.LeaseAges``): a node is judged only
once this peer has run for the grace period without a break, time for the mesh to bring
the renewals it missed. A node that really died meanwhile is judged by the peers that did
not stand still, and by this one a grace period later.

A stall is a look at the clocks that finds more than ``tick + tolerance`` seconds since the
last look, on the loop's clock (monotonic: a frozen or starved process) or the wall clock
(a host suspend, which the monotonic clock does not count, or a step of the wall clock). A
ticker looks every ``tick`` seconds, and a judge looks before it judges, so the judge sees a
stall even when it runs before the ticker after a resume.
"""

from __future__ import annotations

import asyncio
import logging
import math

from shoal.crdt.hlc import WallClock

log = logging.getLogger(__name__)

TICK = 1.0
"""Seconds between two looks of the ticker."""
TOLERANCE = 2.0
"""Seconds a look may come late before it counts as a stall: a loop busy for up to this
long is not one. The judges' grace (6 s at the least a demo uses) is longer, and a
renewal every 2 s plus a 3 s stall still leaves a Lease fresh."""


class LoopStalls:
    """When this peer last resumed from a stall (``resumed``, wall seconds)."""

    def __init__(self, wall: WallClock, tick: float = TICK, tolerance: float = TOLERANCE) -> None:
        self.wall = wall
        self.tick = tick
        self.tolerance = tolerance
        self.resumed = -math.inf
        """Wall seconds at which the last stall ended; -inf before any."""
        self.stalls = 0
        self._last: tuple[float, float] | None = None
        """(loop time, wall time) of the last look; None while the ticker is not running (a
        look then proves nothing: nobody promised to look every ``tick``)."""

    def check(self) -> float:
        """Look at the clocks, from the loop the ticker runs on; returns ``resumed``."""
        if self._last is None:
            return self.resumed
        loop_now = asyncio.get_running_loop().time()  # callers, the Lease judges, run on the loop
        wall_now = self.wall.now()
        gap = max(loop_now - self._last[0], wall_now - self._last[1])
        self._last = (loop_now, wall_now)
        if gap > self.tick + self.tolerance:
            self.resumed = wall_now
            self.stalls += 1
            log.warning("this peer stood still for %.1fs (frozen, suspended or starved): other "
                        "nodes' Leases are judged again once it has run for the grace period",
                        gap)
        return self.resumed

    async def run(self) -> None:
        self._last = (asyncio.get_running_loop().time(), self.wall.now())
        try:
            while True:
                await asyncio.sleep(self.tick)
                self.check()
        finally:
            self._last = None
