"""Who acts on an object: rendezvous hashing over the live peers, with no leader.

Every peer computes the same preferred actor for an object from the same view
of the live peers, so with a healthy mesh each decision is made once. A peer
acts on an object when it is the preferred actor, or when the preferred actor
is not among the peers it can reach: under a partition each side decides for
itself, and the merge plus a deterministic trim reconcile afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol


class PeerView(Protocol):
    """This node's view of the cluster's peers."""

    @property
    def name(self) -> str: ...

    def live(self) -> list[str]:
        """Names of the peers this node currently believes alive, itself included."""
        ...


class SinglePeer:
    """A node alone: it acts on everything."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def live(self) -> list[str]:
        return [self._name]


def _weight(key: str, peer: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{peer}\x00{key}".encode(), digest_size=8).digest(),
                          "big")


def preferred_actor(key: str, peers: Iterable[str]) -> str | None:
    """The peer with the highest rendezvous weight for ``key`` (None if there are none)."""
    best: tuple[int, str] | None = None
    for p in peers:
        w = (_weight(key, p), p)
        if best is None or w > best:
            best = w
    return None if best is None else best[1]


def should_act(view: PeerView, key: str) -> bool:
    """Whether this node should act on ``key`` now."""
    live = view.live()
    if view.name not in live:
        live = [*live, view.name]
    return preferred_actor(key, live) == view.name
