"""What pods are told about cluster DNS: the kube-dns address and their resolv.conf.

In the node layer so that the node agent (which writes a runc pod's
/etc/resolv.conf) and the Service rules and DNS server above it share one
definition.
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


def resolv_conf(namespace: str, cluster_domain: str = CLUSTER_DOMAIN,
                nameserver: str = CLUSTER_DNS_IP) -> str:
    """A pod's /etc/resolv.conf, as the kubelet writes it for ``dnsPolicy: ClusterFirst``.

    ``ndots:5`` makes ``backend`` and ``backend.other-ns`` go through the search
    path before being tried as absolute names.
    """
    return (f"nameserver {nameserver}\n"
            f"search {' '.join(search_path(namespace, cluster_domain))}\n"
            "options ndots:5\n")
