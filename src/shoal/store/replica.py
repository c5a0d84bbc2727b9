"""The local replica: every object in memory, its CRDT document, and its revision.

Reads are served from memory. A write changes memory at once (so the next write
sees it), takes the next local revision, and is acknowledged when SQLite has
committed it; watchers hear of it only then, in revision order.

A commit that fails (disk full, an SQLite error) is rolled back in memory: every
write queued from the failed one on is undone in reverse order (the persistence
fails them all until told to resume), so memory again matches the disk, their
revisions become gaps that no watcher waits for, and peers were never served them
(a pull sees only ``durable_revision``).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shoal.crdt.document import DEL, Document, KeyFn
from shoal.crdt.hlc import HybridLogicalClock, SystemClock, WallClock
from shoal.store import secret_encryption
from shoal.store.change_feed import Change, ChangeFeed
from shoal.store.persistence import FenceRow, MemoryPersistence, Persistence, Row, Settle

log = logging.getLogger(__name__)

DOCUMENTS_KEPT = 64
"""Parsed CRDT documents kept for the objects written or merged last; every other object
keeps only its document's bytes, parsed again at its next write. A parsed document takes
about four times the bytes' memory (a stamp per leaf): with 100 pods and their events,
about 5 MB of a node's RSS (part H, issue 11). 256 kept about 1.3 MB more than 64 on a
node with 100 pods (part F); parsing a pod's document again takes 20-40 µs."""
Key = tuple[str, str]  # (namespace, name)
FullKey = tuple[str, str, str]  # (resource, namespace, name)


class Conflict(Exception):
    """A precondition on the stored revision failed."""


class NotFound(Exception):
    pass


@dataclass(slots=True)
class Entry:
    """One object as this replica holds it."""

    value: dict[str, Any] | None  # None: deleted (a tombstone kept for merging)
    rv: int
    doc_bytes: bytes | None
    doc: Document | None

    def document(self) -> Document:
        if self.doc is None:
            assert self.doc_bytes is not None
            self.doc = Document.from_bytes(self.doc_bytes)
        return self.doc


@dataclass(slots=True)
class _Undo:
    """What one queued write changed in memory: the prior entries and fences, to put
    back (last change first) if its commit fails."""

    entries: list[tuple[str, Key, Entry | None]]
    fences: list[tuple[FullKey, FenceRow | None]]
    merged: bool = False
    """A peer's document merged here (the mesh's cursors may count it)."""


RollbackListener = Callable[[int], None]
"""Told the lowest revision rolled back when merged documents were among the writes
undone (the mesh, whose cursors may have advanced over documents never stored)."""


def _with_rv(value: dict[str, Any], rv: int) -> dict[str, Any]:
    meta = value.get("metadata")
    value = dict(value)
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["resourceVersion"] = str(rv)
    value["metadata"] = meta
    return value


def _strip_rv(value: dict[str, Any]) -> dict[str, Any]:
    meta = value.get("metadata")
    if isinstance(meta, dict) and "resourceVersion" in meta:
        value = dict(value)
        meta = dict(meta)
        del meta["resourceVersion"]
        value["metadata"] = meta
    return value


class Replica:
    """The node's copy of the cluster state."""

    def __init__(
        self,
        data_dir: Path | None,
        node_id: str,
        clock: WallClock | None = None,
        feed_capacity: int = 50_000,
        persistence: MemoryPersistence | None = None,
    ) -> None:
        """``data_dir=None`` keeps everything in memory (the simulator, some tests), in
        ``persistence`` if given (the simulator's disk, ``shoal.sim.disk``)."""
        self.node_id = node_id
        self.wall = clock or SystemClock()
        self.persistence: Persistence | MemoryPersistence
        if data_dir is None:
            self.persistence = persistence if persistence is not None else MemoryPersistence()
        else:
            # Only the node's own user may enter the data dir: it holds the keys and the replica.
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(data_dir, 0o700)
            cipher = secret_encryption.load_or_create(secret_encryption.key_path(data_dir))
            self.persistence = Persistence(data_dir / "state.db", cipher, node_id)
        self._objects: dict[str, dict[Key, Entry]] = {}
        self._documents: OrderedDict[FullKey, None] = OrderedDict()  # DOCUMENTS_KEPT
        # Per resource: the last revision that changed one of its objects (scope maps,
        # authorizers and other derived views check it to know when to rebuild).
        self._resource_rv: dict[str, int] = {}
        self.revision = 0
        hlc_last = 0
        for row in self.persistence.load():
            value = orjson.loads(row.value) if row.value is not None else None
            if value is not None:
                value = _with_rv(value, row.rv)
            self._objects.setdefault(row.resource, {})[(row.namespace, row.name)] = Entry(
                value, row.rv, row.doc, None
            )
            self.revision = max(self.revision, row.rv)
            if row.rv > self._resource_rv.get(row.resource, 0):
                self._resource_rv[row.resource] = row.rv
        # Collected tombstones (``shoal.mesh.tombstones``): a remote document that such a
        # tombstone dominates is refused, and pullers behind ``rv`` are still sent it.
        self.fences: dict[FullKey, FenceRow] = {
            (f.resource, f.namespace, f.name): f for f in self.persistence.load_fences()
        }
        for f in self.fences.values():
            self.revision = max(self.revision, f.rv)
        stored_rev = self.persistence.get_meta("revision")
        if stored_rev is not None:
            self.revision = max(self.revision, int(stored_rev))
        self.loaded_revision = self.revision
        """The revision this process found on disk: a new life of the node starts here
        (``shoal.mesh.anti_entropy``: what peers' cursors from earlier lives may trust)."""
        stored_hlc = self.persistence.get_meta("hlc")
        if stored_hlc is not None:
            hlc_last = int(stored_hlc)
        self.hlc = HybridLogicalClock(self.wall, hlc_last)
        self.feed = ChangeFeed(capacity=feed_capacity)
        self.feed.start_rv = self.revision
        self._loop: asyncio.AbstractEventLoop | None = None
        # Changes committed out of order wait here until every earlier revision is durable.
        self._pending: dict[int, Change | None] = {}
        self._next_publish = self.revision + 1
        # Queued writes not yet durable, by sequence number (queue order), and what each
        # changed in memory; ``durable_revision`` is the last revision at or below which
        # every write has settled.
        self._seq = 0
        self._inflight: dict[int, _Undo] = {}
        self._inflight_rvs: dict[int, int] = {}  # seq -> lowest revision it took
        self.rollbacks = 0
        self.rollback_listeners: list[RollbackListener] = []
        self.persistence.start()

    def close(self) -> None:
        self.persistence.close()

    # -- reads -----------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        e = self._objects.get(resource, {}).get((namespace, name))
        return None if e is None else e.value

    def entry(self, resource: str, namespace: str, name: str) -> Entry | None:
        return self._objects.get(resource, {}).get((namespace, name))

    def list(
        self, resource: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Live objects of a resource, sorted by (namespace, name)."""
        objs = self._objects.get(resource)
        if not objs:
            return []
        if namespace is None:
            items = [(k, e.value) for k, e in objs.items() if e.value is not None]
        else:
            items = [(k, e.value) for k, e in objs.items() if e.value is not None and k[0] == namespace]
        items.sort(key=lambda kv: kv[0])
        return [v for _, v in items if v is not None]

    @property
    def durable_revision(self) -> int:
        """The revision up to which every write here is durable: what peers may be served."""
        if not self._inflight_rvs:
            return self.revision
        return min(self._inflight_rvs.values()) - 1

    def resource_revision(self, resource: str) -> int:
        """The last local revision that changed an object of ``resource`` (0: never)."""
        return self._resource_rv.get(resource, 0)

    def resources(self) -> builtins.list[str]:
        return list(self._objects)

    def count(self, resource: str) -> int:
        return sum(1 for e in self._objects.get(resource, {}).values() if e.value is not None)

    # -- writes ----------------------------------------------------------------

    def put(
        self,
        resource: str,
        namespace: str,
        name: str,
        value: dict[str, Any] | None,
        kf: KeyFn,
        expect_rv: int | None = None,
    ) -> tuple[dict[str, Any] | None, asyncio.Future[None]]:
        """Write (or, with ``value=None``, delete) an object.

        Returns the stored value (with its new resourceVersion) and a future that
        resolves once the write is durable. Raises Conflict if ``expect_rv`` is
        given and differs from the stored revision.
        """
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        objs = self._objects.setdefault(resource, {})
        entry = objs.get((namespace, name))
        if expect_rv is not None:
            current = entry.rv if entry is not None and entry.value is not None else 0
            if current != expect_rv:
                raise Conflict(f"expected revision {expect_rv}, have {current}")
        stamp = self.hlc.now()
        old_value = entry.value if entry is not None else None
        plain: dict[str, Any] | None = None
        try:
            doc = self._new_document(resource, namespace, name, entry, value, stamp, kf)
            if value is not None:
                plain = _strip_rv(value)
            # A local write reads back as exactly what was written, so skip materializing it.
            return self._commit(resource, namespace, name, doc, entry, old_value, loop, plain)
        except BaseException:
            _drop_cached_document(entry)
            raise

    def _new_document(self, resource: str, namespace: str, name: str, entry: Entry | None,
                      value: dict[str, Any] | None, stamp: int, kf: KeyFn) -> Document:
        if value is None:
            if entry is None or entry.value is None:
                raise NotFound(name)
            doc = entry.document()
            doc.delete(stamp, self.node_id)
        else:
            plain = _strip_rv(value)
            if entry is None:
                doc = Document.create(plain, stamp, self.node_id, kf)
                fence = self.fences.get((resource, namespace, name))
                if fence is not None:
                    # Created again after a collected deletion: peers may still hold
                    # the old fields; the cleared stamp keeps them hidden.
                    doc.clear_below(fence.stamp)
            else:
                doc = entry.document()
                current_plain = _strip_rv(entry.value) if entry.value is not None else None
                doc.write(plain, stamp, self.node_id, kf, current=current_plain)
        return doc

    def merge(
        self, resource: str, namespace: str, name: str, remote: Document
    ) -> tuple[dict[str, Any] | None, asyncio.Future[None]] | None:
        """Merge a peer's document; None if it changed nothing here. Raises DiskFull while
        the disk is known to be full."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        full = self.persistence.full()
        if full is not None:
            raise full  # it could not be stored; the peer sends it again later
        self.hlc.observe(remote.max_stamp())
        entry = self._objects.setdefault(resource, {}).get((namespace, name))
        fence = self.fences.get((resource, namespace, name))
        if entry is None:
            if fence is not None and remote.stamp <= (fence.stamp, fence.writer):
                # Older than a deletion collected here: merged, it would read as deleted.
                return None
            doc = remote.copy()
            if fence is not None:
                doc.clear_below(fence.stamp)
            old_value = None
        else:
            doc = entry.document()
            old_value = entry.value
            try:
                changed = doc.merge(remote)
                if fence is not None:
                    changed = doc.clear_below(fence.stamp) or changed
            except BaseException:
                _drop_cached_document(entry)  # a malformed remote may have half-merged
                raise
            if not changed:
                self._keep_document((resource, namespace, name))
                return None
        try:
            return self._commit(resource, namespace, name, doc, entry, old_value, loop,
                                merged=True)
        except BaseException:
            _drop_cached_document(entry)
            raise

    def replace(
        self, resource: str, namespace: str, name: str, doc: Document
    ) -> tuple[dict[str, Any] | None, asyncio.Future[None]]:
        """Hold ``doc`` instead of this object's document, outside the merge order: the mesh
        takes out changes that a writer's removal revoked (``shoal.mesh.revocation``). A
        revision like a merge's (watchers see a change). Raises DiskFull as ``merge``."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        full = self.persistence.full()
        if full is not None:
            raise full
        entry = self._objects.setdefault(resource, {}).get((namespace, name))
        old_value = entry.value if entry is not None else None
        return self._commit(resource, namespace, name, doc, entry, old_value, loop, merged=True)

    def _commit(
        self,
        resource: str,
        namespace: str,
        name: str,
        doc: Document,
        entry: Entry | None,
        old_value: dict[str, Any] | None,
        loop: asyncio.AbstractEventLoop,
        plain: dict[str, Any] | None = None,
        merged: bool = False,
    ) -> tuple[dict[str, Any] | None, asyncio.Future[None]]:
        # Everything that can fail on the object itself comes before a revision is taken.
        if plain is None:
            plain = doc.value()
        # Kept for the object's life: an exact copy, as orjson's own buffer is often 8x the
        # JSON (a 519-byte object kept 4.1 KB of RSS; part H).
        doc_bytes = memoryview(doc.to_bytes()).tobytes()
        value_bytes = orjson.dumps(plain) if plain is not None else None
        self.revision += 1
        rv = self.revision
        self._resource_rv[resource] = rv
        new_value = _with_rv(plain, rv) if plain is not None else None
        undo = _Undo([(resource, (namespace, name), _settled_copy(entry))], [], merged)
        self._objects[resource][(namespace, name)] = Entry(new_value, rv, doc_bytes, doc)
        self._keep_document((resource, namespace, name))
        row = Row(resource, namespace, name, rv, doc_bytes, value_bytes)
        change: Change | None = None
        if new_value is not None:
            change = Change(
                "ADDED" if old_value is None else "MODIFIED",
                resource, namespace, name, rv, new_value, old_value,
            )
        elif old_value is not None:
            change = Change("DELETED", resource, namespace, name, rv, _with_rv(old_value, rv), old_value)
        fut = self._queue_write(undo, rv, [row], {"revision": str(rv), "hlc": str(self.hlc.last)},
                                loop, durable=functools.partial(self._published, rv, change))
        return new_value, fut

    def _keep_document(self, key: FullKey) -> None:
        """Keep ``key``'s parsed document, dropping that of the object least recently
        written once more than DOCUMENTS_KEPT are kept (its bytes stay)."""
        docs = self._documents
        docs[key] = None
        docs.move_to_end(key)
        while len(docs) > DOCUMENTS_KEPT:
            (resource, namespace, name), _ = docs.popitem(last=False)
            _drop_cached_document(self._objects.get(resource, {}).get((namespace, name)))

    def _queue_write(
        self, undo: _Undo, first_rv: int | None, rows: builtins.list[Row], meta: dict[str, str],
        loop: asyncio.AbstractEventLoop, fences: builtins.list[FenceRow] | None = None,
        scrub: bool = False, durable: Settle | None = None,
    ) -> asyncio.Future[None]:
        """Queue a write whose memory changes ``undo`` can take back; the future fails if
        the commit does, after memory has been rolled back. ``durable`` is told the outcome
        (None once durable) after that bookkeeping and before the future resolves.

        The future is the writer's to await: cancelling it (a writer's task cancelled, a
        timeout) changes nothing here, since the commit goes on regardless and the
        bookkeeping is told its real outcome."""
        if self.persistence.settles_at_once:
            # Stored as it is queued (the simulator's memory): nothing to take back.
            fut = self.persistence.write(rows, meta, loop, fences, scrub=scrub)
            if durable is not None:
                fut.add_done_callback(lambda f: durable(_outcome(f)))
            return _for_waiters(fut, loop)
        self._seq += 1
        seq = self._seq
        self._inflight[seq] = undo
        if first_rv is not None:
            self._inflight_rvs[seq] = first_rv
        settle = functools.partial(self._settled, seq, durable)
        persistence = self.persistence
        try:
            if isinstance(persistence, Persistence):
                # Told on the commit's answer, in the same loop callback (issue 11).
                return persistence.write(rows, meta, loop, fences, scrub=scrub, settle=settle)
            # Another disk (the simulator's) answers by its future alone.
            fut = persistence.write(rows, meta, loop, fences, scrub=scrub)
        except BaseException:
            self._roll_back(seq)
            if first_rv is not None:
                for rv in range(first_rv, self.revision + 1):
                    self._pending.setdefault(rv, None)
                self._publish_ready()
            raise
        fut.add_done_callback(lambda f: settle(_outcome(f)))
        return _for_waiters(fut, loop)

    def _settled(self, seq: int, durable: Settle | None, error: BaseException | None) -> None:
        self._settle(seq, error)
        if durable is not None:
            durable(error)

    def _settle(self, seq: int, error: BaseException | None) -> None:
        if error is None:
            self._inflight.pop(seq, None)
            self._inflight_rvs.pop(seq, None)
        elif seq in self._inflight:
            # The first failure: this write and every one queued after it fail (the
            # persistence refuses them until resumed), so undo them all now, newest first.
            self._roll_back(seq)
            self.persistence.resume()
        # else: undone already, with the failure that came first

    def _roll_back(self, seq: int) -> None:
        doomed = [s for s in self._inflight if s >= seq]
        lowest = min((self._inflight_rvs[s] for s in doomed if s in self._inflight_rvs),
                     default=None)
        merged = any(self._inflight[s].merged for s in doomed)
        touched: set[str] = set()
        for s in reversed(doomed):
            undo = self._inflight.pop(s)
            self._inflight_rvs.pop(s, None)
            for resource, key, prior in reversed(undo.entries):
                objs = self._objects.setdefault(resource, {})
                if prior is None:
                    objs.pop(key, None)
                else:
                    objs[key] = prior
                touched.add(resource)
            for fkey, fprior in reversed(undo.fences):
                if fprior is None:
                    self.fences.pop(fkey, None)
                else:
                    self.fences[fkey] = fprior
        self.rollbacks += 1
        if touched:
            # Views derived from these resources (scope maps, authorizers) rebuild: the
            # values they may have read are gone. The revision is a gap, never published.
            self.revision += 1
            for resource in touched:
                self._resource_rv[resource] = self.revision
            self._pending[self.revision] = None
            self._publish_ready()
        log.warning("%s: a commit failed; rolled back %d queued writes", self.node_id,
                    len(doomed))
        if lowest is not None and merged:
            for listener in list(self.rollback_listeners):
                listener(lowest)

    def _published(self, rv: int, change: Change | None, error: BaseException | None) -> None:
        if error is not None:
            # The write is not durable: nobody was told it succeeded, so it is not published.
            change = None
        self._pending[rv] = change
        self._publish_ready()

    def _publish_ready(self) -> None:
        while self._next_publish in self._pending:
            c = self._pending.pop(self._next_publish)
            self._next_publish += 1
            if c is not None:
                self.feed.publish(c)

    def changed_since(self, rv: int, limit: int = 1000, up_to: int | None = None,
                      ) -> builtins.list[tuple[str, str, str, Entry]]:
        """Objects (tombstones included) whose last change here is after ``rv``, oldest first.

        What a peer that has seen this node up to ``rv`` is missing (anti-entropy). With
        ``up_to`` (``durable_revision``), an object whose write is still in flight is given
        as it was before it, so a write whose commit may yet fail never leaves the node.
        """
        settled = self._settled_view() if up_to is not None else {}
        top = up_to if up_to is not None else 1 << 62
        out = []
        for resource, objs in self._objects.items():
            for key, e in objs.items():
                if settled:
                    was = settled.get((resource, key), e)
                    if was is None:
                        continue
                    e = was
                if rv < e.rv <= top:
                    out.append((resource, key[0], key[1], e))
        for (resource, key), was in settled.items():
            if was is not None and key not in self._objects.get(resource, {}) and rv < was.rv <= top:
                out.append((resource, key[0], key[1], was))
        # A collected tombstone travels as a bare root tombstone at its old revision, so
        # a peer that was away when it was collected still learns of the deletion.
        out += [
            (f.resource, f.namespace, f.name, Entry(None, f.rv, fence_document(f).to_bytes(), None))
            for f in self.fences.values()
            if rv < f.rv <= top and (f.namespace, f.name) not in self._objects.get(f.resource, {})
            and (f.resource, (f.namespace, f.name)) not in settled
        ]
        out.sort(key=lambda t: t[3].rv)
        return out[:limit]

    def _settled_view(self) -> dict[tuple[str, Key], Entry | None]:
        """For each object with a write in flight, the entry as it is on disk."""
        out: dict[tuple[str, Key], Entry | None] = {}
        for undo in self._inflight.values():  # queue order: the first prior is on disk
            for resource, key, prior in undo.entries:
                out.setdefault((resource, key), prior)
        return out

    # -- tombstone collection (the policy is in shoal.mesh.tombstones) ---------------------

    def tombstones(self) -> builtins.list[tuple[FullKey, Entry]]:
        """Every deleted object still held (its document kept for merging)."""
        return [
            ((resource, ns, name), e)
            for resource, objs in self._objects.items()
            for (ns, name), e in objs.items()
            if e.value is None
        ]

    def collect(self, keys: Iterable[FullKey], now: float) -> int:
        """Drop the rows of these deleted objects, keeping a fence for each; returns how many.

        Not a change: the objects already read as deleted, so no revision is taken and
        watchers hear nothing."""
        rows: list[Row] = []
        fences: list[FenceRow] = []
        undo = _Undo([], [])
        for key in keys:
            resource, ns, name = key
            objs = self._objects.get(resource, {})
            e = objs.get((ns, name))
            if e is None or e.value is not None:
                continue
            stamp, writer = e.document().stamp
            undo.entries.append((resource, (ns, name), _settled_copy(e)))
            undo.fences.append((key, self.fences.get(key)))
            del objs[(ns, name)]
            fence = FenceRow(resource, ns, name, e.rv, stamp, writer, now)
            self.fences[key] = fence
            rows.append(Row(resource, ns, name, e.rv, b"", None, drop=True))
            fences.append(fence)
        if rows:
            self._write_quietly(undo, rows, fences)
        return len(rows)

    def forget(self, keys: Iterable[FullKey]) -> int:
        """Drop these objects (and their fences) from memory and disk as if never held:
        this peer left the scope they are in. Not a deletion: no tombstone is made and
        nothing replicates, but each live object takes a revision so that watchers here
        see it DELETED, and the file is rewritten so that no page keeps it. Returns how
        many objects went."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        rows: builtins.list[Row] = []
        fences: builtins.list[FenceRow] = []
        changes: builtins.list[tuple[int, Change | None]] = []
        undo = _Undo([], [])
        first_rv = self.revision + 1
        for key in keys:
            resource, ns, name = key
            fence = self.fences.pop(key, None)
            if fence is not None:
                undo.fences.append((key, fence))
                fences.append(_dropped(fence))
            e = self._objects.get(resource, {}).pop((ns, name), None)
            if e is None:
                continue
            undo.entries.append((resource, (ns, name), _settled_copy(e)))
            self.revision += 1
            rv = self.revision
            self._resource_rv[resource] = rv
            rows.append(Row(resource, ns, name, rv, b"", None, drop=True))
            change = None
            if e.value is not None:
                change = Change("DELETED", resource, ns, name, rv, _with_rv(e.value, rv), e.value)
            changes.append((rv, change))
        if not rows and not fences:
            return 0
        def durable(error: BaseException | None) -> None:
            for rv, change in changes:
                self._published(rv, change, error)

        fut = self._queue_write(undo, first_rv if changes else None, rows,
                                {"revision": str(self.revision)}, loop, fences, scrub=True,
                                durable=durable)
        fut.add_done_callback(_outcome)  # nobody awaits it: its failure is handled above
        return len(rows)

    def all_entries(self) -> Iterable[tuple[FullKey, Entry]]:
        """Every object held, tombstones included."""
        return [((resource, ns, name), e) for resource, objs in self._objects.items()
                for (ns, name), e in objs.items()]

    def expire_fences(self, before: float) -> int:
        """Forget fences collected before ``before`` (wall seconds); returns how many."""
        old = [k for k, f in self.fences.items() if f.at < before]
        undo = _Undo([], [(k, self.fences[k]) for k in old])
        dropped = [_dropped(self.fences.pop(k)) for k in old]
        if dropped:
            self._write_quietly(undo, [], dropped)
        return len(dropped)

    def _write_quietly(self, undo: _Undo, rows: builtins.list[Row],
                       fences: builtins.list[FenceRow]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        fut = self._queue_write(undo, None, rows, {}, loop, fences)
        # A lost drop only keeps a tombstone (or fence) one more round: it is collected again.
        fut.add_done_callback(_outcome)

    def iter_entries(self, resource: str) -> Iterable[tuple[Key, Entry]]:
        return list(self._objects.get(resource, {}).items())

    def subscribe(self, accept: Callable[[Change], bool]) -> Any:
        return self.feed.subscribe(accept)


def _settled_copy(entry: Entry | None) -> Entry | None:
    """The entry as its bytes say, without the cached document (which a write mutates)."""
    return None if entry is None else Entry(entry.value, entry.rv, entry.doc_bytes, None)


def _outcome(fut: asyncio.Future[None]) -> BaseException | None:
    """A settled write's error (a cancelled one counts as failed), retrieved."""
    if fut.cancelled():
        return asyncio.CancelledError()
    return fut.exception()


def _for_waiters(fut: asyncio.Future[None], loop: asyncio.AbstractEventLoop,
                 ) -> asyncio.Future[None]:
    """What a writer awaits on a disk that answers by its future alone (the simulator's):
    resolved as ``fut`` is, but cancelling it (a writer's task cancelled, a timeout) leaves
    ``fut`` alone, since the commit goes on regardless and the replica's own callbacks
    (roll back on failure, publish once durable) must see its real outcome, not the
    cancellation."""
    if fut.done():
        return fut  # the simulator's memory settles at once: nothing to detach from
    waiter: asyncio.Future[None] = loop.create_future()

    def relay(f: asyncio.Future[None]) -> None:
        if waiter.done():
            return
        if f.cancelled():
            waiter.cancel()
        elif (error := f.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(None)

    fut.add_done_callback(relay)
    return waiter


def _drop_cached_document(entry: Entry | None) -> None:
    """Forget a cached document a failed write may have half-changed: the bytes are right."""
    if entry is not None and entry.doc_bytes is not None:
        entry.doc = None


def fence_document(f: FenceRow) -> Document:
    """The bare tombstone a fence stands for: it dominates every older write of the name."""
    return Document([f.stamp, f.writer, dict(DEL), None])


def _dropped(f: FenceRow) -> FenceRow:
    return FenceRow(f.resource, f.namespace, f.name, f.rv, f.stamp, f.writer, f.at, drop=True)
