"""Two replicas apart, then merged, in process: what anti-entropy does, by hand."""

from __future__ import annotations

import time

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


class ManualClock:
    """A wall clock that moves only when a test moves it (``t`` seconds since the epoch)."""

    def __init__(self) -> None:
        self.t = time.time()

    def now(self) -> float:
        return self.t


class FixedView:
    """A ``PeerView`` whose live peers a test sets."""

    def __init__(self, name: str, live: list[str]) -> None:
        self._name, self._live = name, live

    @property
    def name(self) -> str:
        return self._name

    def live(self) -> list[str]:
        return self._live
