"""Ingress and IngressClass (networking.k8s.io/v1), as Kubernetes' ValidateIngress and
ValidateIngressClass: rules or a default backend, hosts (one leading wildcard label at
most, never an IP), paths and their types, backends naming a Service port."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _c, _d, _dicts, _i, _s
from shoal.model.validation.names import is_dns1035_label, is_dns1123_subdomain

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_INVALID_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")
_CONTROLLER = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/\S+")


def _host(e: _Errors, host: str, path: str) -> None:
    with_wildcard = host.startswith("*.")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        e.invalid(path, host, "must be a DNS name, not an IP address")
        return
    e.each(path, host, is_dns1123_subdomain(host[2:] if with_wildcard else host))


def _backend(e: _Errors, backend: dict[str, Any], path: str) -> None:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        e.invalid_shown(path, "\"\"", "cannot set both resource and service backends")
        return
    if resource is not None:
        return
    if service is None:
        e.invalid_shown(path, "\"\"", "resource or service backend is required")
        return
    svc = _d(service)
    name = _s(svc.get("name"))
    if not name:
        e.required(_c(path, "service", "name"))
    else:
        e.each(_c(path, "service", "name"), name, is_dns1035_label(name))
    port = _d(svc.get("port"))
    pname, number = port.get("name"), port.get("number")
    port_path = _c(path, "service", "port")
    if pname and number:
        e.invalid_shown(port_path, "\"\"", "cannot set both port name & port number")
    elif pname:
        if not isinstance(pname, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", pname):
            e.invalid(_c(port_path, "name"), pname, "must be a valid port name")
    elif number is not None:
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= 65535:
            e.invalid(_c(port_path, "number"), number, "must be between 1 and 65535, inclusive")
    else:
        e.required(port_path, "port name or number is required")


def _http_path(e: _Errors, item: dict[str, Any], path: str) -> None:
    p, kind = item.get("path"), item.get("pathType")
    if kind is None:
        e.required(_c(path, "pathType"), "pathType must be specified")
    elif kind not in PATH_TYPES:
        e.not_supported(_c(path, "pathType"), kind, PATH_TYPES)
    if kind in ("Exact", "Prefix"):
        text = _s(p)
        if not text.startswith("/"):
            e.invalid(_c(path, "path"), p, "must be an absolute path")
        elif any(part in text for part in _INVALID_PATH_PARTS) or text.endswith(
                _INVALID_PATH_SUFFIXES):
            e.invalid(_c(path, "path"), p, "must not contain '//', '/./', '/../' or '%2f'")
    elif p is not None and not _s(p).startswith("/"):
        e.invalid(_c(path, "path"), p, "must be an absolute path")
    _backend(e, _d(item.get("backend")), _c(path, "backend"))


def _validate_ingress(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    rules = spec.get("rules") or []
    if not rules and spec.get("defaultBackend") is None:
        e.invalid_shown("spec", "\"\"", "either `defaultBackend` or `rules` must be specified")
    if spec.get("defaultBackend") is not None:
        _backend(e, _d(spec["defaultBackend"]), "spec.defaultBackend")
    cls = spec.get("ingressClassName")
    if cls is not None:
        e.each("spec.ingressClassName", cls, is_dns1123_subdomain(_s(cls)))
    for i, rule in _dicts(rules):
        rpath = _i("spec.rules", i)
        if rule.get("host"):
            _host(e, _s(rule["host"]), _c(rpath, "host"))
        http = rule.get("http")
        if http is None:
            continue
        paths = _d(http).get("paths")
        if not paths:
            e.required(_c(rpath, "http", "paths"))
        for j, item in _dicts(paths):
            _http_path(e, item, _i(_c(rpath, "http", "paths"), j))
    for i, tls in _dicts(spec.get("tls")):
        for j, host in enumerate(tls.get("hosts") or []):
            _host(e, _s(host), _i(_c(_i("spec.tls", i), "hosts"), j))
        secret = tls.get("secretName")
        if secret:
            e.each(_c(_i("spec.tls", i), "secretName"), secret, is_dns1123_subdomain(_s(secret)))


def _validate_ingress_class(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    controller = spec.get("controller")
    if not controller:
        e.required("spec.controller")
    elif len(_s(controller)) > 250:
        e.too_long_length("spec.controller", 250)
    elif not _CONTROLLER.fullmatch(_s(controller)):
        e.invalid("spec.controller", controller, "must be a domain-prefixed path (such as "
                  "\"acme.io/foo\")")


def _validate_ingress_class_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    new_c, old_c = _d(obj.get("spec")).get("controller"), _d(old.get("spec")).get("controller")
    if new_c != old_c:
        e.immutable("spec.controller", new_c)
