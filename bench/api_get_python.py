"""The Python part of a get alone: ``HttpProtocol`` fed one keep-alive GET at a time.

``bench/api_request_cpu.py --get`` measures the event loop's CPU per get over TLS, of
which more than half is the TLS write and the loopback ``send``; here the connection's
transport is a stub that keeps what is written, so what is left is the request path in
Python: parsing the head, routing, authentication and authorization, the handler, the
response's head, the metrics observer and the task. It runs ``ApiServer`` with the node's
request metrics observer and reports the best of ``--rounds`` rounds of thread CPU time
per get (the best, not the mean: on a shared machine the other tenants only add).

``python -m bench.api_get_python [--gets=N] [--rounds=N]``; with ``PYTHONPATH=TREE/src``
it runs another tree's ``shoal`` (a ``git archive``): the output's ``shoal`` says which.
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

import shoal
from shoal.api import http_protocol
from shoal.api.authentication import Credentials
from shoal.api.metrics import NodeMetrics, Sources
from shoal.api.server import ApiServer
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REQUEST = (b"GET /api/v1/namespaces/default/pods/get-7 HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n"
           b"Authorization: Bearer bench\r\n\r\n")


class StubTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _run(work: Path, gets: int, rounds: int) -> dict[str, Any]:
    kinds = KindRegistry()
    replica = Replica(work / "data", "bench-1")
    store = ObjectStore(replica, kinds)
    api = ApiServer(store, kinds, Credentials({"bench": "admin"}))
    api.request_observers.append(NodeMetrics(Sources("bench-1", replica)).observe_request)
    namespace, pod = kinds.by_kind("v1", "Namespace"), kinds.by_kind("v1", "Pod")
    assert namespace is not None and pod is not None
    await store.create(namespace, {"metadata": {"name": "default"}})
    await store.create(pod, {"metadata": {"name": "get-7"},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}}, "default")
    runner = http_protocol.AppRunner(api.app())
    await runner.setup()
    assert runner.server is not None
    protocol = runner.server.protocol()
    transport = StubTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    buffer = protocol.get_buffer(len(REQUEST))

    async def one() -> None:
        buffer[:len(REQUEST)] = REQUEST
        protocol.buffer_updated(len(REQUEST))
        task = protocol._task
        assert task is not None
        await task

    for _ in range(2000):
        await one()
    assert transport.written[-1].startswith(b"HTTP/1.1 200 OK"), transport.written[-1][:200]
    per_round = []
    for _ in range(rounds):
        transport.written.clear()
        start = time.thread_time()
        for _ in range(gets):
            await one()
        per_round.append((time.thread_time() - start) / gets)
    await runner.cleanup()
    replica.close()
    return {"shoal": shoal.__file__, "load_average": os.getloadavg()[0], "gets": gets,
            "rounds": rounds, "best_us_per_get": round(1e6 * min(per_round), 2),
            "median_us_per_get": round(1e6 * sorted(per_round)[rounds // 2], 2)}


def run(gets: int = 5000, rounds: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shoal-get-python-") as d:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(_run(Path(d), gets, rounds))
        return uvloop.run(_run(Path(d), gets, rounds))


if __name__ == "__main__":
    n = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--gets=")), 5000)
    r = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--rounds=")), 20)
    print(json.dumps(run(n, r), indent=2))
