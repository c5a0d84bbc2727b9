"""A peer notices that it stood still: its loop did not run (frozen, starved) or its wall
clock jumped (a host suspend), and the Lease judges count from its resume."""

from __future__ import annotations

import asyncio
import math
import time

from shoal.control.loop_stalls import LoopStalls
from tests.tools.stores import ManualClock


async def _ticking(stalls: LoopStalls) -> asyncio.Task[None]:
    task = asyncio.create_task(stalls.run())
    await asyncio.sleep(stalls.tick * 3)
    return task


async def test_a_loop_that_did_not_run_for_a_while_is_a_stall_seen_before_the_ticker() -> None:
    clock = ManualClock()
    stalls = LoopStalls(clock, tick=0.01, tolerance=1.0)  # (a loaded CI machine pauses)
    task = await _ticking(stalls)
    assert stalls.check() == -math.inf
    time.sleep(1.3)  # the loop is blocked (a kill -STOP, or starved)
    clock.t += 1.3
    assert stalls.check() == clock.t  # the judge looks first, before the ticker runs
    assert stalls.stalls == 1
    await asyncio.sleep(0.03)
    assert stalls.stalls == 1  # the ticker does not count it again
    task.cancel()


async def test_a_wall_clock_jump_is_a_stall_and_a_busy_moment_is_not() -> None:
    clock = ManualClock()
    stalls = LoopStalls(clock, tick=0.01, tolerance=1.0)  # (a loaded CI machine pauses)
    task = await _ticking(stalls)
    time.sleep(0.1)  # within the tolerance
    await asyncio.sleep(0.02)
    assert stalls.stalls == 0
    clock.t += 60  # a suspended host: the monotonic clock did not count it
    await asyncio.sleep(0.03)
    assert stalls.stalls == 1 and stalls.resumed == clock.t
    task.cancel()


def test_without_its_ticker_it_sees_no_stall() -> None:
    clock = ManualClock()
    stalls = LoopStalls(clock)
    clock.t += 600
    assert stalls.check() == -math.inf
