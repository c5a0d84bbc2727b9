"""No acknowledged write is lost: the converged document contains every acknowledged one.

A write is kept when merging the document as it stood right after the write into
the final document changes nothing (the final state is at or above it in the
CRDT's order); a later write may have overwritten its leaves, never dropped them.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.sim.cluster import NAMESPACE, RESOURCE, AckedWrite
from shoal.store.replica import Replica


def check(acked: Iterable[AckedWrite], final: Replica, limit: int = 5) -> list[str]:
    problems: list[str] = []
    for w in acked:
        entry = final.entry(RESOURCE, NAMESPACE, w.name)
        if entry is None:
            problems.append(f"{w.op} of {w.name} on {w.node} at {w.at:.3f}s is missing")
        elif entry.document().copy().merge(w.snapshot):
            problems.append(f"{w.op} of {w.name} on {w.node} at {w.at:.3f}s was lost")
        if len(problems) >= limit:
            break
    return problems
