"""What a node adds so operators can see it: ``/metrics``, ``/shoal/v1/status`` and its
stream, the resource metrics API, the live page, and the membership event log.

Built with the node (routes must exist before the API app is made) and attached to the
mesh once it runs (:meth:`Observability.mesh_started`): the membership log is slipped in
front of the existing membership hooks, and the peer-report streams (``metrics``,
``status``) in front of the pod stream service.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from shoal.api import scope_status
from shoal.api.live_page import PATH as STATUS_PATH
from shoal.api.live_page import UI_PREFIX, StatusService, Timeline, own_view
from shoal.api.metrics import NodeMetrics, Sources
from shoal.api.resource_metrics import PeerReports, PeerReportService, ResourceMetricsApi
from shoal.mesh.events_log import MembershipLog
from shoal.node.pod_metrics import INTERVAL, PodMetricsSampler
from shoal.node.stream_service import PodStreamService

if TYPE_CHECKING:
    from shoal.cli.node import ShoalNode

log = logging.getLogger(__name__)


class Observability:
    def __init__(self, node: ShoalNode, *, sample_interval: float = INTERVAL) -> None:
        self.node = node
        self.membership_log = MembershipLog()
        name = node.cfg.name
        self.metrics = NodeMetrics(Sources(
            name, node.replica, node.cfg.data_dir, mesh=lambda: node.mesh,
            peer_stats=self._peer_stats, membership_log=self.membership_log,
            pods_here=self._pods_here))
        api = node.api
        api.extra_routes.append(self.metrics.add_routes)
        api.request_observers.append(self.metrics.observe_request)
        node.store.observers.append(self.metrics.observe_write)
        self.sampler = PodMetricsSampler(lambda: list(node.agent.workers.values()),
                                         interval=sample_interval)
        self.peers = PeerReports(lambda: node.streams, self._addresses)
        self.resource_metrics = ResourceMetricsApi(name, node.replica, self.sampler.report,
                                                   self.peers)
        api.extra_routes.append(self.resource_metrics.add_routes)
        self.timeline = Timeline(replica=node.replica)
        self.status = StatusService(name, node.replica, lambda: node.mesh, self.membership_log,
                                    self.timeline, self.peers, peer_stats=self._peer_stats,
                                    scopes=self._scopes,
                                    authenticate=api.authenticator.authenticate,
                                    authorizer=api.authorizer,
                                    catch_up=lambda: node.catch_up.status()  # caught-up gating
                                    if node.catch_up is not None else None)
        api.extra_routes.append(self.status.add_routes)
        # The page's files hold no data; the status paths check their caller themselves.
        api.public_prefixes = (*api.public_prefixes, UI_PREFIX.rstrip("/"), STATUS_PATH)

    def mesh_started(self) -> list[asyncio.Task[None]]:
        """Hook into the running mesh; returns the tasks the node should keep and cancel."""
        node = self.node
        mesh, streams = node.mesh, node.streams
        if mesh is not None:
            self.membership_log.inner = mesh.membership.hooks
            mesh.membership.hooks = self.membership_log
        if streams is not None:
            streams.set_acceptor(PeerReportService(PodStreamService(node.agent).handle, {
                "metrics": self._metrics_for,
                "status": lambda peer: own_view(node.mesh, node.cfg.name),
            }).handle)
        return [asyncio.create_task(self.sampler.run(), name="pod-metrics"),
                asyncio.create_task(self.timeline.follow(node.replica), name="timeline")]

    def _metrics_for(self, peer: str) -> dict[str, Any]:
        """This node's samples for ``peer``: only pods of scopes it is a member of (a peer
        outside a scope must not learn the names of its pods)."""
        scopes = self.node.api.scopes.current()
        return self.sampler.report(
            lambda namespace: scopes.is_member(scopes.scope_of("pods", namespace), peer))

    def _peer_stats(self) -> Any:
        t = self.node.transport
        return t.stats() if t is not None else {}

    def _addresses(self) -> dict[str, str]:
        mesh = self.node.mesh
        return {m.name: m.address for m in mesh.members()} if mesh is not None else {}

    def _pods_here(self) -> list[dict[str, Any]]:
        me = self.node.cfg.name
        return [e.value for _key, e in self.node.replica.iter_entries("pods")
                if e.value is not None and (e.value.get("spec") or {}).get("nodeName") == me]

    def _scopes(self) -> Any:
        api = self.node.api
        if api.mesh_scope_status is None:
            return None
        return scope_status.scope_report(self.node.cfg.name, self.node.replica,
                                         api.scopes.current(), api.mesh_scope_status)
