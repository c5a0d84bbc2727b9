"""One node under 200 concurrent clients for 60 s: errors, latency, and memory given back.

Each client loops over a mix: half gets of one of 1,000 pods, a quarter lists of those
pods (about 1.6 MB each), a quarter creates (a ConfigMap, deleted again by the same
client, under one of five names per client, so the data set and its tombstones stay
the same size and the memory after the burst can be compared with the memory before
it). The clients run in a separate process (aiohttp),
on the same two cores as the node. Meanwhile ``/readyz`` is probed four times a second,
as a kubelet or load balancer would, on the API port (TLS, served by the event loop)
and on the health port (``--health-port``, plain HTTP, served by a thread): their
latencies say whether health checks starve.

Figures: requests and errors per operation, p50/p99 latency, RSS idle (after the
fill), peak RSS (sampled every 0.25 s), RSS right after and 30 s after the load
(goal: within 20 % of idle).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.api_single_node import Node, _free_port, _machine

CLIENTS = 200
PODS = 1_000
NAMES_PER_CLIENT = 5
"""Each client creates and deletes ConfigMaps under these few names over and over, so the
replica's tombstones (state, not load) stay at 1,000 whatever the throughput."""


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 2)


async def _clients(url: str, token: str, ca: str, pods: list[str], seconds: float,
                   clients: int) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=ca)
    headers = {"Authorization": f"Bearer {token}"}
    lat: dict[str, list[float]] = {"get": [], "list": [], "create": []}
    errors: dict[str, int] = {"get": 0, "list": 0, "create": 0, "delete": 0}
    codes: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=0, ssl=ctx)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, connector=conn, timeout=timeout) as s:

        async def one(i: int) -> None:
            rng = random.Random(i)
            n = 0
            while time.monotonic() < deadline:
                r = rng.random()
                op = "get" if r < 0.5 else "list" if r < 0.75 else "create"
                t0 = time.perf_counter()
                try:
                    if op == "get":
                        async with s.get(f"{url}/api/v1/namespaces/default/pods/"
                                         f"{rng.choice(pods)}") as resp:
                            await resp.read()
                            ok = resp.status == 200
                    elif op == "list":
                        async with s.get(f"{url}/api/v1/namespaces/default/pods") as resp:
                            await resp.read()
                            ok = resp.status == 200
                    else:
                        n += 1
                        name = f"load-{i}-{n % NAMES_PER_CLIENT}"
                        body = {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": name}, "data": {"k": "v" * 200}}
                        async with s.post(f"{url}/api/v1/namespaces/load/configmaps",
                                          json=body) as resp:
                            await resp.read()
                            ok = resp.status == 201
                    lat[op].append(time.perf_counter() - t0)
                    if not ok:
                        errors[op] += 1
                        codes[str(resp.status)] = codes.get(str(resp.status), 0) + 1
                    if op == "create" and ok:
                        async with s.delete(f"{url}/api/v1/namespaces/load/configmaps/"
                                            f"{name}") as resp:
                            await resp.read()
                            if resp.status != 200:
                                errors["delete"] += 1
                except (aiohttp.ClientError, TimeoutError) as e:
                    errors[op] += 1
                    codes[type(e).__name__] = codes.get(type(e).__name__, 0) + 1

        await asyncio.gather(*(one(i) for i in range(clients)))
    everything = [x for v in lat.values() for x in v]
    return {
        "requests": len(everything), "requests_per_s": round(len(everything) / seconds, 1),
        "errors": errors, "error_codes": codes,
        "p50_ms": _pct(everything, 0.5), "p99_ms": _pct(everything, 0.99),
        "by_op": {op: {"requests": len(v), "p50_ms": _pct(v, 0.5), "p99_ms": _pct(v, 0.99)}
                  for op, v in lat.items()},
    }


def _client_process(args: tuple[str, str, str, list[str], float, int], out: Any) -> None:
    out.send(asyncio.run(_clients(*args)))


PROBE_INTERVAL = 0.25


async def _probe(url: str, stop: asyncio.Event) -> list[float]:
    """``url`` every PROBE_INTERVAL, as a health checker: its latencies."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                    ok = r.status == 200
                out.append(time.perf_counter() - t0 if ok else 30.0)
            except (aiohttp.ClientError, TimeoutError):
                out.append(30.0)
            await asyncio.sleep(PROBE_INTERVAL)
    return out


async def _fill(node: Node) -> list[str]:
    ctx = ssl.create_default_context(cafile=str(node.data / "pki" / "ca.crt"))
    headers = {"Authorization": f"Bearer {node.token}"}
    names = [f"fill-{i}" for i in range(PODS)]
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(ssl=ctx, limit=16)) as s:
        async with s.post(f"{node.url}/api/v1/namespaces",
                          json={"metadata": {"name": "load"}}) as r:
            assert r.status == 201, await r.text()

        async def create(name: str) -> None:
            body = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "bench"}},
                    "spec": {"schedulerName": "bench-unscheduled", "containers": [{
                        "name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "10m"}}}]}}
            async with s.post(f"{node.url}/api/v1/namespaces/default/pods", json=body) as r:
                assert r.status == 201, await r.text()

        for i in range(0, PODS, 50):
            await asyncio.gather(*(create(n) for n in names[i:i + 50]))
    return names


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 15.0 if quick else 60.0
    after = 10.0 if quick else 30.0
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-load-"))
    node = Node(work)
    health_port = _free_port()
    node.extra_args = ("--health-port", str(health_port))
    node.start()
    try:
        result: dict[str, Any] = {"machine": _machine(), "clients": CLIENTS, "pods": PODS,
                                  "seconds": seconds}
        result["rss_mb_start"] = round(node.rss_mb(), 1)
        pods = asyncio.run(_fill(node))
        time.sleep(5.0)
        idle = node.rss_mb()
        result["rss_mb_idle"] = round(idle, 1)
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=_client_process, args=(
            (node.url, node.token, str(node.data / "pki" / "ca.crt"), pods, seconds, CLIENTS),
            child))
        proc.start()

        async def watch() -> tuple[float, list[float], list[float]]:
            stop = asyncio.Event()
            api = asyncio.create_task(_probe(f"{node.url}/readyz", stop))
            health = asyncio.create_task(_probe(f"http://127.0.0.1:{health_port}/readyz", stop))
            peak = idle
            while proc.is_alive():
                peak = max(peak, node.rss_mb())
                await asyncio.sleep(0.25)
            stop.set()
            return peak, await api, await health

        peak, api_probes, health_probes = asyncio.run(watch())
        result["load"] = parent.recv()
        proc.join()
        for key, probes in (("readyz_api_port_during_load", api_probes),
                            ("readyz_health_port_during_load", health_probes)):
            result[key] = {"probes": len(probes), "p50_ms": _pct(probes, 0.5),
                           "p99_ms": _pct(probes, 0.99), "max_ms": round(max(probes) * 1000, 1)}
        result["rss_mb_peak"] = round(peak, 1)
        result["rss_mb_right_after"] = round(node.rss_mb(), 1)
        time.sleep(after)
        result[f"rss_mb_{after:.0f}s_after"] = round(node.rss_mb(), 1)
        result["rss_after_vs_idle"] = round(node.rss_mb() / idle, 3)
        return result
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
