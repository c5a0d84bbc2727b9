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

Ports. Kubernetes' apiservers all serve on one ``--secure-port`` (6443): the Service's
``targetPort`` is that number, and each apiserver's reconciler lists its address with it
(apiservers on different ports would rewrite each other's). Shoal's peers may serve on
different ports (several on one host, as the README's "More peers" does), so each node says
its own in the annotation ``shoal.dev/api-port`` and is listed on it (on the writer's port
if it does not say). An EndpointSlice has one port list, so, as the EndpointSlice
controller does for pods whose ports differ, there is one slice per port: ``kubernetes``
for the lowest, ``kubernetes-<port>`` for each other; the Endpoints have one subset per
port. Service rules route by the slices' named port, so every peer is reached on its own.
The Service itself is created once, by the first peer (its ``targetPort`` is that peer's
port, as Kubernetes' is the apiservers' one port), and never rewritten: a peer acts only once
caught up (``manager.run_when_caught_up``), and creates the Service its replica lacks only
once a pull completed (``may_create``: a joiner caught up as cut off holds nothing yet),
since a later create replaces the cluster's in the merge (its uid and creationTimestamp).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

from shoal.control.controller import Controller
from shoal.control.endpoints import address_type
from shoal.control.node_lifecycle import LEASE_NAMESPACE, renewed_within, unreachable_since
from shoal.control.ownership import (
    PeerView,
    SinglePeer,
    lease_actors,
    preferred_actor,
    resumed_at,
)
from shoal.model.kinds import Kind
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, ObjectStore, StoreError
from shoal.store.service_ips import KUBERNETES_IP

NAMESPACE, NAME = "default", "kubernetes"
PORT_NAME = "https"
MANAGER = "shoal-apiserver"
API_PORT_ANNOTATION = "shoal.dev/api-port"
"""On a Node: the port its peer serves the Kubernetes API on (``shoal server --api-port``)."""


def api_port(node: dict[str, Any]) -> int | None:
    """The port a Node says it serves the API on, or None."""
    value = ((node.get("metadata") or {}).get("annotations") or {}).get(API_PORT_ANNOTATION)
    try:
        port = int(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return port if port is not None and 0 < port < 65536 else None


def internal_ip(node: dict[str, Any]) -> str | None:
    for a in (node.get("status") or {}).get("addresses") or []:
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None


class KubernetesService(Controller):
    name = "kubernetes-service"

    def __init__(self, store: ObjectStore, api_port: int, view: PeerView | None = None,
                 grace: float = 40.0, may_create: Callable[[], bool] = lambda: True,
                 **kw: Any) -> None:
        """``may_create``: whether this replica may create the Service it lacks (a pull
        completed since start, ``CatchUp.synced``)."""
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.may_create = may_create
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
        name = str(meta.get("name", ""))
        # The Service and its Endpoints, and its slices (one per API port: kubernetes-PORT;
        # not a user's kubernetes-dashboard pods)
        return meta.get("namespace") == NAMESPACE and (name == NAME or (
            change.resource == "endpointslices.discovery.k8s.io" and name.startswith(f"{NAME}-")))

    def endpoints(self) -> list[tuple[str, int]]:
        """(address, API port) of each live node, sorted."""
        now = self.store.replica.wall.now()
        resumed = resumed_at(self.view)
        out = set()
        holds = getattr(self.view, "holds_lease", None)
        for node in self.store.list(self.node_kind):
            name = node["metadata"]["name"]
            ip = internal_ip(node)
            if not ip or address_type(ip) != "IPv4":
                continue
            endpoint = (ip, api_port(node) or self.api_port)
            if callable(holds) and not holds(self.view.name, name):
                # A super-peer holds its site's and region's Leases only: another node is
                # live unless the peers that hold its Lease judged it unreachable.
                if unreachable_since(node) is None:
                    out.add(endpoint)
                continue
            lease = self.store.find(self.lease_kind, LEASE_NAMESPACE, name)
            if renewed_within(lease, now, self.grace, since=resumed):
                out.add(endpoint)
        return sorted(out)

    async def sync(self) -> bool:
        # Decided from the Leases: a weak peer, which holds only its own, never writes them.
        if self.store.find(self.ns_kind, None, NAMESPACE) is None or preferred_actor(
                f"{NAMESPACE}/{NAME}", lease_actors(self.view)) != self.view.name:
            return False
        await self._ensure_service()
        by_port: dict[int, list[str]] = {}
        for ip, port in self.endpoints():
            by_port.setdefault(port, []).append(ip)
        await self._put(self.ep_kind, NAME, {
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": _https(port)}
                        for port, ips in sorted(by_port.items())],
        })
        slices = {_slice_name(i, port): (port, ips)
                  for i, (port, ips) in enumerate(sorted(by_port.items()))} or {
            NAME: (self.api_port, [])}
        for name, (port, ips) in slices.items():
            await self._put(self.slice_kind, name, {
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": {
                    "kubernetes.io/service-name": NAME,
                    "endpointslice.kubernetes.io/managed-by": MANAGER}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
                "ports": _https(port),
            })
        for old in self.store.list(self.slice_kind, NAMESPACE):
            meta = old["metadata"]
            labels = meta.get("labels") or {}
            if meta["name"] not in slices and labels.get("kubernetes.io/service-name") == NAME \
                    and labels.get("endpointslice.kubernetes.io/managed-by") == MANAGER:
                with contextlib.suppress(StoreError):  # gone already
                    await self.store.delete(self.slice_kind, NAMESPACE, meta["name"])
        return False

    async def _ensure_service(self) -> None:
        if self.store.find(self.svc_kind, NAMESPACE, NAME) is not None or not self.may_create():
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

    async def _put(self, kind: Kind, name: str, want: dict[str, Any]) -> None:
        current = self.store.find(kind, NAMESPACE, name)
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
            await self.store.update(kind, new, NAMESPACE, name)


def _https(port: int) -> list[dict[str, Any]]:
    return [{"name": PORT_NAME, "port": port, "protocol": "TCP"}]


def _slice_name(index: int, port: int) -> str:
    """``kubernetes`` for the lowest port, ``kubernetes-<port>`` for each other."""
    return NAME if index == 0 else f"{NAME}-{port}"
