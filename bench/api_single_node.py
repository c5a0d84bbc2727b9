"""One node on loopback: create, get, list and watch fan-out figures.

The pods name a scheduler nobody runs (``bench-unscheduled``), so they stay
Pending: this measures the API and the store, not 10,000 host processes.

Load comes from ``wrk`` (Debian's package, C, so the client is not the
bottleneck) for creates and gets, and from aiohttp for the list and the watchers.

``python -m bench.api_single_node [--quick] [--src=DIR]``: ``--src`` runs the ``shoal``
of another tree (a ``git archive`` of an older commit, 72314ee's too) with this venv.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

BIN = Path(sys.executable).parent

CREATE_LUA = """
counter = 0
next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function init(args)
  counter = 0
end
request = function()
  counter = counter + 1
  local body = '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bench-' .. tid .. '-' ..
    counter .. '","labels":{"app":"bench"}},"spec":{"schedulerName":"bench-unscheduled","containers":[{"name":"c","image":' ..
    '"busybox:1.36","command":["sleep","3600"],"resources":{"requests":{"cpu":"10m"}}}]}}'
  return wrk.format("POST", "/api/v1/namespaces/default/pods", nil, body)
end
"""


RUN_SHOAL = "import sys; from shoal.cli.main import main; sys.argv[0] = 'shoal'; sys.exit(main())"


def shoal_of(src: Path | None, work: Path) -> Path:
    """The ``shoal`` command of this venv, or one running the package under ``src``."""
    if src is None:
        return BIN / "shoal"
    script = work / "shoal"
    drop = ""
    if "proxy-mode" not in (src / "shoal" / "cli" / "main.py").read_text():
        # An older tree (72314ee, the issue's) has no --proxy-mode: drop the flag.
        drop = ('for a; do shift; [ "$skip" ] && { skip=; continue; }; '
                '[ "$a" = --proxy-mode ] && { skip=1; continue; }; set -- "$@" "$a"; done\n')
    script.write_text(f"#!/bin/sh\n{drop}PYTHONPATH={src} exec {sys.executable} "
                      f"-c \"{RUN_SHOAL}\" \"$@\"\n")
    script.chmod(0o755)
    return script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    extra_args: tuple[str, ...] = ()  # more ``shoal server`` flags

    def __init__(self, work: Path, shoal: Path | None = None) -> None:
        self.work = work
        self.shoal = shoal or BIN / "shoal"
        self.port = _free_port()
        self.data = work / "data"
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.work / "shoal.log", "wb")  # noqa: SIM115 - kept for the process's life
        self.proc = subprocess.Popen(
            [str(self.shoal), "server", "--name", "bench-1", "--data-dir", str(self.data),
             "--api-port", str(self.port), "--log-level", "warning", "--runtime", "process",
             "--proxy-mode", "none", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        import urllib.request

        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("shoal did not start")

    @property
    def token(self) -> str:
        return (self.data / "pki" / "admin.token").read_text().strip()

    def rss_mb(self) -> float:
        assert self.proc is not None
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 1e6

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)


def _wrk(node: Node, path: str, seconds: int, connections: int, threads: int,
         script: str | None = None) -> dict[str, Any]:
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
            "-H", f"Authorization: Bearer {node.token}", "-H", "Content-Type: application/json"]
    if script:
        f = node.work / "script.lua"
        f.write_text(script)
        args += ["-s", str(f)]
    out = subprocess.run([*args, node.url + path], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat: dict[str, float] = {}
    for pct, val, unit in re.findall(r"\s(50|75|90|99)%\s+([\d.]+)(us|ms|s)", out):
        lat[f"p{pct}_ms"] = float(val) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests_per_s": rps, **lat, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else "", "raw": out}


async def _any_pod(node: Node, namespace: str = "default") -> str:
    ctx = ssl.create_default_context(cafile=str(node.data / "pki" / "ca.crt"))
    headers = {"Authorization": f"Bearer {node.token}"}
    url = f"{node.url}/api/v1/namespaces/{namespace}/pods?limit=1"
    async with aiohttp.ClientSession(headers=headers) as s, s.get(url, ssl=ctx) as r:
        return str((await r.json())["items"][0]["metadata"]["name"])


async def _list_pods(node: Node) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=str(node.data / "pki" / "ca.crt"))
    headers = {"Authorization": f"Bearer {node.token}"}
    peak = node.rss_mb()
    async with aiohttp.ClientSession(headers=headers) as s:
        times = []
        count = 0
        for _ in range(3):
            t0 = time.perf_counter()
            async with s.get(f"{node.url}/api/v1/pods", ssl=ctx) as r:
                body = await r.read()
            times.append(time.perf_counter() - t0)
            peak = max(peak, node.rss_mb())
            count = len(json.loads(body)["items"])
        return {"pods": count, "seconds_best": min(times), "seconds_all": times,
                "bytes": len(body), "rss_mb_after": node.rss_mb(), "rss_mb_peak_sampled": peak}


async def _watch_fanout(node: Node, watchers: int) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=str(node.data / "pki" / "ca.crt"))
    headers = {"Authorization": f"Bearer {node.token}"}
    conn = aiohttp.TCPConnector(limit=0, ssl=ctx)
    async with aiohttp.ClientSession(headers=headers, connector=conn) as s:
        async with s.get(f"{node.url}/api/v1/namespaces/default/configmaps") as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        ready = 0
        got: list[float] = []
        all_ready = asyncio.Event()

        async def one() -> None:
            nonlocal ready
            url = (f"{node.url}/api/v1/namespaces/default/configmaps?watch=true"
                   f"&resourceVersion={rv}&timeoutSeconds=120")
            async with s.get(url) as resp:
                ready += 1
                if ready == watchers:
                    all_ready.set()
                line = await resp.content.readline()
                if line:
                    got.append(time.perf_counter())

        tasks = [asyncio.create_task(one()) for _ in range(watchers)]
        await asyncio.wait_for(all_ready.wait(), 120)
        await asyncio.sleep(1.0)
        t0 = time.perf_counter()
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fanout"}}
        async with s.post(f"{node.url}/api/v1/namespaces/default/configmaps", json=body) as r:
            assert r.status == 201, await r.text()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        lat = sorted(t - t0 for t in got)
        return {"watchers": watchers, "received": len(got),
                "first_ms": lat[0] * 1000, "p50_ms": lat[len(lat) // 2] * 1000,
                "last_ms": lat[-1] * 1000}


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def run(quick: bool = False, src: Path | None = None) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (Debian package wrk)")
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    node = Node(work, shoal_of(src, work))
    node.start()
    seconds = 3 if quick else 10
    try:
        result: dict[str, Any] = {"machine": _machine()}
        create = _wrk(node, "/api/v1/namespaces/default/pods", seconds, 16, 2, CREATE_LUA)
        result["create_16_clients"] = {k: v for k, v in create.items() if k != "raw"}
        # Fill up to 10,000 pods for the list figures.
        count = int(create["requests_per_s"] * seconds)
        if count < 10_000:
            fill = _wrk(node, "/api/v1/namespaces/default/pods",
                        max(2, int((10_000 - count) / max(create["requests_per_s"], 1)) + 2), 16, 2,
                        CREATE_LUA.replace("bench-", "fill-"))
            result["fill"] = {"requests_per_s": fill["requests_per_s"]}
        target = asyncio.run(_any_pod(node))
        get = _wrk(node, f"/api/v1/namespaces/default/pods/{target}", seconds, 16, 2)
        result["get_16_clients"] = {k: v for k, v in get.items() if k != "raw"}
        result["list_pods"] = asyncio.run(_list_pods(node))
        result["watch_fanout"] = asyncio.run(_watch_fanout(node, 1000))
        result["rss_mb_end"] = node.rss_mb()
        return result
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    src_arg = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--src=")), None)
    print(json.dumps(run(quick="--quick" in sys.argv, src=Path(src_arg) if src_arg else None),
                     indent=2))
