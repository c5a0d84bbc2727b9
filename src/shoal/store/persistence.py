"""SQLite persistence with group commit.

Every row is one object: its CRDT document, its materialized value (NULL once
deleted) and the local revision of its last change. A row with ``drop`` set
deletes the object's row instead (a collected tombstone). The ``fences`` table
keeps a compact record of each collected tombstone (``shoal.mesh.tombstones``). Writes from the event loop
are queued; a writer thread commits whatever has queued in one transaction
(``synchronous=FULL`` in WAL mode, so a commit is on disk), then resolves the
writers' futures. Many concurrent writes share one fsync.

A commit that fails (a full disk, an SQLite error) fails every write queued after it
too, until the replica, having rolled those writes back in memory, calls ``resume``:
a later write may build on a failed one, so it must not reach the disk alone. A full
disk fails as ``DiskFull``, which names the node's data dir.

Secrets are encrypted at rest (``shoal.store.secret_encryption``): with a cipher, the
``doc`` and ``value`` of a Secret's row are sealed on their way to SQLite and opened
as they are loaded, so neither the table, the WAL nor a freed page ever holds one in
plaintext. Rows a data dir kept in plaintext from before are sealed on open, and the
file rewritten (VACUUM, then the WAL truncated), so no old value is left on disk.
``state.db`` and its ``-wal`` and ``-shm`` are 0600 (SQLite gives the last two the
database's mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shoal.store.secret_encryption import ENCRYPTED_RESOURCES, SecretCipher, is_encrypted

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    resource  TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    rv        INTEGER NOT NULL,
    doc       BLOB NOT NULL,
    value     BLOB,
    PRIMARY KEY (resource, namespace, name)
);
CREATE TABLE IF NOT EXISTS fences (
    resource  TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    rv        INTEGER NOT NULL,
    stamp     INTEGER NOT NULL,
    writer    TEXT NOT NULL,
    at        REAL NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Row:
    resource: str
    namespace: str
    name: str
    rv: int
    doc: bytes
    value: bytes | None
    drop: bool = False
    """Delete this object's row (``doc`` and ``value`` are ignored)."""


@dataclass(frozen=True, slots=True)
class FenceRow:
    """A collected tombstone: the object's delete stamp, kept after its row is gone.

    ``rv`` is the revision of the collected row, ``at`` the wall seconds of the
    collection. With ``drop`` set, the fence itself is removed (it expired, or the
    name was written again)."""

    resource: str
    namespace: str
    name: str
    rv: int
    stamp: int
    writer: str
    at: float
    drop: bool = False


Batch = tuple[list[Row], dict[str, str], list[FenceRow], bool]
"""Rows, meta, fences, and whether to rewrite the file after the commit (scrub)."""

Settle = Callable[[BaseException | None], None]
"""Told a write's outcome on its loop (None once durable), just before its future is."""

Queued = tuple[Batch, "asyncio.Future[None] | None", "asyncio.AbstractEventLoop | None",
               "Settle | None"]
"""A write in the writer's queue: what to store, the future and loop to answer, and the
writer's ``settle`` (None for ``write_sync``, which answers by returning or raising)."""

SEALED_META = "secrets-at-rest"
"""Set once every Secret row is encrypted and the file rewritten without the plaintext."""


_STOP = object()
_RESUME = object()

SQLITE_FULL = 13


class StorageError(Exception):
    """A commit failed: nothing of the batch, nor of what was queued after it, is stored."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(f"could not write {path}: {cause}")
        self.path = path
        self.cause = cause


class DiskFull(StorageError):
    """The filesystem holding the data dir has no space left."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(path, cause)
        self.args = (f"the disk holding {path.parent} is full ({cause})",)


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        if code == SQLITE_FULL or "disk is full" in str(e):
            return True
        # A WAL append that hits ENOSPC surfaces as an I/O error: ask the filesystem.
        return "disk I/O error" in str(e) and _no_space_left(e)
    return isinstance(e, OSError) and e.errno == errno.ENOSPC


DISK_PRESSURE_PERCENT = 10.0
LEASE_RESOURCE, LEASE_NAMESPACE = "leases.coordination.k8s.io", "kube-node-lease"
FREED_ENOUGH = 256 * 1024
"""Free space gained since a commit failed for want of it before peers' documents are
tried again."""


def _free_bytes(path: Path | str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _no_space_left(e: BaseException) -> bool:
    path = getattr(e, "_shoal_path", None)
    if path is None:
        return False
    return _free_bytes(path) < 1 << 20


class Persistence:
    """The on-disk half of the replica."""

    settles_at_once = False
    """Writes are durable only when their future resolves (see ``MemoryPersistence``)."""

    reserve_bytes = 2 * 1024 * 1024
    """Size of ``disk-reserve``, a file kept beside the database and deleted when the disk
    fills: a disk full to the last byte leaves the node room to renew its own Lease and
    report DiskPressure on its own Node (``node``; nothing else) until space is freed.
    In-process tests set 0 (no file)."""

    def __init__(self, path: Path, cipher: SecretCipher | None = None,
                 node: str | None = None) -> None:
        self.path = path
        self._heartbeats = {("nodes", "", node), (LEASE_RESOURCE, LEASE_NAMESPACE, node)}
        self._cipher = cipher
        # Created 0600 before SQLite opens it: the -wal and -shm files inherit its mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        _make_private(path)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Reads are served from the replica in memory: SQLite's own page cache (2 MiB by
        # default) would only hold copies of pages the OS caches anyway.
        self._db.execute("PRAGMA cache_size=-256")
        self._db.executescript(SCHEMA)
        _make_private(path)
        if cipher is not None:
            self._seal_plaintext(cipher)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.rows_written = 0
        self.scrubs = 0
        self.failed_commits = 0
        # Set by a failed commit, from the writer thread; later batches fail with it until
        # ``resume`` is reached in the queue.
        self._halted: StorageError | None = None
        self.disk_full_since: float | None = None
        self._scrub_owed = False
        self._full_error: DiskFull | None = None
        self._free_when_full = 0
        """Monotonic seconds of the first commit refused for want of space since the last
        one that succeeded (the node reports DiskPressure meanwhile)."""
        self._reserve = path.with_name("disk-reserve")
        self.on_reserve = False
        """The reserve was released for a full disk: only this node's heartbeats (its
        Node and Lease) are committed."""
        if self.reserve_bytes:
            self._make_reserve()

    # -- the disk reserve ----------------------------------------------------------

    def _make_reserve(self) -> bool:
        """Keep ``reserve_bytes`` allocated in ``disk-reserve``; False if there is no room."""
        try:
            if self._reserve.exists() and self._reserve.stat().st_size >= self.reserve_bytes:
                return True
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError as e:
            with contextlib.suppress(OSError):
                self._reserve.unlink()
            log.warning("%s: no room for the disk reserve (%s)", self._reserve, e)
            return False

    def _release_reserve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._reserve.unlink()
            self.on_reserve = True
            log.error("%s: released the %d KiB disk reserve: only this node's Lease and "
                      "status are written until space is freed", self._reserve,
                      self.reserve_bytes // 1024)

    def _refused_on_reserve(self, batch: list[Queued]) -> bool:
        """On the reserve, a batch with anything but heartbeats is refused, untried; once
        space is back (the reserve and some more than when the disk filled, not counting
        what the release and our own checkpoints gave), the reserve is made again."""
        if not self.on_reserve:
            return False
        if _free_bytes(self.path.parent) > self._free_when_full + self.reserve_bytes \
                + FREED_ENOUGH and self._make_reserve():
            self.on_reserve = False
            log.info("%s: space is back: the disk reserve is in place again", self._reserve)
            return False
        return any(fences or any((r.resource, r.namespace, r.name) not in self._heartbeats
                                 for r in rows)
                   for (rows, _m, fences, _s), *_ in batch)

    def load(self) -> Iterator[Row]:
        cur = self._db.execute("SELECT resource, namespace, name, rv, doc, value FROM objects")
        for r in cur:
            row = Row(*r)
            if self._cipher is not None and row.resource in ENCRYPTED_RESOURCES:
                row = self._open(self._cipher, row)
            yield row

    # -- Secrets at rest ---------------------------------------------------------

    @staticmethod
    def _context(r: Row, column: str) -> bytes:
        return f"{r.resource}/{r.namespace}/{r.name}/{column}".encode()

    def _open(self, cipher: SecretCipher, r: Row) -> Row:
        doc = cipher.decrypt(r.doc, self._context(r, "doc")) if is_encrypted(r.doc) else r.doc
        value = r.value
        if value is not None and is_encrypted(value):
            value = cipher.decrypt(value, self._context(r, "value"))
        return Row(r.resource, r.namespace, r.name, r.rv, doc, value)

    def _stored(self, r: Row) -> tuple[str, str, str, int, bytes, bytes | None]:
        """The row's columns as they go to disk: a Secret's sealed."""
        doc, value = r.doc, r.value
        cipher = self._cipher
        if cipher is not None and r.resource in ENCRYPTED_RESOURCES:
            doc = cipher.encrypt(doc, self._context(r, "doc"))
            if value is not None:
                value = cipher.encrypt(value, self._context(r, "value"))
        return (r.resource, r.namespace, r.name, r.rv, doc, value)

    def _seal_plaintext(self, cipher: SecretCipher) -> None:
        """Encrypt the Secret rows an older Shoal stored in plaintext, then rewrite the file
        so that neither a freed page nor the WAL keeps the old bytes."""
        placeholders = ", ".join("?" * len(ENCRYPTED_RESOURCES))
        plain = [
            r for r in (Row(*t) for t in self._db.execute(
                "SELECT resource, namespace, name, rv, doc, value FROM objects "
                f"WHERE resource IN ({placeholders})", sorted(ENCRYPTED_RESOURCES)))
            if not is_encrypted(r.doc) or (r.value is not None and not is_encrypted(r.value))
        ]
        if not plain and self.get_meta(SEALED_META) is not None:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO objects (resource, namespace, name, rv, doc, value) "
            "VALUES (?, ?, ?, ?, ?, ?)", [self._stored(self._open(cipher, r)) for r in plain])
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (SEALED_META, "aesgcm"))
        self._db.execute("COMMIT")
        # VACUUM rebuilds the file (no free page keeps an old value); the checkpoint then
        # copies it into state.db and empties the WAL, where the rebuilt pages passed.
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if plain:
            log.info("encrypted %d Secret rows stored in plaintext by an earlier version",
                     len(plain))

    def load_fences(self) -> Iterator[FenceRow]:
        cur = self._db.execute(
            "SELECT resource, namespace, name, rv, stamp, writer, at FROM fences"
        )
        for r in cur:
            yield FenceRow(*r)

    def get_meta(self, key: str) -> str | None:
        r = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if r is None else str(r[0])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shoal-sqlite-writer", daemon=True)
        self._thread.start()

    def write(
        self, rows: list[Row], meta: dict[str, str], loop: asyncio.AbstractEventLoop,
        fences: list[FenceRow] | None = None, scrub: bool = False,
        settle: Settle | None = None,
    ) -> asyncio.Future[None]:
        """Queue rows for the next commit; the future resolves once they are durable.

        With ``scrub``, the file is rewritten after the commit (VACUUM, then the WAL
        truncated), so that the dropped rows' names and values are in no page, free or
        not: for objects this peer may no longer hold.

        ``settle`` is called with the outcome (None, or the error) on ``loop``, in the
        callback that receives the commit's answer from the writer thread and just before
        the future is resolved: the replica's bookkeeping (publish once durable, roll back
        on failure) runs there instead of a loop turn later as the future's callback, and
        whatever awaits the future resumes one turn after the answer, not two (issue 11).
        It is called even if the future was cancelled."""
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put(((rows, meta, fences or [], scrub), fut, loop, settle))
        return fut

    def write_sync(
        self, rows: list[Row], meta: dict[str, str], fences: list[FenceRow] | None = None,
        scrub: bool = False,
    ) -> None:
        """Commit now from the calling thread (start-up and tests)."""
        self._commit([((rows, meta, fences or [], scrub), None, None, None)])

    def resume(self) -> None:
        """Writes queued from now on are committed again (the replica has rolled back
        every write a failed commit took with it)."""
        self._queue.put(_RESUME)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[Queued] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                    break
                if item is _RESUME:
                    self._flush(batch)
                    batch = []
                    self._halted = None
                else:
                    batch.append(item)  # type: ignore[arg-type]
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._flush(batch)
            if stop:
                return

    def _flush(self, batch: list[Queued]) -> None:
        if not batch:
            return
        halted = self._halted
        if halted is None:
            self._commit(batch)
            return
        _answer(batch, halted)

    def _commit(self, batch: list[Queued]) -> None:
        error: StorageError | None = None
        scrub = False
        if self._refused_on_reserve(batch):
            assert self._full_error is not None
            self.failed_commits += 1
            self._halt_or_answer(batch, self._full_error)
            return
        try:
            self._db.execute("BEGIN")
            meta: dict[str, str] = {}
            n = 0
            for (rows, m, fences, scrub_this), *_ in batch:
                scrub = scrub or scrub_this
                n += len(rows)
                if not any(r.drop for r in rows):
                    self._db.executemany(
                        "INSERT OR REPLACE INTO objects "
                        "(resource, namespace, name, rv, doc, value) VALUES (?, ?, ?, ?, ?, ?)",
                        [self._stored(r) for r in rows],
                    )
                    rows = []
                # In queue order, so a later write of a name wins over an earlier drop.
                for r in rows:
                    if r.drop:
                        self._db.execute(
                            "DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
                            (r.resource, r.namespace, r.name),
                        )
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO objects "
                            "(resource, namespace, name, rv, doc, value) VALUES (?, ?, ?, ?, ?, ?)",
                            self._stored(r),
                        )
                for f in fences:
                    if f.drop:
                        self._db.execute(
                            "DELETE FROM fences WHERE resource = ? AND namespace = ? AND name = ?",
                            (f.resource, f.namespace, f.name),
                        )
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO fences "
                            "(resource, namespace, name, rv, stamp, writer, at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (f.resource, f.namespace, f.name, f.rv, f.stamp, f.writer, f.at),
                        )
                meta.update(m)
            if meta:
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items())
                )
            self._db.execute("COMMIT")
            self.commits += 1
            self.rows_written += n
            self.disk_full_since = None
        except BaseException as e:  # report to every waiter; the loop decides what to do
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            error = self._storage_error(e)
        if error is None and (scrub or self._scrub_owed):
            self._scrub()
        if error is None and self.on_reserve:
            # The WAL would grow by each heartbeat until it ate the reserve: keep it empty.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._free_when_full = max(self._free_when_full, _free_bytes(self.path.parent))
        self._halt_or_answer(batch, error)

    def _halt_or_answer(self, batch: list[Queued], error: StorageError | None) -> None:
        # Halt only for the replica's writes (they carry rows or fences), which it rolls
        # back and then resumes; the mesh's meta-only writes have nobody to resume them.
        if error is not None and any(fut is not None and (b[0] or b[2])
                                     for b, fut, *_ in batch):
            self._halted = error
        if error is not None and any(fut is None for _, fut, *_ in batch):
            raise error  # write_sync's own commit (alone in its batch)
        _answer(batch, error)

    def full(self) -> DiskFull | None:
        """The disk-full error of the last commit, while the disk has gained no space since
        (peers' documents are refused without trying; local writes still try)."""
        error = self._full_error
        if error is None or self.disk_full_since is None:
            return None
        if _free_bytes(self.path.parent) > self._free_when_full + FREED_ENOUGH:
            return None
        return error

    def disk_pressure(self, percent: float = DISK_PRESSURE_PERCENT) -> str | None:
        """Why the node is short of disk, or None: a commit refused for want of space, or
        less than ``percent`` of the data dir's filesystem free (the kubelet's default
        eviction threshold for nodefs is 10%)."""
        if self.disk_full_since is not None or self.on_reserve:
            # On the reserve, the Lease's commits succeed (and clear disk_full_since) while
            # the space they use is the reserve's: the disk is still full.
            return f"the disk holding {self.path.parent} is full: writes are refused"
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return None
        if st.f_blocks and st.f_bavail * 100 < st.f_blocks * percent:
            free = st.f_bavail * st.f_frsize
            return (f"{free // 1024} KiB free on the disk holding {self.path.parent} "
                    f"(less than {percent:g}%)")
        return None

    def _scrub(self) -> None:
        """As for sealing Secrets: no free page, and no WAL frame, keeps a dropped row.
        The rows are committed already; if the rewrite fails (it needs room for a copy of
        the file) it is tried again after the next commit."""
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            self._scrub_owed = True
            log.warning("%s: could not rewrite the file after dropping rows: %s",
                        self.path, e)
            return
        self._scrub_owed = False
        self.scrubs += 1

    def _storage_error(self, e: BaseException) -> StorageError:
        self.failed_commits += 1
        if isinstance(e, StorageError):
            return e
        e._shoal_path = str(self.path.parent)  # type: ignore[attr-defined]
        if _is_disk_full(e):
            if self.disk_full_since is None:
                self.disk_full_since = time.monotonic()
                log.error("%s: the disk is full: writes are refused until space is freed",
                          self.path.parent)
            self._full_error = DiskFull(self.path, e)
            if self.reserve_bytes:
                self._release_reserve()
            # After the release too: peers' documents wait for space freed beyond it.
            self._free_when_full = _free_bytes(self.path.parent)
            return self._full_error
        log.error("sqlite commit failed", exc_info=e)
        return StorageError(self.path, e)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None
        self._db.close()


class MemoryPersistence:
    """Keeps rows in memory; a write is "durable" on the next loop iteration.

    For the simulator (deterministic: no thread) and for tests that need no disk.
    """

    settles_at_once = True
    """A write is stored as it is queued, so the replica has nothing to roll back (and
    the simulator's peers see it at once)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], Row] = {}
        self.fences: dict[tuple[str, str, str], FenceRow] = {}
        self.meta: dict[str, str] = {}
        self.commits = 0
        self.rows_written = 0

    def load(self) -> Iterator[Row]:
        return iter(list(self.rows.values()))

    def load_fences(self) -> Iterator[FenceRow]:
        return iter(list(self.fences.values()))

    def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    def start(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def full(self) -> DiskFull | None:
        return None

    def disk_pressure(self) -> str | None:
        return None

    def write(
        self, rows: list[Row], meta: dict[str, str], loop: asyncio.AbstractEventLoop,
        fences: list[FenceRow] | None = None, scrub: bool = False,
    ) -> asyncio.Future[None]:
        self.write_sync(rows, meta, fences)
        fut: asyncio.Future[None] = loop.create_future()
        loop.call_soon(_resolve, fut, None)
        return fut

    def write_sync(
        self, rows: list[Row], meta: dict[str, str], fences: list[FenceRow] | None = None,
        scrub: bool = False,
    ) -> None:
        for r in rows:
            key = (r.resource, r.namespace, r.name)
            if r.drop:
                self.rows.pop(key, None)
            else:
                self.rows[key] = r
        for f in fences or []:
            key = (f.resource, f.namespace, f.name)
            if f.drop:
                self.fences.pop(key, None)
            else:
                self.fences[key] = f
        self.meta.update(meta)
        self.commits += 1
        self.rows_written += len(rows)

    def close(self) -> None:
        pass


def _make_private(db: Path) -> None:
    """state.db and its companions 0600 (an older data dir made them 0644)."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o600)


def _answer(batch: list[Queued], error: BaseException | None) -> None:
    """From the writer thread: one wake-up of each loop for the whole group, not one per
    write (issue 11)."""
    waiting: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], Settle | None]]] = {}
    for _, fut, loop, settle in batch:
        if fut is not None and loop is not None:
            waiting.setdefault(loop, []).append((fut, settle))
    for loop, answers in waiting.items():
        loop.call_soon_threadsafe(_settle_and_resolve, answers, error)


def _settle_and_resolve(answers: list[tuple[asyncio.Future[None], Settle | None]],
                        error: BaseException | None) -> None:
    """On the loop, in queue order: each write's ``settle``, then its future. An error in
    one ``settle`` is the loop's to report; the others' writes are still answered."""
    for fut, settle in answers:
        if settle is not None:
            try:
                settle(error)
            except Exception as e:  # reported; the next write is still answered
                loop = fut.get_loop()
                loop.call_exception_handler({"message": "a write's settle failed",
                                             "exception": e, "future": fut})
        _resolve(fut, error)


def _resolve(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
