"""NetworkPolicy (networking.k8s.io/v1), as Kubernetes' ValidateNetworkPolicySpec."""

from __future__ import annotations

import ipaddress
from typing import Any

from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _c, _d, _dicts, _i, _is_int, _l, _s
from shoal.model.validation.names import _is_port_name, _is_port_num
from shoal.model.validation.object_meta import _label_selector

_PROTOCOLS = ("TCP", "UDP", "SCTP")
_POLICY_TYPES = ("Ingress", "Egress")
_CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def _cidr(e: _Errors, value: str, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        e.invalid(path, value, _CIDR_MSG)
        return None


def _ip_block(e: _Errors, block: dict[str, Any], path: str) -> None:
    cidr = _s(block.get("cidr"))
    if not cidr:
        e.required(_c(path, "cidr"))
        return
    net = _cidr(e, cidr, _c(path, "cidr"))
    if net is None:
        return
    for i, text in enumerate(_l(block.get("except"))):
        p = _i(_c(path, "except"), i)
        inner = _cidr(e, _s(text), p)
        if inner is None:
            continue
        if (inner.version != net.version or not net.supernet_of(inner)  # type: ignore[arg-type]
                or inner.prefixlen <= net.prefixlen):
            e.invalid(p, text, "must be a strict subset of `cidr`")


def _peer(e: _Errors, peer: dict[str, Any], path: str) -> None:
    count = 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            count += 1
            _label_selector(e, peer[key], _c(path, key))
    if peer.get("ipBlock") is not None:
        count += 1
        _ip_block(e, _d(peer["ipBlock"]), _c(path, "ipBlock"))
    if count == 0:
        e.required(path, "must specify a peer")
    elif count > 1 and peer.get("ipBlock") is not None:
        e.forbidden(path, "may not specify both ipBlock and another peer")


def _port(e: _Errors, port: dict[str, Any], path: str) -> None:
    protocol = port.get("protocol")
    if protocol is not None and protocol not in _PROTOCOLS:
        e.not_supported(_c(path, "protocol"), protocol, _PROTOCOLS)
    number, end = port.get("port"), port.get("endPort")
    if number is None:
        if end is not None:
            e.invalid(_c(path, "endPort"), end, "may not be specified when `port` is not specified")
    elif _is_int(number):
        e.each(_c(path, "port"), int(number), _is_port_num(int(number)))
        if end is not None:
            if not _is_int(end):
                e.type_invalid(_c(path, "endPort"), end, "must be of type integer")
                return
            if int(end) < int(number):
                e.invalid(_c(path, "endPort"), int(number), "must be greater than or equal to `port`")
            e.each(_c(path, "endPort"), int(end), _is_port_num(int(end)))
    elif isinstance(number, str):
        if end is not None:
            e.invalid(_c(path, "endPort"), end, "may not be specified when `port` is non-numeric")
        e.each(_c(path, "port"), number, _is_port_name(number))
    else:
        e.type_invalid(_c(path, "port"), number, "must be an integer or a string")


def _rules(e: _Errors, spec: dict[str, Any], direction: str, peers: str) -> None:
    for i, rule in _dicts(spec.get(direction)):
        p = _i(_c("spec", direction), i)
        for j, port in _dicts(rule.get("ports")):
            _port(e, port, _i(_c(p, "ports"), j))
        for j, peer in _dicts(rule.get(peers)):
            _peer(e, peer, _i(_c(p, peers), j))


def _validate_network_policy(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    selector = spec.get("podSelector")
    if selector is not None:
        _label_selector(e, selector, "spec.podSelector")
    _rules(e, spec, "ingress", "from")
    _rules(e, spec, "egress", "to")
    types = _l(spec.get("policyTypes"))
    if len(types) > len(_POLICY_TYPES):
        e.invalid_shown("spec.policyTypes", "[]", "may not specify more than two policyTypes")
    for i, kind in enumerate(types):
        if kind not in _POLICY_TYPES:
            e.not_supported(_i("spec.policyTypes", i), kind, _POLICY_TYPES)
