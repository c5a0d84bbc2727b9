"""CPU time per request of one node under 16 clients: creates and gets.

On a shared machine the rate (requests/s) follows the other tenants' load; the CPU
time the server process spent per answered request does much less, so before/after
pairs are compared by it. ``wrk`` (C) drives 16 connections as in
``bench/api_single_node``; the server's user+system CPU time over the run (psutil)
is divided by the requests wrk counted.

``python -m bench.api_load_cpu [--src=DIR] [--seconds=N]``: ``--src`` runs the
``shoal`` of another tree (e.g. a ``git archive`` of an older commit) with this venv.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.api_single_node import CREATE_LUA, Node, _any_pod, _wrk, shoal_of
from bench.footprint import FreshNode


def _cpu_s(node: Node) -> float:
    assert node.proc is not None
    t = psutil.Process(node.proc.pid).cpu_times()
    return float(t.user + t.system)


def _thread_cpu_s(node: Node) -> dict[str, float]:
    """CPU seconds of the event loop's thread (``main``) and of all the others (``threads``:
    the SQLite writer mostly; Python does not name OS threads)."""
    assert node.proc is not None
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in psutil.Process(node.proc.pid).threads():
        task = Path(f"/proc/{node.proc.pid}/task/{t.id}")
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "main" if t.id == node.proc.pid else "threads"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _measured(node: Node, path: str, seconds: int, script: str | None) -> dict[str, Any]:
    before, threads_before = _cpu_s(node), _thread_cpu_s(node)
    out = _wrk(node, path, seconds, 16, 2, script)
    cpu, threads_after = _cpu_s(node) - before, _thread_cpu_s(node)
    requests = out["requests_per_s"] * seconds
    by_thread = {f"{name}_cpu_ms_per_request": round(
        1000 * (t - threads_before.get(name, 0.0)) / max(requests, 1), 3)
        for name, t in threads_after.items()}
    return {"requests": int(requests), "requests_per_s": out["requests_per_s"],
            "p50_ms": out.get("p50_ms"), "p99_ms": out.get("p99_ms"),
            "non_2xx": out["non_2xx"], "server_cpu_s": round(cpu, 2),
            "cpu_ms_per_request": round(1000 * cpu / max(requests, 1), 3), **by_thread}


def run(src: Path | None = None, seconds: int = 10) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-cpu-"))
    node = FreshNode(work, shoal_of(src, work))
    node.start()
    try:
        time.sleep(2.0)  # let start-up work (controllers' first passes) settle
        create = _measured(node, "/api/v1/namespaces/default/pods", seconds, CREATE_LUA)
        target = asyncio.run(_any_pod(node))
        get = _measured(node, f"/api/v1/namespaces/default/pods/{target}", seconds, None)
        return {"src": str(src or "venv"), "load_average": os.getloadavg(),
                "create_16_clients": create, "get_16_clients": get}
    finally:
        node.stop()


if __name__ == "__main__":
    src_arg = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--src=")), None)
    secs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--seconds=")), 10)
    print(json.dumps(run(Path(src_arg) if src_arg else None, secs), indent=2))
