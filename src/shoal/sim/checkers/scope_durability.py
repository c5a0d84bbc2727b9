"""No early forgetting, per scope: every member of a scope keeps every acknowledged write
of it and revives no deletion, tombstones collected or not.

``check`` runs ``durability`` and ``resurrection`` on each member's replica against the
acknowledged writes of the scopes it holds (a write that a member never heard of, while
another keeps it under a deletion, counts as kept: both read it as deleted). ``forgotten_early`` is the cheap invariant
behind them, for every step of a run: a member that collected a deletion (it holds the
fence) while another member of the scope still holds a live copy from before that
deletion forgot it too early, since that member could send the old copy back to a peer
whose fence has expired. A weak peer is judged through the super-peers it exchanges
documents with (``via``): an old copy reaches it only through them, so its collection is
early only while one of them that is a member of the scope does not hold the deletion
(docs/semantics.md, "Coverage by site"); a super-peer that collected it is judged itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from shoal.authz.scopes import ScopeMap
from shoal.mesh import revocation
from shoal.mesh.replication_policy import revoked_rule
from shoal.sim.checkers import durability, resurrection
from shoal.sim.cluster import AckedWrite
from shoal.store.replica import Replica


def check(acked: Iterable[AckedWrite], replicas: Mapping[str, Replica], scopes: ScopeMap,
          limit: int = 5, exempt: Callable[[AckedWrite], bool] | None = None) -> list[str]:
    """``exempt`` names writes no member need keep (made by a peer after it was removed);
    they still count as creates for ``resurrection``, since a member may have kept one."""
    acked = [a for a in (_unrevoked(w, scopes) for w in acked) if a is not None]
    problems: list[str] = []
    for peer, replica in replicas.items():
        mine = [w for w in acked
                if scopes.is_member(scopes.scope_of(w.resource, w.namespace), peer)]
        kept = [w for w in mine if (exempt is None or not exempt(w))
                and not _deleted_unseen(w, peer, replicas, scopes)]
        problems += [f"on {peer}: {p}" for p in
                     durability.check(kept, replica, limit) + resurrection.check(mine, replica)]
        if len(problems) >= limit:
            break
    return problems


def _unrevoked(w: AckedWrite, scopes: ScopeMap) -> AckedWrite | None:
    """``w`` as the members must keep it: without the changes a writer's removal revoked
    (``mesh.revocation``), which its snapshot holds when it was made over one of them;
    None when nothing of it may be kept (a revoked create, or the revoked change itself:
    a revoked deletion is no deletion, so it must not count as one)."""
    after = scopes.revoked_after(scopes.scope_of(w.resource, w.namespace))
    if not after:
        return w
    doc = w.snapshot
    kept = revocation.strip(doc, revoked_rule(after, w.resource, w.namespace, w.name,
                                              doc.value(), doc.deleted))
    if kept is doc:
        return w
    if kept is None or (w.op == "delete" and not kept.deleted):
        return None
    return dataclasses.replace(w, snapshot=kept)


def _deleted_unseen(w: AckedWrite, peer: str, replicas: Mapping[str, Replica],
                    scopes: ScopeMap) -> bool:
    """The peer never heard of the object, and another member keeps the write under a
    deletion: converged all the same (both read it as deleted; ``convergence`` agrees),
    and the collection of that tombstone will wait for this peer to cover it."""
    key = (w.resource, w.namespace, w.name)
    mine = replicas[peer]
    if mine.entry(*key) is not None or key in mine.fences:
        return False
    scope = scopes.scope_of(w.resource, w.namespace)
    for other, theirs in replicas.items():
        if other == peer or not scopes.is_member(scope, other):
            continue
        entry = theirs.entry(*key)
        if (entry is None or entry.value is None) and not durability.check([w], theirs, 1):
            return True
    return False


def forgotten_early(replicas: Mapping[str, Replica], scopes: ScopeMap | None,
                    limit: int = 5, via: Mapping[str, Iterable[str]] | None = None
                    ) -> list[str]:
    """With ``scopes`` None, each collecting peer is judged by its own Scope objects (the
    map it collected under, while membership changes). ``via``: per weak peer, its site's
    super-peers."""
    problems: list[str] = []
    for peer, replica in replicas.items():
        if not replica.fences:
            continue
        own = scopes if scopes is not None else ScopeMap.build(replica)
        through = None if via is None else via.get(peer)
        for (resource, ns, name), fence in list(replica.fences.items()):
            scope = own.scope_of(resource, ns)
            deletion = (fence.stamp, fence.writer)
            if through is not None and all(
                    _holds_deletion(replicas[s], (resource, ns, name), deletion)
                    for s in through if s in replicas and own.is_member(scope, s)):
                continue  # its super-peers stand for it: they read an old copy as deleted
            for other, theirs in replicas.items():
                if other == peer or not own.is_member(scope, other):
                    continue
                entry = theirs.entry(resource, ns, name)
                if (entry is not None and entry.value is not None
                        and entry.document().stamp < deletion):
                    problems.append(f"{peer} collected the deletion of {resource}/{ns}/{name} "
                                    f"while {other}, a member of its scope, holds a live copy "
                                    "from before it")
                    break
            if len(problems) >= limit:
                return problems
    return problems


def _holds_deletion(replica: Replica, key: tuple[str, str, str],
                    deletion: tuple[int, str]) -> bool:
    """The replica reads a copy from before ``deletion`` as deleted: it holds that deletion
    or a later change, or a fence for it (its own collection, judged on its own)."""
    entry = replica.entry(*key)
    if entry is not None:
        return entry.document().stamp >= deletion
    return key in replica.fences
