"""The NetworkPolicy rules of one node: Pods, Namespaces and NetworkPolicies in, an nftables table out.

A pure function of its input (no I/O), so every case is a table test. The
rules live in a table of our own, ``inet shoal-netpol``:

- ``forward`` (routed and, with ``br_netfilter``, bridged pod traffic) and
  ``input`` (pod to this node, e.g. the cluster DNS listener on the bridge's
  gateway) accept established and related packets first, then send a packet
  from a local pod to its ``egress-…`` chain and one to a local pod to its
  ``ingress-…`` chain, through verdict maps keyed by pod IP.
- A pod gets an ingress (egress) chain only when some policy of its namespace
  selects it for that direction (it is then *isolated*, as in Kubernetes); the
  chain holds one rule per (peer, port) the policies allow and ends in ``drop``.
  Allowed egress ``return``\\ s (the destination's ingress is checked next);
  allowed ingress ``accept``\\ s.
- Traffic from the node itself (kubelet probes) is always accepted; host to pod
  traffic does not cross ``forward`` at all.
- DNS is not implicit: an isolated pod reaches the cluster DNS (this node's
  listener) only when one of its egress rules allows port 53 to everywhere, to
  the ``kube-system`` namespace, or to an ipBlock holding the DNS address.

Only pods of this node with their own network namespace (a pod IP inside the
cluster CIDR, not ``hostNetwork``) are enforced; pods of any node are matched
as peers by the pod IPs the replica holds. Only IPv4.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.model.selectors import LabelSelector, SelectorError

TABLE = "shoal-netpol"
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_BASE = {
    "forward": "type filter hook forward priority filter; policy accept;",
    "input": "type filter hook input priority filter; policy accept;",
}
_DONE = ("Succeeded", "Failed")


@dataclass(frozen=True)
class NodeFacts:
    """What the rules need to know about the node they run on."""

    name: str
    cluster_cidr: str = "10.42.0.0/16"
    dns: tuple[str, int] | None = None
    """The cluster DNS as pods reach it after the Service DNAT (address, port)."""
    dns_service_ip: str | None = None
    """kube-dns's ClusterIP, for ipBlock rules naming it."""


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    ip: str
    node: str
    labels: Mapping[str, str]
    ports: tuple[tuple[str, str, int], ...]
    """(name, protocol, containerPort) of its named container ports."""


@dataclass
class Ruleset:
    chains: dict[str, list[str]] = field(default_factory=dict)
    sets: dict[str, list[str]] = field(default_factory=dict)
    """Named sets of pod IPs (name -> addresses), shared by every chain that needs them."""

    def text(self) -> str:
        """The table as one ``nft -f`` transaction that replaces it whole (atomic)."""
        t = f"inet {TABLE}"
        out = [f"add table {t}", f"delete table {t}", f"table {t} {{"]
        for name, elements in self.sets.items():
            out.append(f"\tset {name} {{ type ipv4_addr; elements = {{ {', '.join(elements)} }} }}")
        for name, rules in self.chains.items():
            out.append(f"\tchain {name} {{")
            if name in _BASE:
                out.append(f"\t\t{_BASE[name]}")
            out += [f"\t\t{r}" for r in rules]
            out.append("\t}")
        out.append("}")
        return "\n".join(out) + "\n"


def _digest(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest())[:8].decode()


def _chain(prefix: str, pod: PodInfo) -> str:
    digest = _digest(f"{prefix}/{pod.namespace}/{pod.name}")
    return f"{prefix}-{digest}-{pod.namespace}-{pod.name}"[:200]


def _ipv4(value: Any) -> str | None:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        return None


def pod_info(pod: Mapping[str, Any], cluster: ipaddress.IPv4Network) -> PodInfo | None:
    """The pod as a peer or target, or None when it has no own address in the pod network."""
    meta, spec, status = (pod.get(k) or {} for k in ("metadata", "spec", "status"))
    if spec.get("hostNetwork") or status.get("phase") in _DONE:
        return None
    ip = _ipv4(status.get("podIP"))
    if ip is None or ipaddress.IPv4Address(ip) not in cluster:
        return None  # process runtime: the node's address
    ports = tuple((str(p["name"]), str(p.get("protocol") or "TCP"), int(p["containerPort"]))
                  for c in spec.get("containers") or [] for p in c.get("ports") or []
                  if p.get("name") and isinstance(p.get("containerPort"), int))
    return PodInfo(str(meta.get("namespace") or "default"), str(meta.get("name") or ""), ip,
                   str(spec.get("nodeName") or ""), dict(meta.get("labels") or {}), ports)


def _selector(sel: Any) -> LabelSelector | None:
    """A parsed selector; None when absent or invalid (an invalid one selects nothing)."""
    if not isinstance(sel, dict):
        return None
    try:
        return LabelSelector.from_api(sel)
    except (SelectorError, AttributeError, TypeError):
        return None


def _types(spec: Mapping[str, Any]) -> set[str]:
    types = spec.get("policyTypes")
    if types:
        return {str(t) for t in types}
    return {"Ingress"} | ({"Egress"} if spec.get("egress") else set())


@dataclass(frozen=True)
class _Peers:
    """Whom a rule's peers match: everyone, or these pod IPs and these ipBlocks."""

    everyone: bool
    pods: tuple[PodInfo, ...] = ()
    blocks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    dns: bool = False
    """Whether the cluster DNS counts among them."""


class _Index:
    def __init__(self, pods: list[PodInfo], namespaces: Mapping[str, Mapping[str, str]],
                 facts: NodeFacts) -> None:
        self.pods = pods
        self.namespaces = namespaces
        self.facts = facts
        self.sets: dict[str, list[str]] = {}
        self._peers: dict[tuple[str, int], _Peers] = {}
        self._ip_sets: dict[tuple[str, ...], str] = {}

    def ip_set(self, ips: Iterable[str]) -> str:
        """One address as is, several as a named set (defined once, however many rules use it)."""
        key = tuple(ips)
        if key not in self._ip_sets:
            values = sorted(set(key), key=lambda v: tuple(int(x) for x in v.split(".")))
            if len(values) == 1:
                self._ip_sets[key] = values[0]
            else:
                name = f"pods-{_digest(','.join(values))}"
                self.sets[name] = values
                self._ip_sets[key] = f"@{name}"
        return self._ip_sets[key]

    def ns_labels(self, ns: str) -> Mapping[str, str]:
        # Every namespace carries its name as a label (kubernetes.io/metadata.name).
        return {**self.namespaces.get(ns, {}), "kubernetes.io/metadata.name": ns}

    def peers(self, policy_ns: str, items: Any) -> _Peers:
        """Whom ``items`` (a rule's from or to) match; computed once per rule and render."""
        key = (policy_ns, id(items))
        if key not in self._peers:
            self._peers[key] = self._match(policy_ns, items)
        return self._peers[key]

    def _match(self, policy_ns: str, items: Any) -> _Peers:
        if not items:
            return _Peers(everyone=True, dns=True)
        pods: dict[str, PodInfo] = {}
        blocks: list[tuple[str, tuple[str, ...]]] = []
        dns = False
        for peer in items:
            if not isinstance(peer, dict):
                continue
            block = peer.get("ipBlock")
            if isinstance(block, dict):
                try:
                    net = ipaddress.ip_network(str(block.get("cidr")), strict=False)
                except ValueError:
                    continue
                if net.version != 4:
                    continue
                # Collapsed: nft refuses overlapping intervals in one set.
                excepts = tuple(str(n) for n in ipaddress.collapse_addresses(
                    ipaddress.IPv4Network(str(x), strict=False)
                    for x in block.get("except") or [] if _is_v4_net(x)))
                blocks.append((str(net), excepts))
                dns_ip = self.facts.dns_service_ip
                if dns_ip and ipaddress.IPv4Address(dns_ip) in net and not any(
                        ipaddress.IPv4Address(dns_ip) in ipaddress.ip_network(x) for x in excepts):
                    dns = True
                continue
            pod_sel = _selector(peer.get("podSelector")) if "podSelector" in peer else None
            if "podSelector" in peer and pod_sel is None:
                continue
            ns_sel: LabelSelector | None = None
            if "namespaceSelector" in peer:
                ns_sel = _selector(peer.get("namespaceSelector"))
                if ns_sel is None:
                    continue
                if ns_sel.matches(self.ns_labels(DNS_NAMESPACE)) and (
                        pod_sel is None or pod_sel.matches(DNS_POD_LABELS)):
                    dns = True
            for p in self.pods:
                in_ns = (ns_sel.matches(self.ns_labels(p.namespace)) if ns_sel is not None
                         else p.namespace == policy_ns)
                if in_ns and (pod_sel is None or pod_sel.matches(p.labels)):
                    pods[p.ip] = p
        return _Peers(False, tuple(pods.values()), tuple(blocks), dns)


def _is_v4_net(value: Any) -> bool:
    try:
        return ipaddress.ip_network(str(value), strict=False).version == 4
    except ValueError:
        return False


def _port_matches(ports: Any, named_on: Iterable[PodInfo] | None) -> list[tuple[str, str, tuple[PodInfo, ...] | None]]:
    """(l4proto, port match, restricted to these pods or None) for a rule's ``ports``.

    An empty list means all ports (``""``). A named port is resolved on the pods
    it is about (the target for ingress, each peer for egress): pods that do not
    name it are not matched at all.
    """
    if not ports:
        return [("", "", None)]
    out: list[tuple[str, str, tuple[PodInfo, ...] | None]] = []
    for p in ports:
        if not isinstance(p, dict):
            continue
        protocol = str(p.get("protocol") or "TCP")
        proto = _PROTOCOLS.get(protocol)
        if proto is None:
            continue
        port, end = p.get("port"), p.get("endPort")
        if port is None:
            out.append((proto, "", None))
        elif isinstance(port, int):
            span = f"{port}-{end}" if isinstance(end, int) and end > port else str(port)
            out.append((proto, span, None))
        elif named_on is not None:
            by_number: dict[int, list[PodInfo]] = {}
            for pod in named_on:
                for name, proto_name, number in pod.ports:
                    if name == port and proto_name == protocol:
                        by_number.setdefault(number, []).append(pod)
            out += [(proto, str(n), tuple(pods)) for n, pods in sorted(by_number.items())]
    return out


def _set(items: Iterable[str]) -> str:
    values = sorted(set(items), key=lambda v: (ipaddress.ip_network(v).network_address, v))
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _l4(proto: str, span: str) -> str:
    if not proto:
        return ""
    return f" meta l4proto {proto}" + (f" th dport {span}" if span else "")


def _direction_rules(index: _Index, target: PodInfo, rules: list[tuple[str, dict[str, Any]]],
                     egress: bool) -> list[str]:
    addr = "ip daddr" if egress else "ip saddr"
    verdict = "return" if egress else "accept"
    out = [] if egress else ["fib saddr type local accept"]  # the node itself (kubelet probes)
    dns_allowed = False
    for ns, rule in rules:
        peers = index.peers(ns, rule.get("to" if egress else "from"))
        named_on: Iterable[PodInfo] = (peers.pods if not peers.everyone else index.pods) \
            if egress else (target,)
        for proto, span, only in _port_matches(rule.get("ports"), named_on):
            if egress and peers.dns and proto in ("", "udp", "tcp") and span in ("", "53"):
                dns_allowed = True
            if not egress and only is not None:
                if target not in only:
                    continue
                only = None  # the target names the port: any peer may reach it
            l4 = _l4(proto, span)
            if peers.everyone and only is None:
                out.append(f"{l4.strip()} {verdict}".strip())
                continue
            if peers.everyone:
                pods = only or ()
            else:
                pods = peers.pods if only is None else tuple(p for p in peers.pods if p in only)
            if pods:
                out.append(f"{addr} {index.ip_set(p.ip for p in pods)}{l4} {verdict}")
            if only is not None:
                continue  # a named port matches pods only, never ipBlocks
            for cidr, excepts in peers.blocks:
                not_in = f" {addr} != {_set(excepts)}" if excepts else ""
                out.append(f"{addr} {cidr}{not_in}{l4} {verdict}")
    if egress and dns_allowed and index.facts.dns is not None:
        ip, port = index.facts.dns
        out.append(f"ip daddr {ip} meta l4proto {{ tcp, udp }} th dport {port} return")
    out.append("drop")
    return list(dict.fromkeys(out))


def render(pods: Iterable[Mapping[str, Any]], namespaces: Iterable[Mapping[str, Any]],
           policies: Iterable[Mapping[str, Any]], facts: NodeFacts) -> Ruleset:
    """The ``inet shoal-netpol`` table for this node and this replica."""
    cluster = ipaddress.IPv4Network(facts.cluster_cidr, strict=False)
    infos = [i for i in (pod_info(p, cluster) for p in pods) if i is not None]
    ns_labels = {str((n.get("metadata") or {}).get("name")):
                 dict((n.get("metadata") or {}).get("labels") or {}) for n in namespaces}
    index = _Index(infos, ns_labels, facts)
    by_ns: dict[str, list[tuple[LabelSelector, set[str], dict[str, Any]]]] = {}
    for pol in policies:
        spec = pol.get("spec") or {}
        sel = _selector(spec.get("podSelector") if spec.get("podSelector") is not None else {})
        if sel is None:
            continue
        ns = str((pol.get("metadata") or {}).get("namespace") or "default")
        by_ns.setdefault(ns, []).append((sel, _types(spec), spec))
    chains: dict[str, list[str]] = {"forward": [], "input": []}
    egress_map: list[str] = []
    ingress_map: list[str] = []
    local: dict[str, PodInfo] = {}
    for p in sorted(infos, key=lambda p: (p.ip, p.namespace, p.name)):
        if p.node == facts.name:
            local.setdefault(p.ip, p)  # one chain per address: a map refuses duplicate keys
    for pod in local.values():
        selecting = [(t, spec) for sel, t, spec in by_ns.get(pod.namespace, ())
                     if sel.matches(pod.labels)]
        for direction, key, entries in (("Ingress", "ingress", ingress_map),
                                        ("Egress", "egress", egress_map)):
            chosen = [s for t, s in selecting if direction in t]
            if not chosen:
                continue
            rules = [(pod.namespace, r) for s in chosen for r in s.get(key) or []
                     if isinstance(r, dict)]
            name = _chain(key, pod)
            chains[name] = _direction_rules(index, pod, rules, egress=key == "egress")
            entries.append(f"{pod.ip} : jump {name}")
    for base in ("forward", "input"):
        lines = ["ct state established,related accept"]
        if egress_map:
            lines.append(f"ip saddr vmap {{ {', '.join(egress_map)} }}")
        if ingress_map and base == "forward":
            lines.append(f"ip daddr vmap {{ {', '.join(ingress_map)} }}")
        chains[base] = lines
    return Ruleset(chains, dict(sorted(index.sets.items())))
