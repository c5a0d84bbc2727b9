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
import random
from dataclasses import dataclass
from typing import Any

from shoal.authz.scopes import CLUSTER, ScopeMap, ScopeRule
from shoal.model.kinds import Kind
from shoal.sim.cluster import NAMESPACE, SimCluster

SCOPE_API_VERSION = "shoal.dev/v1alpha1"
UNSCOPED = (NAMESPACE, "shared")


@dataclass(frozen=True)
class Tenants:
    objects: list[dict[str, Any]]
    """The Scope objects, as an operator would write them."""
    scopes: ScopeMap
    """What they mean: the truth the checkers judge every replica against."""
    namespaces: list[str]
    """Every namespace the workload writes to, scoped or not."""

    def writers(self, namespace: str, up: list[str]) -> list[str]:
        scope = self.scopes.scope_of_namespace(namespace)
        if scope == CLUSTER:
            return up
        return [n for n in up if self.scopes.is_writer(scope, n)]


def plan(peers: list[str], count: int, seed: int) -> Tenants:
    rng = random.Random(f"{seed}:tenants")
    objects = []
    for i in range(count):
        size = rng.randint(min(2, len(peers) - 1), max(1, len(peers) - 1)) if len(peers) > 1 else 1
        members = sorted(rng.sample(peers, size))
        spec: dict[str, Any] = {"namespaces": [f"team-{i}"], "members": members}
        if rng.random() < 0.5:
            spec["writers"] = sorted(rng.sample(members, rng.randint(1, len(members))))
        objects.append({"apiVersion": SCOPE_API_VERSION, "kind": "Scope",
                        "metadata": {"name": f"tenant-{i}"}, "spec": spec})
    rules = [r for r in (ScopeRule.parse(o) for o in objects) if r is not None]
    return Tenants(objects, ScopeMap(rules), [*UNSCOPED, *(f"team-{i}" for i in range(count))])


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
    """One create, update or delete of a ConfigMap or Secret, on a peer allowed to make it."""
    namespace = rng.choice(tenants.namespaces)
    secret = rng.random() < 0.5
    up = [n.name for n in cluster.up_nodes()]
    writers = tenants.writers(namespace, up)
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
