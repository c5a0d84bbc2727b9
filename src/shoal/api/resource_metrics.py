"""The resource metrics API (``metrics.k8s.io/v1beta1``), so ``kubectl top`` works on any peer.

Samples are never written to the replica: a CPU figure every 15 s from every node would
be a steady stream of writes replicated to every peer, and a figure from a node across a
partition is stale anyway. The node serving the request asks each node for its own
samples over the peer link (a ``metrics`` stream of :mod:`shoal.mesh.streams`, as
``kubectl logs`` reaches another node's pod), concurrently, with a short timeout, and
keeps each answer a few seconds. A node that cannot be reached is left out of the
list, as metrics-server leaves out a node it cannot scrape; asking for that node (or a
pod on it) by name is a 404 like a missing sample.

The same peer-report mechanism carries ``status`` (a node's own membership view) for
the live page: :class:`PeerReportService` answers both and hands every other stream
to the pod stream service.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from shoal.api import web
from shoal.api.errors import ApiError
from shoal.api.resources import json_response
from shoal.mesh.streams import Stream, StreamMux, StreamReset
from shoal.mesh.transport import TransportError
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.replica import Replica

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
BASE = f"/apis/{GROUP}/{VERSION}"
ASK_TIMEOUT = 2.0
"""Seconds another node has to answer with its samples."""
CACHE_SECONDS = {"metrics": 5.0, "status": 1.0}
"""Seconds an answer is reused: samples change every 15 s; a membership view should show
a heal within a second or two."""

Report = dict[str, Any]
Acceptor = Callable[[Stream], Awaitable[None]]


class PeerReportService:
    """The node side: answers ``{"op": <report>}`` streams with one JSON message. Each report
    is given the asking node's name (authenticated by the transport), so it can leave out
    what that node may not see (pods of scopes it is not a member of)."""

    def __init__(self, fallback: Acceptor | None,
                 reports: Mapping[str, Callable[[str], Report]]) -> None:
        self.fallback = fallback
        self.reports = reports

    async def handle(self, stream: Stream) -> None:
        op = stream.header.get("op")
        report = self.reports.get(op) if isinstance(op, str) else None
        if report is None:
            if self.fallback is None:
                stream.reset(f"unknown stream operation {op!r}")
                return
            await self.fallback(stream)
            return
        await stream.send(orjson.dumps({"code": 200}))
        await stream.send(orjson.dumps(report(stream.peer or "")))
        await stream.end()


class PeerReports:
    """The asking side: another node's report, or None when it cannot answer in time."""

    def __init__(self, mux: Callable[[], StreamMux | None],
                 addresses: Callable[[], dict[str, str]], *, timeout: float = ASK_TIMEOUT,
                 cache_seconds: Mapping[str, float] = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mux = mux
        self.addresses = addresses
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Report | None]] = {}
        self.last_good: dict[tuple[str, str], tuple[float, Report]] = {}
        """The last report each node gave, with the wall time it came (for the page)."""

    async def ask(self, node: str, op: str) -> Report | None:
        key = (node, op)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and now - cached[0] < self.cache_seconds.get(op, 5.0):
            return cached[1]
        report = await self._ask(node, op)
        self._cache[key] = (now, report)
        if report is not None:
            self.last_good[key] = (time.time(), report)
        return report

    async def _ask(self, node: str, op: str) -> Report | None:
        mux = self.mux()
        if mux is None:
            return None
        stream: Stream | None = None
        try:
            async with asyncio.timeout(self.timeout):
                stream = await mux.open(node, self.addresses().get(node), {"op": op},
                                        self.timeout)
                verdict = await stream.recv()
                if verdict is None or orjson.loads(verdict).get("code") != 200:
                    return None
                body = await stream.recv()
                if body is None:
                    return None
                report = orjson.loads(body)
                return report if isinstance(report, dict) else None
        except (TimeoutError, TransportError, StreamReset, orjson.JSONDecodeError,
                AttributeError):
            return None
        finally:
            if stream is not None:
                stream.reset()

    async def ask_all(self, nodes: list[str], op: str) -> dict[str, Report | None]:
        answers = await asyncio.gather(*(self.ask(n, op) for n in nodes))
        return dict(zip(nodes, answers, strict=True))


def rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def cpu_quantity(nanocores: int) -> str:
    return f"{max(0, int(nanocores))}n"


def memory_quantity(size: int) -> str:
    return f"{max(0, int(size)) // 1024}Ki"


def _window(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def node_metrics(node: Mapping[str, Any], usage: Mapping[str, Any]) -> dict[str, Any]:
    meta = node.get("metadata") or {}
    return {
        "kind": "NodeMetrics", "apiVersion": API_VERSION,
        "metadata": {"name": meta.get("name"), "creationTimestamp": rfc3339(time.time()),
                     "labels": dict(meta.get("labels") or {})},
        "timestamp": rfc3339(float(usage["timestamp"])),
        "window": _window(float(usage["window"])),
        "usage": {"cpu": cpu_quantity(usage["cpu"]), "memory": memory_quantity(usage["memory"])},
    }


def pod_metrics(pod: Mapping[str, Any], sample: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    containers = sample.get("containers") or {}
    first = next(iter(containers.values()), {"timestamp": time.time(), "window": 0})
    return {
        "kind": "PodMetrics", "apiVersion": API_VERSION,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "creationTimestamp": rfc3339(time.time()),
                     "labels": dict(meta.get("labels") or {})},
        "timestamp": rfc3339(float(first["timestamp"])),
        "window": _window(float(first["window"])),
        "containers": [{"name": name, "usage": {"cpu": cpu_quantity(u["cpu"]),
                                                  "memory": memory_quantity(u["memory"])}}
                       for name, u in containers.items()],
    }


def _list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": API_VERSION, "metadata": {}, "items": items}


def _selector(request: web.Request) -> LabelSelector:
    try:
        return LabelSelector.parse(request.query.get("labelSelector", ""))
    except SelectorError as e:
        raise ApiError(400, str(e), "BadRequest") from e


def _not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, f'{resource}.{GROUP} "{name}" not found', "NotFound")


class ResourceMetricsApi:
    """``/apis/metrics.k8s.io/v1beta1/...`` from this node's samples and its peers'."""

    def __init__(self, node: str, replica: Replica, local: Callable[[], Report],
                 peers: PeerReports) -> None:
        self.node = node
        self.replica = replica
        self.local = local
        self.peers = peers

    async def reports(self, nodes: list[str]) -> dict[str, Report | None]:
        others = [n for n in nodes if n != self.node]
        out = await self.peers.ask_all(others, "metrics")
        if self.node in nodes:
            out[self.node] = self.local()
        return out

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{BASE}/nodes", self._nodes)
        router.add_get(f"{BASE}/nodes/{{name}}", self._node)
        router.add_get(f"{BASE}/pods", self._pods)
        router.add_get(f"{BASE}/namespaces/{{namespace}}/pods", self._pods)
        router.add_get(f"{BASE}/namespaces/{{namespace}}/pods/{{name}}", self._pod)

    async def _node_items(self, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = [n["metadata"]["name"] for n in nodes]
        reports = await self.reports(names)
        items = []
        for n in nodes:
            report = reports.get(n["metadata"]["name"])
            usage = (report or {}).get("node")
            if usage:
                items.append(node_metrics(n, usage))
        return items

    async def _nodes(self, request: web.Request) -> web.Response:
        selector = _selector(request)
        nodes = [n for n in self.replica.list("nodes")
                 if selector.matches((n.get("metadata") or {}).get("labels"))]
        return json_response(_list("NodeMetricsList", await self._node_items(nodes)))

    async def _node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        node = self.replica.get("nodes", "", name)
        items = await self._node_items([node]) if node is not None else []
        if not items:
            raise _not_found("nodes", name)
        return json_response(items[0])

    async def _pod_items(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_node: dict[str, list[dict[str, Any]]] = {}
        for p in pods:
            node = (p.get("spec") or {}).get("nodeName")
            if node and (p.get("status") or {}).get("phase") == "Running":
                by_node.setdefault(node, []).append(p)
        reports = await self.reports(sorted(by_node))
        items = []
        for node, node_pods in sorted(by_node.items()):
            samples = {s.get("uid"): s for s in (reports.get(node) or {}).get("pods") or []}
            for p in node_pods:
                sample = samples.get((p.get("metadata") or {}).get("uid"))
                if sample and sample.get("containers"):
                    items.append(pod_metrics(p, sample))
        items.sort(key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))
        return items

    async def _pods(self, request: web.Request) -> web.Response:
        selector = _selector(request)
        namespace = request.match_info.get("namespace")
        pods = [p for p in self.replica.list("pods", namespace or None)
                if selector.matches((p.get("metadata") or {}).get("labels"))]
        return json_response(_list("PodMetricsList", await self._pod_items(pods)))

    async def _pod(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.replica.get("pods", namespace, name)
        items = await self._pod_items([pod]) if pod is not None else []
        if not items:
            raise _not_found("pods", name)
        return json_response(items[0])

