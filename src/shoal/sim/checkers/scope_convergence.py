"""Scope convergence: the members of each scope hold identical state for it, and every
peer identical state for the cluster scope; and no member holds a change that a writer's
removal revoked (``shoal.mesh.revocation``: a change stamped after the removal the Scope
records, which must never become the scope's state).

The comparison is ``convergence.check`` restricted to one scope's objects and to the
replicas of its members (a collected tombstone and a held one still read the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shoal.authz.scopes import CLUSTER, ScopeMap, revoked_at
from shoal.mesh import revocation
from shoal.mesh.replication_policy import revoked_rule
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
        problems += [f"{label}: {p}" for p in revoked(held, scopes, scope, limit)]
        if len(problems) >= limit:
            break
    return problems[:limit] if len(problems) > limit else problems


def revoked(replicas: Mapping[str, Replica], scopes: ScopeMap, scope: str,
            limit: int = 5) -> list[str]:
    """Every document of ``scope`` that a member holds with a revoked change in it, and
    every collected deletion that was one."""
    after = scopes.revoked_after(scope) if scope != CLUSTER else {}
    if not after:
        return []
    problems: list[str] = []
    for peer, replica in replicas.items():
        for (resource, ns, name), entry in replica.all_entries():
            if scopes.scope_of(resource, ns) != scope:
                continue
            doc = entry.document()
            rule = revoked_rule(after, resource, ns, name, entry.value, doc.deleted)
            if revocation.strip(doc, rule) is not doc:
                problems.append(f"{peer} holds a revoked change in {resource}/{ns}/{name}")
        problems += [f"{peer} keeps a revoked deletion of {'/'.join(key)}"
                     for key, f in replica.fences.items()
                     if scopes.scope_of(key[0], key[1]) == scope
                     and revoked_at(after, f.writer, f.stamp)]
        if len(problems) >= limit:
            break
    return problems


def handoffs_pending(handoffs: Mapping[str, Mapping[str, Iterable[tuple[str, str, str]]]],
                     replicas: Mapping[str, Replica], scopes: ScopeMap) -> list[str]:
    """The objects that a peer which left a scope still hands off (``handoffs``: peer ->
    scope -> keys) and that no up member of the scope holds yet: the run has not settled
    while one is on its way (a one-member scope looks converged at once)."""
    problems: list[str] = []
    for peer, per_scope in handoffs.items():
        for scope, keys in per_scope.items():
            members = [replicas[n] for n in (scopes.members(scope) or ()) if n in replicas]
            problems += [f"{peer} still hands off {'/'.join(key)} of {scope}" for key in keys
                         if members and not any(r.entry(*key) is not None or key in r.fences
                                                for r in members)]
    return problems
