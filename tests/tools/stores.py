"""Two replicas apart, then merged, in process: what anti-entropy does, by hand."""

from __future__ import annotations

from shoal.store.objects import ObjectStore


async def merge(src: ObjectStore, dst: ObjectStore) -> None:
    """Hand every document of ``src`` to ``dst``, as anti-entropy would."""
    for resource in src.replica.resources():
        for (ns, name), entry in src.replica.iter_entries(resource):
            result = dst.replica.merge(resource, ns, name, entry.document())
            if result is not None:
                await result[1]


async def heal(a: ObjectStore, b: ObjectStore) -> None:
    """Both ways: the two replicas hold the same documents afterwards."""
    await merge(a, b)
    await merge(b, a)
