"""A node's Lease is held only near it, and judged only by peers that hold it (issue 10;
docs/semantics.md, "Node Leases"): a weak node's by its site's super-peers, a super-peer's
by its region's, every one by the full peers. The simulator's peers with sites and regions,
the real controllers and simulated kubelets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shoal.api.admission import Admission, AdmissionRequest
from shoal.api.errors import ApiError
from shoal.api.weak_leases import NodeLeases
from shoal.authz.user import UserInfo
from shoal.control.node_lifecycle import UNREACHABLE, NodeLifecycle
from shoal.mesh import config as mesh_config
from shoal.mesh.topology import Role, holds_lease
from shoal.model.kinds import KindRegistry
from shoal.sim.control_plane import ControlCluster
from shoal.sim.loop import run as virtual_run
from shoal.sim.super_peers import Layout, RoleCluster

LEASE = "leases.coordination.k8s.io"
NODE_LEASES = "kube-node-lease"


class _Member:
    def __init__(self, name: str, tags: dict[str, str]) -> None:
        self.name, self.tags = name, tags


def test_who_holds_a_nodes_lease() -> None:
    s1 = _Member("s1", {"role": "super", "site": "a", "region": "r1"})
    weak_a = {"role": "weak", "site": "a"}
    weak_b = {"role": "weak", "site": "b"}
    assert holds_lease(s1, "w1", weak_a)
    assert not holds_lease(s1, "w2", weak_b)  # a weak node of another site
    assert holds_lease(s1, "s2", {"role": "super", "site": "b", "region": "r1"})
    assert not holds_lease(s1, "s3", {"role": "super", "site": "c", "region": "r2"})
    assert holds_lease(s1, "s4", {"role": "super", "site": "d"})  # no region: every super
    assert holds_lease(s1, "f1", {})  # a full peer's
    assert holds_lease(s1, "x", None)  # a node not known here: as before
    full = _Member("f1", {})
    assert all(holds_lease(full, n, t) for n, t in (("w1", weak_a), ("w2", weak_b)))
    weak = _Member("w1", weak_a)
    assert holds_lease(weak, "w1", weak_a) and not holds_lease(weak, "s1", s1.tags)


def _request(name: str) -> AdmissionRequest:
    kind = KindRegistry().by_kind("coordination.k8s.io/v1", "Lease")
    assert kind is not None
    return AdmissionRequest(UserInfo("admin", groups=("system:masters",)), "UPDATE", kind,
                            NODE_LEASES, name, "", {"metadata": {"name": name}}, None)


def test_a_super_peer_refuses_a_write_to_a_lease_it_does_not_hold() -> None:
    hook = NodeLeases("s1", lambda name: name in ("w1", "s2"), "super")
    ctx = Admission.__new__(Admission)  # the hook reads nothing from the context
    with pytest.raises(ApiError) as e:
        hook(_request("w9"), ctx)  # type: ignore[arg-type]
    assert e.value.code == 403 and "super-peer" in e.value.message and "w9" in e.value.message
    for name in ("s1", "w1", "s2"):  # its own, its site's, its region's
        hook(_request(name), ctx)  # type: ignore[arg-type]


class _SuperView:
    """s1, a super-peer that holds the Leases of w1 and w2 only besides its own."""

    name = "s1"

    def live(self) -> list[str]:
        return ["s1"]

    def holds_lease(self, peer: str, node: str) -> bool:
        return node in (peer, "w1", "w2")


async def test_the_kubernetes_service_counts_a_node_whose_lease_it_does_not_hold() -> None:
    from shoal.control.kubernetes_service import KubernetesService
    from shoal.store.objects import ObjectStore, now_rfc3339
    from shoal.store.replica import Replica

    registry = KindRegistry()
    store = ObjectStore(Replica(None, "s1"), registry)
    node_kind = registry.by_kind("v1", "Node")
    lease_kind = registry.by_kind("coordination.k8s.io/v1", "Lease")
    ns_kind = registry.by_kind("v1", "Namespace")
    assert node_kind is not None and lease_kind is not None and ns_kind is not None
    for ns in ("default", NODE_LEASES):
        await store.create(ns_kind, {"metadata": {"name": ns}})
    now = store.replica.wall.now()
    tainted = [{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now_rfc3339(now)}]
    # w1: held and fresh; w2: held and run out; far1: not held, not judged unreachable by
    # its holders; far2: not held, judged unreachable.
    for name, ip, taints in (("w1", "10.0.0.1", []), ("w2", "10.0.0.2", []),
                             ("far1", "10.0.0.3", []), ("far2", "10.0.0.4", tainted)):
        await store.create(node_kind, {"metadata": {"name": name}, "spec": {"taints": taints},
                                       "status": {"addresses": [
                                           {"type": "InternalIP", "address": ip}]}})
    for name, renewed in (("w1", now), ("w2", now - 100)):
        await store.create(lease_kind, {"metadata": {"name": name},
                                        "spec": {"renewTime": now_rfc3339(renewed)}},
                           NODE_LEASES)
    service = KubernetesService(store, 6443, _SuperView())  # type: ignore[arg-type]
    assert service.endpoints() == [("10.0.0.1", 6443), ("10.0.0.3", 6443)]
    await asyncio.sleep(0)
    store.replica.close()


def _holders(cluster: RoleCluster, node: str) -> set[str]:
    """The peers that should hold ``node``'s Lease by the layout."""
    role, site = cluster.role[node]
    region = cluster.layout.region(site)
    out = {node}
    for name, (r, s) in cluster.role.items():
        if r == Role.FULL or (r == Role.SUPER and (
                s == site if role == Role.WEAK else
                role != Role.SUPER or cluster.layout.region(s) == region)):
            out.add(name)
    return out


def _simulate(seed: int, judged: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """Four sites of 2 super-peers and a weak peer each, two sites per region: settled, then
    the first site's weak peer and the third site's first super-peer killed for 60 s."""
    found: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cluster = RoleCluster(0, seed, mesh_config.sim(), loop,  # type: ignore[arg-type]
                              layout=Layout(sites=4, supers_per_site=2, weak_per_site=1,
                                            sites_per_region=2))
        cp = ControlCluster(cluster)
        await cp.start()
        try:
            await asyncio.sleep(45.0)
            found["held"] = {
                n: {key[2] for key, e in node.replica.all_entries()
                    if key[0] == LEASE and key[1] == NODE_LEASES and e.value is not None}
                for n, node in cluster.nodes.items()}
            found["holders"] = {n: _holders(cluster, n) for n in cluster.nodes}
            weak = cluster.names(Role.WEAK, "site-000")[0]
            dead_super = cluster.names(Role.SUPER, "site-002")[0]
            judged.clear()
            await cp.kill(weak)
            await cp.kill(dead_super)
            await asyncio.sleep(60.0)
            found["weak"], found["dead_super"] = weak, dead_super
            found["unreachable"] = {
                n: sorted(key[2] for key, e in node.replica.all_entries()
                          if key[0] == "nodes" and e.value is not None and any(
                              t.get("key") == UNREACHABLE
                              for t in (e.value.get("spec") or {}).get("taints") or []))
                for n, node in cluster.nodes.items() if node.up}
            found["errors"] = list(cp.errors.messages)
        finally:
            await cp.stop()

    virtual_run(main())
    return found


def _record_judgements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """Every (judge, node, reachable) the node lifecycle controllers set from now on."""
    judged: list[tuple[str, str, bool]] = []
    set_taints = NodeLifecycle._set

    async def recording(self: NodeLifecycle, node: dict[str, Any], reachable: bool,
                        now: float, grace: float) -> None:
        judged.append((self.view.name, node["metadata"]["name"], reachable))
        await set_taints(self, node, reachable, now, grace)

    monkeypatch.setattr(NodeLifecycle, "_set", recording)
    return judged


def test_a_nodes_lease_is_held_and_judged_near_it(monkeypatch: pytest.MonkeyPatch) -> None:
    judged = _record_judgements(monkeypatch)
    found = _simulate(1, judged)
    holders = found["holders"]
    for name, held in found["held"].items():
        # A super-peer of another site never holds a weak node's Lease, nor one of another
        # region a super-peer's; each peer holds exactly the Leases meant for it.
        assert held == {n for n in holders if name in holders[n]}, name
    weak, dead_super = found["weak"], found["dead_super"]
    # Both killed nodes are judged unreachable, by peers that hold their Lease, and that
    # reaches every peer that holds it (and further: the Node is an ordinary object).
    not_reachable = [(judge, node) for judge, node, reachable in judged if not reachable]
    assert {node for _, node in not_reachable} == {weak, dead_super}
    assert all(judge in holders[node] for judge, node in not_reachable), not_reachable
    for name, marked in found["unreachable"].items():
        assert marked == sorted([weak, dead_super]), name
    # No peer judges a node whose Lease it does not hold, in either direction.
    assert all(judge in holders[node] for judge, node, _ in judged), judged
    assert found["errors"] == []


def _cut_between_sites(seed: int, judged: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """Two sites of 2 super-peers and 2 weak peers each, no full peer, no region: settled,
    a Deployment of 8 made on the first site's super-peer, then the two sites cut apart
    for 150 s (grace 40 s, eviction 20 s)."""
    found: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cluster = RoleCluster(0, seed, mesh_config.sim(), loop,  # type: ignore[arg-type]
                              layout=Layout(sites=2, supers_per_site=2, weak_per_site=2))
        cp = ControlCluster(cluster)
        await cp.start()
        try:
            near_super = cluster.names(Role.SUPER, "site-000")[0]
            store = cluster.nodes[near_super].store
            await asyncio.sleep(30.0)
            deploy = store.registry.by_kind("apps/v1", "Deployment")
            assert deploy is not None
            labels = {"app": "web"}
            await store.create(deploy, {"metadata": {"name": "web"}, "spec": {
                "replicas": 8, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}},
                "default")
            await asyncio.sleep(30.0)
            found["healthy"] = list(judged)
            judged.clear()
            sites = {s: [n for n, (_, site) in cluster.role.items() if site == s]
                     for s in ("site-000", "site-001")}
            far_weak = cluster.names(Role.WEAK, "site-001")
            pods = store.registry.by_kind("v1", "Pod")
            assert pods is not None
            found["on_far_weak"] = [p["metadata"]["name"] for p in store.list(pods, "default")
                                    if p["spec"].get("nodeName") in far_weak]
            cluster.network.partition([[cluster.nodes[n].address for n in side]
                                       for side in sites.values()])
            # Membership drops the far peers (~35 s here), the far weak nodes are judged
            # grace after that, and their pods lost eviction timeout later.
            await asyncio.sleep(150.0)
            found["sites"], found["far_weak"] = sites, far_weak
            found["near_weak"] = cluster.names(Role.WEAK, "site-000")
            found["holders"] = {n: _holders(cluster, n) for n in cluster.nodes}
            found["tainted"] = {
                n: sorted(node["metadata"]["name"] for node in cluster.nodes[n].store.list(
                    store.registry.by_kind("v1", "Node"))  # type: ignore[arg-type]
                    if any(t.get("key") == UNREACHABLE
                           for t in (node.get("spec") or {}).get("taints") or []))
                for n in sites["site-000"]}
            near = set(sites["site-000"])
            found["counting_near"] = sorted(
                p["metadata"]["name"] for p in store.list(pods, "default")
                if p["spec"].get("nodeName") in near and not (
                    p.get("metadata") or {}).get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
            found["errors"] = list(cp.errors.messages)
        finally:
            await cp.stop()

    virtual_run(main())
    return found


def test_across_a_cut_between_sites_the_far_weak_nodes_are_judged_by_one_peer_per_side(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # With no full peer, no peer on this side holds the far site's weak nodes' Leases: they
    # are judged unreachable by one of this side's super-peers all the same, and their pods
    # replaced after the eviction timeout (before: left untainted until the heal).
    judged = _record_judgements(monkeypatch)
    found = _cut_between_sites(2, judged)
    sites, far_weak = found["sites"], found["far_weak"]
    # A healthy mesh: nobody judges a node whose Lease it does not hold.
    holders = found["holders"]
    assert all(judge in holders[node] for judge, node, _ in found["healthy"]), found["healthy"]
    assert found["on_far_weak"], "no pod on the far site's weak nodes"
    for name, tainted in found["tainted"].items():
        assert set(far_weak) <= set(tainted), (name, tainted)
    near = set(sites["site-000"])
    for node in far_weak:
        # One judge for the far weak node on this side, and none of them weak.
        judges = {j for j, n, reachable in judged if n == node and not reachable and j in near}
        assert len(judges) == 1 and not judges & set(found["near_weak"]), judges
    assert len(found["counting_near"]) == 8, found["counting_near"]
    assert found["errors"] == []
