"""Pod startup with the process runtime: create -> Running latency, and the node's RSS.

One ``shoal server`` on loopback. The pods (``sleep``) are created through the API
ten at a time while a watch notes when each first reports phase Running. RSS is the
server process's (the API, the replica and the node agent share it), measured with
no pods and again with every pod running. Goals (issue 5): p99 <= 1 s, RSS <= 60 MB.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.api_single_node import Node


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def process_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "bench-1", "containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}


async def measure(node: Node, count: int, pod: Callable[[str], dict[str, Any]] = process_pod,
                  settle: float = 2.0) -> dict[str, Any]:
    """Create ``count`` pods 10 at a time; create-to-Running latencies from a watch."""
    ctx = ssl.create_default_context(cafile=str(node.data / "pki" / "ca.crt"))
    headers = {"Authorization": f"Bearer {node.token}"}
    base = f"{node.url}/api/v1/namespaces/default/pods"
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    all_running = asyncio.Event()
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        async with s.get(base) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]

        async def watch() -> None:
            async with s.get(base, params={"watch": "true", "resourceVersion": rv},
                             timeout=aiohttp.ClientTimeout(total=None)) as r:
                async for line in r.content:
                    ev = orjson.loads(line)
                    obj = ev["object"]
                    name = obj["metadata"]["name"]
                    if (obj.get("status") or {}).get("phase") == "Running" \
                            and name not in running:
                        running[name] = time.monotonic()
                        if len(running) == count:
                            all_running.set()
                            return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        sem = asyncio.Semaphore(10)

        async def create(i: int) -> None:
            name = f"bench-{i}"
            body = pod(name)
            async with sem:
                created[name] = time.monotonic()
                async with s.post(base, data=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 201, await r.text()

        t0 = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(count)))
        await asyncio.wait_for(all_running.wait(), timeout=120)
        total = time.monotonic() - t0
        watcher.cancel()
        await asyncio.sleep(settle)  # let status writes and allocations settle
        rss = node.rss_mb()
        lat = [running[n] - created[n] for n in created]
        async with s.delete(base, params={"gracePeriodSeconds": "0"}) as r:
            assert r.status == 200
    return {
        "pods": count,
        "create_to_running_p50_s": round(statistics.median(lat), 3),
        "create_to_running_p99_s": round(_pct(lat, 99), 3),
        "create_to_running_max_s": round(max(lat), 3),
        "all_running_after_s": round(total, 3),
        "server_rss_with_pods_mb": round(rss, 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-pods-"))
    node = Node(work)
    node.start()
    try:
        time.sleep(1.0)
        idle = node.rss_mb()
        result = asyncio.run(measure(node, 20 if quick else 100))
        result["server_rss_idle_mb"] = round(idle, 1)
        result["agent_rss_delta_mb"] = round(result["server_rss_with_pods_mb"] - idle, 1)
        result["goals"] = {"p99_s": 1.0, "rss_mb": 60}
        return result
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
