"""Cluster DNS records from the local replica: every name, its records, looked up in one dict.

The records are those of CoreDNS's kubernetes plugin (the DNS specification for
Kubernetes Services and Pods), built from Services, their EndpointSlices and Pods:

- ``svc.ns.svc.<domain>``: A/AAAA of the clusterIPs; for a headless Service the
  ready endpoints' addresses; for an ExternalName Service a CNAME.
- ``_port._proto.svc.ns.svc.<domain>``: SRV for each named port, to the Service's
  name (clusterIP) or to each ready endpoint's name (headless). A SRV query for
  the Service's own name gets every port.
- ``host.svc.ns.svc.<domain>`` for each ready endpoint of a headless Service: its
  ``hostname`` if it has one, else its address with dashes (``10-42-0-5``).
- ``1-2-3-4.ns.pod.<domain>``: A, only if a pod in ``ns`` has that address
  (CoreDNS's ``pods verified``).

Answers come only from the replica, so a site cut off from the rest keeps
answering for everything it knows. The index is updated per object from the
change feed, and ``generation`` moves only when a name's records change (not on
every pod status write), so the server can cache packed answers per generation.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.node.dns_config import CLUSTER_DOMAIN
from shoal.store.change_feed import Change
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

TTL = 5
"""Seconds, as CoreDNS's kubernetes plugin: short, because endpoints move."""

SERVICES = "services"
SLICES = "endpointslices.discovery.k8s.io"
PODS = "pods"
WATCHED = frozenset({SERVICES, SLICES, PODS})


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(slots=True)
class NameRecords:
    """The records of one name. All empty: the name exists but has none (NODATA)."""

    a: list[str] = field(default_factory=list)
    aaaa: list[str] = field(default_factory=list)
    srv: list[Srv] = field(default_factory=list)
    cname: str | None = None

    def add_ip(self, ip: str) -> None:
        target = self.aaaa if ":" in ip else self.a
        if ip not in target:
            target.append(ip)


EMPTY = NameRecords()

Names = dict[str, NameRecords]


def service_names(svc: Mapping[str, Any], slices: Iterable[Mapping[str, Any]],
                  domain: str = CLUSTER_DOMAIN) -> Names:
    """Every name one Service contributes, with its records."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    base = f"{meta.get('name', '')}.{meta.get('namespace', 'default')}.svc.{domain}"
    names: Names = {base: NameRecords()}
    if spec.get("type") == "ExternalName":
        target = str(spec.get("externalName") or "").rstrip(".").lower()
        if target:
            names[base].cname = target
        return names
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]
           if ip and ip != "None"]
    if ips:
        for ip in ips:
            names[base].add_ip(ip)
        srv_ports = [(p.get("name"), p.get("protocol") or "TCP", p.get("port"))
                     for p in spec.get("ports") or [] if isinstance(p, dict)]
        for pname, proto, port in srv_ports:
            if pname and isinstance(port, int):
                _add_srv(names, f"_{pname}._{proto.lower()}.{base}", [Srv(0, 100, port, base)])
        names[base].srv = [Srv(0, 100, port, base) for _, _, port in srv_ports
                           if isinstance(port, int)]
        return names
    # Headless: the ready endpoints themselves.
    per_port: dict[tuple[str, str], list[Srv]] = {}
    every_port: list[Srv] = []
    for sl in slices:
        ready = [ep for ep in sl.get("endpoints") or []
                 if (ep.get("conditions") or {}).get("ready") is not False]
        for ep in ready:
            for ip in ep.get("addresses") or []:
                names[base].add_ip(ip)
                host = f"{ep.get('hostname') or _dashed(ip)}.{base}"
                names.setdefault(host, NameRecords()).add_ip(ip)
                for p in sl.get("ports") or []:
                    port = p.get("port")
                    if not isinstance(port, int):
                        continue
                    srv = Srv(0, 0, port, host)
                    every_port.append(srv)
                    if p.get("name"):
                        key = (str(p["name"]), str(p.get("protocol") or "TCP").lower())
                        per_port.setdefault(key, []).append(srv)
    for (pname, proto), srvs in sorted(per_port.items()):
        _add_srv(names, f"_{pname}._{proto}.{base}", srvs)
    names[base].srv = _weighted(every_port)
    return names


def _add_srv(names: Names, name: str, srvs: list[Srv]) -> None:
    names.setdefault(name, NameRecords()).srv = _weighted(srvs)


def _weighted(srvs: list[Srv]) -> list[Srv]:
    """Equal weights summing to about 100, as CoreDNS gives a set of SRV records."""
    unique = sorted(set(srvs), key=lambda s: (s.target, s.port))
    weight = max(1, 100 // len(unique)) if unique else 0
    return [Srv(s.priority, weight, s.port, s.target) for s in unique]


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def pod_ips(pod: Mapping[str, Any]) -> tuple[str, ...]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return tuple(str(ip) for ip in ips if ip)


def parse_pod_name(labels: list[str]) -> str | None:
    """The address a pod name's first label stands for (``10-42-0-5``), or None."""
    text = labels[0]
    candidates = [text.replace("-", ".")] if text.count("-") == 3 else []
    candidates.append(text.replace("-", ":"))
    for c in candidates:
        try:
            return str(ipaddress.ip_address(c))
        except ValueError:
            continue
    return None


def _parents(name: str, domain: str) -> list[str]:
    """The names between ``name`` and the zone apex, which exist as empty non-terminals."""
    out = []
    while name != domain and "." in name:
        name = name.split(".", 1)[1]
        out.append(name)
        if name == domain:
            break
    return out


class DnsIndex:
    """Every cluster name this replica knows, kept current object by object."""

    def __init__(self, domain: str = CLUSTER_DOMAIN) -> None:
        self.domain = domain.rstrip(".").lower()
        self._suffix = "." + self.domain
        self.generation = 0
        """Moves whenever an answer may have changed."""
        self._services: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._slices: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
        self._slice_owner: dict[tuple[str, str], str] = {}
        self._contributed: dict[tuple[str, str], Names] = {}
        self._names: Names = {}
        self._existing: Counter[str] = Counter()
        self._pod_ips: dict[tuple[str, str], tuple[str, ...]] = {}
        self._pods_by_ip: Counter[tuple[str, str]] = Counter()

    # -- lookups ---------------------------------------------------------------

    def in_zone(self, name: str) -> bool:
        """Whether a (lower-case, dot-less) name is ours to answer rather than forward."""
        return name == self.domain or name.endswith(self._suffix)

    def lookup(self, name: str) -> NameRecords | None:
        """The records of a name in the zone; None for a name that does not exist (NXDOMAIN)."""
        found = self._names.get(name)
        if found is not None:
            return found
        if name == self.domain or self._existing[name] > 0:
            return EMPTY
        labels = name[: -len(self._suffix)].split(".")
        if len(labels) == 3 and labels[2] == "pod":
            ip = parse_pod_name(labels)
            if ip is not None and self._pods_by_ip[(labels[1], ip)] > 0:
                records = NameRecords()
                records.add_ip(ip)
                return records
        if len(labels) == 1 and labels[0] in ("svc", "pod"):
            return EMPTY
        return None

    # -- updates ---------------------------------------------------------------

    def apply(self, resource: str, namespace: str, name: str,
              obj: Mapping[str, Any] | None) -> None:
        """Take the current value of one object (None: deleted)."""
        try:
            if resource == SERVICES:
                self._apply_service(namespace, name, obj)
            elif resource == SLICES:
                self._apply_slice(namespace, name, obj)
            elif resource == PODS:
                self._apply_pod(namespace, name, obj)
        except (TypeError, ValueError, AttributeError, KeyError):
            # A merged object is not validated: one odd value must not stop cluster DNS.
            log.exception("DNS: cannot index %s %s/%s", resource, namespace, name)

    def apply_change(self, change: Change) -> None:
        self.apply(change.resource, change.namespace, change.name,
                   None if change.type == "DELETED" else change.obj)

    def load(self, replica: Replica) -> None:
        """Forget everything and read the replica's current state."""
        fresh = DnsIndex(self.domain)
        for resource in (SERVICES, SLICES, PODS):
            for obj in replica.list(resource):
                meta = obj.get("metadata") or {}
                fresh.apply(resource, meta.get("namespace", ""), meta.get("name", ""), obj)
        generation = self.generation + 1
        self._take(fresh)
        self.generation = generation

    def _take(self, other: DnsIndex) -> None:
        for attr in ("_services", "_slices", "_slice_owner", "_contributed", "_names",
                     "_existing", "_pod_ips", "_pods_by_ip"):
            setattr(self, attr, getattr(other, attr))

    def _apply_service(self, ns: str, name: str, obj: Mapping[str, Any] | None) -> None:
        if obj is None:
            self._services.pop((ns, name), None)
        else:
            self._services[(ns, name)] = obj
        self._rebuild(ns, name)

    def _apply_slice(self, ns: str, name: str, obj: Mapping[str, Any] | None) -> None:
        old_owner = self._slice_owner.pop((ns, name), None)
        if old_owner is not None:
            self._slices.get((ns, old_owner), {}).pop(name, None)
        owner = None
        if obj is not None:
            owner = ((obj.get("metadata") or {}).get("labels") or {}).get(
                "kubernetes.io/service-name")
        if owner:
            self._slice_owner[(ns, name)] = owner
            self._slices.setdefault((ns, owner), {})[name] = obj  # type: ignore[assignment]
            self._rebuild(ns, owner)
        if old_owner is not None and old_owner != owner:
            self._rebuild(ns, old_owner)

    def _rebuild(self, ns: str, svc_name: str) -> None:
        svc = self._services.get((ns, svc_name))
        new: Names = {}
        if svc is not None:
            slices = self._slices.get((ns, svc_name), {})
            new = service_names(svc, [slices[k] for k in sorted(slices)], self.domain)
        old = self._contributed.get((ns, svc_name), {})
        if new == old:
            return
        for n in old:
            self._names.pop(n, None)
            for p in _parents(n, self.domain):
                self._existing[p] -= 1
        for n, records in new.items():
            self._names[n] = records
            for p in _parents(n, self.domain):
                self._existing[p] += 1
        if new:
            self._contributed[(ns, svc_name)] = new
        else:
            self._contributed.pop((ns, svc_name), None)
        self.generation += 1

    def _apply_pod(self, ns: str, name: str, obj: Mapping[str, Any] | None) -> None:
        new = pod_ips(obj) if obj is not None else ()
        old = self._pod_ips.get((ns, name), ())
        if new == old:
            return
        for ip in old:
            self._pods_by_ip[(ns, ip)] -= 1
        for ip in new:
            self._pods_by_ip[(ns, ip)] += 1
        if new:
            self._pod_ips[(ns, name)] = new
        else:
            self._pod_ips.pop((ns, name), None)
        self.generation += 1


async def follow(replica: Replica, index: DnsIndex) -> None:
    """Keep ``index`` current from the replica's change feed, forever."""
    while True:
        sub = replica.subscribe(lambda c: c.resource in WATCHED)
        # Subscribed first, loaded second: a change in between is applied twice, harmlessly.
        index.load(replica)
        try:
            while True:
                change = await sub.queue.get()
                if change is None:
                    log.warning("the DNS index fell behind the change feed; reloading")
                    break
                index.apply_change(change)
        finally:
            sub.close()
