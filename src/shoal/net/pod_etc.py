"""A pod's /etc/resolv.conf and /etc/hosts, as the kubelet writes them.

``dnsPolicy: ClusterFirst`` (the default) points the pod at the cluster DNS
Service (10.96.0.10, answered by the node's own DNS server) with the search path
``<ns>.svc.cluster.local svc.cluster.local cluster.local`` and ``ndots:5``;
``Default`` is the node's resolver; ``None`` is only the pod's ``dnsConfig``,
which the other policies also append to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.node.dns_config import CLUSTER_DNS_IP, CLUSTER_DOMAIN, search_path

HOST_RESOLV_CONF = Path("/etc/resolv.conf")


def resolv_conf(pod: dict[str, Any], host_resolv: str = "") -> str:
    spec = pod.get("spec") or {}
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy == "Default":
        for line in host_resolv.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                nameservers.append(words[1])
            elif words and words[0] in ("search", "domain"):
                searches += words[1:]
            elif words and words[0] == "options":
                options += words[1:]
    elif policy != "None":
        nameservers = [CLUSTER_DNS_IP]
        searches = search_path(ns)
        options = ["ndots:5"]
    extra = spec.get("dnsConfig") or {}
    nameservers += [str(n) for n in extra.get("nameservers") or []]
    searches += [str(s) for s in extra.get("searches") or []]
    for o in extra.get("options") or []:
        name = str(o.get("name") or "")
        options = [x for x in options if x.split(":")[0] != name]
        options.append(f"{name}:{o['value']}" if o.get("value") is not None else name)
    lines = [f"nameserver {n}" for n in dict.fromkeys(nameservers)]
    if searches:
        lines.append("search " + " ".join(dict.fromkeys(searches)))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def hosts_file(pod: dict[str, Any], ips: list[str]) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    hostname = str(spec.get("hostname") or meta.get("name") or "")
    names = [hostname]
    if spec.get("subdomain"):
        ns = meta.get("namespace") or "default"
        names.insert(0, f"{hostname}.{spec['subdomain']}.{ns}.svc.{CLUSTER_DOMAIN}")
    lines = ["# Kubernetes-managed hosts file (Shoal).",
             "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet",
             "fe00::1\tip6-allnodes",
             "fe00::2\tip6-allrouters"]
    lines += [f"{ip}\t{' '.join(names)}" for ip in ips]
    for alias in spec.get("hostAliases") or []:
        lines.append(f"{alias.get('ip')}\t{' '.join(alias.get('hostnames') or [])}")
    return "\n".join(lines) + "\n"
