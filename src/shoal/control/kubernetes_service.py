"""The ``kubernetes`` Service in ``default``: how pods find the API.

As kube-apiserver's own controller: a ClusterIP Service at the first address of the
service range (10.96.0.1), port 443 named ``https``, with no selector; its
Endpoints and EndpointSlice list the API address of every live node (a Node
whose Lease this peer saw renewed within the grace period; one whose Lease it does not
hold, a super-peer's of another site or region, while its judges have not tainted it
unreachable), on the API port.
Every peer serves the API, so every live node is an endpoint. The preferred actor
for the Service writes them (:mod:`ownership`); the content is a function of the
replica, so peers that write concurrently write the same thing.

Every node is assumed to serve the API on the same port (``--api-port``), that of
the peer that writes.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from shoal.control.controller import Controller
from shoal.control.endpoints import address_type
from shoal.control.node_lifecycle import LEASE_NAMESPACE, renewed_within, unreachable_since
from shoal.control.ownership import PeerView, SinglePeer, lease_actors, preferred_actor
from shoal.model.kinds import Kind
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, ObjectStore
from shoal.store.service_ips import KUBERNETES_IP

NAMESPACE, NAME = "default", "kubernetes"
PORT_NAME = "https"
MANAGER = "shoal-apiserver"


def internal_ip(node: dict[str, Any]) -> str | None:
    for a in (node.get("status") or {}).get("addresses") or []:
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None


class KubernetesService(Controller):
    name = "kubernetes-service"

    def __init__(self, store: ObjectStore, api_port: int, view: PeerView | None = None,
                 grace: float = 40.0, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.api_port = api_port
        self.grace = grace
        self.svc_kind, self.ep_kind = self._kind("v1", "Service"), self._kind("v1", "Endpoints")
        self.slice_kind = self._kind("discovery.k8s.io/v1", "EndpointSlice")
        self.node_kind, self.ns_kind = self._kind("v1", "Node"), self._kind("v1", "Namespace")
        self.lease_kind = self._kind("coordination.k8s.io/v1", "Lease")

    def _kind(self, api_version: str, kind: str) -> Kind:
        k = self.store.registry.by_kind(api_version, kind)
        assert k is not None
        return k

    def relevant(self, change: Change) -> bool:
        if change.resource in ("nodes", "leases.coordination.k8s.io"):
            return True
        meta = change.obj.get("metadata") or {}
        return meta.get("namespace") == NAMESPACE and meta.get("name") == NAME

    def addresses(self) -> list[str]:
        now = self.store.replica.wall.now()
        out = set()
        holds = getattr(self.view, "holds_lease", None)
        for node in self.store.list(self.node_kind):
            name = node["metadata"]["name"]
            ip = internal_ip(node)
            if not ip or address_type(ip) != "IPv4":
                continue
            if callable(holds) and not holds(self.view.name, name):
                # A super-peer holds its site's and region's Leases only: another node is
                # live unless the peers that hold its Lease judged it unreachable.
                if unreachable_since(node) is None:
                    out.add(ip)
                continue
            lease = self.store.find(self.lease_kind, LEASE_NAMESPACE, name)
            if renewed_within(lease, now, self.grace):
                out.add(ip)
        return sorted(out)

    async def sync(self) -> bool:
        # Decided from the Leases: a weak peer, which holds only its own, never writes them.
        if self.store.find(self.ns_kind, None, NAMESPACE) is None or preferred_actor(
                f"{NAMESPACE}/{NAME}", lease_actors(self.view)) != self.view.name:
            return False
        await self._ensure_service()
        ips = self.addresses()
        ports = [{"name": PORT_NAME, "port": self.api_port, "protocol": "TCP"}]
        await self._put(self.ep_kind, {
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": ports}] if ips else [],
        })
        await self._put(self.slice_kind, {
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
                "kubernetes.io/service-name": NAME,
                "endpointslice.kubernetes.io/managed-by": MANAGER}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": ports,
        })
        return False

    async def _ensure_service(self) -> None:
        if self.store.find(self.svc_kind, NAMESPACE, NAME) is not None:
            return
        with contextlib.suppress(AlreadyExists):
            await self.store.create(self.svc_kind, {
                "metadata": {"name": NAME, "namespace": NAMESPACE,
                             "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": KUBERNETES_IP,
                         "clusterIPs": [KUBERNETES_IP], "sessionAffinity": "None",
                         "ports": [{"name": PORT_NAME, "port": 443, "protocol": "TCP",
                                    "targetPort": self.api_port}]},
            }, NAMESPACE)

    async def _put(self, kind: Kind, want: dict[str, Any]) -> None:
        current = self.store.find(kind, NAMESPACE, NAME)
        if current is None:
            with contextlib.suppress(AlreadyExists):
                await self.store.create(kind, want, NAMESPACE)
            return
        new = copy.deepcopy(current)
        for key, value in want.items():
            if key == "metadata":
                new["metadata"].setdefault("labels", {}).update(value["labels"])
            else:
                new[key] = value
        if new != current:
            await self.store.update(kind, new, NAMESPACE, NAME)
