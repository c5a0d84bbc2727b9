"""Pod CIDRs with no coordinator: every node gets a /24, and a clash after a merge is undone."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.control.node_ipam import NodeIpam, allocate, blocks, plan
from shoal.control.ownership import SinglePeer
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import heal

REG = KindRegistry()
NODE = REG.by_kind("v1", "Node")
EVENT = REG.by_kind("v1", "Event")
NS = REG.by_kind("v1", "Namespace")
assert NODE is not None and EVENT is not None and NS is not None


def node(name: str, created: str, cidr: str | None = None) -> dict[str, Any]:
    spec = {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {}
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec}


def test_a_node_gets_the_block_its_name_hashes_to_on_every_peer() -> None:
    first = allocate("pi-1", set())
    assert first is not None and first == allocate("pi-1", set())
    net = ipaddress.ip_network(first)
    assert net.prefixlen == 24 and net.subnet_of(ipaddress.ip_network("10.42.0.0/16"))


def test_a_taken_block_is_probed_past_and_a_full_range_gives_none() -> None:
    first = allocate("pi-1", set())
    assert first is not None
    assert allocate("pi-1", {first}) not in (None, first)
    small = "10.42.0.0/23"  # two nodes' worth
    taken = {str(b) for b in blocks(small)}
    assert allocate("pi-1", taken, small) is None


def test_a_cluster_cidr_smaller_than_one_node_block_is_refused() -> None:
    try:
        blocks("10.42.0.0/25")
    except ValueError as e:
        assert "smaller than one node" in str(e)
    else:
        raise AssertionError("a /25 cluster CIDR was accepted")


def test_the_older_node_keeps_a_shared_block_and_the_younger_moves() -> None:
    old = node("b-old", "2026-01-01T00:00:00Z", "10.42.7.0/24")
    young = node("a-young", "2026-01-02T00:00:00Z", "10.42.7.0/24")
    moves = plan([young, old])
    assert set(moves) == {"a-young"}
    assert moves["a-young"] not in (None, "10.42.7.0/24")


def test_a_node_with_a_block_of_its_own_never_moves() -> None:
    nodes = [node(f"n{i}", f"2026-01-0{i + 1}T00:00:00Z", f"10.42.{i}.0/24") for i in range(5)]
    assert plan(nodes) == {}


names = st.text(alphabet="abcdefgh0123", min_size=1, max_size=6)
times = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z", "2026-01-02T00:00:00Z"])
cidrs = st.one_of(st.none(), st.sampled_from([f"10.42.{i}.0/24" for i in range(4)]))


@st.composite
def node_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    chosen = draw(st.lists(names, min_size=1, max_size=12, unique=True))
    return [node(n, draw(times), draw(cidrs)) for n in chosen]


@settings(max_examples=300, deadline=None)
@given(node_sets(), st.randoms())
def test_after_any_merge_every_node_ends_with_its_own_block_whatever_the_order(
        nodes: list[dict[str, Any]], rnd: Any) -> None:
    moves = plan(nodes)
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert plan(shuffled) == moves  # every peer plans the same
    final = {n["metadata"]["name"]: moves.get(n["metadata"]["name"], n["spec"].get("podCIDR"))
             for n in nodes}
    assert None not in final.values()
    assert len(set(final.values())) == len(final)  # no block held twice
    for cidr in {n["spec"].get("podCIDR") for n in nodes} - {None}:
        holders = sorted((n for n in nodes if n["spec"].get("podCIDR") == cidr),
                         key=lambda n: (n["metadata"]["creationTimestamp"], n["metadata"]["name"]))
        assert holders[0]["metadata"]["name"] not in moves  # the oldest holder keeps it
        assert all(h["metadata"]["name"] in moves for h in holders[1:])


async def _store(name: str) -> ObjectStore:
    s = ObjectStore(Replica(None, name), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    return s


async def test_two_nodes_that_join_on_two_sides_of_a_partition_never_keep_the_same_block() -> None:
    a, b = await _store("pa"), await _store("pb")
    try:
        await heal(a, b)
        # One node joins each side; each side's IPAM sees only its own.
        await a.create(NODE, {"metadata": {"name": "left"}})
        await NodeIpam(a, SinglePeer("pa")).sync()
        left_cidr = a.get(NODE, None, "left")["spec"]["podCIDR"]
        # Force the worst case: the right side's node is given the same block.
        await b.create(NODE, {"metadata": {"name": "right"}})
        n = copy.deepcopy(b.get(NODE, None, "right"))
        n["spec"] = {"podCIDR": left_cidr, "podCIDRs": [left_cidr]}
        await b.update(NODE, n, None, "right")
        await heal(a, b)
        older, younger = sorted(["left", "right"], key=lambda x: (
            a.get(NODE, None, x)["metadata"]["creationTimestamp"], x))
        # Every peer runs the repair; the rendezvous actor of each node writes (here: both).
        await NodeIpam(a, SinglePeer("pa")).sync()
        await NodeIpam(b, SinglePeer("pb")).sync()
        await heal(a, b)
        for s in (a, b):
            got = {x: s.get(NODE, None, x)["spec"] for x in ("left", "right")}
            assert got[older]["podCIDR"] == left_cidr
            assert got[younger]["podCIDR"] != left_cidr
            assert got[younger]["podCIDRs"] == [got[younger]["podCIDR"]]
        moved = [e for e in a.list(EVENT) if e["reason"] == "PodCIDRReassigned"]
        assert [e["involvedObject"]["name"] for e in moved] == [younger]
        assert left_cidr in moved[0]["message"]
        # A second pass changes nothing: the CIDR never moves again.
        before = a.get(NODE, None, younger)["metadata"]["resourceVersion"]
        await NodeIpam(a, SinglePeer("pa")).sync()
        assert a.get(NODE, None, younger)["metadata"]["resourceVersion"] == before
    finally:
        a.replica.close()
        b.replica.close()


async def test_a_client_still_cannot_change_a_nodes_pod_cidr() -> None:
    from shoal.store.objects import Invalid

    s = await _store("p")
    try:
        await s.create(NODE, {"metadata": {"name": "n"}})
        await NodeIpam(s, SinglePeer("p")).sync()
        n = copy.deepcopy(s.get(NODE, None, "n"))
        n["spec"]["podCIDR"] = "10.42.250.0/24"
        n["spec"]["podCIDRs"] = ["10.42.250.0/24"]
        try:
            await s.update(NODE, n, None, "n")
        except Invalid as e:
            assert "may not change podCIDR" in str(e)
        else:
            raise AssertionError("a client changed podCIDR")
    finally:
        s.replica.close()
