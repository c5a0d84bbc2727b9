"""Replication of the replica: eager push, then pull anti-entropy with cursors.

*Push.* Every local write is sent at once to ``push_fanout`` random live peers.
A peer that the push changed forwards it to ``push_fanout`` others, up to
``push_max_hops`` from the writer: an epidemic that reaches most peers within
a few network round trips, and costs nothing where it changes nothing.

*Pull.* Every ``pull_interval`` a peer asks ``pull_fanout`` random live peers
for everything they changed after the *cursor* it holds for them: the highest
revision of theirs it has merged. The cursors together are a version vector
over the peers' local revisions. Revisions count merges as well as writes, so a
pull carries everything the responder knows, whoever wrote it. The cursor moves
only after the documents are merged, so a lost or partial answer is pulled
again. A peer that is far behind (or new) simply pulls from cursor 0, the
full-state fallback, one page of ``pull_batch`` documents at a time. An idle
round is one tiny exchange: "what changed since N?", "nothing, I am at N".

The cursors are kept in the replica's ``meta`` table, written after the
documents they cover, so a restart resumes where it stopped.

*Coverage.* The same exchange carries the peers' coverage vectors, from which
``tombstones.py`` decides when a deletion may be forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import orjson

from shoal.mesh import ring
from shoal.mesh.config import MeshConfig
from shoal.mesh.membership import Member, Membership
from shoal.mesh.messages import (
    CoverageRow,
    DocRecord,
    Message,
    MessageError,
    Pull,
    PullReply,
    Push,
    decode,
    encode,
)
from shoal.mesh.tombstones import COVERAGE_META, Coverage, TombstoneCollector
from shoal.mesh.transport import Transport, TransportError
from shoal.store.change_feed import Change, Subscription
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

CURSORS_META = "mesh.cursors"
MAX_PAGES = 64  # per pull; the next round continues from the cursor


class AntiEntropy:
    def __init__(
        self,
        replica: Replica,
        transport: Transport,
        config: MeshConfig,
        rng: random.Random,
        membership: Membership,
    ) -> None:
        self.replica = replica
        self.transport = transport
        self.config = config
        self.rng = rng
        self.membership = membership
        self._partners: list[Member] = []
        self._partners_version = -1
        self._round = 0
        self.cursors: dict[str, int] = {}
        stored = replica.persistence.get_meta(CURSORS_META)
        if stored:
            try:
                self.cursors = {str(k): int(v) for k, v in orjson.loads(stored).items()}
            except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError):
                log.warning("ignoring unreadable anti-entropy cursors")
        # Revisions produced by merges here: the change feed reports them like local
        # writes, but pulls are not pushed on and pushes are forwarded by the handler.
        self._merged_rvs: set[int] = set()
        self.coverage = Coverage(membership.name, replica, replica.hlc)
        self.collector = TombstoneCollector(replica, self.coverage, membership, config)
        # Per partner: the coverage revision of theirs whose rows we hold (memory only:
        # after a restart the first pull fetches every row once).
        self._coverage_cursors: dict[str, int] = {}
        self._durable_vector: dict[str, int] | None = None
        self._publish_timer: asyncio.TimerHandle | None = None
        self._last_publish = float("-inf")
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.docs_merged = 0
        self.docs_pushed = 0
        self.garbage = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._sub = self.replica.subscribe(lambda c: True)
        self._tasks = [loop.create_task(self._push_loop()), loop.create_task(self._pull_loop())]
        if self.config.gc_interval > 0:
            self._tasks.append(loop.create_task(self.collector.run()))

    async def stop(self) -> None:
        if self._publish_timer is not None:
            self._publish_timer.cancel()
            self._publish_timer = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    # -- merging ---------------------------------------------------------------------

    def merge(self, docs: tuple[DocRecord, ...]) -> list[DocRecord]:
        """Merge peers' documents; returns those that changed something here (as now held)."""
        changed: list[DocRecord] = []
        for d in docs:
            try:
                result = self.replica.merge(d.resource, d.namespace, d.name, d.document())
            except (TypeError, ValueError, KeyError, IndexError, AttributeError):
                self.garbage += 1
                log.warning("dropping a malformed document for %s/%s", d.resource, d.name)
                continue
            if result is None:
                continue
            self.docs_merged += 1
            self._merged_rvs.add(self.replica.revision)
            entry = self.replica.entry(d.resource, d.namespace, d.name)
            if entry is not None:
                changed.append(self._record(d.resource, d.namespace, d.name, entry.doc_bytes))
        return changed

    def _record(self, resource: str, ns: str, name: str, data: bytes | None) -> DocRecord:
        if data is None:
            entry = self.replica.entry(resource, ns, name)
            assert entry is not None
            data = entry.document().to_bytes()
        return DocRecord(resource, ns, name, data)

    # -- push ------------------------------------------------------------------------

    async def push(self, docs: list[DocRecord], hops: int, exclude: str | None = None) -> None:
        peers = self.membership.live()
        fanout = self.config.push_fanout
        # Sample one extra instead of filtering the whole list: O(fanout), not O(N).
        picked = self.rng.sample(peers, min(fanout + 1, len(peers)))
        targets = [p for p in picked if p.address != exclude][:fanout]
        if not targets or not docs:
            return
        step = max(1, self.config.pull_batch)
        payloads = [encode(Push(hops, tuple(docs[i:i + step]))) for i in range(0, len(docs), step)]
        self.docs_pushed += len(docs) * len(targets)
        for t in targets:
            for payload in payloads:
                with contextlib.suppress(TransportError):
                    await self.transport.send(t.address, payload)

    def _local_changes(self, batch: list[Change]) -> list[DocRecord]:
        seen: set[tuple[str, str, str]] = set()
        out: list[DocRecord] = []
        for c in batch:
            if c.rv in self._merged_rvs:
                self._merged_rvs.discard(c.rv)
                continue
            key = (c.resource, c.namespace, c.name)
            entry = self.replica.entry(*key)
            if key in seen or entry is None:
                continue
            seen.add(key)
            out.append(self._record(*key, entry.doc_bytes))
        if batch and len(self._merged_rvs) > 1024:
            # The feed publishes in revision order: older merged revisions never will be.
            last = batch[-1].rv
            self._merged_rvs = {rv for rv in self._merged_rvs if rv > last}
        return out

    async def _push_loop(self) -> None:
        while True:
            sub = self._sub
            assert sub is not None
            first = await sub.queue.get()
            if first is None:
                # The feed dropped us for falling behind; pulls repair what we skipped.
                self._sub = self.replica.subscribe(lambda c: True)
                continue
            batch = [first]
            while not sub.queue.empty():
                c = sub.queue.get_nowait()
                if c is not None:
                    batch.append(c)
            docs = self._local_changes(batch)
            if docs:
                await self.push(docs, 0)

    # -- pull ------------------------------------------------------------------------

    def serve_pull(self, msg: Pull) -> PullReply:
        limit = max(1, min(msg.limit, self.config.pull_batch))
        rows = self.coverage.since(msg.coverage_cursor)
        cov = self.coverage.revision if rows else 0
        if msg.cursor >= self.replica.revision:
            return PullReply(self.replica.revision, False, (), cov, rows)
        entries = self.replica.changed_since(msg.cursor, limit)
        docs = tuple(self._record(r, ns, n, e.doc_bytes) for r, ns, n, e in entries)
        if len(entries) == limit:
            return PullReply(entries[-1][3].rv, True, docs, cov, rows)
        return PullReply(self.replica.revision, False, docs, cov, rows)

    async def pull_from(self, peer: Member) -> int:
        """Pull everything ``peer`` changed since our cursor for it; returns documents merged."""
        cursor = self.cursors.get(peer.name, 0)
        merged = 0
        for _ in range(MAX_PAGES):
            # The partner's row as of before the request: published before it answers.
            row: CoverageRow | None = self.coverage.row(peer.name)
            try:
                raw = await self.transport.request(
                    peer.address,
                    encode(Pull(cursor, self.config.pull_batch,
                                self._coverage_cursors.get(peer.name, 0))),
                    self.config.request_timeout,
                )
                reply = decode(raw)
            except TransportError:
                return merged
            except MessageError:
                self.garbage += 1
                return merged
            if not isinstance(reply, PullReply):
                self.garbage += 1
                return merged
            if reply.coverage:
                self.coverage.receive(reply.coverage)
                self._coverage_cursors[peer.name] = reply.coverage_revision
                for r in reply.coverage:
                    if r.owner == peer.name:
                        row = r
            if reply.revision < cursor:
                # The peer's revisions went back (it lost its state): start over.
                log.info("peer %s went back from revision %d to %d", peer.name, cursor,
                         reply.revision)
                cursor = 0
                self.coverage.reset(peer.name)
                continue
            changed = self.merge(reply.docs)
            merged += len(changed)
            # Before any await: the coverage claims match exactly what was just merged.
            covered = self.coverage.advance(peer.name, reply.revision)
            if not reply.more:
                # We now hold all the partner held: what it covered, we cover.
                covered = self.coverage.absorb(row) or covered
            if reply.revision != cursor:
                cursor = reply.revision
                self.cursors[peer.name] = cursor
                covered = True
            if covered:
                self._persist_cursors()
            if changed:
                # News that reached us by pull spreads on by push, as if pushed to us.
                await self.push(changed, 1, exclude=peer.address)
            if not reply.more:
                break
        return merged

    def _persist_cursors(self) -> None:
        vector = dict(self.coverage.vector)
        fut = self.replica.persistence.write(
            [], {CURSORS_META: orjson.dumps(self.cursors).decode(),
                 COVERAGE_META: orjson.dumps(vector).decode()},
            asyncio.get_running_loop(),
        )

        def done(f: asyncio.Future[None]) -> None:
            # A lost cursor write only means pulling some documents again; only a durable
            # vector may be published, or a crash could break a claim others act on.
            if not f.cancelled() and f.exception() is None:
                self._publish_later(vector)

        fut.add_done_callback(done)

    def _publish_later(self, durable: dict[str, int]) -> None:
        """Publish the newest durable vector, at most once per coverage_publish_interval:
        every publication reaches every peer, so a burst of writes must not become a
        burst of vectors."""
        if self.config.gc_interval <= 0:
            return  # no collection, so nobody needs our coverage
        self._durable_vector = durable
        if self._publish_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = max(0.0, self._last_publish + self.config.coverage_publish_interval - loop.time())

        def publish() -> None:
            self._publish_timer = None
            self._last_publish = loop.time()
            if self._durable_vector is not None:
                self.coverage.published(self._durable_vector)

        self._publish_timer = loop.call_later(wait, publish)

    def partners(self) -> list[Member]:
        """The stable peers this one pulls from (recomputed when membership changes)."""
        if self._partners_version != self.membership.version:
            live = {m.name: m for m in self.membership.live()}
            names = ring.partners(self.membership.name, live, self.config.pull_partners)
            self._partners = [live[n] for n in names]
            self._partners_version = self.membership.version
        return self._partners

    async def pull_round(self) -> None:
        partners = self.partners()
        n = min(self.config.pull_fanout, len(partners))
        start = self._round * n
        self._round += 1
        targets = [partners[(start + i) % len(partners)] for i in range(n)]
        if targets:
            await asyncio.gather(*(self.pull_from(t) for t in targets))

    async def _pull_loop(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.config.pull_interval))
        while True:
            start = asyncio.get_running_loop().time()
            await self.pull_round()
            elapsed = asyncio.get_running_loop().time() - start
            await asyncio.sleep(max(0.0, self.config.pull_interval - elapsed))

    # -- incoming --------------------------------------------------------------------

    async def handle(self, sender: str, msg: Message) -> Message | None:
        if isinstance(msg, Pull):
            return self.serve_pull(msg)
        if isinstance(msg, Push):
            changed = self.merge(msg.docs)
            if changed and msg.hops + 1 <= self.config.push_max_hops:
                await self.push(changed, msg.hops + 1, exclude=sender)
        return None
