"""Tombstones are collected: once the replicas have converged and the collection horizon
has passed, no replica still holds the document of a deleted object."""

from __future__ import annotations

from collections.abc import Mapping

from shoal.store.replica import Replica


def held(replicas: Mapping[str, Replica]) -> int:
    """How many tombstone documents the replicas hold in all."""
    return sum(len(r.tombstones()) for r in replicas.values())


def check(replicas: Mapping[str, Replica], limit: int = 5) -> list[str]:
    problems: list[str] = []
    for name, replica in replicas.items():
        for (resource, ns, n), e in replica.tombstones():
            problems.append(f"{name} still holds the tombstone of {resource}/{ns}/{n} (rv {e.rv})")
            break
        if len(problems) >= limit:
            break
    return problems
