"""The ``kube-system/kube-dns`` Service, which every node makes sure exists when it starts.

Its clusterIP is fixed (10.96.0.10), so the Service is the same wherever it is
created: peers that create it while apart produce one object after the merge.
It has no selector: no pod serves it. The Service rules send its traffic to
the local node's DNS server instead of to endpoints, so DNS keeps working on a
site cut off from the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from shoal.node.dns_config import (
    CLUSTER_DNS_IP,
    DNS_PORT,
    DNS_SERVICE_NAME,
    DNS_SERVICE_NAMESPACE,
)
from shoal.store.objects import AlreadyExists, NotFound, ObjectStore, StoreError

log = logging.getLogger(__name__)


def kube_dns_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": DNS_SERVICE_NAME,
            "namespace": DNS_SERVICE_NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                       "kubernetes.io/cluster-service": "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": CLUSTER_DNS_IP,
            "clusterIPs": [CLUSTER_DNS_IP],
            "ports": [
                {"name": "dns", "port": DNS_PORT, "protocol": "UDP", "targetPort": DNS_PORT},
                {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP", "targetPort": DNS_PORT},
            ],
        },
    }


async def ensure_kube_dns(store: ObjectStore) -> bool:
    """Create the Service if this replica lacks it; leave an existing one (a user's edit) alone.
    False when ``kube-system`` is not there yet (the node creates it, ``node_status``), so
    that the caller tries again soon; True otherwise."""
    kind = store.registry.by_kind("v1", "Service")
    assert kind is not None
    if store.find(kind, DNS_SERVICE_NAMESPACE, DNS_SERVICE_NAME) is not None:
        return True
    holder = next((s["metadata"] for s in store.list(kind)
                   if (s.get("spec") or {}).get("clusterIP") == CLUSTER_DNS_IP), None)
    if holder is not None:
        log.error("the cluster DNS address %s is taken by Service %s/%s: pods cannot reach DNS "
                  "until it is deleted", CLUSTER_DNS_IP, holder.get("namespace"),
                  holder.get("name"))
        return True
    try:
        await store.create(kind, kube_dns_service(), DNS_SERVICE_NAMESPACE)
        log.info("created the %s/%s Service (%s)", DNS_SERVICE_NAMESPACE, DNS_SERVICE_NAME,
                 CLUSTER_DNS_IP)
    except AlreadyExists:
        pass  # created meanwhile, by a merge or a user
    except NotFound:
        return False  # kube-system is not there yet
    except StoreError as e:
        log.error("cannot create the %s/%s Service: %s", DNS_SERVICE_NAMESPACE, DNS_SERVICE_NAME, e)
    return True
