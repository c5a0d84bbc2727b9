"""haproxy's configuration for the Ingresses of a replica: a pure function of its objects.

One frontend answers every Ingress of the class ``shoal`` (and those that name no
class): plain HTTP on one port, TLS on another with the certificates of the Ingresses'
``kubernetes.io/tls`` Secrets, picked by SNI (a crt-list). Rules are tried in
Kubernetes' precedence: an exact host before a wildcard host before no host, an Exact
path before a Prefix, a longer path before a shorter one, then the oldest Ingress.
A Prefix path matches whole path elements (``/foo`` matches ``/foo`` and ``/foo/bar``,
not ``/foobar``); ImplementationSpecific is a Prefix here. A backend is the ready
endpoints of the Service port it names (but those on nodes this node cannot reach now),
or the Service's ClusterIP when it has none;
a request no rule matches goes to the default backend, or gets a 404.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shoal.store.system_crypto import CryptoError, load_pem_certificate, load_private_key

CLASS_NAME = "shoal"
CONTROLLER = "shoal.dev/ingress"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TLS_SECRET_TYPE = "kubernetes.io/tls"
NOT_FOUND = "shoal_not_found"


@dataclass(frozen=True)
class Listen:
    """Where haproxy answers: ports 0 are off."""

    address: str = "0.0.0.0"
    http_port: int = 80
    https_port: int = 443


@dataclass
class Rendered:
    """A configuration and the certificate files it reads (name -> PEM)."""

    text: str
    certificates: dict[str, str] = field(default_factory=dict)
    crt_list: str = ""
    routes: int = 0

    def key(self) -> tuple[str, tuple[tuple[str, str], ...], str]:
        """What must change for haproxy to be told to reload."""
        return self.text, tuple(sorted(self.certificates.items())), self.crt_list


def served(ing: dict[str, Any], classes: Iterable[dict[str, Any]]) -> bool:
    """Whether this controller answers ``ing``: its class is one of ours, or it names none
    (Kubernetes gives such Ingresses to the default class, and ``shoal`` is the only
    one a cluster starts with)."""
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name is None:
        name = ((ing.get("metadata") or {}).get("annotations") or {}).get(
            "kubernetes.io/ingress.class")
    if name is None:
        return True
    return any((c.get("metadata") or {}).get("name") == name
               and (c.get("spec") or {}).get("controller") == CONTROLLER for c in classes)


def _ident(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]", "-", p) for p in parts)


def _host_acl(host: str) -> str:
    if host.startswith("*."):
        # One label, then the rest: only dots need escaping in a host, [.] avoids backslashes.
        return "var(txn.host) -m reg ^[^.]+" + host[1:].replace(".", "[.]") + "$"
    return f"var(txn.host) -m str {host}"


def _path_acls(path: str, path_type: str) -> list[str]:
    if path_type == "Exact":
        return [f"path -m str {path}"]
    trimmed = path.rstrip("/")
    if not trimmed:
        return []  # a Prefix of "/" matches every path
    return [f"path -m str {trimmed}", f"path_beg {trimmed}/"]


@dataclass(frozen=True)
class _Route:
    host: str
    path: str
    path_type: str
    backend: str
    order: tuple[Any, ...]


class _Backends:
    """The backends routes name, each rendered once."""

    def __init__(self, services: list[dict[str, Any]], slices: list[dict[str, Any]],
                 unreachable: frozenset[str]) -> None:
        self._unreachable = unreachable
        self._services = {((s.get("metadata") or {}).get("namespace", ""),
                           (s.get("metadata") or {}).get("name", "")): s for s in services}
        self._slices: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for sl in slices:
            meta = sl.get("metadata") or {}
            svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if svc:
                self._slices.setdefault((meta.get("namespace", ""), svc), []).append(sl)
        self.sections: dict[str, list[str]] = {}

    def name(self, namespace: str, backend: dict[str, Any]) -> str:
        svc_ref = backend.get("service")
        if not isinstance(svc_ref, dict):
            return NOT_FOUND  # resource backends are not served
        port = svc_ref.get("port") or {}
        port_key = str(port.get("name") or port.get("number") or "")
        name = _ident("be", namespace, str(svc_ref.get("name", "")), port_key)
        if name not in self.sections:
            self.sections[name] = self._servers(namespace, str(svc_ref.get("name", "")), port)
        return name

    def _servers(self, namespace: str, svc_name: str, port: dict[str, Any]) -> list[str]:
        svc = self._services.get((namespace, svc_name))
        if svc is None:
            return []
        spec_port = next((p for p in (svc.get("spec") or {}).get("ports") or []
                          if (port.get("name") and p.get("name") == port["name"])
                          or (port.get("number") and p.get("port") == port["number"])), None)
        if spec_port is None:
            return []
        addrs: list[tuple[str, int]] = []
        for sl in self._slices.get((namespace, svc_name), []):
            target = next((p.get("port") for p in sl.get("ports") or []
                           if (p.get("name") or "") == (spec_port.get("name") or "")), None)
            if not isinstance(target, int):
                continue
            for ep in sl.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False \
                        or ep.get("nodeName") in self._unreachable:
                    continue
                addrs.extend((a, target) for a in ep.get("addresses") or [])
        if not addrs:
            cluster_ip = (svc.get("spec") or {}).get("clusterIP")
            if cluster_ip and cluster_ip != "None":
                addrs = [(cluster_ip, int(spec_port.get("port", 0)))]
        return [f"server s{i} {'ipv6@' if ':' in a else ''}{a}:{p}"
                for i, (a, p) in enumerate(sorted(set(addrs)))]


def _pem(secret: dict[str, Any]) -> str | None:
    """The certificate chain and key of a TLS Secret as one PEM, or None if it is not one."""
    if secret.get("type") != TLS_SECRET_TYPE:
        return None
    data = secret.get("data") or {}
    try:
        crt = base64.b64decode(data.get("tls.crt", ""), validate=False)
        key = base64.b64decode(data.get("tls.key", ""), validate=False)
    except (binascii.Error, ValueError):
        return None
    # haproxy refuses the whole file on a bad certificate: check it here, skip just this one.
    try:
        load_pem_certificate(crt)
        load_private_key(key)
    except CryptoError:
        return None
    text = crt.decode() if crt.endswith(b"\n") else crt.decode() + "\n"
    return text + key.decode()


def render(ingresses: list[dict[str, Any]], classes: list[dict[str, Any]],
           services: list[dict[str, Any]], slices: list[dict[str, Any]],
           secrets: list[dict[str, Any]], listen: Listen, cert_dir: str,
           socket_path: str, unreachable: frozenset[str] = frozenset(),
           user: str | None = None) -> Rendered:
    """``unreachable``: nodes the mesh holds unreachable now, whose endpoints are left out
    (as the Service proxy does), so a partition does not send requests into a void.
    ``user``: the account haproxy's workers drop to (the master, root, binds the ports
    and reads the certificates)."""
    backends = _Backends(services, slices, unreachable)
    by_secret = {((s.get("metadata") or {}).get("namespace", ""),
                  (s.get("metadata") or {}).get("name", "")): s for s in secrets}
    routes: list[_Route] = []
    default: str | None = None
    certificates: dict[str, str] = {}
    crt_lines: list[str] = []
    ordered = sorted((i for i in ingresses if served(i, classes)),
                     key=lambda i: (str((i.get("metadata") or {}).get("creationTimestamp", "")),
                                    (i.get("metadata") or {}).get("namespace", ""),
                                    (i.get("metadata") or {}).get("name", "")))
    for age, ing in enumerate(ordered):
        meta, spec = ing.get("metadata") or {}, ing.get("spec") or {}
        ns = str(meta.get("namespace", ""))
        if default is None and isinstance(spec.get("defaultBackend"), dict):
            default = backends.name(ns, spec["defaultBackend"])
        for rule in spec.get("rules") or []:
            host = str(rule.get("host") or "")
            rank = 2 if not host else 1 if host.startswith("*.") else 0
            for j, p in enumerate((rule.get("http") or {}).get("paths") or []):
                ptype = p.get("pathType") or "Prefix"
                ptype = "Exact" if ptype == "Exact" else "Prefix"
                path = str(p.get("path") or "/")
                routes.append(_Route(host, path, ptype, backends.name(ns, p.get("backend") or {}),
                                     (rank, ptype != "Exact", -len(path), age, j)))
        for t in spec.get("tls") or []:
            secret = by_secret.get((ns, str(t.get("secretName") or "")))
            pem = _pem(secret) if secret is not None else None
            if pem is None:
                continue
            file = f"{cert_dir}/{_ident(ns, str(t['secretName']))}.pem"
            certificates[file] = pem
            crt_lines.append(" ".join([file, *sorted(str(h) for h in t.get("hosts") or [])]))
    routes.sort(key=lambda r: r.order)
    lines = [
        "# Written by shoal (shoal.net.ingress) from its replica; edits are overwritten.",
        "global",
        f"    stats socket {socket_path} mode 600 level admin expose-fd listeners",
        "    hard-stop-after 30s",
        *([f"    user {user}", f"    group {user}"] if user else []),
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    option forwardfor",
        "frontend shoal_ingress",
    ]
    binds = 0
    if listen.http_port:
        lines.append(f"    bind {listen.address}:{listen.http_port}")
        binds += 1
    crt_list = "".join(f"{line}\n" for line in dict.fromkeys(crt_lines))
    if listen.https_port and certificates:
        lines.append(f"    bind {listen.address}:{listen.https_port} ssl crt-list "
                     f"{cert_dir}/crt-list")
        lines.append("    http-request set-header X-Forwarded-Proto https if { ssl_fc }")
        binds += 1
    lines.append("    http-request set-var(txn.host) req.hdr(host),field(1,:),lower")
    for i, r in enumerate(routes):
        cond = [f"r{i}_host"] if r.host else []
        if r.host:
            lines.append(f"    acl r{i}_host {_host_acl(r.host)}")
        for acl in _path_acls(r.path, r.path_type):
            lines.append(f"    acl r{i}_path {acl}")
        if _path_acls(r.path, r.path_type):
            cond.append(f"r{i}_path")
        lines.append(f"    use_backend {r.backend}" + (f" if {' '.join(cond)}" if cond else ""))
    lines.append(f"    default_backend {default or NOT_FOUND}")
    for name, servers in sorted(backends.sections.items()):
        lines.append(f"backend {name}")
        lines.extend(f"    {s}" for s in servers)
    lines += [f"backend {NOT_FOUND}",
              "    http-request return status 404 content-type text/plain "
              "string \"default backend - 404\""]
    if not binds:
        lines.insert(0, "# no port to answer on")
    return Rendered("\n".join(lines) + "\n", certificates, crt_list, len(routes))


def load_balancer_ingress(nodes: list[dict[str, Any]]) -> list[dict[str, str]]:
    """``status.loadBalancer.ingress``: every node's InternalIP, each node answers."""
    ips: set[str] = set()
    for n in nodes:
        for a in (n.get("status") or {}).get("addresses") or []:
            if a.get("type") == "InternalIP" and a.get("address"):
                ips.add(str(a["address"]))
    return [{"ip": ip} for ip in sorted(ips)]


def default_class() -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": CLASS_NAME,
                         "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
            "spec": {"controller": CONTROLLER}}
