"""Scope convergence: the members of each scope hold identical state for it, and every
peer identical state for the cluster scope.

The comparison is ``convergence.check`` restricted to one scope's objects and to the
replicas of its members (a collected tombstone and a held one still read the same).
"""

from __future__ import annotations

from collections.abc import Mapping

from shoal.authz.scopes import CLUSTER, ScopeMap
from shoal.sim.checkers import convergence
from shoal.store.replica import Replica


def check(replicas: Mapping[str, Replica], scopes: ScopeMap, limit: int = 5) -> list[str]:
    problems: list[str] = []
    for scope in [CLUSTER, *scopes.names()]:
        members = scopes.members(scope)
        held = {n: r for n, r in replicas.items() if members is None or n in members}

        def keep(resource: str, namespace: str, scope: str = scope) -> bool:
            return scopes.scope_of(resource, namespace) == scope

        label = scope or "the cluster scope"
        problems += [f"{label}: {p}" for p in convergence.check(held, limit, keep)]
        if len(problems) >= limit:
            break
    return problems
