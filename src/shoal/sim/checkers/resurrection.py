"""No resurrection: a deleted object comes back only through a later create.

An object that is live at the end must owe its root to an acknowledged create
(or re-create) whose stamp is newer than every acknowledged delete of that name;
updates made concurrently with a delete must not revive it.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.sim.cluster import NAMESPACE, RESOURCE, AckedWrite
from shoal.store.replica import Replica

Key = tuple[str, str, str]


def check(acked: Iterable[AckedWrite], final: Replica) -> list[str]:
    problems: list[str] = []
    creates: dict[Key, set[tuple[int, str]]] = {}
    last_delete: dict[Key, tuple[int, str]] = {}
    for w in acked:
        stamp = w.snapshot.stamp
        key = (w.resource, w.namespace, w.name)
        if w.op == "create":
            creates.setdefault(key, set()).add(stamp)
        elif w.op == "delete":
            last_delete[key] = max(stamp, last_delete.get(key, (0, "")))
    for key in sorted(set(creates) | set(last_delete)):
        entry = final.entry(*key)
        if entry is None or entry.value is None:
            continue
        root = entry.document().stamp
        name = key[2] if key[:2] == (RESOURCE, NAMESPACE) else "/".join(key)
        if root not in creates.get(key, set()):
            problems.append(f"{name} is live with root {root}, which no create wrote")
        elif key in last_delete and root < last_delete[key]:
            problems.append(f"{name} was deleted at {last_delete[key]} but is live from {root}")
    return problems
