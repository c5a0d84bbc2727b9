"""A controller stops when cancelled, even at the instant its wake fires."""

from __future__ import annotations

import asyncio

from shoal.control.controller import Controller
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica


class Idle(Controller):
    name = "idle"

    async def sync(self) -> bool:
        return False


async def test_a_cancel_landing_as_the_wake_fires_stops_the_controller() -> None:
    c = Idle(ObjectStore(Replica(None, "n1"), KindRegistry()), resync=3600.0, debounce=0.0)
    task = asyncio.create_task(c.run())
    while c.passes < 1:  # the first pass is done: it now waits for a wake
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    # The wake and the cancel in the same turn: on Python 3.11 wait_for returned the wake
    # and dropped the cancel, and the loop ran on for ever.
    c._wake.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert task in done and task.cancelled()
