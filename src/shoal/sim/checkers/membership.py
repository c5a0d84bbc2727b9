"""Membership converges: every running peer sees every other running peer alive."""

from __future__ import annotations

from collections.abc import Iterable

from shoal.mesh.messages import State
from shoal.mesh.peer import MeshPeer


def check(peers: Iterable[MeshPeer], limit: int = 5) -> list[str]:
    peers = list(peers)
    names = {p.name for p in peers}
    problems: list[str] = []
    for p in peers:
        seen = {m.name: m.state for m in p.members()}
        for n in sorted(names - {p.name}):
            state = seen.get(n)
            if state != State.ALIVE:
                problems.append(f"{p.name} sees {n} as {state.name if state is not None else 'unknown'}")
                break
        if len(problems) >= limit:
            break
    return problems
