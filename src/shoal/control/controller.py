"""A level-triggered controller loop: changes only wake it; each pass re-reads the state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

from shoal.authz.scopes import ScopeIndex
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore

log = logging.getLogger(__name__)


class Controller(ABC):
    """Runs :meth:`sync` after relevant changes (debounced) and every ``resync`` seconds."""

    name = "controller"
    creates_defaults = False
    """Whether it creates objects every replica should hold (a namespace's ``default``
    ServiceAccount, the RBAC policy): ``manager.start`` then starts it once a joiner may
    create them (``run_when_may_create``), not merely once caught up."""

    def __init__(self, store: ObjectStore, resync: float = 30.0, debounce: float = 0.02) -> None:
        self.store = store
        self.resync = resync
        self.debounce = debounce
        self._wake = asyncio.Event()
        self.passes = 0
        # Which scope each object is in (shoal.control.ownership acts for a scope only on its
        # writers); the manager gives every controller of a node the same index.
        self.scopes = ScopeIndex(store.replica)

    def relevant(self, change: Change) -> bool:
        """Whether a change should wake the controller."""
        return True

    @abstractmethod
    async def sync(self) -> bool:
        """One pass. Returns True if it wants another pass soon (work is still pending)."""

    async def run(self) -> None:
        sub = self.store.replica.subscribe(self.relevant)
        waker = asyncio.create_task(self._drain(sub.queue))
        try:
            again = True
            while True:
                if not again:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.resync)
                    # On 3.11 wait_for swallows a cancel that lands as the wake fires (the
                    # task stays marked cancelling): without this the controller never stops.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError
                await asyncio.sleep(self.debounce)
                self._wake.clear()
                try:
                    again = await self.sync()
                except Exception:
                    log.exception("%s: sync failed", self.name)
                    again = False
                    await asyncio.sleep(1.0)
                self.passes += 1
                if again:
                    await asyncio.sleep(0.1)
        finally:
            waker.cancel()
            sub.close()

    async def _drain(self, queue: asyncio.Queue[Change | None]) -> None:
        while True:
            await queue.get()
            self._wake.set()
