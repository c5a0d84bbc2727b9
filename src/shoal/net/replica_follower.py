"""The loop shared by the node's renderers of kernel or proxy state from the replica.

A renderer (Service rules, NetworkPolicy rules, ...) wakes on the changes of
the replica it cares about, waits a short debounce so that a burst of writes
is one render, and otherwise re-renders every ``resync`` seconds as a safety
net. A failed render is logged and retried after a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from shoal.store.change_feed import Change
from shoal.store.replica import Replica

log = logging.getLogger(__name__)


async def wake_on_changes(replica: Replica, relevant: Callable[[Change], bool],
                          wake: asyncio.Event) -> None:
    """Set ``wake`` on every relevant change, for ever.

    A feed that drops a slow subscriber may have lost changes: subscribe again
    and wake, so that everything is rendered anew.
    """
    while True:
        sub = replica.subscribe(relevant)
        try:
            while await sub.queue.get() is not None:
                wake.set()
        finally:
            sub.close()
        wake.set()


async def render_loop(replica: Replica, relevant: Callable[[Change], bool],
                      sync: Callable[[], Awaitable[object]], what: str, *,
                      resync: float, debounce: float) -> None:
    """Run ``sync`` now, after every burst of relevant changes, and every ``resync`` seconds."""
    wake = asyncio.Event()
    follower = asyncio.create_task(wake_on_changes(replica, relevant, wake))
    try:
        while True:
            try:
                await sync()
            except Exception:
                log.exception("%s: sync failed; retrying in 1 s", what)
                await asyncio.sleep(1.0)
                wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(resync):
                    await wake.wait()
            await asyncio.sleep(debounce)
            wake.clear()
    finally:
        follower.cancel()


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
