"""No acknowledged write is lost: the converged document contains every acknowledged one.

A write is kept when merging the document as it stood right after the write into
the final document changes nothing (the final state is at or above it in the
CRDT's order); a later write may have overwritten its leaves, never dropped them.
A write under a deletion whose tombstone was collected is kept by the fence, and
one stamped before the object's cleared stamp (its newest deletion) is kept by it
even if the final document no longer holds its fields.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.crdt.document import Document
from shoal.sim.cluster import NAMESPACE, RESOURCE, AckedWrite
from shoal.store.replica import Replica


def check(acked: Iterable[AckedWrite], final: Replica, limit: int = 5) -> list[str]:
    problems: list[str] = []
    for w in acked:
        entry = final.entry(w.resource, w.namespace, w.name)
        fence = final.fences.get((w.resource, w.namespace, w.name))
        if entry is None and fence is not None and w.snapshot.stamp <= (fence.stamp, fence.writer):
            continue  # a later deletion, since collected, covers it
        if entry is None:
            problems.append(f"{w.op} of {_named(w)} on {w.node} at {w.at:.3f}s is missing")
        elif _lost(entry.document(), w.snapshot):
            problems.append(f"{w.op} of {_named(w)} on {w.node} at {w.at:.3f}s was lost")
        if len(problems) >= limit:
            break
    return problems


def _lost(final: Document, snapshot: Document) -> bool:
    merged = final.copy()
    if not merged.merge(snapshot):
        return False
    return snapshot.max_stamp() > final.cleared or merged.value() != final.value()


def _named(w: AckedWrite) -> str:
    if (w.resource, w.namespace) == (RESOURCE, NAMESPACE):
        return w.name
    return f"{w.resource}/{w.namespace}/{w.name}"
