"""The request path's CPU alone: the API served in process, over TLS, under 16 ``wrk`` clients.

``bench/api_load_cpu.py`` measures a whole node, whose controllers, mesh and node agent
also run on the event loop; here only ``ApiServer`` runs (with a node's store admission
hooks, gc thresholds and malloc tuning), so two trees' request paths compare with less
noise on a shared machine. It reports the event loop thread's CPU per request, the time
spent in garbage collection, and for creates how long a write waits for its group commit
(queued to durable) and how long the commit itself takes on the writer thread.

``python -m bench.api_request_cpu [--get] [--plain] [--seconds=N]`` from the repository's
root; with ``PYTHONPATH=TREE/src`` it runs another tree's ``shoal`` (a ``git archive``)
with this venv: the output's ``shoal`` says which was imported.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import shoal
from shoal.api import http_protocol
from shoal.api.admission import default_tolerations
from shoal.api.authentication import Credentials
from shoal.api.limit_ranger import LimitRanger
from shoal.api.memory import tune_malloc
from shoal.api.priority_admission import PriorityAdmission
from shoal.api.quota_admission import QuotaAdmission
from shoal.api.server import ApiServer
from shoal.control.service_accounts import admit_pod
from shoal.mesh.issuance import create_ca
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

CREATE_LUA = """
counter = 0
next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
request = function()
  counter = counter + 1
  local body = '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bench-' .. tid .. '-' ..
    counter .. '","labels":{"app":"bench"}},"spec":{"schedulerName":"bench-unscheduled",' ..
    '"containers":[{"name":"c","image":"busybox:1.36","command":["sleep","3600"],' ..
    '"resources":{"requests":{"cpu":"10m"}}}]}}'
  return wrk.format("POST", "/api/v1/namespaces/default/pods",
                    {["Authorization"]="Bearer bench", ["Content-Type"]="application/json"}, body)
end
"""
GET_LUA = """
request = function()
  return wrk.format("GET", "/api/v1/namespaces/default/pods/get-7",
                    {["Authorization"]="Bearer bench"})
end
"""


def _pct(values: list[float], q: float) -> float:
    return round(1e3 * values[min(len(values) - 1, int(len(values) * q))], 2) if values else 0.0


async def _run(work: Path, get: bool, tls: bool, seconds: int) -> dict[str, Any]:
    tune_malloc()
    kinds = KindRegistry()
    replica = Replica(work / "data", "bench-1")
    store = ObjectStore(replica, kinds)
    store.admission += [lambda kind, obj: admit_pod(kind, obj, replica), default_tolerations,
                        PriorityAdmission(replica), LimitRanger(replica), QuotaAdmission(replica)]
    api = ApiServer(store, kinds, Credentials({"bench": "admin"}))
    namespace, pod = kinds.by_kind("v1", "Namespace"), kinds.by_kind("v1", "Pod")
    assert namespace is not None and pod is not None
    await store.create(namespace, {"metadata": {"name": "default"}})
    if get:
        for i in range(50):
            await store.create(pod, {"metadata": {"name": f"get-{i}"},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}},
                               "default")
    context = None
    if tls:
        pair = create_ca("127.0.0.1")
        (work / "cert.pem").write_bytes(pair.cert_pem)
        (work / "key.pem").write_bytes(pair.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(work / "cert.pem", work / "key.pem")
    runner = http_protocol.AppRunner(api.app(), shutdown_timeout=2.0)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    await http_protocol.TCPSite(runner, sock=sock, ssl_context=context).start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{sock.getsockname()[1]}/"
    script = work / "requests.lua"
    script.write_text(GET_LUA if get else CREATE_LUA)

    waits: list[float] = []
    commits: list[float] = []
    persistence: Any = replica.persistence
    queue_write, commit = persistence.write, persistence._commit

    def timed_write(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        fut = queue_write(*args, **kwargs)
        fut.add_done_callback(lambda _: waits.append(time.perf_counter() - start))
        return fut

    def timed_commit(batch: Any) -> None:
        start = time.perf_counter()
        commit(batch)
        commits.append(time.perf_counter() - start)

    persistence.write, persistence._commit = timed_write, timed_commit
    gc_time = [0.0, 0.0]
    passes = [0, 0, 0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = time.thread_time()
        else:
            gc_time[0] += time.thread_time() - gc_time[1]
            passes[info["generation"]] += 1

    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # as a node (shoal.cli.node)
    gc.callbacks.append(on_gc)
    cpu = time.thread_time()
    try:
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t", "2", "-c", "16", "-d", f"{seconds}s", "-s", str(script), url,
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        cpu = time.thread_time() - cpu
    finally:
        gc.callbacks.remove(on_gc)
        await runner.cleanup()
        replica.close()
    text = out.decode()
    found = re.search(r"(\d+) requests in", text)
    requests = int(found.group(1)) if found else 0
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    waits.sort()
    commits.sort()
    result: dict[str, Any] = {
        "shoal": shoal.__file__, "load_average": os.getloadavg()[0],
        "operation": "get" if get else "create", "tls": tls, "requests": requests,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "requests_per_s": round(requests / seconds),
        "loop_cpu_us_per_request": round(1e6 * cpu / max(requests, 1), 1),
        "gc_us_per_request": round(1e6 * gc_time[0] / max(requests, 1), 1),
        "gc_passes_by_generation": passes,
    }
    if not get:
        result |= {"commits": len(commits),
                   "commit_ms_p50_p90": [_pct(commits, 0.5), _pct(commits, 0.9)],
                   "write_wait_ms_p50_p90": [_pct(waits, 0.5), _pct(waits, 0.9)]}
    return result


def run(get: bool = False, tls: bool = True, seconds: int = 8) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shoal-request-cpu-") as d:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(_run(Path(d), get, tls, seconds))
        return uvloop.run(_run(Path(d), get, tls, seconds))


if __name__ == "__main__":
    secs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--seconds=")), 8)
    print(json.dumps(run("--get" in sys.argv, "--plain" not in sys.argv, secs), indent=2))
