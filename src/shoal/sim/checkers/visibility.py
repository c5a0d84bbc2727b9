"""Visibility: no peer holds anything of a scope it is not a member of.

Not a live object, not a tombstone, not a fence (a collected deletion's stamp, which
still names the object). Judged against the scopes as the operator wrote them
(``ScopeMap``), whatever the peer itself believes. It reads each replica's memory,
a few dict walks per peer, so a run can afford it after every step.
"""

from __future__ import annotations

from collections.abc import Mapping

from shoal.authz.scopes import CLUSTER, ScopeMap
from shoal.store.replica import Replica


def check(replicas: Mapping[str, Replica], scopes: ScopeMap, limit: int = 5) -> list[str]:
    problems: list[str] = []
    for peer, replica in replicas.items():
        held = scopes.scopes_of(peer)

        def foreign(resource: str, namespace: str,
                    held: frozenset[str] = held) -> str | None:
            scope = scopes.scope_of(resource, namespace)
            return None if scope == CLUSTER or scope in held else scope

        for resource in replica.resources():
            for (ns, name), entry in replica.iter_entries(resource):
                if not ns:
                    continue
                scope = foreign(resource, ns)
                if scope is not None:
                    what = "the tombstone of " if entry.value is None else ""
                    problems.append(f"{peer} holds {what}{resource}/{ns}/{name} "
                                    f"of scope {scope}, not its own")
                    break
            if len(problems) >= limit:
                return problems
        for resource, ns, name in list(replica.fences):
            scope = foreign(resource, ns) if ns else None
            if scope is not None:
                problems.append(f"{peer} holds the fence of {resource}/{ns}/{name} "
                                f"of scope {scope}, not its own")
                break
        if len(problems) >= limit:
            break
    return problems


def leaks(replicas: Mapping[str, Replica], scopes: ScopeMap) -> int:
    """How many (peer, object) pairs break visibility: a figure for the report."""
    n = 0
    for peer, replica in replicas.items():
        held = scopes.scopes_of(peer)
        for resource in replica.resources():
            for (ns, _), _e in replica.iter_entries(resource):
                if ns and scopes.scope_of(resource, ns) not in held:
                    n += 1
        n += sum(1 for r, ns, _ in replica.fences if ns and scopes.scope_of(r, ns) not in held)
    return n
