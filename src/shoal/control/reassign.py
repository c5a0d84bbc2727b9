"""Rewriting a field the API keeps immutable, for the repairs that follow a merge.

A Node's ``spec.podCIDR`` and a Service's ``spec.clusterIP`` may not change once
set, and the object store enforces that for every client. The repairs that
resolve a collision after a merge are the one exception: they write the new value
straight into the replica (a CRDT write like any other, so it replicates and
merges as usual), against the revision they read, so a concurrent change makes
them read again instead of overwriting it.
"""

from __future__ import annotations

from typing import Any

from shoal.model.kinds import Kind
from shoal.model.validation import validate
from shoal.store.objects import Conflict, Invalid, NotFound, ObjectStore, key_fn, qualified
from shoal.store.replica import Conflict as ReplicaConflict


async def reassign(store: ObjectStore, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """Store ``obj`` (a changed copy of what the store returned) over an immutable field.

    Raises Conflict when the object changed since it was read, NotFound when it is gone.
    """
    meta = obj["metadata"]
    ns = meta.get("namespace", "") if kind.namespaced else ""
    name = meta["name"]
    entry = store.replica.entry(kind.resource, ns, name)
    if entry is None or entry.value is None or entry.value["metadata"].get("uid") != meta.get("uid"):
        raise NotFound(f'{qualified(kind)} "{name}" not found', kind=kind, name=name)
    if str(entry.rv) != str(meta.get("resourceVersion")):
        raise Conflict(f'{qualified(kind)} "{name}" changed since it was read', kind=kind,
                       name=name)
    causes = validate(kind, obj)  # still a valid object, though not a valid update
    if causes:
        raise Invalid(f"{qualified(kind)} {name}: {causes[0]}", kind=kind, name=name,
                      causes=causes)
    value = dict(obj)
    value["metadata"] = {k: v for k, v in meta.items() if k != "resourceVersion"}
    try:
        stored, durable = store.replica.put(kind.resource, ns, name, value,
                                            key_fn(kind.group, kind.kind), entry.rv)
    except ReplicaConflict as e:
        raise Conflict(f'{qualified(kind)} "{name}" changed since it was read', kind=kind,
                       name=name) from e
    await durable
    assert stored is not None
    return stored
