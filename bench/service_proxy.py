"""The Service proxy: rules applied after an EndpointSlice change, and the cost of a cluster IP.

The lab of tests/tools/service_lab.py: a node namespace with the pod bridge, pods
with tiny TCP servers and a client pod; a real ``ServiceProxy`` over an
in-memory replica programs the node's ``ip shoal-services`` table. Measured:

- ``slice_to_rules_ms``: from an EndpointSlice update (durable in the replica)
  to the new rules applied by ``nft -f`` (each change alone, so no batching).
- ``request_us``: one TCP request (connect, request, reply, close) from the
  client pod to a pod, by its IP and through a ClusterIP, interleaved in the
  same run; ``cluster_ip_over_pod_ip`` is the ratio of the medians.
- ``large_ruleset``: rendering and applying the rules of many Services (3
  endpoints each): the first, whole-table transaction and an update that moves
  one endpoint.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from tests.tools.netns import NetnsLab
from tests.tools.service_lab import NODE, POD_PORT, ProxyHarness, build, endpoint_slice, service

from shoal.net.service_proxy import run_nft
from shoal.net.service_rules import NodeFacts, render


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def _summary(values: list[float], scale: float) -> dict[str, float]:
    return {"p50": round(_pct(values, 50) * scale, 1), "p99": round(_pct(values, 99) * scale, 1),
            "max": round(max(values) * scale, 1)}


async def _slice_changes(h: ProxyHarness, changes: int) -> list[float]:
    await h.create(service("moving", "10.96.0.30"))
    await h.create(endpoint_slice("moving", {"10.42.1.10": NODE}))
    await h.applied()
    ips = ["10.42.1.10", "10.42.1.11", "10.42.1.12"]
    delays = []
    for i in range(changes):
        applies = h.proxy.applies
        t0 = time.monotonic()
        await h.replace_slice(endpoint_slice("moving", {ips[(i + 1) % 3]: NODE}))
        while h.proxy.applies == applies:
            await asyncio.sleep(0.001)
        delays.append(time.monotonic() - t0)
    return delays


async def _large_ruleset(nft: tuple[str, ...], services: int) -> dict[str, Any]:
    svcs, slices = [], []
    for i in range(services):
        name = f"s{i}"
        svcs.append(service(name, f"10.96.{10 + i // 250}.{i % 250 + 1}")
                    | {"metadata": {"name": name, "namespace": "default"}})
        slices.append(endpoint_slice(name, {f"10.42.{1 + j}.{i % 250 + 2}": NODE
                                            for j in range(3)}))
    facts = NodeFacts(NODE)
    t0 = time.perf_counter()
    first = render(svcs, slices, facts)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    await run_nft(nft, first.script(None))
    full_s = time.perf_counter() - t0
    slices[0] = endpoint_slice("s0", {"10.42.9.9": NODE})
    second = render(svcs, slices, facts)
    t0 = time.perf_counter()
    await run_nft(nft, second.script(first))
    update_s = time.perf_counter() - t0
    await run_nft(nft, "delete table ip shoal-services\n")
    return {"services": services, "chains": len(first.chains),
            "render_ms": round(render_s * 1000, 1), "first_apply_ms": round(full_s * 1000, 1),
            "update_apply_ms": round(update_s * 1000, 1)}


async def _measure(quick: bool) -> dict[str, Any]:
    lab = NetnsLab()
    try:
        cluster = build(lab)
        h = ProxyHarness(cluster)
        for ns in ("default", "kube-system"):
            await h.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        h.proxy.start()
        try:
            delays = await _slice_changes(h, 20 if quick else 100)
            await h.create(service("lat", "10.96.0.31"))
            await h.create(endpoint_slice("lat", {"10.42.1.10": NODE}))
            await h.applied()
            client = cluster.pods["client"]
            n = 200 if quick else 1000
            direct: list[float] = []
            via: list[float] = []
            for _ in range(5):  # interleaved, so drift on a shared machine hits both alike
                direct += [s for _, s in await asyncio.to_thread(
                    cluster.requests, client, "10.42.1.10", POD_PORT, n // 5)]
                via += [s for _, s in await asyncio.to_thread(
                    cluster.requests, client, "10.96.0.31", 80, n // 5)]
        finally:
            await h.proxy.stop()
        large = await _large_ruleset(cluster.nft(), 200 if quick else 1000)
    finally:
        lab.close()
    return {
        "slice_to_rules_ms": _summary(delays, 1000),
        "request_us": {"pod_ip": _summary(direct, 1e6), "cluster_ip": _summary(via, 1e6)},
        "cluster_ip_over_pod_ip": round(statistics.median(via) / statistics.median(direct), 3),
        "large_ruleset": large,
    }


def run(quick: bool) -> dict[str, Any]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
