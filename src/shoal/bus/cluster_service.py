"""The ``nats`` Service in ``kube-system``: pods reach their own node's bus by name.

``nats://nats.kube-system:4222`` (or the full ``nats.kube-system.svc.cluster.local``)
from any pod. The Service has no selector and ``internalTrafficPolicy: Local``, so a
connection to its ClusterIP goes to the bus of the node the pod runs on, the same server
``NATS_URL`` names; that server's site, JetStream domain and leaf links are what the pod
gets, also while its site is cut off. Each bus peer writes the Service when its replica
lacks it (the cluster IP is a hash of the name, so peers that create it concurrently pick
the same one), once it has caught up with the mesh: a joiner's replica lacks it at first,
and its create, the later one, would replace the cluster's Service (its uid) in the merge.
Each writes its own EndpointSlice, ``nats-<node>``, with its client address and port, at
once; the slice is owned by the Node, so deleting the Node deletes it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

from shoal.store.objects import AlreadyExists, ObjectStore, StoreError

log = logging.getLogger(__name__)

NAMESPACE, NAME = "kube-system", "nats"
PORT, PORT_NAME = 4222, "client"
MANAGER = "shoal-bus"


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "nats",
                                "app.kubernetes.io/managed-by": "shoal"}},
        "spec": {"type": "ClusterIP", "internalTrafficPolicy": "Local",
                 "ports": [{"name": PORT_NAME, "port": PORT, "protocol": "TCP",
                            "targetPort": PORT}]},
    }


def endpoint_slice(node: dict[str, Any], ip: str, port: int, ready: bool) -> dict[str, Any]:
    """This node's endpoint of the Service: its bus's client address."""
    meta = node.get("metadata") or {}
    name = str(meta.get("name", ""))
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{NAME}-{name}", "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": NAME,
                                "endpointslice.kubernetes.io/managed-by": MANAGER},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                          "uid": str(meta.get("uid", ""))}]},
        "addressType": "IPv6" if ":" in ip else "IPv4",
        "endpoints": [{"addresses": [ip], "nodeName": name,
                       "conditions": {"ready": ready, "serving": ready}}],
        "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
    }


async def publish(store: ObjectStore, node_name: str, ip: str, port: int,
                  ready: bool = True, create_service: bool = True) -> bool:
    """Create the Service if missing (and ``create_service``: this peer has caught up) and
    write this node's slice when it changed; True once both are as wanted (False: the
    namespace or the Node is not there yet, the Service may not be created yet, or a write
    lost a race and the next call tries again)."""
    reg = store.registry
    svc_kind, slice_kind = reg.by_kind("v1", "Service"), reg.by_kind("discovery.k8s.io/v1",
                                                                      "EndpointSlice")
    node_kind, ns_kind = reg.by_kind("v1", "Node"), reg.by_kind("v1", "Namespace")
    assert svc_kind and slice_kind and node_kind and ns_kind
    node = store.find(node_kind, None, node_name)
    if node is None or store.find(ns_kind, None, NAMESPACE) is None:
        return False
    try:
        if create_service and store.find(svc_kind, NAMESPACE, NAME) is None:
            with contextlib.suppress(AlreadyExists):
                await store.create(svc_kind, service(), NAMESPACE)
                log.info("bus: created Service %s/%s", NAMESPACE, NAME)
        want = endpoint_slice(node, ip, port, ready)
        name = want["metadata"]["name"]
        current = store.find(slice_kind, NAMESPACE, name)
        if current is None:
            await store.create(slice_kind, want, NAMESPACE)
            return store.find(svc_kind, NAMESPACE, NAME) is not None
        new = copy.deepcopy(current)
        new["metadata"].update({k: want["metadata"][k] for k in ("labels", "ownerReferences")})
        for key in ("addressType", "endpoints", "ports"):
            new[key] = want[key]
        if new != current:
            await store.update(slice_kind, new, NAMESPACE, name, check_rv=False)
    except StoreError as e:
        log.debug("bus: the %s Service's endpoint for %s: %s", NAME, node_name, e)
        return False
    return store.find(svc_kind, NAMESPACE, NAME) is not None
