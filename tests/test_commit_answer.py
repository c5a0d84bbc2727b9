"""A durable write's writer resumes on the loop turn right after the commit's answer.

The SQLite writer thread answers a group commit with one callback on the loop. The
replica's bookkeeping (the change published once durable, the write no longer in flight)
runs in that callback, and whatever awaits the write resumes on the next turn. Each
extra turn of a busy loop is a create's wait for its acknowledgement (issue 11: with 16
clients, that wait bounds the creates per second), so the answer takes no more turns
than that, and the write is on disk by then.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shoal.crdt.document import KeyFn
from shoal.store.replica import Replica


def no_keys(path: Any) -> str | None:
    return None


KF: KeyFn = no_keys


async def test_the_writer_resumes_the_turn_after_the_commits_answer_with_the_change_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = Replica(tmp_path / "data", "n1")
    loop = asyncio.get_running_loop()
    order: list[str] = []
    replica.subscribe(lambda c: order.append(f"published {c.name}") is None)

    def turn(k: int) -> None:
        order.append(f"turn {k}")
        if k < 3:
            loop.call_soon(turn, k + 1)

    real = loop.call_soon_threadsafe

    def from_writer(callback: Any, *args: Any, **kwargs: Any) -> Any:
        def answer(*a: Any) -> None:
            order.append("answer")
            callback(*a)
            loop.call_soon(turn, 1)  # what else the loop had to do, turn by turn

        return real(answer, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", from_writer)
    try:
        stored, durable = replica.put(
            "configmaps", "default", "a", {"metadata": {"name": "a"}, "data": {"k": "v"}}, KF)
        await durable
        order.append("resumed")
        # Durable: another connection reads the row (WAL, synchronous=FULL) when it resumes.
        with sqlite3.connect(tmp_path / "data" / "state.db") as other:
            rows = other.execute("SELECT rv FROM objects WHERE name = 'a'").fetchall()
        assert stored is not None and rows == [(int(stored["metadata"]["resourceVersion"]),)]
        await asyncio.sleep(0.01)
    finally:
        monkeypatch.undo()
        replica.close()
    assert order[:4] == ["answer", "published a", "resumed", "turn 1"]
