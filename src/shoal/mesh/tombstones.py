"""Tombstone garbage collection: drop a deletion once every member is known to hold it.

Everything below is kept per scope (``shoal.authz.scopes``): a peer's coverage of
another is per (peer, scope), rows are published and gossiped per scope, only to the
scope's members, and a tombstone of a scope is collected once every member of *that
scope* covers it. Fences belong to the scope of their namespace.

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
so every peer learns every row; an idle pull carries none. A weak peer relays no
rows in the cluster scope, so it asks for less: its partner's own row, as the entries
changed since the row version it holds, and of every other row only the entry about
itself (``about``), which is all its collection floor reads.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from shoal.authz.scopes import CLUSTER
from shoal.crdt.hlc import HybridLogicalClock, stamp_to_seconds
from shoal.mesh import topology
from shoal.mesh.config import MeshConfig
from shoal.mesh.membership import Membership
from shoal.mesh.messages import CoverageRow, State
from shoal.mesh.replication_policy import ReplicationPolicy
from shoal.mesh.topology import Role, role_of
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

COVERAGE_META = "mesh.coverage"
COVERAGE_RESERVED_META = "mesh.coverage-reserved"
"""The highest coverage revision this peer may serve: the next life counts on from it."""
_RESERVE_BLOCK = 1024  # coverage revisions reserved per durable write
_NO_MEMBERS = 1 << 62  # alone: nobody else needs to see a deletion
_OWN_HISTORY = 32  # publications a row delta may start from (older cursors get the row)
REGION_ROW = "region:"
"""The owner of a region's aggregated row is this and the region (no peer's name has a
colon)."""


class Revisions:
    """The coverage revisions of one peer: one counter for every scope and every life.

    A puller keeps the last coverage revision it was served and asks for the rows learnt
    after it. If a restart (or a scope dropped and taken again) counted from 0 again,
    a cursor from before would name a revision of the new life, and the rows learnt up
    to it, the owner's own new row among them, would never be sent: its tombstones were
    never collected (issue 16, seeds 100298 and 101288). So revisions only grow, and a
    peer serves only revisions it has reserved durably (``reserved``); a new life starts
    above them, so every cursor from before is older than every row it learns."""

    def __init__(self, start: int = 0) -> None:
        self.last = start
        self.reserved = start
        """Durably reserved: the highest revision a puller may be given."""
        self.reserving = False

    def next(self) -> int:
        self.last += 1
        return self.last

    def servable(self, revision: int) -> int:
        """What a puller may be told of ``revision``: a cursor past the reservation could
        outlive a crash, so it is held at the reservation (the puller asks again)."""
        return min(revision, self.reserved)

    def wanted(self) -> int | None:
        """The reservation to write now, if the counter nears the durable one."""
        if self.reserving or self.last + _RESERVE_BLOCK // 2 <= self.reserved:
            return None
        return self.last + _RESERVE_BLOCK

    def durable(self, reserved: int) -> None:
        self.reserving = False
        self.reserved = max(self.reserved, reserved)


@dataclass(slots=True)
class _Held:
    row: CoverageRow
    learnt: int
    """The coverage revision at which this peer learnt the row."""


class Coverage:
    """This peer's coverage vector in one scope and the rows it knows of the scope's
    members."""

    def __init__(self, me: str, hlc: HybridLogicalClock,
                 vector: dict[str, int] | None = None,
                 revisions: Revisions | None = None) -> None:
        self.me = me
        self.hlc = hlc
        self.vector: dict[str, int] = dict(vector or {})
        self._revisions = revisions or Revisions()
        self.revision = self._revisions.last
        """The coverage revision at which this scope last learnt something."""
        self.rows: dict[str, _Held] = {}
        """Whole rows: ours, our pull partners' and, on a peer that relays rows, those of
        every peer it counts (``counts``)."""
        self.relays = True
        """Whether pullers get every row learnt (False on a weak peer in the cluster scope:
        its super-peers, its only pullers, hold every row it holds but its own)."""
        self.shared: Callable[[str], bool] | None = None
        """Whose coverage the peers that pull rows from us need (None: everyone's). A
        super-peer's pullers of whole rows are the backbone, which needs nothing about
        the weak peers that super-peers stand for: their rows stay here, our row goes
        out without the entries about them, and a change of those entries alone is not
        news to a puller (``_own_shared``)."""
        self._own_shared = 0
        """The coverage revision at which the shared part of our row last changed."""
        self.counts: Callable[[str], bool] | None = None
        """Which peers' coverage matters here (None: all). In the cluster scope of a layout
        with super-peers, not the weak peers of other sites (``TombstoneCollector.counts``):
        their rows are neither kept nor relayed, nor entries about them absorbed."""
        self.region_of: Callable[[str], str | None] | None = None
        """In the cluster scope of a layout with regions: the region through whose
        aggregated row a peer's coverage is read and relayed here, or None for a peer whose
        own row is (one of our region, a weak peer, one not known)."""
        self.region_members: Callable[[], tuple[str, list[str]] | None] | None = None
        """Our region and its other members, whose rows make up its aggregated row (None
        while we aggregate nothing: a weak peer)."""
        self.regions: dict[str, _Held] = {}
        """Per other region: its aggregated row (relayed whole, like a row)."""
        self._aggregate: tuple[int, CoverageRow | None, int] | None = None
        """(coverage revision computed at, our region's aggregated row, revision at which
        it last changed)."""
        self.concerns: Callable[[str, str], bool] | None = None
        """Whether an entry about a peer (second) concerns a puller that relays no rows
        (first): what ``about`` sends it of our row (None: every entry)."""
        self.about_me: dict[str, tuple[int, int]] = {}
        """Per owner: (row version, the revision of ours that row covers), from whole rows
        and from the entries sent to a peer that asked only for those."""
        self._own_changed: dict[str, int] = {}
        """Per entry of our row: the coverage revision at which it last changed."""
        self._own_history: list[tuple[int, int]] = []
        """(coverage revision, version) of our last publications, oldest first."""
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
        counts = self.counts
        for peer, revision in row.vector.items():
            if peer != self.me and revision > self.vector.get(peer, 0) and (
                    counts is None or counts(peer)):
                self.vector[peer] = revision
                changed = True
        return changed

    def published(self, durable: dict[str, int]) -> None:
        """``durable`` (a snapshot of the vector) is committed: publish it as our row."""
        held = self.rows.get(self.me)
        if (held.row.vector if held is not None else {}) == durable:
            return  # nothing new (an empty vector says no more than no row)
        self.revision = self._revisions.next()
        before = held.row.vector if held is not None else {}
        shared = self.shared
        for peer, revision in durable.items():
            if before.get(peer) != revision:
                self._own_changed[peer] = self.revision
                if shared is None or shared(peer):
                    self._own_shared = self.revision
        if any(p not in durable for p in before):
            self._own_shared = self.revision
        row = CoverageRow(self.me, self.hlc.now(), durable)
        self.rows[self.me] = _Held(row, self.revision)
        self._own_history = [*self._own_history[-(_OWN_HISTORY - 1):],
                             (self.revision, row.version)]

    def since(self, cursor: int, puller: str | None = None) -> tuple[CoverageRow, ...]:
        """The rows learnt after ``cursor`` (all of them if the cursor is from a past life).
        With regions, a puller of another region gets our own row and our region's
        aggregated row alone (``across``), and one of ours no row of another region's peer
        but the aggregated ones."""
        if cursor > self.revision:
            cursor = 0
        if not self.relays:
            own = self.rows.get(self.me)
            return (own.row,) if own is not None and own.learnt > cursor else ()
        region_of = self.region_of
        if region_of is not None and puller is not None:
            theirs = region_of(puller)
            if theirs is not None:
                return self.across(cursor, theirs)
        shared = self.shared
        if shared is None and region_of is None:
            return tuple(h.row for h in self.rows.values() if h.learnt > cursor)
        out = []
        for owner, h in self.rows.items():
            if owner == self.me:
                if shared is None:
                    if h.learnt > cursor:
                        out.append(h.row)
                elif self._own_shared > cursor:
                    out.append(self._own_row(h.row))
            elif (h.learnt > cursor and (shared is None or shared(owner))
                  and (region_of is None or region_of(owner) is None)):
                out.append(h.row)
        out += [h.row for h in self.regions.values() if h.learnt > cursor]
        return tuple(out)

    def _own_row(self, row: CoverageRow) -> CoverageRow:
        """Our row as peers elsewhere get it: without the entries nobody there reads."""
        shared = self.shared
        if shared is None:
            return row
        return CoverageRow(row.owner, row.version,
                           {p: r for p, r in row.vector.items() if shared(p)})

    def across(self, cursor: int, theirs: str) -> tuple[CoverageRow, ...]:
        """For a puller of region ``theirs``: our own row (it absorbs it), our region's
        aggregated row and those of the other regions but its own, each if it changed
        after ``cursor``. Rows of our region's other peers stay in our region."""
        out = []
        own = self.rows.get(self.me)
        if own is not None and (own.learnt if self.shared is None
                                else self._own_shared) > cursor:
            out.append(self._own_row(own.row))
        row, learnt = self.aggregate()
        if row is not None and learnt > cursor:
            out.append(row)
        out += [h.row for region, h in self.regions.items()
                if h.learnt > cursor and region != theirs]
        return tuple(out)

    def aggregate(self) -> tuple[CoverageRow | None, int]:
        """Our region's aggregated row and the coverage revision at which it last changed.
        Per peer outside the region, the lowest revision of it that a row of each member of
        the region covers: what the whole region is known to cover of it. Each member is
        named too, with 0 (its constituents). None until a row of every member is here."""
        cached = self._aggregate
        if cached is not None and cached[0] == self.revision:
            return cached[1], cached[2]
        row: CoverageRow | None = None
        learnt = 0
        region_of = self.region_of
        members = None if self.region_members is None else self.region_members()
        if members is not None and region_of is not None:
            region, names = members
            held = [self.rows.get(n) for n in (self.me, *names)]
            if all(h is not None for h in held):
                parts = [h for h in held if h is not None]
                low = {p: r for p, r in self._own_row(parts[0].row).vector.items()
                       if r > 0 and region_of(p) is not None}
                for h in parts[1:]:
                    vec = h.row.vector
                    low = {p: m for p, r in low.items() if (m := min(r, vec.get(p, 0))) > 0}
                for n in (self.me, *names):
                    low[n] = 0
                row = CoverageRow(REGION_ROW + region, max(h.row.version for h in parts), low)
                learnt = self.revision
                if cached is not None and cached[1] is not None and cached[1].vector == low:
                    # Unchanged (a row moved only in entries about our own region): not
                    # news to other regions, so neither its version nor revision moves.
                    row, learnt = cached[1], cached[2]
        self._aggregate = (self.revision, row, learnt)
        return row, learnt

    def about(self, puller: str, cursor: int
              ) -> tuple[tuple[CoverageRow, ...], tuple[tuple[str, int, int], ...], int]:
        """For a puller that relays no rows: our row if it changed after ``cursor``, and
        of the other rows learnt since, the entries about ``puller`` (a row that does not
        cover it tells it nothing). A filtered row is never sent as a row, so no peer
        takes it for a whole one. When our row at ``cursor`` is one we still know, ours
        holds only the entries changed since, and the third value is that row's version
        (the puller applies the change only to that very row)."""
        if cursor > self.revision:
            cursor = 0
        own = self.rows.get(self.me)
        rows: tuple[CoverageRow, ...] = ()
        base = 0
        concerns = self.concerns
        if own is not None and own.learnt > cursor:
            known = [v for r, v in self._own_history if r <= cursor]
            if cursor and known:
                base = known[-1]
                changed = {p: r for p, r in own.row.vector.items()
                           if self._own_changed.get(p, 0) > cursor
                           and (concerns is None or concerns(puller, p))}
                rows = (CoverageRow(self.me, own.row.version, changed),)
            elif concerns is None:
                rows = (own.row,)
            else:
                rows = (CoverageRow(self.me, own.row.version, {
                    p: r for p, r in own.row.vector.items() if concerns(puller, p)}),)
        entries = []
        for owner, h in self.rows.items():
            if h.learnt <= cursor or owner == self.me or owner == puller:
                continue
            covered = h.row.vector.get(puller, 0)
            if covered:
                entries.append((owner, h.row.version, covered))
        return rows, tuple(entries), base

    def receive_delta(self, row: CoverageRow, base: int) -> bool:
        """The entries of ``row``'s owner's row that changed since its row of version
        ``base``; False unless that is the row we hold (then ask for the whole row)."""
        held = self.rows.get(row.owner)
        if row.owner == self.me or held is None or held.row.version != base:
            return False
        if row.version > held.row.version:
            whole = CoverageRow(row.owner, row.version, {**held.row.vector, **row.vector})
            self.receive([whole])
        return True

    def receive(self, rows: Iterable[CoverageRow]) -> None:
        for r in rows:
            if r.owner == self.me:
                continue  # only we publish our row
            if r.owner.startswith(REGION_ROW):
                self._receive_region(r)
                continue
            if self.counts is not None and not self.counts(r.owner):
                continue  # a peer whose coverage nobody here or downstream reads
            self._note_about_me(r.owner, r.version, r.vector.get(self.me, 0))
            held = self.rows.get(r.owner)
            if held is None or r.version > held.row.version:
                self.revision = self._revisions.next()
                self.rows[r.owner] = _Held(r, self.revision)

    def _receive_region(self, r: CoverageRow) -> None:
        """Another region's aggregated row: the one of highest version; of two of the same
        version and constituents, what either covers (each is a lower bound of what the
        region covers, as rows only grow)."""
        region = r.owner[len(REGION_ROW):]
        mine = None if self.region_members is None else self.region_members()
        if self.region_of is None or mine is None or mine[0] == region:
            return  # no regions here, or ours: we aggregate it ourselves
        vector = r.vector
        held = self.regions.get(region)
        if held is not None and r.version <= held.row.version:
            old = held.row.vector
            if r.version < held.row.version or _constituents(old) != _constituents(vector):
                return
            merged = dict(old)
            for p, rev in vector.items():
                if rev > merged.get(p, 0):
                    merged[p] = rev
            if merged == old:
                return
            vector = merged
        self.revision = self._revisions.next()
        self.regions[region] = _Held(CoverageRow(r.owner, r.version, vector), self.revision)

    def receive_about_me(self, entries: Iterable[tuple[str, int, int]]) -> None:
        """Entries about us from other rows; they change nothing we serve, so the
        coverage revision stays."""
        for owner, version, covered in entries:
            if owner != self.me:
                self._note_about_me(owner, version, covered)

    def _note_about_me(self, owner: str, version: int, covered: int) -> None:
        held = self.about_me.get(owner)
        if held is None or version > held[0]:
            self.about_me[owner] = (version, covered)

    def covered_by(self, owner: str) -> int:
        """The revision of ours that ``owner``'s newest row we know of covers, or that its
        region's aggregated row covers, if it names ``owner`` among its constituents."""
        held = self.about_me.get(owner)
        covered = 0 if held is None else held[1]
        region = None if self.region_of is None else self.region_of(owner)
        if region is not None:
            agg = self.regions.get(region)
            if agg is not None and owner in agg.row.vector:
                covered = max(covered, agg.row.vector.get(self.me, 0))
        return covered

    def floor(self, members: Iterable[str]) -> int:
        """The revision of ours that every one of ``members`` is known to cover."""
        low: int | None = None
        for m in members:
            covered = self.covered_by(m)
            low = covered if low is None else min(low, covered)
        return _NO_MEMBERS if low is None else low


def _constituents(vector: dict[str, int]) -> set[str]:
    return {p for p, r in vector.items() if r == 0}


class CoverageBook:
    """Per scope: this peer's coverage vector and the rows of the scope's members."""

    def __init__(self, me: str, replica: Replica, hlc: HybridLogicalClock) -> None:
        self.me = me
        self.hlc = hlc
        self.replica = replica
        self.scopes: dict[str, Coverage] = {}
        self._cluster_counts: Callable[[str], bool] | None = None
        self._cluster_relays: Callable[[], bool] = lambda: True
        self._cluster_shared: Callable[[str], bool] | None = None
        self._cluster_regions: tuple[Callable[[str], str | None],
                                     Callable[[], tuple[str, list[str]] | None],
                                     Callable[[str, str], bool]] | None = None
        reserved = replica.persistence.get_meta(COVERAGE_RESERVED_META)
        try:
            self.revisions = Revisions(int(reserved or 0))
        except ValueError:
            log.warning("ignoring an unreadable coverage reservation")
            self.revisions = Revisions()
        stored = replica.persistence.get_meta(COVERAGE_META)
        if stored:
            try:
                for scope, vector in _vectors(orjson.loads(stored)).items():
                    self.scopes[scope] = Coverage(me, hlc, vector, self.revisions)
            except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError):
                log.warning("ignoring an unreadable coverage vector")

    def scope(self, scope: str) -> Coverage:
        cov = self.scopes.get(scope)
        if cov is None:
            cov = self.scopes[scope] = Coverage(self.me, self.hlc, None, self.revisions)
            if scope == CLUSTER:
                cov.counts, cov.shared = self._cluster_counts, self._cluster_shared
                cov.relays = self._cluster_relays()
                if self._cluster_regions is not None:
                    cov.region_of, cov.region_members, cov.concerns = self._cluster_regions
        return cov

    def count_only(self, counts: Callable[[str], bool], relays: Callable[[], bool],
                   shared: Callable[[str], bool]) -> None:
        """In the cluster scope, keep coverage of the peers ``counts`` admits only, serve
        others' rows only while ``relays()`` (asked again at every publication), and of
        those only what concerns the peers ``shared`` admits."""
        self._cluster_counts, self._cluster_relays = counts, relays
        self._cluster_shared = shared
        if CLUSTER in self.scopes:
            cov = self.scopes[CLUSTER]
            cov.counts, cov.shared, cov.relays = counts, shared, relays()

    def by_region(self, region_of: Callable[[str], str | None],
                  region_members: Callable[[], tuple[str, list[str]] | None],
                  concerns: Callable[[str, str], bool]) -> None:
        """In the cluster scope, read and relay the coverage of other regions' peers through
        their regions' aggregated rows (``Coverage.region_of``), and send a puller that
        relays no rows only the entries of our row that concern it."""
        self._cluster_regions = (region_of, region_members, concerns)
        if CLUSTER in self.scopes:
            cov = self.scopes[CLUSTER]
            cov.region_of, cov.region_members, cov.concerns = self._cluster_regions

    def servable(self, revision: int) -> int:
        """The coverage revision a puller may be given for ``revision`` (``Revisions``);
        reserves more revisions on disk when the counter nears the reservation."""
        want = self.revisions.wanted()
        if want is not None:
            self.revisions.reserving = True
            fut = self.replica.persistence.write(
                [], {COVERAGE_RESERVED_META: str(want)}, asyncio.get_running_loop())

            def done(f: asyncio.Future[None], want: int = want) -> None:
                if f.cancelled() or f.exception() is not None:
                    self.revisions.reserving = False  # tried again at the next pull
                else:
                    self.revisions.durable(want)

            fut.add_done_callback(done)
        return self.revisions.servable(revision)

    def vectors(self) -> dict[str, dict[str, int]]:
        """A snapshot of every scope's vector (what is persisted, then published)."""
        return {s: dict(c.vector) for s, c in self.scopes.items() if c.vector}

    def published(self, durable: dict[str, dict[str, int]]) -> None:
        if CLUSTER in self.scopes:  # a role may change with the member's tags
            self.scopes[CLUSTER].relays = self._cluster_relays()
        for scope, vector in durable.items():
            if scope in self.scopes:
                self.scopes[scope].published(vector)

    def drop(self, scope: str) -> None:
        """Forget everything about ``scope`` (this peer no longer holds it, or holds more
        of it than its vector was about)."""
        self.scopes.pop(scope, None)

    @property
    def vector(self) -> dict[str, int]:
        """The cluster scope's vector (what there was before scopes)."""
        return self.scope("").vector


def _vectors(stored: object) -> dict[str, dict[str, int]]:
    """{scope: {peer: revision}}; a vector persisted before scopes ({peer: revision}) is the
    cluster scope's."""
    if not isinstance(stored, dict):
        raise ValueError("not a coverage map")
    if all(isinstance(v, int) for v in stored.values()):
        return {"": {str(k): int(v) for k, v in stored.items()}}
    return {str(s): {str(k): int(v) for k, v in vec.items()} for s, vec in stored.items()}


class TombstoneCollector:
    """Every ``gc_interval``: collect covered tombstones, expire old fences."""

    def __init__(self, replica: Replica, coverage: CoverageBook, membership: Membership,
                 config: MeshConfig, policy: ReplicationPolicy) -> None:
        self.replica = replica
        self.coverage = coverage
        self.membership = membership
        self.config = config
        self.policy = policy
        self.collected = 0
        self.fences_expired = 0
        self._held_since: dict[tuple[str, str, str], float] = {}
        """Per tombstone: when this peer (in this life, by its monotonic clock) first saw it
        held here."""
        coverage.count_only(self.counts, lambda: membership.role != Role.WEAK, self.shared)
        coverage.by_region(self.region_of, self.region_members, self.concerns)
        self._region_members: tuple[int, tuple[str, list[str]] | None] = (-1, None)

    def counts(self, peer: str) -> bool:
        """Whether ``peer``'s coverage counts in the cluster scope here: on a weak peer, only
        the members it keeps (its site's super-peers: nothing reads the rest); elsewhere
        every peer but the weak peers this peer does not contact (other sites' weak peers,
        whose super-peers stand for them: ``required``). Unknown peers count, so a row
        that arrives before its owner's membership is not lost."""
        if peer == self.membership.name:
            return True
        m = self.membership.members.get(peer)
        if self.membership.role == Role.WEAK:
            return m is not None
        return m is None or role_of(m) != Role.WEAK or self.membership.contacts(m)

    def shared(self, peer: str) -> bool:
        """Whether peers elsewhere count ``peer``'s coverage: not if it is a weak peer
        whose site's super-peers stand for it."""
        m = self.membership.members.get(peer)
        return m is None or not self.membership.stood_for(m)

    def region_of(self, peer: str) -> str | None:
        """The region through whose aggregated row ``peer``'s coverage is read here: its
        own, for a full or super-peer of another region than ours; None (its own row) for
        one of ours, a weak peer, one not known, and on a weak peer."""
        if self.membership.role == Role.WEAK:
            return None
        m = self.membership.members.get(peer)
        if m is None or role_of(m) == Role.WEAK:
            return None
        region = topology.region_of(m)
        return None if region == topology.region_of(self.membership.me) else region

    def region_members(self) -> tuple[str, list[str]] | None:
        """Our region and its other full and super-peers not departed (None on a weak
        peer): the rows our region's aggregated row is made of."""
        if self.membership.role == Role.WEAK:
            return None
        version, cached = self._region_members
        if version != self.membership.version:
            ours = topology.region_of(self.membership.me)
            names = [m.name for m in self.membership.members.values()
                     if m.name != self.membership.name and m.state != State.LEFT
                     and role_of(m) != Role.WEAK and topology.region_of(m) == ours]
            cached = (ours, names)
            self._region_members = (self.membership.version, cached)
        return cached

    def concerns(self, puller: str, peer: str) -> bool:
        """Whether a weak puller reads the entry about ``peer`` in our row: the one about
        itself and those about its site's super-peers (all it counts and absorbs)."""
        if peer == puller:
            return True
        m = self.membership.members.get(peer)
        w = self.membership.members.get(puller)
        return (m is not None and w is not None and role_of(m) == Role.SUPER
                and topology.site_of(m) == topology.site_of(w))

    def required(self, scope: str = "") -> list[str]:
        """The members whose coverage a collection in ``scope`` waits for: every member of
        the scope but us and the departed. In the cluster scope, a full or super-peer does
        not wait for the weak peers of other sites: their super-peers stand for them, since
        a weak peer syncs only with its site's super-peers, and each of those keeps a
        tombstone until its own weak peers cover it (docs/semantics.md, "Coverage by
        site"). A weak peer's list holds only its super-peers anyway."""
        names = [m.name for m in self.membership.members.values()
                 if m.name != self.membership.name and m.state != State.LEFT
                 and self.policy.may_send(scope, m.name)]
        if scope == CLUSTER:
            names = [n for n in names if self.counts(n)]
        return names

    def floor(self, scope: str) -> int:
        """The revision of ours that every member of ``scope`` covers in it."""
        return self.coverage.scope(scope).floor(self.required(scope))

    def collect_round(self) -> int:
        """Collect what is covered and old enough; returns how many tombstones went."""
        now = self.replica.wall.now()
        # Old enough by the deletion's stamp and our wall clock, or held here that long by
        # our monotonic clock: a clock that jumped (ours back, or the writer's forward,
        # which every peer's hybrid clock then follows) delays collection by at most
        # gc_min_age, not by the size of the jump.
        steady = asyncio.get_running_loop().time()
        held_since = {}
        floors: dict[str, int] = {}
        oldest = now - self.config.gc_min_age
        due = []
        for key, e in self.replica.tombstones():
            since = held_since[key] = self._held_since.get(key, steady)
            scope = self.policy.scope_of(key[0], key[1])
            if not self.policy.holds(scope):
                continue  # being dropped with the rest of the scope
            floor = floors.get(scope)
            if floor is None:
                floor = floors[scope] = self.floor(scope)
            if e.rv <= floor and (stamp_to_seconds(e.document().stamp[0]) <= oldest
                                  or steady - since >= self.config.gc_min_age):
                due.append(key)
        self._held_since = held_since
        n = self.replica.collect(due, now)
        self.collected += n
        self.fences_expired += self.replica.expire_fences(now - self.config.fence_ttl)
        return n

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.gc_interval)
            self.collect_round()
