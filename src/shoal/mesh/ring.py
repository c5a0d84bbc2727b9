"""Whom a peer pulls from: a few stable partners on a hash ring, chosen like Chord's fingers.

Cursors only save traffic with peers pulled from again and again, so each peer
pulls from a small stable set rather than from anyone at random: its successor
on the ring of live members (so every peer is pulled from by at least one other,
and the pull graph is strongly connected) and the members just after the points
half, a quarter, an eighth... of the ring away (so news crosses the cluster in
O(log N) hops). The set changes only when the live members do.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

_SPACE = 1 << 64


def position(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def partners(me: str, live: Iterable[str], limit: int) -> list[str]:
    """Up to ``limit`` distinct live members to pull from, the ring successor first."""
    ring = sorted((position(n), n) for n in live if n != me)
    if not ring or limit <= 0:
        return []
    keys = [p for p, _ in ring]
    base = position(me)
    out: list[str] = []
    offsets = [1] + [_SPACE >> j for j in range(1, 64)]
    want = min(limit, len(ring))
    first = bisect.bisect_left(keys, (base + 1) % _SPACE) % len(ring)
    for off in offsets:
        i = bisect.bisect_left(keys, (base + off) % _SPACE) % len(ring)
        if ring[i][1] not in out:
            out.append(ring[i][1])
        if len(out) >= want:
            return out
    # Small rings: the short fingers all land on the successor; fill with the next ones.
    for step in range(1, len(ring)):
        name = ring[(first + step) % len(ring)][1]
        if name not in out:
            out.append(name)
        if len(out) >= want:
            break
    return out
