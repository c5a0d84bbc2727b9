"""Tombstone garbage collection: drop a deletion once every member is known to hold it.

*Coverage.* A peer's *coverage vector* says, for each other peer P, the highest
revision r of P such that this peer has merged everything P held at r. It grows
directly (the pull cursor for P: a pull merges every document P changed up to
the revision it answers with) and transitively (after a pull from Z that ends
at Z's current revision, this peer holds everything Z held then, so it covers
whatever Z's own vector covered). A peer publishes its vector once it is durable
(the cursors and the documents they cover are committed), as a *row* versioned
by its hybrid-logical-clock stamp.

*Gossip.* Rows travel in the pull exchange with a second cursor: every peer
numbers the row changes it learns (its coverage revision), a pull sends the
coverage revision it holds for the partner and the answer carries only the rows
learnt since. Rows spread against the pull graph, which is strongly connected,
so every peer learns every row; an idle pull carries none.

*Collection.* A deleted object whose row here has revision r is dropped (row
removed, document gone) once every member that is not permanently gone (alive,
suspect or dead, but not left and not yet forgotten) has published a row
covering this peer at r or later, and the deletion stamp is ``gc_min_age`` old.
Every member then holds the tombstone, or something newer, so none can send an
older live copy back.

*Fence.* The collected tombstone leaves a fence, ``(name, delete stamp, revision)``,
for ``fence_ttl``. A remote document for that name that the fence dominates is
refused, and a pull from a cursor older than the fence's revision still returns
the bare tombstone. So a peer that was forgotten, and comes back with an old live
copy, learns of the deletion at its first pull instead of reviving the object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from shoal.crdt.hlc import HybridLogicalClock, stamp_to_seconds
from shoal.mesh.config import MeshConfig
from shoal.mesh.membership import Membership
from shoal.mesh.messages import CoverageRow, State
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

COVERAGE_META = "mesh.coverage"
_NO_MEMBERS = 1 << 62  # alone: nobody else needs to see a deletion


@dataclass(slots=True)
class _Held:
    row: CoverageRow
    learnt: int
    """The coverage revision at which this peer learnt the row."""


class Coverage:
    """This peer's coverage vector and the rows it knows of every peer's."""

    def __init__(self, me: str, replica: Replica, hlc: HybridLogicalClock) -> None:
        self.me = me
        self.hlc = hlc
        self.vector: dict[str, int] = {}
        stored = replica.persistence.get_meta(COVERAGE_META)
        if stored:
            try:
                self.vector = {str(k): int(v) for k, v in orjson.loads(stored).items()}
            except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError):
                log.warning("ignoring an unreadable coverage vector")
        self.revision = 0
        self.rows: dict[str, _Held] = {}
        self.published(dict(self.vector))

    def row(self, owner: str) -> CoverageRow | None:
        held = self.rows.get(owner)
        return None if held is None else held.row

    def advance(self, peer: str, revision: int) -> bool:
        """Everything ``peer`` held at ``revision`` is merged here (a pull's cursor)."""
        if revision > self.vector.get(peer, 0):
            self.vector[peer] = revision
            return True
        return False

    def reset(self, peer: str) -> None:
        """``peer``'s revisions went back (it lost its state): what we covered means nothing."""
        self.vector[peer] = 0

    def absorb(self, row: CoverageRow | None) -> bool:
        """Everything the row's owner held when it published ``row`` is merged here."""
        if row is None:
            return False
        changed = False
        for peer, revision in row.vector.items():
            if peer != self.me and revision > self.vector.get(peer, 0):
                self.vector[peer] = revision
                changed = True
        return changed

    def published(self, durable: dict[str, int]) -> None:
        """``durable`` (a snapshot of the vector) is committed: publish it as our row."""
        held = self.rows.get(self.me)
        if (held.row.vector if held is not None else {}) == durable:
            return  # nothing new (an empty vector says no more than no row)
        self.revision += 1
        self.rows[self.me] = _Held(CoverageRow(self.me, self.hlc.now(), durable), self.revision)

    def since(self, cursor: int) -> tuple[CoverageRow, ...]:
        """The rows learnt after ``cursor`` (all of them if the cursor is from a past life)."""
        if cursor > self.revision:
            cursor = 0
        return tuple(h.row for h in self.rows.values() if h.learnt > cursor)

    def receive(self, rows: Iterable[CoverageRow]) -> None:
        for r in rows:
            if r.owner == self.me:
                continue  # only we publish our row
            held = self.rows.get(r.owner)
            if held is None or r.version > held.row.version:
                self.revision += 1
                self.rows[r.owner] = _Held(r, self.revision)

    def floor(self, members: Iterable[str]) -> int:
        """The revision of ours that every one of ``members`` is known to cover."""
        low: int | None = None
        for m in members:
            row = self.row(m)
            covered = 0 if row is None else row.vector.get(self.me, 0)
            low = covered if low is None else min(low, covered)
        return _NO_MEMBERS if low is None else low


class TombstoneCollector:
    """Every ``gc_interval``: collect covered tombstones, expire old fences."""

    def __init__(self, replica: Replica, coverage: Coverage, membership: Membership,
                 config: MeshConfig) -> None:
        self.replica = replica
        self.coverage = coverage
        self.membership = membership
        self.config = config
        self.collected = 0
        self.fences_expired = 0

    def required(self) -> list[str]:
        """The members whose coverage a collection waits for: all but us and the departed."""
        return [m.name for m in self.membership.members.values()
                if m.name != self.membership.name and m.state != State.LEFT]

    def collect_round(self) -> int:
        """Collect what is covered and old enough; returns how many tombstones went."""
        now = self.replica.wall.now()
        floor = self.coverage.floor(self.required())
        oldest = now - self.config.gc_min_age
        due = [key for key, e in self.replica.tombstones()
               if e.rv <= floor and stamp_to_seconds(e.document().stamp[0]) <= oldest]
        n = self.replica.collect(due, now)
        self.collected += n
        self.fences_expired += self.replica.expire_fences(now - self.config.fence_ttl)
        return n

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.gc_interval)
            self.collect_round()
