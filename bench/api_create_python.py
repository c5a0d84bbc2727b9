"""The Python part of a create alone: 16 ``HttpProtocol`` connections, each fed one create at
a time, as 16 clients would send them.

``bench/api_request_cpu.py`` measures the event loop's CPU per create over TLS under ``wrk``,
on a machine shared with others, where one run differs from the next by ±10 %. Here each
connection's transport is a stub that keeps what is written (no TLS, no socket), so what is
left is the request path in Python and the store: parsing the head and the body,
authentication and authorization, the handler, admission, defaulting, validation, managed
fields, the CRDT document, queueing the write (the SQLite writer thread commits it as on a
node; its CPU is not counted), the commit's answer and the response. It reports the best of
``--rounds`` rounds of the loop thread's CPU time per create (the best, not the mean: the
other tenants only add), with a node's store admission hooks and gc thresholds.

``python -m bench.api_create_python [--creates=N] [--rounds=N]``; with ``PYTHONPATH=TREE/src``
it runs another tree's ``shoal`` (a ``git archive``): the output's ``shoal`` says which.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import shoal
from bench.api_get_python import StubTransport
from shoal.api import http_protocol
from shoal.api.admission import default_tolerations
from shoal.api.authentication import Credentials
from shoal.api.limit_ranger import LimitRanger
from shoal.api.priority_admission import PriorityAdmission
from shoal.api.quota_admission import QuotaAdmission
from shoal.api.server import ApiServer
from shoal.control.service_accounts import admit_pod
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

CLIENTS = 16


def _request(name: str) -> bytes:
    body = ('{"apiVersion":"v1","kind":"Pod","metadata":{"name":"' + name + '","labels":'
            '{"app":"bench"}},"spec":{"schedulerName":"bench-unscheduled","containers":[{"name":'
            '"c","image":"busybox:1.36","command":["sleep","3600"],"resources":{"requests":'
            '{"cpu":"10m"}}}]}}').encode()
    return (b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n"
            b"Authorization: Bearer bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _run(work: Path, creates: int, rounds: int) -> dict[str, Any]:
    kinds = KindRegistry()
    replica = Replica(work / "data", "bench-1")
    store = ObjectStore(replica, kinds)
    store.admission += [lambda kind, obj: admit_pod(kind, obj, replica), default_tolerations,
                        PriorityAdmission(replica), LimitRanger(replica), QuotaAdmission(replica)]
    api = ApiServer(store, kinds, Credentials({"bench": "admin"}))
    namespace = kinds.by_kind("v1", "Namespace")
    assert namespace is not None
    await store.create(namespace, {"metadata": {"name": "default"}})
    runner = http_protocol.AppRunner(api.app())
    await runner.setup()
    assert runner.server is not None
    connections = []
    for _ in range(CLIENTS):
        protocol = runner.server.protocol()
        transport = StubTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        connections.append((protocol, transport))
    names = iter(range(10**9))

    async def batch() -> None:  # one create on every connection, then wait for all
        tasks = []
        for protocol, _ in connections:
            request = _request(f"p-{next(names)}")
            buffer = protocol.get_buffer(len(request))
            buffer[:len(request)] = request
            protocol.buffer_updated(len(request))
            assert protocol._task is not None
            tasks.append(protocol._task)
        await asyncio.gather(*tasks)

    for _ in range(60):
        await batch()
    for _, transport in connections:
        assert transport.written[-1].startswith(b"HTTP/1.1 201 Created"), \
            transport.written[-1][:300]
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # as a node (shoal.cli.node)
    per_round = []
    batches = max(1, creates // CLIENTS)
    for _ in range(rounds):
        for _, transport in connections:
            transport.written.clear()
        start = time.thread_time()
        for _ in range(batches):
            await batch()
        per_round.append((time.thread_time() - start) / (batches * CLIENTS))
    await runner.cleanup()
    replica.close()
    return {"shoal": shoal.__file__, "load_average": os.getloadavg()[0],
            "creates": batches * CLIENTS, "rounds": rounds,
            "best_us_per_create": round(1e6 * min(per_round), 2),
            "median_us_per_create": round(1e6 * sorted(per_round)[rounds // 2], 2)}


def run(creates: int = 1600, rounds: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shoal-create-python-") as d:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(_run(Path(d), creates, rounds))
        return uvloop.run(_run(Path(d), creates, rounds))


if __name__ == "__main__":
    n = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--creates=")), 1600)
    r = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--rounds=")), 10)
    print(json.dumps(run(n, r), indent=2))
