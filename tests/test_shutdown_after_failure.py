"""A node stops promptly after a failed commit: no write is left waiting forever and the
writer thread exits, so shutdown (which awaits the pods' last status writes, then closes
the replica) cannot hang on a future that never settles.

Reported against an older tree as a `shoal server` that ignored SIGTERM after "a commit
failed; rolled back 1 queued writes"; by hand on HEAD (a real server on a 20 MB tmpfs,
disk full with pods running, alone and joined by a peer whose pushes were refused) it
stopped in 2 s every time. These tests keep the invariants that make that so.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.crdt.document import KeyFn
from shoal.store.persistence import Persistence, StorageError
from shoal.store.replica import Replica
from tests.test_store_rollback import failing_rows  # noqa: F401 - the fixture


def no_keys(path: Any) -> str | None:
    return None


KF: KeyFn = no_keys


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    r = Replica(tmp_path / "data", "n1")
    yield r
    r.close()


def writer_threads(replica: Replica) -> bool:
    persistence = replica.persistence
    assert isinstance(persistence, Persistence)
    thread = persistence._thread
    return thread is not None and thread.is_alive()


async def test_every_write_queued_behind_a_failed_commit_settles_and_close_is_prompt(
    replica: Replica, failing_rows: set[str],  # noqa: F811 - the fixture
) -> None:
    failing_rows.add("bad")
    _, first = replica.put("configmaps", "default", "bad", {"data": {"a": "1"}}, KF)
    # Queued at once, before the writer has seen the failure: they fail with it, or
    # commit once the replica has resumed the persistence; none is left pending.
    behind = [replica.put("configmaps", "default", f"cm-{i}", {"data": {"i": str(i)}}, KF)[1]
              for i in range(20)]
    results = await asyncio.wait_for(
        asyncio.gather(first, *behind, return_exceptions=True), 5)
    assert isinstance(results[0], StorageError)
    assert all(r is None or isinstance(r, StorageError) for r in results[1:])
    # A later write works: the persistence was resumed.
    _, after = replica.put("configmaps", "default", "after", {"data": {}}, KF)
    await asyncio.wait_for(after, 5)
    assert replica.durable_revision == replica.revision
    started = time.monotonic()
    replica.close()
    assert time.monotonic() - started < 1.0
    assert not writer_threads(replica)


class FailingMeta:
    """The SQLite connection, except that writing the meta key ``broken`` fails."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def executemany(self, sql: str, rows: list[Any]) -> Any:
        if "INTO meta" in sql and any(k == "broken" for k, _ in rows):
            raise sqlite3.OperationalError("database or disk is full (injected)")
        return self._db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def test_a_failed_meta_only_write_of_the_mesh_leaves_later_writes_working(
    replica: Replica,
) -> None:
    # The mesh queues its own meta (member list, cursors) without the replica's rollback,
    # so nobody resumes the persistence after it: it must not halt it.
    persistence = replica.persistence
    assert isinstance(persistence, Persistence)
    persistence._db = FailingMeta(persistence._db)  # type: ignore[assignment]
    raw = persistence.write([], {"broken": "1"}, asyncio.get_running_loop())
    with pytest.raises(StorageError):
        await asyncio.wait_for(raw, 5)
    _, later = replica.put("configmaps", "default", "later", {"data": {}}, KF)
    got = await asyncio.wait_for(asyncio.gather(later, return_exceptions=True), 5)
    assert list(got) == [None], "a failed meta-only write left the persistence halted"
    started = time.monotonic()
    replica.close()
    assert time.monotonic() - started < 1.0
    assert not writer_threads(replica)
