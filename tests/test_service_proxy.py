"""The Service proxy against real nftables, in network namespaces.

The topology (a node namespace with the pod bridge and the table, pods with
servers, a client pod, an outside machine) is tests/tools/service_lab.py.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.net import service_proxy as sp
from shoal.net.service_rules import TABLE
from tests.tools.netns import NetnsLab, _in_ci, require
from tests.tools.service_lab import (
    GATEWAY,
    NODE,
    OTHER_NODE,
    POD_PORT,
    Cluster,
    build,
    endpoint_slice,
    service,
)
from tests.tools.service_lab import ProxyHarness as Harness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require()
    why = sp.nft_usable()
    if why is not None:
        if _in_ci():
            pytest.fail(f"{why} (CI=true: the bootstrap installs nftables)")
        pytest.skip(why)
    lab = NetnsLab()
    try:
        yield build(lab)
    finally:
        lab.close()


@pytest.fixture
async def harness(cluster: Cluster) -> Any:
    h = Harness(cluster)
    for ns in ("default", "kube-system"):
        await h.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    h.proxy.start()
    await h.applied()
    yield h
    await h.proxy.stop()
    listed = cluster.node.run(["nft", "list", "tables"], capture_output=True, text=True)
    assert TABLE not in listed.stdout  # stop() leaves nothing behind


async def test_a_cluster_ip_answers_from_every_ready_endpoint_for_pods_and_the_host(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("web", "10.96.0.20"))
    await harness.create(endpoint_slice("web", {"10.42.1.10": NODE, "10.42.1.11": NODE,
                                                "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    from_pod = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.20",
                                       80, 40)
    assert set(from_pod) == {"p0", "p1", "p2"}
    from_host = await asyncio.to_thread(cluster.answers, cluster.node, "10.96.0.20", 80, 40)
    assert set(from_host) == {"p0", "p1", "p2"}


async def test_a_pod_reaches_itself_through_its_service_masqueraded_as_the_gateway(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("self", "10.96.0.21"))
    await harness.create(endpoint_slice("self", {"10.42.1.10": NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.requests, cluster.pods["p0"], "10.96.0.21", 80, 3)
    assert [body for body, _ in got] == [f"p0 {GATEWAY}"] * 3


async def test_a_node_port_answers_from_outside_the_cluster_on_the_node_address(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("np", "10.96.0.22", type="NodePort", ports=[
        {"name": "http", "port": 80, "targetPort": POD_PORT, "nodePort": 30080}]))
    await harness.create(endpoint_slice("np", {"10.42.1.10": NODE, "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.ext, cluster.node.ip, 30080, 30)
    assert set(got) == {"p0", "p2"}


async def test_client_ip_affinity_keeps_each_client_on_one_endpoint(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("sticky", "10.96.0.23", sessionAffinity="ClientIP"))
    await harness.create(endpoint_slice("sticky", {"10.42.1.10": NODE, "10.42.1.11": NODE,
                                                   "10.42.1.12": NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.23", 80, 20)
    assert len(set(got)) == 1 and got[0] in ("p0", "p1", "p2")


async def test_internal_traffic_policy_local_uses_only_this_nodes_endpoints(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("local", "10.96.0.24", internalTrafficPolicy="Local"))
    await harness.create(endpoint_slice("local", {"10.42.1.10": NODE,
                                                  "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.24", 80, 20)
    assert set(got) == {"p0"}


async def test_a_service_without_endpoints_refuses_connections_instead_of_hanging(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("empty", "10.96.0.25"))
    await harness.applied()
    # Twenty in a row: a TCP reset each time (an ICMP reject is rate-limited by the
    # kernel, and most of these would wait for their timeout instead).
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.25", 80, 20)
    assert got == ["ConnectionRefusedError"] * 20


async def test_cluster_dns_goes_to_this_nodes_own_listener(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("kube-dns", "10.96.0.10", ports=[
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]) | {
        "metadata": {"name": "kube-dns", "namespace": "kube-system"}})
    await harness.applied()
    got = await asyncio.to_thread(cluster.requests, cluster.pods["client"], "10.96.0.10", 53, 2,
                                  True)
    assert [body for body, _ in got] == ["echo ping"] * 2


async def test_an_unreachable_nodes_endpoints_drop_out_and_return_when_it_is_back(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("part", "10.96.0.26"))
    await harness.create(endpoint_slice("part", {"10.42.1.10": NODE, "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    harness.unreachable.add(OTHER_NODE)
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.26", 80, 20)
    assert set(got) == {"p0"}
    harness.unreachable.clear()
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.26", 80, 30)
    assert set(got) == {"p0", "p2"}


async def test_an_endpoint_slice_change_reaches_the_rules_and_the_traffic(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("moving", "10.96.0.27"))
    await harness.create(endpoint_slice("moving", {"10.42.1.10": NODE}))
    await harness.applied()
    delays = []
    for pods in ({"10.42.1.11": NODE}, {"10.42.1.12": NODE}, {"10.42.1.10": NODE}):
        t0 = time.monotonic()
        await harness.replace_slice(endpoint_slice("moving", pods))
        await harness.applied()
        delays.append(time.monotonic() - t0)
        expected = {"10.42.1.10": "p0", "10.42.1.11": "p1", "10.42.1.12": "p2"}[next(iter(pods))]
        got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.27",
                                      80, 5)
        assert set(got) == {expected}
    print(f"\nEndpointSlice change to rules applied: {[f'{d * 1000:.1f} ms' for d in delays]}")


async def test_request_latency_through_a_cluster_ip_against_the_pod_ip(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("lat", "10.96.0.28"))
    await harness.create(endpoint_slice("lat", {"10.42.1.10": NODE}))
    await harness.applied()
    client = cluster.pods["client"]
    direct = await asyncio.to_thread(cluster.requests, client, "10.42.1.10", POD_PORT, 200)
    via = await asyncio.to_thread(cluster.requests, client, "10.96.0.28", 80, 200)
    assert {b.split(" ")[0] for b, _ in direct} == {"p0"} == {b.split(" ")[0] for b, _ in via}
    d = statistics.median(s for _, s in direct)
    v = statistics.median(s for _, s in via)
    print(f"\nmedian request: pod IP {d * 1e6:.0f} us, cluster IP {v * 1e6:.0f} us, "
          f"ratio {v / d:.2f}")


def test_the_nft_probe_says_why_nftables_is_unusable() -> None:
    assert "missing" in (sp.nft_usable(("shoal-no-such-nft",)) or "")
