"""Endpoints and EndpointSlices from Services and their pods, written only when they change.

For every Service with a selector, the pods it selects that have an IP and are
not terminal become addresses: ready pods in ``addresses``, the others in
``notReadyAddresses`` (Endpoints) or with ``conditions.ready=false``
(EndpointSlices, which also list terminating pods). Named target ports are
resolved per pod from its container ports, so pods that name a port
differently land in different subsets or slices, as in Kubernetes.

With host networking the node agent gives a pod its node's address, so several
pods may share an IP: each is still listed, told apart by its ``targetRef``.

Endpoints are named after their Service; EndpointSlices after the Service, its
uid, the address type, the port set and a chunk number, so two peers that
write them while apart produce the same objects and the merge keeps one of
each. Both carry managed-by labels, and only objects so labelled are deleted.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from shoal.control.controller import Controller
from shoal.control.field_owner import created_by
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_state import is_ready
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, ObjectStore, StoreError

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER = "endpointslice-controller.shoal.dev"
ENDPOINTS_MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGER = "endpoint-controller"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

Port = tuple[str, int, str, str | None]  # name, port, protocol, appProtocol


def _suffix(key: str) -> str:
    n = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    out = ""
    for _ in range(5):
        n, r = divmod(n, len(ALPHABET))
        out += ALPHABET[r]
    return out


def slice_name(svc_name: str, svc_uid: str, address_type: str, ports: tuple[Port, ...],
               chunk: int) -> str:
    """The name of one EndpointSlice: the same on every peer."""
    sig = orjson.dumps([list(p) for p in ports]).decode()
    return f"{svc_name[:57]}-{_suffix(f'{svc_uid}/{address_type}/{sig}/{chunk}')}"


def find_port(pod: Mapping[str, Any], svc_port: Mapping[str, Any]) -> int | None:
    """The pod's port for a service port: a number, or a container port looked up by name."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if not isinstance(target, str) or not target:
        return None
    protocol = svc_port.get("protocol") or "TCP"
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in (c or {}).get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                port = p.get("containerPort")
                return port if isinstance(port, int) else None
    return None


def pod_ports(pod: Mapping[str, Any], svc: Mapping[str, Any]) -> tuple[Port, ...]:
    out: list[Port] = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        number = find_port(pod, sp)
        if number is None:
            continue  # Kubernetes skips a port the pod does not have
        out.append((str(sp.get("name") or ""), number, str(sp.get("protocol") or "TCP"),
                    sp.get("appProtocol")))
    return tuple(sorted(out, key=lambda p: (p[0], p[1], p[2])))


def pod_ips(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(x.get("ip")) for x in status.get("podIPs") or [] if isinstance(x, dict)
           and x.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def address_type(ip: str) -> str | None:
    try:
        return "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"
    except ValueError:
        return None


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _target_ref(pod: Mapping[str, Any]) -> dict[str, Any]:
    m = pod.get("metadata") or {}
    return {"kind": "Pod", "namespace": m.get("namespace", "default"), "name": m.get("name"),
            "uid": m.get("uid")}


def _hostname(pod: Mapping[str, Any], svc: Mapping[str, Any]) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"]:
        return str(spec["hostname"])
    return None


def _address_order(address: Mapping[str, Any]) -> tuple[str, str]:
    return str(address["ip"]), str(address["targetRef"]["name"])


def _listed_fields(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod can change its entries: labels, IPs, readiness, phase, node, deletion."""
    m = pod.get("metadata") or {}
    return (m.get("labels"), m.get("deletionTimestamp"), pod_ips(pod), is_ready(pod),
            _terminal(pod), (pod.get("spec") or {}).get("nodeName"))


def _port_dict(p: Port, slice_port: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"port": p[1], "protocol": p[2]}
    if p[0] or slice_port:
        out["name"] = p[0]
    if p[3]:
        out["appProtocol"] = p[3]
    return out


class EndpointsController(Controller):
    name = "endpoints"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        r = store.registry
        svc, pod, node = r.by_kind("v1", "Service"), r.by_kind("v1", "Pod"), r.by_kind("v1", "Node")
        ep, eps = r.by_kind("v1", "Endpoints"), r.by_kind("discovery.k8s.io/v1", "EndpointSlice")
        assert svc is not None and pod is not None and node is not None
        assert ep is not None and eps is not None
        self.svc_kind, self.pod_kind, self.node_kind = svc, pod, node
        self.ep_kind, self.slice_kind = ep, eps
        self.writes = 0

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods" and not self._selecting_services(change.namespace):
            return False  # no Service in its namespace can select it
        if change.resource == "pods" and change.type == "MODIFIED" and change.old is not None:
            # Most pod writes (container statuses, probes) change nothing listed here.
            return _listed_fields(change.obj) != _listed_fields(change.old)
        return change.resource in ("services", "pods", "nodes", "endpoints",
                                   "endpointslices.discovery.k8s.io")

    def _selecting_services(self, namespace: str) -> bool:
        """Whether a Service of the namespace has a selector (the others select no pod)."""
        return any((s.get("spec") or {}).get("selector")
                   for s in self.store.replica.list("services", namespace))

    async def sync(self) -> bool:
        zones = {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(ZONE_LABEL)
                 for n in self.store.list(self.node_kind)}
        # Pods are read only in the namespaces of Services that select: listing every pod
        # on each pass made each pod create cost a pass over all pods (issue 11).
        pods_by_ns: dict[str, list[dict[str, Any]]] = {}
        slices_by_svc: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in self.store.list(self.slice_kind):
            labels = s["metadata"].get("labels") or {}
            if labels.get(SLICE_MANAGED_BY_LABEL) == SLICE_MANAGER:
                key = (s["metadata"].get("namespace", ""), labels.get(SERVICE_NAME_LABEL, ""))
                slices_by_svc.setdefault(key, []).append(s)
        pending = False
        services: set[tuple[str, str]] = set()
        scopes = self.scopes.current()
        for svc in self.store.list(self.svc_kind):
            m = svc["metadata"]
            key = (m.get("namespace", "default"), m["name"])
            spec = svc.get("spec") or {}
            if not spec.get("selector") or spec.get("type") == "ExternalName" \
                    or m.get("deletionTimestamp"):
                continue  # Endpoints of a selector-less Service are the user's
            services.add(key)
            if not should_act(self.view, m["uid"], scopes.scope_of("services", key[0]), scopes):
                continue
            try:
                if key[0] not in pods_by_ns:
                    pods_by_ns[key[0]] = self.store.list(self.pod_kind, key[0])
                await self._sync_service(svc, pods_by_ns[key[0]], zones,
                                         slices_by_svc.get(key, []))
            except StoreError as e:
                log.debug("endpoints of %s/%s: %s", key[0], key[1], e)
                pending = True
        pending |= await self._cleanup(services, slices_by_svc)
        return pending

    async def _cleanup(self, services: set[tuple[str, str]],
                       slices_by_svc: dict[tuple[str, str], list[dict[str, Any]]]) -> bool:
        """Delete what this controller made for Services that are gone or lost their selector."""
        pending = False
        leftovers: list[tuple[Any, dict[str, Any]]] = []
        for key, slices in slices_by_svc.items():
            if key not in services:
                leftovers.extend((self.slice_kind, s) for s in slices)
        for ep in self.store.list(self.ep_kind):
            m = ep["metadata"]
            if (m.get("namespace", "default"), m["name"]) not in services and \
                    (m.get("labels") or {}).get(ENDPOINTS_MANAGED_BY_LABEL) == ENDPOINTS_MANAGER and \
                    self.store.find(self.svc_kind, m.get("namespace"), m["name"]) is None:
                leftovers.append((self.ep_kind, ep))
        scopes = self.scopes.current()
        for kind, obj in leftovers:
            m = obj["metadata"]
            if not should_act(self.view, f"{kind.resource}/{m.get('namespace')}/{m['name']}",
                              scope_of(scopes, kind.resource, obj), scopes):
                continue
            try:
                await self.store.delete(kind, m.get("namespace"), m["name"],
                                        precondition_uid=m.get("uid"))
                self.writes += 1
            except StoreError as e:
                log.debug("cleanup of %s %s: %s", kind.kind, m["name"], e)
                pending = True
        return pending

    def _selected(self, svc: dict[str, Any], pods: list[dict[str, Any]],
                  include_terminating: bool) -> list[dict[str, Any]]:
        try:
            selector = LabelSelector.from_set((svc.get("spec") or {}).get("selector"))
        except SelectorError:
            return []
        out = []
        for p in pods:
            if not selector.matches(p["metadata"].get("labels")) or _terminal(p) \
                    or not pod_ips(p):
                continue
            if p["metadata"].get("deletionTimestamp") and not include_terminating:
                continue
            out.append(p)
        return out

    def _labels(self, svc: dict[str, Any]) -> dict[str, str]:
        labels = {k: v for k, v in (svc["metadata"].get("labels") or {}).items()}
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS_LABEL] = ""
        return labels

    async def _sync_service(self, svc: dict[str, Any], pods: list[dict[str, Any]],
                            zones: Mapping[str, str | None],
                            existing: list[dict[str, Any]]) -> None:
        await self._write_endpoints(svc, pods)
        await self._write_slices(svc, pods, zones, existing)

    # -- v1 Endpoints ------------------------------------------------------------

    def desired_endpoints(self, svc: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
        spec = svc.get("spec") or {}
        publish = bool(spec.get("publishNotReadyAddresses"))
        groups: dict[tuple[Port, ...], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for p in self._selected(svc, pods, publish):
            ports = pod_ports(p, svc)
            if spec.get("ports") and not ports:
                continue
            addr: dict[str, Any] = {"ip": pod_ips(p)[0], "targetRef": _target_ref(p)}
            if (p.get("spec") or {}).get("nodeName"):
                addr["nodeName"] = p["spec"]["nodeName"]
            hostname = _hostname(p, svc)
            if hostname:
                addr["hostname"] = hostname
            ready, not_ready = groups.setdefault(ports, ([], []))
            (ready if publish or is_ready(p) else not_ready).append(addr)
        subsets = []
        for ports, (ready, not_ready) in sorted(groups.items(), key=lambda kv: kv[0]):
            subset: dict[str, Any] = {}
            if ready:
                subset["addresses"] = sorted(ready, key=_address_order)
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=_address_order)
            if ports:
                subset["ports"] = [_port_dict(x, False) for x in ports]
            subsets.append(subset)
        labels = self._labels(svc)
        labels[ENDPOINTS_MANAGED_BY_LABEL] = ENDPOINTS_MANAGER
        labels[SKIP_MIRROR_LABEL] = "true"
        m = svc["metadata"]
        ep: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {
            "name": m["name"], "namespace": m.get("namespace", "default"), "labels": labels}}
        if subsets:
            ep["subsets"] = subsets
        return ep

    async def _write_endpoints(self, svc: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        want = self.desired_endpoints(svc, pods)
        m = want["metadata"]
        have = self.store.find(self.ep_kind, m["namespace"], m["name"])
        if have is None:
            try:
                await self.store.create(self.ep_kind, want, m["namespace"],
                                            managed_fields=created_by(self.store, self.ep_kind))
                self.writes += 1
            except AlreadyExists:
                pass
            return
        if (have["metadata"].get("labels") or {}) == m["labels"] and \
                (have.get("subsets") or []) == (want.get("subsets") or []):
            return
        new = copy.deepcopy(have)
        new["metadata"]["labels"] = m["labels"]
        new.pop("subsets", None)
        if "subsets" in want:
            new["subsets"] = want["subsets"]
        await self.store.update(self.ep_kind, new, m["namespace"], m["name"])
        self.writes += 1

    # -- discovery.k8s.io/v1 EndpointSlices ------------------------------------

    def desired_slices(self, svc: dict[str, Any], pods: list[dict[str, Any]],
                       zones: Mapping[str, str | None]) -> list[dict[str, Any]]:
        m = svc["metadata"]
        spec = svc.get("spec") or {}
        publish = bool(spec.get("publishNotReadyAddresses"))
        families = [f for f in spec.get("ipFamilies") or ["IPv4"] if f in ("IPv4", "IPv6")]
        groups: dict[tuple[str, tuple[Port, ...]], list[dict[str, Any]]] = {}
        for p in self._selected(svc, pods, True):
            ports = pod_ports(p, svc)
            if spec.get("ports") and not ports:
                continue
            by_family = {address_type(ip): ip for ip in reversed(pod_ips(p))}
            terminating = bool(p["metadata"].get("deletionTimestamp"))
            serving = publish or is_ready(p)
            for family in families:
                ip = by_family.get(family)
                if ip is None:
                    continue
                ep: dict[str, Any] = {
                    "addresses": [ip],
                    "conditions": {"ready": serving and (publish or not terminating),
                                   "serving": serving, "terminating": terminating},
                    "targetRef": _target_ref(p),
                }
                node = (p.get("spec") or {}).get("nodeName")
                if node:
                    ep["nodeName"] = node
                    if zones.get(node):
                        ep["zone"] = zones[node]
                hostname = _hostname(p, svc)
                if hostname:
                    ep["hostname"] = hostname
                groups.setdefault((family, ports), []).append(ep)
        labels = self._labels(svc)
        labels[SERVICE_NAME_LABEL] = m["name"]
        labels[SLICE_MANAGED_BY_LABEL] = SLICE_MANAGER
        owner = [{"apiVersion": "v1", "kind": "Service", "name": m["name"], "uid": m["uid"],
                  "controller": True, "blockOwnerDeletion": True}]

        def make(name: str, family: str, ports: list[dict[str, Any]],
                 endpoints: list[dict[str, Any]]) -> dict[str, Any]:
            return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": name, "namespace": m.get("namespace", "default"),
                                 "labels": dict(labels), "ownerReferences": copy.deepcopy(owner)},
                    "addressType": family, "endpoints": endpoints, "ports": ports}

        out = []
        if not groups:
            # An empty placeholder per family, as Kubernetes keeps for a Service with no pods.
            for family in families or ["IPv4"]:
                out.append(make(slice_name(m["name"], m["uid"], family, (), 0), family, [], []))
            return out
        for (family, ports), eps in sorted(groups.items(), key=lambda kv: kv[0]):
            eps.sort(key=lambda e: (e["addresses"][0], e["targetRef"]["name"]))
            for chunk in range(0, len(eps), MAX_ENDPOINTS_PER_SLICE):
                out.append(make(slice_name(m["name"], m["uid"], family, ports,
                                           chunk // MAX_ENDPOINTS_PER_SLICE),
                                family, [_port_dict(x, True) for x in ports],
                                eps[chunk:chunk + MAX_ENDPOINTS_PER_SLICE]))
        return out

    async def _write_slices(self, svc: dict[str, Any], pods: list[dict[str, Any]],
                            zones: Mapping[str, str | None],
                            existing: list[dict[str, Any]]) -> None:
        wanted = self.desired_slices(svc, pods, zones)
        ns = svc["metadata"].get("namespace", "default")
        names = {s["metadata"]["name"] for s in wanted}
        for want in wanted:
            name = want["metadata"]["name"]
            have = self.store.find(self.slice_kind, ns, name)
            if have is None:
                try:
                    await self.store.create(self.slice_kind, want, ns, managed_fields=created_by(
                        self.store, self.slice_kind))
                    self.writes += 1
                except AlreadyExists:
                    pass
                continue
            fields = ("addressType", "endpoints", "ports")
            hm = have["metadata"]
            if all((have.get(f) or []) == (want.get(f) or []) for f in fields) and \
                    (hm.get("labels") or {}) == want["metadata"]["labels"] and \
                    hm.get("ownerReferences") == want["metadata"]["ownerReferences"]:
                continue
            new = copy.deepcopy(have)
            for f in fields:
                new[f] = want[f]
            new["metadata"]["labels"] = want["metadata"]["labels"]
            new["metadata"]["ownerReferences"] = want["metadata"]["ownerReferences"]
            await self.store.update(self.slice_kind, new, ns, name)
            self.writes += 1
        for s in existing:
            if s["metadata"]["name"] not in names:
                try:
                    await self.store.delete(self.slice_kind, ns, s["metadata"]["name"],
                                            precondition_uid=s["metadata"].get("uid"))
                    self.writes += 1
                except StoreError as e:
                    log.debug("stale slice %s: %s", s["metadata"]["name"], e)
