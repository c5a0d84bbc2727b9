"""A failed commit is rolled back in memory: failures injected at each step of a write.

Whatever fails once a write has begun (building its document, encoding it, queueing it,
or the SQLite commit), memory and disk agree afterwards, the revision stream keeps
flowing to watchers, and peers are never served the write that failed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.crdt.document import Document, KeyFn
from shoal.store.persistence import Persistence, Row, StorageError
from shoal.store.replica import Replica


def no_keys(path: Any) -> str | None:
    return None


KF: KeyFn = no_keys


def cm(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "data": dict(data)}


def snapshot(replica: Replica) -> dict[tuple[str, str, str], tuple[Any, int, bytes | None]]:
    out = {}
    for key, e in replica.all_entries():
        out[key] = (e.value, e.rv, e.doc_bytes)
    return out


def on_disk(data_dir: Path) -> dict[tuple[str, str, str], tuple[Any, int, bytes | None]]:
    again = Replica(data_dir, "n1")
    try:
        return snapshot(again)
    finally:
        again.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def replica(data_dir: Path) -> Iterator[Replica]:
    r = Replica(data_dir, "n1")
    yield r
    r.close()


@pytest.fixture
def failing_rows(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names whose rows make the SQLite commit fail (as a full disk or a bad page would)."""
    names: set[str] = set()
    real = Persistence._stored

    def stored(self: Persistence, r: Row) -> Any:
        if r.name in names:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return real(self, r)

    monkeypatch.setattr(Persistence, "_stored", stored)
    return names


async def put(replica: Replica, name: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    stored, durable = replica.put("configmaps", "default", name, value, KF)
    await durable
    return stored


async def test_a_failed_sqlite_commit_undoes_the_write_and_every_write_queued_after_it(
    replica: Replica, data_dir: Path, failing_rows: set[str],
) -> None:
    await put(replica, "x", cm("x", v="1"))
    sub = replica.subscribe(lambda c: True)
    failing_rows.add("bad")
    # Queued in one go: the write on top of the failed one must not reach the disk alone.
    _, f_bad = replica.put("configmaps", "default", "bad", cm("bad", v="1"), KF)
    _, f_x = replica.put("configmaps", "default", "x", cm("x", v="2", extra="from-v2"), KF)
    _, f_y = replica.put("configmaps", "default", "y", cm("y", v="1"), KF)
    results = await asyncio.gather(f_bad, f_x, f_y, return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results), results
    assert replica.get("configmaps", "default", "bad") is None
    assert replica.get("configmaps", "default", "y") is None
    x = replica.get("configmaps", "default", "x")
    assert x is not None and x["data"] == {"v": "1"}
    # Writes work again and watchers hear of them: the stream is not wedged.
    failing_rows.clear()
    later = await put(replica, "x", cm("x", v="3"))
    assert later is not None
    change = await asyncio.wait_for(sub.queue.get(), 2)
    assert change is not None and change.name == "x" and change.obj["data"] == {"v": "3"}
    assert sub.queue.empty()
    assert replica.rollbacks == 1
    x_doc = replica.entry("configmaps", "default", "x")
    assert x_doc is not None and b"from-v2" not in (x_doc.doc_bytes or b"")
    memory = snapshot(replica)
    replica.close()
    assert on_disk(data_dir) == memory


async def test_a_write_whose_document_cannot_be_encoded_takes_no_revision(
    replica: Replica, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await put(replica, "x", cm("x", v="1"))
    before, rev = snapshot(replica), replica.revision
    sub = replica.subscribe(lambda c: True)

    def boom(self: Document) -> bytes:
        raise RecursionError("maximum recursion depth exceeded")

    with monkeypatch.context() as m:
        m.setattr(Document, "to_bytes", boom)
        with pytest.raises(RecursionError):
            replica.put("configmaps", "default", "x", cm("x", v="2"), KF)
    assert replica.revision == rev and snapshot(replica) == before
    # The cached document the failed write changed is dropped: the next write starts
    # from the stored bytes, not from the half-written document.
    await put(replica, "x", cm("x", w="3"))
    change = await asyncio.wait_for(sub.queue.get(), 2)
    assert change is not None and change.rv == rev + 1 and change.obj["data"] == {"w": "3"}


async def test_a_write_that_cannot_be_queued_is_undone_and_its_revision_skipped(
    replica: Replica, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await put(replica, "x", cm("x", v="1"))
    before = snapshot(replica)
    sub = replica.subscribe(lambda c: True)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(replica.persistence, "write", refuse)
        with pytest.raises(OSError):
            replica.put("configmaps", "default", "x", cm("x", v="2"), KF)
    assert snapshot(replica) == before
    await put(replica, "z", cm("z", v="1"))
    change = await asyncio.wait_for(sub.queue.get(), 2)
    assert change is not None and change.name == "z"


async def test_a_peer_is_never_served_a_write_whose_commit_is_in_flight_or_failed(
    replica: Replica, failing_rows: set[str],
) -> None:
    await put(replica, "x", cm("x", v="1"))
    durable = replica.durable_revision
    failing_rows.add("x")
    _, fut = replica.put("configmaps", "default", "x", cm("x", v="secret-2"), KF)
    # In flight: a pull sees x as it is on disk, and the revision it may claim stays put.
    assert replica.durable_revision == durable
    served = replica.changed_since(0, up_to=replica.durable_revision)
    assert [e.value["data"] for _, _, name, e in served if name == "x"] == [{"v": "1"}]
    with pytest.raises(StorageError):
        await fut
    assert replica.durable_revision == replica.revision
    served = replica.changed_since(0, up_to=replica.durable_revision)
    assert all(b"secret-2" not in (e.doc_bytes or b"") for *_, e in served)


async def test_a_failed_merge_is_undone_and_the_mesh_is_told(
    replica: Replica, data_dir: Path, failing_rows: set[str],
) -> None:
    told: list[int] = []
    replica.rollback_listeners.append(told.append)
    await put(replica, "x", cm("x", v="1"))
    # A local write that fails concerns no peer: the mesh keeps its cursors.
    failing_rows.add("x")
    with pytest.raises(StorageError):
        await put(replica, "x", cm("x", v="2"))
    assert told == []
    remote = Replica(None, "n2")
    _, fut = remote.put("configmaps", "default", "from-peer", cm("from-peer", v="1"), KF)
    await fut
    entry = remote.entry("configmaps", "default", "from-peer")
    assert entry is not None
    failing_rows.add("from-peer")
    result = replica.merge("configmaps", "default", "from-peer", entry.document().copy())
    assert result is not None
    with pytest.raises(StorageError):
        await result[1]
    assert replica.get("configmaps", "default", "from-peer") is None
    assert told == [replica.revision - 1]  # the merged write's revision (the undo took one)
    memory = snapshot(replica)
    replica.close()
    assert on_disk(data_dir) == memory


class _FailingDeletes:
    """An SQLite connection whose row deletions fail."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("DELETE FROM objects"):
            raise sqlite3.OperationalError("database or disk is full (injected)")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def test_a_failed_collection_keeps_the_tombstone_in_memory_as_on_disk(
    replica: Replica, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await put(replica, "gone", cm("gone", v="1"))
    await put(replica, "gone", None)
    persistence = replica.persistence
    assert isinstance(persistence, Persistence)
    with monkeypatch.context() as m:
        m.setattr(persistence, "_db", _FailingDeletes(persistence._db))
        assert replica.collect([("configmaps", "default", "gone")], now=1.0) == 1
        assert ("configmaps", "default", "gone") in replica.fences
        for _ in range(100):  # the commit fails on the writer thread
            if replica.rollbacks:
                break
            await asyncio.sleep(0.02)
    assert replica.rollbacks == 1
    assert ("configmaps", "default", "gone") not in replica.fences
    assert replica.entry("configmaps", "default", "gone") is not None
    memory = snapshot(replica)
    replica.close()
    assert on_disk(data_dir) == memory


async def test_a_writer_cancelled_while_its_write_is_in_flight_rolls_nothing_back(
        replica: Replica, data_dir: Path) -> None:
    """Cancelling the task that awaits a write (a timeout, a controller stopping) does not
    stop its commit: memory must keep it, its watch event must be published, and the
    writes queued after it must stand, as they do on disk."""
    events: list[str] = []
    replica.subscribe(lambda c: events.append(c.name) is None)
    first = asyncio.create_task(put(replica, "cancelled", cm("cancelled", a="1")))
    await asyncio.sleep(0)  # the write is queued; its commit is under way
    later = asyncio.create_task(put(replica, "later", cm("later", a="2")))
    await asyncio.sleep(0)
    first.cancel()
    assert (await asyncio.gather(first, later, return_exceptions=True))[1] is not None
    await put(replica, "last", cm("last", a="3"))
    assert replica.rollbacks == 0
    assert snapshot(replica) == on_disk(data_dir)
    assert {"cancelled", "later", "last"} <= {k[2] for k, _ in replica.all_entries()}
    assert events.count("cancelled") == 1 and "later" in events
