"""The Service rules of one node: Services and EndpointSlices in, an nftables script out.

A pure function of its input (no I/O), so every case is a table test. The
layout follows kube-proxy's nftables mode, in a table of our own
(``ip shoal-services``) so that nothing another table owns is ever touched:

- ``services`` (jumped to from nat prerouting for pods and nat output for the
  host) looks the destination up in the ``service-ips`` verdict map (cluster
  IPs) and, for any local address but loopback, in ``service-nodeports``.
- One ``service-…`` chain per Service port marks traffic from outside the pod
  CIDR for masquerade, keeps a client on its endpoint with ``sessionAffinity:
  ClientIP`` (one dynamic set per endpoint, keyed by source address, entries
  expiring after the affinity timeout) and otherwise picks an endpoint with
  ``numgen random mod N``. An ``external-…`` chain does the same for NodePort
  traffic, which is masqueraded unless ``externalTrafficPolicy: Local``.
- One ``endpoint-…`` chain per endpoint DNATs to it, and masquerades a pod
  that reaches itself through its Service (hairpin).
- A Service port with no endpoint is rejected (TCP reset, ICMP for UDP) from filter
  chains that run before the DNAT, and one whose only endpoints are on other
  nodes under a ``Local`` traffic policy is dropped, as kube-proxy does.
  Packets to a cluster IP on a port it does not serve are rejected, and to an
  unallocated address of the service CIDR dropped.

Shoal-specific choices:

- The cluster DNS Service (``kube-system/kube-dns``, port 53) is DNATed to this
  node's own DNS listener rather than to endpoints, so names resolve on a node
  cut off from the rest.
- Endpoints on a node this node currently sees as unreachable are left out at
  once (not after the Lease grace). While some are left out, endpoints on this
  node are used alone if there are any: the partitioned network is then not
  relied on at all.
- Only IPv4, and no NodePort on 127.0.0.1 (kube-proxy's nftables mode does not
  serve localhost node ports either).

:meth:`Ruleset.script` turns a ruleset into one ``nft -f`` transaction that
changes the table in place from the previous ruleset: only chains whose rules
changed are flushed and refilled, map elements are added and removed one by
one, stale chains and sets deleted, and the affinity sets kept, so that
clients keep their endpoint across updates.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TABLE = "shoal-services"
MASQUERADE_MARK = 0x4000
DNS_SERVICE = ("kube-system", "kube-dns")
DNS_PORT = 53
DEFAULT_AFFINITY_TIMEOUT = 10800
"""Seconds, as Kubernetes' default ``sessionAffinityConfig.clientIP.timeoutSeconds``."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# Hooks and priorities as kube-proxy's: the filter chains run before the DNAT (-110 < -100).
_BASE_CHAINS = {
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "filter-input": "type filter hook input priority -110; policy accept;",
    "filter-forward": "type filter hook forward priority -110; policy accept;",
    "filter-output": "type filter hook output priority -110; policy accept;",
    "filter-output-post-dnat": "type filter hook output priority -90; policy accept;",
}
_MAPS = {
    "service-ips": "type ipv4_addr . inet_proto . inet_service : verdict;",
    "service-nodeports": "type inet_proto . inet_service : verdict;",
    "no-endpoint-services": "type ipv4_addr . inet_proto . inet_service : verdict;",
    "no-endpoint-nodeports": "type inet_proto . inet_service : verdict;",
}
_LOCAL_DESTINATION = "fib daddr type local ip daddr != 127.0.0.0/8"
_REJECT_TCP = "meta l4proto tcp reject with tcp reset"


@dataclass(frozen=True)
class NodeFacts:
    """What the rules need to know about the node they run on."""

    name: str
    cluster_cidr: str = "10.42.0.0/16"
    """Pod addresses: traffic to a Service from anywhere else is masqueraded."""
    service_cidr: str = "10.96.0.0/12"
    dns_listener: tuple[str, int] | None = None
    """This node's DNS server (address, port); None: kube-dns is routed to its endpoints."""
    unreachable: frozenset[str] = frozenset()
    """Nodes this node cannot reach now: their endpoints are left out."""


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str | None
    ready: bool
    serving: bool
    terminating: bool


@dataclass
class Ruleset:
    """The content of the table: chains with their rules, sets and verdict maps."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)
    """name -> definition (type, flags, timeout)."""
    elements: dict[str, list[str]] = field(default_factory=lambda: {m: [] for m in _MAPS})
    """map or set name -> its elements."""

    def text(self) -> str:
        """The table as ``nft list table`` would show it (for logs and docs)."""
        out = [f"table ip {TABLE} {{"]
        for name, definition in self.sets.items():
            out.append(f"\tset {name} {{ {definition} }}")
        for name, definition in _MAPS.items():
            elements = ", ".join(self.elements.get(name, []))
            out.append(f"\tmap {name} {{ {definition} elements = {{ {elements} }} }}")
        for name, rules in self.chains.items():
            out.append(f"\tchain {name} {{")
            if name in _BASE_CHAINS:
                out.append(f"\t\t{_BASE_CHAINS[name]}")
            out += [f"\t\t{r}" for r in rules]
            out.append("\t}")
        out.append("}")
        return "\n".join(out) + "\n"

    def script(self, previous: Ruleset | None) -> str:
        """One ``nft -f`` transaction from ``previous`` (None: unknown, replace the table).

        Only what differs is written: new and changed chains, added and removed
        map elements, stale chains and sets. An update costs what changed, not
        the size of the table (a full rewrite of 1,000 Services takes ~1 s).
        """
        t = f"ip {TABLE}"
        out = [f"add table {t}"]
        before = previous or Ruleset(chains={}, sets={}, elements={})
        if previous is None:
            out += [f"delete table {t}", f"add table {t}"]
            out += [f"add map {t} {name} {{ {d} }}" for name, d in _MAPS.items()]
        out += [f"add set {t} {name} {{ {d} }}" for name, d in self.sets.items()
                if name not in before.sets]
        changed = [c for c, rules in self.chains.items() if before.chains.get(c) != rules]
        for name in changed:
            if name in before.chains:
                out.append(f"flush chain {t} {name}")
            else:
                base = f" {{ {_BASE_CHAINS[name]} }}" if name in _BASE_CHAINS else ""
                out.append(f"add chain {t} {name}{base}")
        for name in changed:
            out += [f"add rule {t} {name} {r}" for r in self.chains[name]]
        for name in _MAPS:
            old, new = before.elements.get(name, []), self.elements.get(name, [])
            old_set, new_set = set(old), set(new)
            gone = [e.split(" : ", 1)[0] for e in old if e not in new_set]
            added = [e for e in new if e not in old_set]
            if gone:
                out.append(f"delete element {t} {name} {{ {', '.join(gone)} }}")
            if added:
                out.append(f"add element {t} {name} {{ {', '.join(added)} }}")
        stale = [c for c in before.chains if c not in self.chains]
        out += [f"flush chain {t} {c}" for c in stale]
        out += [f"delete chain {t} {c}" for c in stale]
        out += [f"delete set {t} {s}" for s in before.sets if s not in self.sets]
        return "\n".join(out) + "\n"


def _hash(key: str) -> str:
    return base64.b32encode(hashlib.sha256(key.encode()).digest())[:8].decode()


def _named(prefix: str, key: str) -> str:
    """A chain or set name: a hash (names must be unique) and the readable key."""
    return f"{prefix}-{_hash(f'{prefix}/{key}')}-{key}"


def _endpoints_by_port(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Endpoint]]:
    """(port name, protocol) -> its endpoints across the Service's IPv4 slices, deduplicated."""
    out: dict[tuple[str, str], dict[tuple[str, int], Endpoint]] = {}
    for s in slices:
        if s.get("addressType") != "IPv4":
            continue
        for p in s.get("ports") or []:
            number = p.get("port")
            if not isinstance(number, int):
                continue
            key = (str(p.get("name") or ""), str(p.get("protocol") or "TCP"))
            by_address = out.setdefault(key, {})
            for e in s.get("endpoints") or []:
                addresses = e.get("addresses") or []
                if not addresses:
                    continue
                c = e.get("conditions") or {}
                ready = c.get("ready") is not False
                ep = Endpoint(ip=str(addresses[0]), port=number, node=e.get("nodeName"),
                              ready=ready, serving=c.get("serving", ready) is not False,
                              terminating=bool(c.get("terminating")))
                have = by_address.get((ep.ip, ep.port))
                if have is None or (ep.ready and not have.ready):
                    by_address[(ep.ip, ep.port)] = ep
    return {k: sorted(v.values(), key=lambda e: (e.ip, e.port)) for k, v in out.items()}


def usable_endpoints(endpoints: list[Endpoint], node: NodeFacts) -> list[Endpoint]:
    """The endpoints this node may route to now (before any traffic policy)."""
    reachable = [e for e in endpoints if e.node is None or e.node == node.name
                 or e.node not in node.unreachable]
    chosen = [e for e in reachable if e.ready]
    if not chosen:  # as kube-proxy: terminating endpoints still serving, rather than nothing
        chosen = [e for e in reachable if e.serving and e.terminating]
    if any(e.ready and e not in reachable for e in endpoints):
        local = [e for e in chosen if e.node == node.name]
        if local:
            return local
    return chosen


def _is_ipv4(value: object) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


class _Builder:
    def __init__(self, node: NodeFacts) -> None:
        self.node = node
        self.rs = Ruleset()
        self.cluster_ips: list[str] = []

    def base(self) -> None:
        c = self.rs.chains
        mark = f"0x{MASQUERADE_MARK:08x}"
        c["nat-prerouting"] = ["jump services"]
        c["nat-output"] = ["jump services"]
        c["nat-postrouting"] = ["jump masquerading"]
        c["filter-input"] = ["ct state new jump nodeport-endpoints-check",
                             "ct state new jump service-endpoints-check"]
        c["filter-forward"] = ["ct state new jump service-endpoints-check",
                               "ct state new jump cluster-ips-check"]
        c["filter-output"] = ["ct state new jump service-endpoints-check",
                              "ct state new jump nodeport-endpoints-check"]
        c["filter-output-post-dnat"] = ["ct state new jump cluster-ips-check"]
        c["services"] = [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            f"{_LOCAL_DESTINATION} meta l4proto . th dport vmap @service-nodeports",
        ]
        c["service-endpoints-check"] = [
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services"]
        c["nodeport-endpoints-check"] = [
            f"{_LOCAL_DESTINATION} meta l4proto . th dport vmap @no-endpoint-nodeports"]
        c["masquerading"] = [f"meta mark & {mark} == 0x00000000 return",
                             f"meta mark set meta mark ^ {mark}",
                             "masquerade fully-random"]
        c["mark-for-masquerade"] = [f"meta mark set meta mark | {mark}"]
        # A TCP reset for TCP: the ICMP that a bare reject sends is rate-limited by the
        # kernel (about one per second per source), so most clients would wait for their
        # timeout instead of being refused. ICMP port unreachable for UDP and SCTP.
        c["reject-chain"] = [_REJECT_TCP, "reject"]
        c["cluster-ips-check"] = []  # filled in by finish(), once the cluster IPs are known

    def finish(self) -> Ruleset:
        rules = self.rs.chains["cluster-ips-check"]
        if self.cluster_ips:
            ips = ", ".join(sorted(set(self.cluster_ips), key=ipaddress.ip_address))
            # A port the cluster IP does not serve.
            rules += [f"ip daddr {{ {ips} }} {_REJECT_TCP}", f"ip daddr {{ {ips} }} reject"]
        rules.append(f"ip daddr {self.node.service_cidr} drop")  # an unallocated cluster IP
        return self.rs

    def service(self, svc: Mapping[str, Any], slices: list[Mapping[str, Any]]) -> None:
        m = svc.get("metadata") or {}
        spec = svc.get("spec") or {}
        ns, name = str(m.get("namespace") or "default"), str(m.get("name") or "")
        cluster_ip = spec.get("clusterIP")
        if spec.get("type") == "ExternalName" or not _is_ipv4(cluster_ip):
            return  # headless (None), ExternalName (a DNS CNAME) or IPv6: no rules
        self.cluster_ips.append(str(cluster_ip))
        by_port = _endpoints_by_port(slices)
        for sp in spec.get("ports") or []:
            if not isinstance(sp, Mapping) or not isinstance(sp.get("port"), int):
                continue
            protocol = str(sp.get("protocol") or "TCP")
            if protocol not in ("TCP", "UDP", "SCTP"):
                continue
            port_name = str(sp.get("name") or "")
            key = f"{ns}/{name}/{protocol.lower()}/{port_name}"
            dns = self.node.dns_listener
            if (ns, name) == DNS_SERVICE and sp["port"] == DNS_PORT and dns is not None:
                self._to_dns_listener(key, str(cluster_ip), protocol.lower(), dns)
                continue
            self._service_port(key, svc, sp, str(cluster_ip), protocol.lower(),
                               by_port.get((port_name, protocol), []))

    def _to_dns_listener(self, key: str, cluster_ip: str, proto: str,
                         listener: tuple[str, int]) -> None:
        chain = _named("service", key)
        if listener[0] in ("0.0.0.0", "::", ""):
            # Listening on every address: redirect (to the address the packet came in on,
            # 127.0.0.1 from the node itself), since a DNAT to 0.0.0.0 goes nowhere.
            action = f"redirect to :{listener[1]}"
        else:
            action = f"dnat to {listener[0]}:{listener[1]}"
        self.rs.chains[chain] = [f"meta l4proto {proto} {action}"]
        self.rs.elements["service-ips"].append(
            f"{cluster_ip} . {proto} . {DNS_PORT} : goto {chain}")

    def _service_port(self, key: str, svc: Mapping[str, Any], sp: Mapping[str, Any],
                      cluster_ip: str, proto: str, endpoints: list[Endpoint]) -> None:
        spec = svc.get("spec") or {}
        port = int(sp["port"])
        node_port = sp.get("nodePort") if spec.get("type") in ("NodePort", "LoadBalancer") \
            else None
        if not isinstance(node_port, int) or not 0 < node_port < 65536:
            node_port = None
        usable = usable_endpoints(endpoints, self.node)
        if not usable:
            self.rs.elements["no-endpoint-services"].append(
                f"{cluster_ip} . {proto} . {port} : goto reject-chain")
            if node_port is not None:
                self.rs.elements["no-endpoint-nodeports"].append(
                    f"{proto} . {node_port} : goto reject-chain")
            return
        local = [e for e in usable if e.node == self.node.name]
        internal = local if spec.get("internalTrafficPolicy") == "Local" else usable
        external_local = spec.get("externalTrafficPolicy") == "Local"
        external = local if external_local else usable
        affinity = self._affinity_timeout(spec)
        service_chain = _named("service", key)
        if internal:
            self.rs.chains[service_chain] = [
                f"ip daddr {cluster_ip} {proto} dport {port} "
                f"ip saddr != {self.node.cluster_cidr} jump mark-for-masquerade",
                *self._balance(key, proto, internal, affinity)]
            self.rs.elements["service-ips"].append(
                f"{cluster_ip} . {proto} . {port} : goto {service_chain}")
        else:  # only endpoints on other nodes, and a Local policy: drop, as kube-proxy
            self.rs.elements["no-endpoint-services"].append(
                f"{cluster_ip} . {proto} . {port} : drop")
        if node_port is None:
            return
        if not external:
            self.rs.elements["no-endpoint-nodeports"].append(f"{proto} . {node_port} : drop")
            return
        external_chain = _named("external", key)
        rules = [] if external_local else ["jump mark-for-masquerade"]
        if external == internal:
            rules.append(f"goto {service_chain}")
        else:
            rules += self._balance(key, proto, external, affinity)
        self.rs.chains[external_chain] = rules
        self.rs.elements["service-nodeports"].append(
            f"{proto} . {node_port} : goto {external_chain}")

    @staticmethod
    def _affinity_timeout(spec: Mapping[str, Any]) -> int | None:
        if spec.get("sessionAffinity") != "ClientIP":
            return None
        config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        timeout = config.get("timeoutSeconds")
        return timeout if isinstance(timeout, int) and timeout > 0 else DEFAULT_AFFINITY_TIMEOUT

    def _balance(self, key: str, proto: str, endpoints: list[Endpoint],
                 affinity: int | None) -> list[str]:
        """Rules that send a new connection to one of ``endpoints``."""
        rules: list[str] = []
        targets: list[str] = []
        for e in endpoints:
            ep_key = f"{key}__{e.ip}/{e.port}"
            chain = _named("endpoint", ep_key)
            targets.append(chain)
            ep_rules = [f"ip saddr {e.ip} jump mark-for-masquerade"]  # hairpin
            if affinity is not None:
                # The timeout is in the set's name: a changed timeout is a new set.
                aff = _named("affinity", f"{ep_key}/{affinity}s")
                self.rs.sets[aff] = (f"type ipv4_addr; flags dynamic,timeout; "
                                     f"timeout {affinity}s;")
                rules.append(f"ip saddr @{aff} goto {chain}")
                ep_rules.append(f"update @{aff} {{ ip saddr }}")
            ep_rules.append(f"meta l4proto {proto} dnat to {e.ip}:{e.port}")
            self.rs.chains[chain] = ep_rules
        verdicts = ", ".join(f"{i} : goto {c}" for i, c in enumerate(targets))
        rules.append(f"numgen random mod {len(targets)} vmap {{ {verdicts} }}")
        return rules


def render(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]],
           node: NodeFacts) -> Ruleset:
    """The Service rules of ``node`` for these Services and EndpointSlices."""
    by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in slices:
        m = s.get("metadata") or {}
        owner = (m.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((str(m.get("namespace") or "default"), owner), []).append(s)
    b = _Builder(node)
    b.base()
    ordered = sorted(services, key=lambda s: ((s.get("metadata") or {}).get("namespace") or "",
                                              (s.get("metadata") or {}).get("name") or ""))
    for svc in ordered:
        m = svc.get("metadata") or {}
        if m.get("deletionTimestamp"):
            continue
        b.service(svc, by_service.get((str(m.get("namespace") or "default"),
                                       str(m.get("name") or "")), []))
    return b.finish()
