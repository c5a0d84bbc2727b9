"""No resurrection: a deleted object comes back only through a later create.

An object that is live at the end must owe its root to an acknowledged create
(or re-create) whose stamp is newer than every acknowledged delete of that name;
updates made concurrently with a delete must not revive it.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.sim.cluster import NAMESPACE, RESOURCE, AckedWrite
from shoal.store.replica import Replica


def check(acked: Iterable[AckedWrite], final: Replica) -> list[str]:
    problems: list[str] = []
    creates: dict[str, set[tuple[int, str]]] = {}
    last_delete: dict[str, tuple[int, str]] = {}
    for w in acked:
        stamp = w.snapshot.stamp
        if w.op == "create":
            creates.setdefault(w.name, set()).add(stamp)
        elif w.op == "delete":
            last_delete[w.name] = max(stamp, last_delete.get(w.name, (0, "")))
    for name in sorted(set(creates) | set(last_delete)):
        entry = final.entry(RESOURCE, NAMESPACE, name)
        if entry is None or entry.value is None:
            continue
        root = entry.document().stamp
        if root not in creates.get(name, set()):
            problems.append(f"{name} is live with root {root}, which no create wrote")
        elif name in last_delete and root < last_delete[name]:
            problems.append(f"{name} was deleted at {last_delete[name]} but is live from {root}")
    return problems
