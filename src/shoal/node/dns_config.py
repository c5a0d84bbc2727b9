"""What pods are told about cluster DNS: the kube-dns address, the domain and the search path.

In the node layer so that the pod network (which writes a pod's
/etc/resolv.conf, ``shoal.net.pod_etc``), the Service rules and the DNS server
share one definition.
"""

from __future__ import annotations

CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_IP = "10.96.0.10"
"""The clusterIP of ``kube-system/kube-dns``; the Service rules send it to the local DNS server."""
DNS_SERVICE_NAMESPACE = "kube-system"
DNS_SERVICE_NAME = "kube-dns"
DNS_PORT = 53


def search_path(namespace: str, cluster_domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The domains a short name is tried in, most specific first (as the kubelet writes them)."""
    return [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]

