"""Replicas converge: every replica holds identical documents (tombstones included) and values.

A tombstone that one replica has collected (``shoal.mesh.tombstones``) and another
still holds reads the same on both: deleted. The collecting replica must hold the
fence of that very deletion, though: a replica with neither the document nor its
fence has not learnt of the object at all, and a stale peer's old copy would live
again there (that was once taken for convergence, and the durability check that
followed found acknowledged writes missing: issue 16, seed 105987).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shoal.crdt.document import Document
from shoal.store.replica import Replica

Keep = Callable[[str, str], bool]
"""Which (resource, namespace) a comparison is about."""


@dataclass(frozen=True, slots=True)
class _Fence:
    """A collected deletion: the stamp of the tombstone that was dropped."""

    stamp: tuple[int, str]


def _state(replica: Replica, keep: Keep | None = None) -> dict[tuple[str, str, str], Any]:
    out: dict[tuple[str, str, str], Any] = {}
    for resource in replica.resources():
        for (ns, name), entry in replica.iter_entries(resource):
            if keep is None or keep(resource, ns):
                out[(resource, ns, name)] = entry.document().root
    for key, f in replica.fences.items():
        if key not in out and (keep is None or keep(key[0], key[1])):
            out[key] = _Fence((f.stamp, f.writer))
    return out


def check(replicas: Mapping[str, Replica], limit: int = 5, keep: Keep | None = None) -> list[str]:
    """Differences between each replica and the first; empty when all are identical.

    With ``keep``, only the objects it keeps are compared (one scope's)."""
    problems: list[str] = []
    items = list(replicas.items())
    if not items:
        return problems
    ref_name, ref = items[0]
    ref_state = _state(ref, keep)
    for name, replica in items[1:]:
        state = _state(replica, keep)
        if state == ref_state:
            continue
        keys = sorted(set(state) | set(ref_state))
        for k in keys:
            mine, theirs = state.get(k), ref_state.get(k)
            if mine != theirs and not _collected_on_one_side(mine, theirs):
                problems.append(f"{name} and {ref_name} differ on {'/'.join(k)}")
                break
        if len(problems) >= limit:
            break
    if not problems:
        # Identical documents must read back identically (resourceVersions aside).
        for resource in ref.resources():
            for (ns, n), entry in ref.iter_entries(resource):
                if keep is not None and not keep(resource, ns):
                    continue
                value = entry.document().value()
                for name, replica in items[1:]:
                    other = replica.entry(resource, ns, n)
                    if other is None and value is None:
                        continue
                    if other is None or other.document().value() != value:
                        problems.append(f"{name} reads {resource}/{n} differently")
                        return problems
    return problems


def _collected_on_one_side(a: Any, b: Any) -> bool:
    """One side collected the very tombstone the other still holds (its fence has the
    tombstone's stamp)."""
    if isinstance(a, _Fence):
        a, b = b, a
    if not isinstance(b, _Fence) or a is None or isinstance(a, _Fence):
        return False
    held = Document(a)
    return held.deleted and held.stamp == b.stamp
