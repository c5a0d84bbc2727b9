"""A simulated node's disk: commits that take time, crashes that tear them, and backups.

``MemoryPersistence`` stores a write the moment it is queued, so a killed simulated
peer kept everything. ``SimDisk`` commits as the real writer thread does: what is
queued within a commit delay (drawn from the node's seeded stream) commits together,
in queue order, and only then do the writes' futures resolve (the replica acknowledges,
publishes and serves them only then). ``crash()`` is a kill during that commit: what
was queued and not committed is lost, as SQLite's WAL rolls back a torn last
transaction. A restart then builds a new replica from what the disk holds.

``backup()`` copies what is committed; ``restore()`` puts such a copy back, as an
operator restoring a data dir from an older backup would.
"""

from __future__ import annotations

import asyncio
import copy
import random

from shoal.store.persistence import FenceRow, MemoryPersistence, Row


class SimDisk(MemoryPersistence):
    settles_at_once = False
    """A write is stored only when its commit happens: the replica tracks it in flight."""

    def __init__(self, rng: random.Random, commit_delay: float = 0.002) -> None:
        super().__init__()
        self.rng = rng
        self.commit_delay = commit_delay
        """Mean seconds from a write being queued to its commit."""
        self._queue: list[tuple[list[Row], dict[str, str], list[FenceRow] | None,
                                asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.torn = 0
        """Writes lost to crashes (queued, never committed)."""
        self.dead = False
        """Between a crash and the restart: the dead process's writes go nowhere."""
        self._stalled = False

    def write(
        self, rows: list[Row], meta: dict[str, str], loop: asyncio.AbstractEventLoop,
        fences: list[FenceRow] | None = None, scrub: bool = False,
    ) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = loop.create_future()
        if self.dead:
            return fut  # never resolves: the process that asked is gone
        self._queue.append((rows, meta, fences, fut))
        if self._timer is None and not self._stalled:
            delay = self.rng.expovariate(1.0 / self.commit_delay) if self.commit_delay else 0.0
            self._timer = loop.call_later(delay, self._commit)
        return fut

    def stall(self) -> None:
        """Nothing commits until the next crash (a disk that stopped answering)."""
        if self._timer is not None:
            self._timer.cancel()
        self._stalled = True

    def _commit(self) -> None:
        """One transaction: everything queued so far, in order."""
        self._timer = None
        batch, self._queue = self._queue, []
        for rows, meta, fences, _ in batch:
            self.write_sync(rows, meta, fences)
        for *_, fut in batch:
            if not fut.done():
                fut.set_result(None)

    def revision(self) -> int:
        """The revision a replica loaded from this disk starts at (as ``Replica`` finds it)."""
        top = int(self.meta.get("revision", "0"))
        top = max([top, *(r.rv for r in self.rows.values())])
        return max([top, *(f.rv for f in self.fences.values())])

    @property
    def pending(self) -> int:
        return len(self._queue)

    def crash(self) -> int:
        """The process dies mid-commit: the queued writes are never stored (their futures
        never resolve: nobody is left to be told). Returns how many were lost."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stalled = False
        lost = len(self._queue)
        self.torn += lost
        self._queue = []
        return lost

    def backup(self) -> SimDisk:
        """A copy of what is committed now."""
        other = SimDisk(self.rng, self.commit_delay)
        other.rows = dict(self.rows)
        other.fences = dict(self.fences)
        other.meta = copy.copy(self.meta)
        return other

    def restore(self, backup: SimDisk) -> None:
        """Put a backup's contents back (the disk must not be in use)."""
        self.crash()
        self.rows = dict(backup.rows)
        self.fences = dict(backup.fences)
        self.meta = copy.copy(backup.meta)
