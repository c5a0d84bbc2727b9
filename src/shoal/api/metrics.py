"""``GET /metrics``: this node in the Prometheus text format (:mod:`shoal.api.exposition`).

Each node has its own :class:`~shoal.api.exposition.CollectorRegistry` (several nodes share
one process in tests), holding:

- what is counted as it happens, because nothing else remembers it: API requests by
  verb, group, resource, subresource and code, with latency histograms (watches and
  other long-running requests are counted, not timed, as kube-apiserver does), and the
  kubelet's events written on this node (pod starts, runtime errors by reason);
- a collector that reads the live objects at scrape time (nothing on the hot path):
  replica size, change-feed subscribers (API watches and the node's own loops),
  members by state, probes, replication cursors and lag per
  peer, bytes and frames per peer link, membership transitions, pods on this node.

The path is authenticated like the API and authorized as the non-resource URL
``/metrics`` with verb ``get`` (Kubernetes' ``system:monitoring`` role grants it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal.api import request_state, web
from shoal.api.exposition import (
    CONTENT_TYPE_LATEST,
    Collector,
    CollectorRegistry,
    Counter,
    CounterMetricFamily,
    GaugeMetricFamily,
    Histogram,
    Metric,
    generate_latest,
)
from shoal.authz.attributes import Attributes
from shoal.mesh.events_log import MembershipLog
from shoal.mesh.messages import State
from shoal.mesh.peer import MeshPeer
from shoal.store.replica import Replica

PATH = "/metrics"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
# kube-apiserver's verbs in its metrics: the HTTP method, or LIST/WATCH for collections.
_METRIC_VERBS = {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST",
                 "update": "PUT", "patch": "PATCH", "delete": "DELETE",
                 "deletecollection": "DELETE"}
_LONG_RUNNING_SUBRESOURCES = ("log", "exec", "attach", "portforward", "proxy")


class PeerStatsLike(Protocol):
    bytes_sent: int
    bytes_received: int
    frames_sent: int
    frames_received: int


def request_labels(method: str, attrs: Attributes | None) -> tuple[str, str, str, str]:
    """(verb, group, resource, subresource) for a request; a path outside the resource
    API gets its method and an empty resource (its path would be unbounded cardinality)."""
    if attrs is None or not attrs.resource_request:
        return method.upper(), "", "", ""
    verb = _METRIC_VERBS.get(attrs.verb, attrs.verb.upper())
    return verb, attrs.api_group, attrs.resource, attrs.subresource


def long_running(verb: str, subresource: str) -> bool:
    return verb == "WATCH" or subresource in _LONG_RUNNING_SUBRESOURCES


@dataclass
class Sources:
    """The live objects the collector reads at scrape time (None: not running)."""

    node: str
    replica: Replica
    data_dir: Path | None = None
    mesh: Callable[[], MeshPeer | None] = lambda: None
    peer_stats: Callable[[], Mapping[str, PeerStatsLike]] = lambda: {}
    membership_log: MembershipLog | None = None
    pods_here: Callable[[], Iterable[dict[str, Any]]] | None = None


class NodeMetrics:
    """The registry of one node and what feeds it."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request_total", "API requests by verb, group, resource, subresource "
            "and HTTP code.", ["verb", "group", "resource", "subresource", "code"],
            registry=self.registry)
        self.latency = Histogram(
            "apiserver_request_duration_seconds", "Latency of API requests that are not "
            "long-running (watches, logs and exec are counted, not timed).",
            ["verb", "group", "resource", "subresource"], buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.kubelet_events = Counter(
            "shoal_kubelet_events_total", "Events the node agent wrote about its pods, by "
            "type and reason (Started is a container start; Warning events are errors).",
            ["type", "reason"], registry=self.registry)
        self.pod_starts = Counter(
            "shoal_pod_container_starts_total", "Containers the node agent started.",
            registry=self.registry)
        self.runtime_errors = Counter(
            "shoal_runtime_errors_total", "Warning events of the node agent (failed "
            "starts, image pulls, back-offs, probes), by reason.", ["reason"],
            registry=self.registry)
        self.registry.register(LiveCollector(sources))
        self._request_children: dict[tuple[str, str, str, str, int], tuple[Any, Any]] = {}
        """The labelled counter and histogram of each kind of request: looking them up by
        labels took a lock and a few tuples per request (issue 11). Bounded as the labels are."""

    # -- fed as things happen ------------------------------------------------------

    def observe_request(self, request: web.Request, code: int, ms: float) -> None:
        attrs = request.get(request_state.ATTRIBUTES)
        verb, group, resource, sub = request_labels(request.method, attrs)
        key = (verb, group, resource, sub, code)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(verb, group, resource, sub, str(code)),
                        None if long_running(verb, sub)
                        else self.latency.labels(verb, group, resource, sub))
            self._request_children[key] = children
        children[0].inc()
        if children[1] is not None:
            children[1].observe(ms / 1000.0)

    def observe_write(self, kind: Any, old: dict[str, Any] | None,
                      new: dict[str, Any] | None) -> None:
        """A store observer: counts the node agent's events written on this node (a repeat
        of an event bumps its count, and counts that many more)."""
        if new is None or getattr(kind, "resource", "") != "events":
            return
        if new.get("reportingInstance") != self.sources.node or \
                new.get("reportingComponent") != "kubelet":
            return
        count = int(new.get("count") or 1)
        added = count - (int(old.get("count") or 1) if old is not None else 0)
        if added <= 0:
            return
        etype, reason = str(new.get("type") or "Normal"), str(new.get("reason") or "")
        self.kubelet_events.labels(etype, reason).inc(added)
        if reason == "Started":
            self.pod_starts.inc(added)
        if etype == "Warning":
            self.runtime_errors.labels(reason).inc(added)

    # -- served ---------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        body = self.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(PATH, self.handle)


def lag_by_peer(mesh: MeshPeer) -> dict[str, tuple[int, int | None]]:
    """Peer -> (cursor, revisions behind or None) over every scope pulled from it now: the
    largest lag of any scope, the smallest cursor. From ``AntiEntropy.lags`` (or, for a
    mesh without it, every cursor, keyed by peer or by (peer, scope), and the revisions
    partners last reported)."""
    ae = mesh.anti_entropy
    lags = getattr(ae, "lags", None)
    if callable(lags):
        # Only the scopes pulled from each peer now (``AntiEntropy.lags``): a cursor left
        # for a scope it no longer serves here would read as a lag that only grows.
        pairs: Mapping[Any, tuple[int, int | None]] = lags()
    else:
        reported: Mapping[str, int] = getattr(ae, "_partner_revision", {}) or {}
        pairs = {}
        for key, cursor in list(ae.cursors.items()):
            revision = reported.get(key[0] if isinstance(key, tuple) else key)
            pairs[key] = (cursor, None if revision is None else max(0, revision - cursor))
    out: dict[str, tuple[int, int | None]] = {}
    for key, (cursor, behind) in pairs.items():
        peer = key[0] if isinstance(key, tuple) else key
        if peer in out:
            prev_cursor, prev_behind = out[peer]
            cursor = min(cursor, prev_cursor)
            if prev_behind is not None:
                behind = prev_behind if behind is None else max(behind, prev_behind)
        out[peer] = (cursor, behind)
    return out


def replica_bytes(data_dir: Path | None) -> int | None:
    """The replica's size on disk (the SQLite file and its WAL), None in memory."""
    if data_dir is None:
        return None
    total = 0
    for name in ("state.db", "state.db-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(data_dir / name).st_size
    return total


class LiveCollector(Collector):
    """Reads the node's live objects at every scrape."""

    def __init__(self, sources: Sources) -> None:
        self.s = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._replica()
        mesh = self.s.mesh()
        if mesh is not None:
            yield from self._mesh(mesh)
        yield from self._links(mesh)
        if self.s.membership_log is not None:
            c = CounterMetricFamily("shoal_membership_transitions",
                                    "Changes of a member's state this node has seen.")
            c.add_metric([], self.s.membership_log.transitions)
            yield c
        if self.s.pods_here is not None:
            by_phase: dict[str, int] = {}
            for pod in self.s.pods_here():
                phase = str((pod.get("status") or {}).get("phase") or "Pending")
                by_phase[phase] = by_phase.get(phase, 0) + 1
            g = GaugeMetricFamily("shoal_node_pods", "Pods bound to this node, by phase.",
                                  labels=["phase"])
            for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
                g.add_metric([phase], by_phase.pop(phase, 0))
            for phase, n in sorted(by_phase.items()):
                g.add_metric([phase], n)
            yield g

    def _replica(self) -> Iterator[Metric]:
        r = self.s.replica
        objects = GaugeMetricFamily("shoal_replica_objects",
                                    "Live objects in this node's replica, by resource.",
                                    labels=["resource"])
        for resource in sorted(r.resources()):
            objects.add_metric([resource], r.count(resource))
        yield objects
        g = GaugeMetricFamily("shoal_replica_tombstones",
                              "Deleted objects kept for merging (until every peer covers them).")
        g.add_metric([], len(r.tombstones()))
        yield g
        g = GaugeMetricFamily("shoal_replica_revision", "This node's local revision.")
        g.add_metric([], r.revision)
        yield g
        size = replica_bytes(self.s.data_dir)
        if size is not None:
            g = GaugeMetricFamily("shoal_replica_bytes",
                                  "The replica on disk: the SQLite file and its WAL.")
            g.add_metric([], size)
            yield g
        g = GaugeMetricFamily("shoal_watchers", "Subscribers to this node's change feed: "
                              "open API watches plus the node's own controllers, agent and "
                              "replication (about 20 on an idle node).")
        g.add_metric([], r.feed.watchers)
        yield g

    def _mesh(self, mesh: MeshPeer) -> Iterator[Metric]:
        ms = mesh.membership
        counts = dict.fromkeys(("alive", "suspect", "dead", "left"), 0)
        states = GaugeMetricFamily("shoal_mesh_member_state",
                                   "1 for the state this node holds each member in.",
                                   labels=["member", "state"])
        for m in ms.members.values():
            name = m.state.name.lower()
            counts[name] = counts.get(name, 0) + 1
            if m.name == mesh.name:
                continue
            for s in State:
                states.add_metric([m.name, s.name.lower()], 1 if s == m.state else 0)
        g = GaugeMetricFamily("shoal_mesh_members", "Members by state, as this node sees them "
                              "(itself included).", labels=["state"])
        for state, n in counts.items():
            g.add_metric([state], n)
        yield g
        yield states
        c = CounterMetricFamily("shoal_mesh_probes", "SWIM protocol rounds: probes of a "
                                "member (each also gossips piggybacked facts).")
        c.add_metric([], ms.probes)
        yield c
        c = CounterMetricFamily("shoal_mesh_failed_probes", "Probes with no ack, direct or "
                                "indirect.")
        c.add_metric([], ms.failed_probes)
        yield c
        c = CounterMetricFamily("shoal_mesh_gossip_rounds", "Gossip rounds that had "
                                "membership facts to spread (one every gossip interval "
                                "while any are queued).")
        c.add_metric([], ms.gossip_rounds)
        yield c
        c = CounterMetricFamily("shoal_mesh_gossip_messages", "Gossip messages sent (up to "
                                "gossip_nodes per round).")
        c.add_metric([], ms.gossip_messages)
        yield c
        g = GaugeMetricFamily("shoal_mesh_broadcasts_queued", "Membership facts waiting to be "
                              "gossiped.")
        g.add_metric([], len(ms.broadcasts))
        yield g
        ae = mesh.anti_entropy
        for attr, help_text in (("docs_merged", "Documents merged from peers that changed "
                                 "this replica."),
                                ("docs_pushed", "Documents pushed to peers."),
                                ("docs_refused", "Documents from peers refused for good "
                                 "(a non-member or non-writer of their scope; logged)."),
                                ("docs_deferred", "Documents from peers put off until the "
                                 "sender's scope membership or writer is known here."),
                                ("deltas_sent", "Documents sent to peers as deltas over a "
                                 "version they hold (in answers, and a node's own Lease "
                                 "renewals)."),
                                ("deltas_rebuilt", "Deltas from peers outside an answer "
                                 "merged here as the whole they checked out to."),
                                ("pushes_answering", "Pushes sent as the receiver's next "
                                 "pull answer."),
                                ("pokes_sent", "Pokes sent to weak peers this super-peer is "
                                 "the source of: their next pull would bring a change."),
                                ("pokes_received", "Pokes received from a super-peer of this "
                                 "weak peer's site.")):
            c = CounterMetricFamily(f"shoal_replication_{attr}", help_text)
            c.add_metric([], int(getattr(ae, attr, 0)))
            yield c
        cursor = GaugeMetricFamily("shoal_replication_cursor", "The partner's revision this "
                                   "node has pulled up to.", labels=["peer"])
        lag = GaugeMetricFamily("shoal_replication_lag_revisions", "Revisions of the partner "
                                "this node has not pulled yet (its last reported revision "
                                "minus the cursor).", labels=["peer"])
        for peer, (at, behind) in sorted(lag_by_peer(mesh).items()):
            cursor.add_metric([peer], at)
            if behind is not None:
                lag.add_metric([peer], behind)
        yield cursor
        yield lag

    def _links(self, mesh: MeshPeer | None) -> Iterator[Metric]:
        names = {m.address: m.name for m in mesh.members()} if mesh is not None else {}
        families = {
            "bytes_sent": CounterMetricFamily("shoal_peer_sent_bytes",
                                              "Bytes sent on the link to each peer.",
                                              labels=["peer"]),
            "bytes_received": CounterMetricFamily("shoal_peer_received_bytes",
                                                  "Bytes received on the link from each peer.",
                                                  labels=["peer"]),
            "frames_sent": CounterMetricFamily("shoal_peer_sent_frames",
                                               "Frames sent to each peer.", labels=["peer"]),
            "frames_received": CounterMetricFamily("shoal_peer_received_frames",
                                                   "Frames received from each peer.",
                                                   labels=["peer"]),
        }
        totals: dict[str, dict[str, int]] = {}
        for address, stats in self.s.peer_stats().items():
            peer = names.get(address, address)
            row = totals.setdefault(peer, dict.fromkeys(families, 0))
            for attr in families:
                row[attr] += int(getattr(stats, attr, 0))
        for peer, row in sorted(totals.items()):
            for attr, family in families.items():
                family.add_metric([peer], row[attr])
        yield from families.values()
