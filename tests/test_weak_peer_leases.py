"""A weak peer holds no node's Lease but its own (issue 10; docs/semantics.md, "Node
Leases"): the simulator's peers with sites, the real controllers and simulated kubelets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shoal.api.admission import Admission, AdmissionRequest
from shoal.api.errors import ApiError
from shoal.api.weak_leases import WeakPeerLeases
from shoal.authz.user import UserInfo
from shoal.control.node_lifecycle import UNREACHABLE
from shoal.mesh import config as mesh_config
from shoal.mesh.topology import Role
from shoal.model.kinds import KindRegistry
from shoal.sim.control_plane import ControlCluster
from shoal.sim.loop import run as virtual_run
from shoal.sim.super_peers import Layout, RoleCluster

LEASE = "leases.coordination.k8s.io"
NODE_LEASES = "kube-node-lease"


def _leases(cluster: RoleCluster, name: str) -> list[str]:
    """The Leases of kube-node-lease that peer ``name`` holds (deleted ones left out)."""
    return sorted(key[2] for key, e in cluster.nodes[name].replica.all_entries()
                  if key[0] == LEASE and key[1] == NODE_LEASES and e.value is not None)


def _unreachable(cluster: RoleCluster, seen_by: str) -> list[str]:
    """The Nodes that carry the unreachable taint in ``seen_by``'s replica."""
    out = []
    for key, e in cluster.nodes[seen_by].replica.all_entries():
        if key[0] == "nodes" and e.value is not None and any(
                t.get("key") == UNREACHABLE for t in (e.value.get("spec") or {}).get("taints")
                or []):
            out.append(key[2])
    return sorted(out)


def _simulate(seed: int) -> dict[str, Any]:
    """Two sites of 2 super-peers and a weak peer each, and a full peer: settled, then the
    first site's weak peer cut off for 90 s and healed, then one super-peer of the second
    site killed for 90 s."""
    found: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cluster = RoleCluster(0, seed, mesh_config.sim(), loop,  # type: ignore[arg-type]
                              layout=Layout(sites=2, supers_per_site=2, weak_per_site=1,
                                            full=1))
        cp = ControlCluster(cluster)
        await cp.start()
        try:
            full = cluster.names(Role.FULL)[0]
            weak, far = cluster.names(Role.WEAK)
            await asyncio.sleep(60.0)
            found["leases"] = {n: _leases(cluster, n) for n in cluster.nodes}
            found["settled"] = _unreachable(cluster, full)
            net = cluster.network
            net.partition([[cluster.nodes[weak].address],
                           [n.address for n in cluster.nodes.values() if n.name != weak]])
            await asyncio.sleep(90.0)
            found["cut_off_full"] = _unreachable(cluster, full)
            found["cut_off_weak"] = _unreachable(cluster, weak)
            net.heal()
            await asyncio.sleep(60.0)
            found["healed"] = _unreachable(cluster, full)
            await cp.kill(cluster.names(Role.SUPER, cluster.role[far][1])[0])
            await asyncio.sleep(90.0)
            found["one_super_dead"] = _unreachable(cluster, full)
            found["far_leases"] = _leases(cluster, far)
            found["weak"], found["far"], found["everyone"] = weak, far, sorted(cluster.nodes)
            found["site"] = {n: site for n, (_, site) in cluster.role.items()}
            found["errors"] = list(cp.errors.messages)
        finally:
            await cp.stop()

    virtual_run(main())
    return found


@pytest.mark.parametrize("seed", [1])
def test_a_weak_peer_holds_only_its_own_lease_and_its_node_is_judged_by_the_others(
        seed: int) -> None:
    found = _simulate(seed)
    weak, far, everyone = found["weak"], found["far"], found["everyone"]
    site = found["site"]
    for name, leases in found["leases"].items():
        # A full peer holds every node's Lease; a super-peer every one but the weak nodes'
        # of other sites (no regions here); a weak peer its own only.
        assert leases == ([name] if name in (weak, far) else [
            n for n in everyone if n not in (weak, far) or site[n] == site[name]
            or name == everyone[0]]), name
    assert found["settled"] == []  # every node Ready, the weak ones included
    # Cut off: the others judge its node unreachable; it judges nobody (it holds no
    # other node's Lease), though it sees none of them renew.
    assert found["cut_off_full"] == [weak]
    assert found["cut_off_weak"] == []
    assert found["healed"] == []
    # One of its super-peers dead: the far weak peer syncs through the other, its node
    # stays Ready and it still holds only its own Lease.
    dead = [n for n in found["one_super_dead"] if n != far]
    assert far not in found["one_super_dead"] and len(dead) == 1
    assert found["far_leases"] == [far]
    assert found["errors"] == []


def _request(name: str, namespace: str = NODE_LEASES) -> AdmissionRequest:
    kind = KindRegistry().by_kind("coordination.k8s.io/v1", "Lease")
    assert kind is not None
    return AdmissionRequest(UserInfo("admin", groups=("system:masters",)), "UPDATE", kind,
                            namespace, name, "", {"metadata": {"name": name}}, None)


def test_a_weak_peer_refuses_a_write_to_another_nodes_lease() -> None:
    hook = WeakPeerLeases("pi-1")
    ctx = Admission.__new__(Admission)  # the hook reads nothing from the context
    with pytest.raises(ApiError) as e:
        hook(_request("pi-2"), ctx)  # type: ignore[arg-type]
    assert e.value.code == 403 and "weak peer" in e.value.message
    hook(_request("pi-1"), ctx)  # type: ignore[arg-type]  # its own
    hook(_request("pi-2", "default"), ctx)  # type: ignore[arg-type]  # elsewhere


def test_a_change_reaches_a_weak_peer_once_and_does_not_go_back_up() -> None:
    """Pulled from one super-peer of its site, not from each, and not sent back up to
    them: at 959d450 each change went up once (a super-peer pulled it back from the weak
    peer), which this fails on."""
    from collections import Counter

    from shoal.sim.cluster import NAMESPACE, RESOURCE

    down: Counter[str] = Counter()
    up: Counter[str] = Counter()
    names = [f"copy-{i}" for i in range(6)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        c = RoleCluster(0, 3, mesh_config.sim(), loop,  # type: ignore[arg-type]
                        layout=Layout(sites=1, supers_per_site=2, weak_per_site=1, full=1))
        await c.start()
        weak = c.names(Role.WEAK)[0]
        supers = {c.nodes[n].address for n in c.names(Role.SUPER)}
        at = c.nodes[weak].address

        def observe(src: str, dst: str, payload: bytes) -> None:
            for n in names:
                if n.encode() in payload:
                    if src in supers and dst == at:
                        down[n] += 1
                    elif src == at and dst in supers:
                        up[n] += 1

        await asyncio.sleep(20)
        c.network.observers.append(observe)
        full = c.nodes[c.names(Role.FULL)[0]]
        for n in names:
            assert await c.write(full, "create", n, {"k": "v"})
            await asyncio.sleep(3)
        await asyncio.sleep(40)
        assert all(c.nodes[weak].replica.get(RESOURCE, NAMESPACE, n) for n in names)
        await c.stop()

    virtual_run(main())
    assert down == Counter({n: 1 for n in names})
    assert up == Counter()


class _View:
    def __init__(self, name: str) -> None:
        self.name = name

    def live(self) -> list[str]:
        return ["s1", "w1", "s2"]

    def weak(self) -> list[str]:
        return ["w1", "w2"]


def test_weak_peers_are_no_actors_for_what_the_leases_decide() -> None:
    from shoal.control.ownership import SinglePeer, lease_actors

    assert lease_actors(_View("s1")) == ["s1", "s2"]
    assert lease_actors(_View("s1"), exclude="s2") == ["s1"]
    assert lease_actors(_View("w1")) == []  # a weak peer acts for none of it
    assert lease_actors(SinglePeer("a")) == ["a"]  # a view that knows no roles


def _deployment_history(seed: int) -> dict[str, Any]:
    """Two sites of 2 super-peers and 2 weak peers each, and a full peer, settled; a
    Deployment of 8 made on the full peer; every ReplicaSet and pod of it that any replica
    held over the next 120 s, and who created each."""
    found: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cluster = RoleCluster(0, seed, mesh_config.sim(), loop,  # type: ignore[arg-type]
                              layout=Layout(sites=2, supers_per_site=2, weak_per_site=2,
                                            full=1))
        cp = ControlCluster(cluster)
        await cp.start()
        try:
            full = cluster.nodes[cluster.names(Role.FULL)[0]]
            await asyncio.sleep(60.0)
            deploy = full.store.registry.by_kind("apps/v1", "Deployment")
            assert deploy is not None
            labels = {"app": "web"}
            await full.store.create(deploy, {"metadata": {"name": "web"}, "spec": {
                "replicas": 8, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}},
                "default")
            created: dict[tuple[str, str], str | None] = {}
            for _ in range(120):
                await asyncio.sleep(1.0)
                for node in cluster.nodes.values():
                    for key, e in node.replica.all_entries():
                        if key[0] in ("pods", "replicasets.apps") and key[1] == "default" \
                                and e.value is not None and (key[0], key[2]) not in created:
                            created[(key[0], key[2])] = e.document().writer_at(
                                "metadata", "uid")
            found["created"] = created
            found["weak"] = cluster.names(Role.WEAK)
            found["errors"] = list(cp.errors.messages)
        finally:
            await cp.stop()

    virtual_run(main())
    return found


@pytest.mark.parametrize("seed", [3, 4])
def test_weak_peers_that_see_their_super_peers_act_for_nothing(seed: int) -> None:
    # A weak peer's member list is its site's super-peers: a rendezvous over it picked the
    # weak peer for objects a full peer also picked, so two actors made surplus pods.
    found = _deployment_history(seed)
    created = found["created"]
    pods = [name for kind, name in created if kind == "pods"]
    assert len(pods) == 8, sorted(pods)
    assert [k for k, w in created.items() if w in found["weak"]] == []
    assert found["errors"] == []
