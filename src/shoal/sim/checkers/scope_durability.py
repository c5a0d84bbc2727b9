"""No early forgetting, per scope: every member of a scope keeps every acknowledged write
of it and revives no deletion, tombstones collected or not.

``check`` runs ``durability`` and ``resurrection`` on each member's replica against the
acknowledged writes of the scopes it holds (a write that a member never heard of, while
another keeps it under a deletion, counts as kept: both read it as deleted), each judged
without what a writer's removal revoked and without a value that a revoked change
overwrote on every member (``_lost_to_revoked``, a documented limit). ``forgotten_early``
is the cheap invariant behind them, for every step of a run: a member that collected a deletion (it holds the
fence) while another member of the scope still holds a live copy from before that
deletion forgot it too early, since that member could send the old copy back to a peer
whose fence has expired. A weak peer is judged through the super-peers it exchanges
documents with (``via``): an old copy reaches it only through them, so its collection is
early only while one of them that is a member of the scope does not hold the deletion
(docs/semantics.md, "Coverage by site"); a super-peer that collected it is judged itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping

from shoal.authz.scopes import ScopeMap
from shoal.crdt.document import C, Document, Node, S, W
from shoal.mesh import revocation
from shoal.mesh.replication_policy import revoked_rule
from shoal.sim.checkers import durability, resurrection
from shoal.sim.cluster import AckedWrite
from shoal.store.replica import Replica


def check(acked: Iterable[AckedWrite], replicas: Mapping[str, Replica], scopes: ScopeMap,
          limit: int = 5, exempt: Callable[[AckedWrite], bool] | None = None) -> list[str]:
    """``exempt`` names writes no member need keep (made by a peer after it was removed);
    they still count as creates for ``resurrection``, since a member may have kept one."""
    acked = list(acked)
    lost = _lost_to_revoked(acked, replicas, scopes)
    acked = [a for a in (_unrevoked(w, scopes, lost) for w in acked) if a is not None]
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


Key = tuple[str, str, str]
Stamp = tuple[int, str]


def _unrevoked(w: AckedWrite, scopes: ScopeMap,
               lost: Mapping[Key, revocation.Revoked] | None = None
               ) -> AckedWrite | None:
    """``w`` as the members must keep it: without the changes a writer's removal revoked
    (``mesh.revocation``), which its snapshot holds when it was made over one of them,
    and without the values a revoked change overwrote on every member (``lost``); None
    when nothing of it may be kept (a revoked create, or the revoked change itself: a
    revoked deletion is no deletion, so it must not count as one)."""
    after = scopes.revoked_after(scopes.scope_of(w.resource, w.namespace))
    if not after:
        return w
    doc = w.snapshot
    rule = revoked_rule(after, w.resource, w.namespace, w.name, doc.value(), doc.deleted)
    gone = (lost or {}).get((w.resource, w.namespace, w.name))
    kept = revocation.strip(doc, rule if gone is None else (
        lambda path, writer, stamp: rule(path, writer, stamp) or gone(path, writer, stamp)))
    if kept is doc:
        return w
    if kept is None or (w.op == "delete" and not kept.deleted):
        return None
    return dataclasses.replace(w, snapshot=kept)


def _lost_to_revoked(acked: list[AckedWrite], replicas: Mapping[str, Replica],
                     scopes: ScopeMap) -> dict[Key, revocation.Revoked]:
    """Per object, which of its fields' values a revoked change overwrote on every member
    that held them: the documented limit (docs/semantics.md, "Scopes in replication",
    Limits: "A value that a revoked change overwrote on every member that held it is
    lost"). A register below the root is one when an acknowledged snapshot holds, at its
    path, a revoked register that wins over it, and no member holds it (or a later
    register) at the end: a member that never merged the revoked change would have kept
    it, and the pull in full after the revocation brings it back to the others, so a
    value some member still holds is judged as before. A whole create is not exempt (a
    writer restores one that a revoked create displaced)."""
    over: dict[Key, dict[tuple[str, ...], Stamp]] = {}
    for w in acked:
        scope = scopes.scope_of(w.resource, w.namespace)
        after = scopes.revoked_after(scope)
        if not after:
            continue
        doc = w.snapshot
        rule = revoked_rule(after, w.resource, w.namespace, w.name, doc.value(), doc.deleted)
        found = over.setdefault((w.resource, w.namespace, w.name), {})
        for path, node in _registers(doc.root[C] or {}, ()):
            if rule(path, node[W], node[S]):
                found[path] = max(found.get(path, (0, "")), (node[S], node[W]))
    lost: dict[Key, revocation.Revoked] = {}
    for key, paths in over.items():
        if not paths:
            continue
        scope = scopes.scope_of(key[0], key[1])
        held = [e.document() for peer, r in replicas.items()
                if scopes.is_member(scope, peer) and (e := r.entry(*key)) is not None]

        def gone(path: tuple[str, ...], writer: str, stamp: int,
                 paths: dict[tuple[str, ...], Stamp] = paths,
                 held: list[Document] = held) -> bool:
            winner = paths.get(path)
            return (winner is not None and (stamp, writer) < winner
                    and all((doc.register_at(*path) or (0, "")) < (stamp, writer)
                            for doc in held))

        lost[key] = gone
    return lost


def _registers(children: Mapping[str, Node], path: tuple[str, ...]
               ) -> Iterator[tuple[tuple[str, ...], Node]]:
    for k, node in children.items():
        yield (*path, k), node
        yield from _registers(node[C] or {}, (*path, k))


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
