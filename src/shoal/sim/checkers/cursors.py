"""No claim outlives the disk: when a peer dies (or comes back from a backup), no other
peer holds a pull cursor or a coverage entry for it past the revision its disk has.

A cursor at r says "I have merged everything that peer held at r"; a coverage entry
says the same and lets tombstones be collected. If the peer's disk ends below r (the
commit in progress was torn, or an older backup was restored), the peer takes those
revisions again for other changes, and the holder of the claim would skip them, or
collect a deletion the peer never held. So a peer may serve only what is durable.
A peer restored from a backup is not checked: claims past its disk are then expected,
and its new life takes cursors of the old one as at most the backup's revision (the
``restored-writer`` scenario checks that its new writes still reach every partner).
"""

from __future__ import annotations

from shoal.mesh.anti_entropy import AntiEntropy


def beyond(holder: str, mesh: AntiEntropy, peer: str, committed: int) -> list[str]:
    """``holder``'s claims over ``peer``'s revisions above ``committed``."""
    problems = []
    for (partner, scope), cursor in sorted(mesh.cursors.items()):
        if partner == peer and cursor > committed:
            problems.append(f"{holder} holds a pull cursor of {peer} at {cursor} in scope "
                            f"{scope!r}, past the {committed} on {peer}'s disk")
    for scope, cov in sorted(mesh.coverage.scopes.items()):
        covered = cov.vector.get(peer, 0)
        if covered > committed:
            problems.append(f"{holder} claims to cover {peer} at {covered} in scope "
                            f"{scope!r}, past the {committed} on {peer}'s disk")
    return problems
