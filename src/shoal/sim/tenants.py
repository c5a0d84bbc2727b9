"""Tenants for a scoped chaos run: Scope objects over subsets of the peers, and a workload
of ConfigMaps and Secrets in their namespaces and in unscoped ones.

Everything is drawn from the run's seed, on streams of its own, so a run without scopes
is the same run as before scopes existed. Scope ``tenant-i`` holds namespace ``team-i``;
its members are between two peers and all but one (so that some peer must never see
it), and its writers all of them or a non-empty part. Writes to a scope's namespace are
made on an up writer, as the API would refuse them elsewhere; writes to the unscoped
namespaces (``default``, ``shared``) on any up peer. Values carry the tenant's name, so
a leak reads plainly in a dump.
"""

from __future__ import annotations

import base64
import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.authz.scopes import CLUSTER, ScopeMap, ScopeRule
from shoal.model.kinds import Kind
from shoal.sim.cluster import NAMESPACE, AckedWrite, SimCluster
from shoal.store.replica import Replica

SCOPE_API_VERSION = "shoal.dev/v1alpha1"
UNSCOPED = (NAMESPACE, "shared")


@dataclass(frozen=True)
class Tenants:
    objects: list[dict[str, Any]]
    """The Scope objects, as an operator would write them."""
    scopes: ScopeMap
    """What they mean: the truth the checkers judge every replica against (while no
    membership changes; after changes, the converged replicas' own Scope objects)."""
    namespaces: list[str]
    """Every namespace the workload writes to, scoped or not."""
    ever: dict[str, set[str]] = field(default_factory=dict)
    """Per scope, every peer that any version of it named as a member."""
    changes: list[str] = field(default_factory=list)
    """The membership edits made during the run."""
    removed: dict[tuple[str, str], list[tuple[float, float | None]]] = field(
        default_factory=dict)
    """(scope, peer) -> the spans of virtual seconds from an edit that removed the peer from
    it (or from its writers) to the edit that made it a writer again (None: none since)."""
    supers: dict[str, list[str]] = field(default_factory=dict)
    """Weak peer -> the super-peers of its site (with sites)."""

    def revoked(self, w: AckedWrite) -> bool:
        """Whether ``w`` was made by a peer after an edit had removed it from the write's
        scope, and before one made it a writer again: the peer accepted it before it
        learned, and the other members refuse it, as they must (so no checker expects it
        kept)."""
        scope = self.scopes.scope_of(w.resource, w.namespace)
        return any(start <= w.at and (end is None or w.at < end)
                   for start, end in self.removed.get((scope, w.node), ()))

    def unrecorded(self, w: AckedWrite, truth: ScopeMap) -> bool:
        """Whether ``w``'s peer is neither a writer of its scope by the final Scope nor
        recorded there as one until the write's stamp: every member refuses such a write
        (the writer rule, docs/semantics.md), so none can keep it. Concurrent edits of a
        Scope leave such writes: one side adds a peer, the other removes another, the
        later members list wins and the added peer's writes as a member are refused
        (issue 10's membership-change seed 44)."""
        scope = truth.scope_of(w.resource, w.namespace)
        return not (truth.is_writer(scope, w.node)
                    or truth.was_writer(scope, w.node, w.snapshot.max_stamp()))

    def exempt(self, truth: ScopeMap) -> Callable[[AckedWrite], bool]:
        """The writes no member need keep: revoked, or refused under ``truth``."""
        return lambda w: self.revoked(w) or self.unrecorded(w, truth)

    def __post_init__(self) -> None:
        for name in self.scopes.names():
            self.ever.setdefault(name, set()).update(self.scopes.members(name) or ())

    def writers(self, namespace: str, up: list[str]) -> list[str]:
        scope = self.scopes.scope_of_namespace(namespace)
        if scope == CLUSTER:
            return up
        return [n for n in up if self.scopes.is_writer(scope, n)]

    def truth(self, replicas: Mapping[str, Replica]) -> ScopeMap:
        """The scopes to judge converged replicas by: as planned, or once membership has
        changed, as the first replica holds them (the cluster scope, Scope objects
        included, must be identical everywhere for the run to count as converged)."""
        if not self.changes:
            return self.scopes
        return ScopeMap.build(next(iter(replicas.values())))

    def ever_map(self) -> ScopeMap:
        """The scopes with every peer ever named a member: a peer outside this map must
        never have held anything of the scope, however membership changed."""
        return ScopeMap([ScopeRule(r.name, r.namespaces, None, frozenset(self.ever[r.name]),
                                   None, None) for r in self.scopes.rules.values()])


def plan(peers: list[str], count: int, seed: int,
         supers: Mapping[str, list[str]] | None = None) -> Tenants:
    """``supers``: the super-peers a weak peer syncs through; a scope with a weak member
    also gets them as members and writers: it could not sync the scope otherwise, since
    only writers relay (``mesh.replication_policy``)."""
    rng = random.Random(f"{seed}:tenants")
    objects = []
    for i in range(count):
        size = rng.randint(min(2, len(peers) - 1), max(1, len(peers) - 1)) if len(peers) > 1 else 1
        members = sorted(rng.sample(peers, size))
        relays = sorted({s for m in members for s in (supers or {}).get(m, ())})
        members = sorted({*members, *relays})
        spec: dict[str, Any] = {"namespaces": [f"team-{i}"], "members": members}
        if rng.random() < 0.5:
            writers = rng.sample(members, rng.randint(1, len(members)))
            spec["writers"] = sorted({*writers, *relays})
        objects.append({"apiVersion": SCOPE_API_VERSION, "kind": "Scope",
                        "metadata": {"name": f"tenant-{i}"}, "spec": spec})
    rules = [r for r in (ScopeRule.parse(o) for o in objects) if r is not None]
    return Tenants(objects, ScopeMap(rules), [*UNSCOPED, *(f"team-{i}" for i in range(count))],
                   supers={k: list(v) for k, v in (supers or {}).items()})


def scope_kind(cluster: SimCluster) -> Kind:
    kind = cluster.registry.by_kind(SCOPE_API_VERSION, "Scope")
    assert kind is not None
    return kind


async def create(cluster: SimCluster, tenants: Tenants) -> None:
    """The namespaces and Scope objects, written on the first peer (the mesh spreads them)."""
    first = next(iter(cluster.nodes.values()))
    for ns in tenants.namespaces:
        if ns != NAMESPACE:
            await first.store.create(cluster.namespace_kind, {"metadata": {"name": ns}})
    kind = scope_kind(cluster)
    for obj in tenants.objects:
        await first.store.create(kind, obj)
    cluster.network.note(f"{len(tenants.objects)} scopes written on {first.name}")


def everywhere(cluster: SimCluster, tenants: Tenants) -> bool:
    """Every peer holds every namespace and every Scope object."""
    kind = scope_kind(cluster)
    for node in cluster.nodes.values():
        r = node.replica
        if any(r.get("namespaces", "", ns) is None for ns in tenants.namespaces):
            return False
        if any(r.get(kind.resource, "", o["metadata"]["name"]) is None for o in tenants.objects):
            return False
    return True


async def random_write(cluster: SimCluster, tenants: Tenants, rng: random.Random) -> bool:
    """One create, update or delete of a ConfigMap or Secret, on a peer allowed to make it
    (as the API decides: by that peer's own Scope objects)."""
    namespace = rng.choice(tenants.namespaces)
    secret = rng.random() < 0.5
    writers = []
    for n in cluster.up_nodes():
        own = ScopeMap.build(n.replica)
        if own.is_writer(own.scope_of_namespace(namespace), n.name):
            writers.append(n.name)
    name = f"{'secret' if secret else 'cm'}-{rng.randrange(cluster.name_pool)}"
    roll, key, value = rng.random(), f"k{rng.randrange(4)}", rng.randrange(1_000_000)
    if not writers:
        cluster.network.note(f"no writer up for {namespace}")
        return False
    node = cluster.nodes[rng.choice(writers)]
    kind = cluster.secret if secret else cluster.configmap
    exists = node.replica.get(kind.resource, namespace, name) is not None
    op = "create" if not exists else ("update" if roll < 0.7 else "delete")
    text = f"{namespace}-{name}-{value}"  # the tenant's namespace in every value
    data = {key: base64.b64encode(text.encode()).decode() if secret else text}
    return await cluster.write(node, op, name, data, kind, namespace)


async def change_members(cluster: SimCluster, tenants: Tenants, rng: random.Random) -> bool:
    """An operator edits one Scope on an up peer: adds a peer that is not a member, or
    removes one (never the last writer). Returns whether the edit was stored."""
    up = cluster.up_nodes()
    if not up or not tenants.objects:
        return False
    node = rng.choice(up)
    name = rng.choice(tenants.objects)["metadata"]["name"]
    kind = scope_kind(cluster)
    current = node.store.find(kind, "", name)
    if current is None:
        return False
    obj = copy.deepcopy(current)
    spec = obj["spec"]
    members: list[str] = list(spec.get("members") or [])
    writers: list[str] | None = spec.get("writers")
    if writers is not None:
        # Two concurrent edits merge into one side's members and the other's writers (each
        # list is one value), which can name a writer that is no member: such a writer is
        # none (``ScopeMap``), and validation refuses an update that keeps it, so the
        # operator's edit keeps only the writers that are members (seed 20 of the sweep
        # with 6 changes stopped on that refusal), or, if none is, lets every member write
        # again (a scope without a writer could take no write, and has no member to pull
        # from).
        writers = [w for w in writers if w in members] or None
        if writers is None:
            del spec["writers"]
    was = set(members if writers is None else writers)
    outsiders = sorted(set(cluster.nodes) - set(members))
    removable = [m for m in members if writers is None or m not in writers or len(writers) > 1]
    # As the plan: a weak member keeps a super-peer of its site among the members (else
    # it is stranded: ``ReplicationPolicy.stranded``), so such a super-peer stays.
    removable = [m for m in removable if not any(
        m in sup and not set(sup) & (set(members) - {m})
        for w, sup in tenants.supers.items() if w in members)]
    if len(members) < 2 or len(removable) == 0:
        removable = []
    if outsiders and (not removable or rng.random() < 0.5):
        peer = rng.choice(outsiders)
        # A weak peer comes with its site's super-peers, as members and writers (the plan).
        relays = [s for s in tenants.supers.get(peer, ()) if s not in members]
        spec["members"] = sorted([*members, peer, *relays])
        if writers is not None:
            spec["writers"] = sorted({*writers, *relays})
        what = f"{name} +{peer}" + "".join(f" +{s}" for s in relays)
    elif removable:
        peer = rng.choice(removable)
        spec["members"] = [m for m in members if m != peer]
        if writers is not None:
            spec["writers"] = [w for w in writers if w != peer]
        what = f"{name} -{peer}"
        spans = tenants.removed.setdefault((name, peer), [])
        if not spans or spans[-1][1] is not None:
            spans.append((cluster.loop.time(), None))
    else:
        return False
    now = spec.get("writers")
    for again in set(spec["members"] if now is None else now) - was:
        open_spans = tenants.removed.get((name, again))
        if open_spans and open_spans[-1][1] is None:  # a writer again: its writes count
            open_spans[-1] = (open_spans[-1][0], cluster.loop.time())  # from now
    await node.store.update(kind, obj, "", name)
    tenants.ever.setdefault(name, set()).update(spec["members"])
    tenants.changes.append(what)
    cluster.network.note(f"scope change on {node.name}: {what}")
    return True
