"""Services, Endpoints and EndpointSlices."""

from __future__ import annotations

import ipaddress
from typing import Any

from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _c, _d, _dicts, _i, _int_field, _l, _s
from shoal.model.validation.names import (
    _IP_MSG,
    _is_ip,
    _is_port_num,
    _port_or_name,
    is_dns1123_label,
    is_dns1123_subdomain,
)
from shoal.model.validation.object_meta import _labels
from shoal.model.validation.pod_spec import _PROTOCOLS

_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _validate_service(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    svc_type = spec.get("type") or "ClusterIP"
    if svc_type not in _SERVICE_TYPES:
        e.not_supported("spec.type", svc_type, _SERVICE_TYPES)
    cluster_ip = spec.get("clusterIP")
    headless = cluster_ip == "None"
    ports = _dicts(spec.get("ports"))
    if not ports and not headless and svc_type != "ExternalName":
        e.required("spec.ports")
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    seen_node_ports: set[tuple[Any, Any]] = set()
    for i, port in ports:
        p = _i("spec.ports", i)
        name = port.get("name")
        if not name:
            if len(ports) > 1:
                e.required(_c(p, "name"))
        elif isinstance(name, str):
            e.unique(_c(p, "name"), name, names, is_dns1123_label(name))
        number = _int_field(e, port, "port", p)
        if number is None:
            e.required(_c(p, "port"))
        else:
            e.each(_c(p, "port"), number, _is_port_num(number))
        protocol = port.get("protocol")
        if protocol not in (None, "") and protocol not in _PROTOCOLS:
            e.not_supported(_c(p, "protocol"), protocol, _PROTOCOLS)
        if port.get("targetPort") is not None:
            _port_or_name(e, port.get("targetPort"), _c(p, "targetPort"))
        node_port = _int_field(e, port, "nodePort", p)
        if node_port:
            if svc_type == "ClusterIP":
                e.forbidden(_c(p, "nodePort"), "may not be used when `type` is 'ClusterIP'")
            else:
                e.each(_c(p, "nodePort"), node_port, _is_port_num(node_port))
        port_key = (number, protocol or "TCP")
        if number is not None and port_key in seen:
            e.duplicate(p, {"port": number, "protocol": protocol or "TCP"})
        seen.add(port_key)
        # Two ports of one Service may not share a node port (per protocol), as in Kubernetes.
        if node_port and (node_port, protocol or "TCP") in seen_node_ports:
            e.duplicate(_c(p, "nodePort"), node_port)
        seen_node_ports.add((node_port, protocol or "TCP"))
    if svc_type == "ExternalName":
        external = spec.get("externalName")
        if not external:
            e.required("spec.externalName")
        elif isinstance(external, str):
            e.each("spec.externalName", external, is_dns1123_subdomain(external.rstrip(".")))
        if cluster_ip:
            e.forbidden("spec.clusterIPs", "may not be set for ExternalName services")
    elif headless and svc_type in ("NodePort", "LoadBalancer"):
        e.invalid(_i("spec.clusterIPs", 0), cluster_ip,
                  f"may not be set to 'None' for {svc_type} services")
    elif isinstance(cluster_ip, str) and cluster_ip not in ("", "None") and not _is_ip(cluster_ip):
        e.invalid(
            _i("spec.clusterIPs", 0), cluster_ip, "must be empty, 'None', or a valid IP address"
        )
    affinity = spec.get("sessionAffinity")
    if affinity not in (None, "") and affinity not in ("ClientIP", "None"):
        e.not_supported("spec.sessionAffinity", affinity, ["ClientIP", "None"])
    if affinity == "ClientIP":
        client_ip = _d(_d(spec.get("sessionAffinityConfig")).get("clientIP"))
        path = "spec.sessionAffinityConfig.clientIP"
        timeout = _int_field(e, client_ip, "timeoutSeconds", path)
        if timeout is not None and not 0 < timeout <= 86400:
            e.invalid(
                _c(path, "timeoutSeconds"),
                timeout,
                "must be greater than 0 and less than 86400",
            )
    for key in ("externalTrafficPolicy", "internalTrafficPolicy"):
        policy = spec.get(key)
        if policy not in (None, "") and policy not in ("Cluster", "Local"):
            e.not_supported(_c("spec", key), policy, ["Cluster", "Local"])
    family_policy = spec.get("ipFamilyPolicy")
    families_allowed = ("SingleStack", "PreferDualStack", "RequireDualStack")
    if family_policy is not None and family_policy not in families_allowed:
        e.not_supported("spec.ipFamilyPolicy", family_policy, families_allowed)
    families = _l(spec.get("ipFamilies"))
    for i, family in enumerate(families):
        if family not in ("IPv4", "IPv6"):
            e.not_supported(_i("spec.ipFamilies", i), family, ["IPv4", "IPv6"])
        elif family in families[:i]:
            e.duplicate(_i("spec.ipFamilies", i), family)
    if len(families) > 1 and family_policy == "SingleStack":
        e.invalid(
            "spec.ipFamilyPolicy",
            family_policy,
            "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are "
            "specified",
        )
    _labels(e, spec.get("selector"), "spec.selector")


def _validate_service_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return  # changing to or from ExternalName releases or allocates the IP
    old_ip, new_ip = old_spec.get("clusterIP"), spec.get("clusterIP")
    # An update that leaves clusterIP out keeps the allocated one (the server copies it).
    if old_ip and new_ip and new_ip != old_ip:
        e.invalid(_i("spec.clusterIPs", 0), new_ip, "may not change once set")
    old_families, new_families = _l(old_spec.get("ipFamilies")), _l(spec.get("ipFamilies"))
    if old_families and new_families and old_families[0] != new_families[0]:
        e.invalid(_i("spec.ipFamilies", 0), new_families[0], "may not change once set")


def _validate_endpoints(e: _Errors, obj: dict[str, Any]) -> None:
    for i, subset in _dicts(obj.get("subsets")):
        p = _i("subsets", i)
        if not _l(subset.get("addresses")) and not _l(subset.get("notReadyAddresses")):
            e.required(p, "must specify `addresses` or `notReadyAddresses`")
        for key in ("addresses", "notReadyAddresses"):
            for j, address in _dicts(subset.get(key)):
                ip = _s(address.get("ip"))
                if not _is_ip(ip):
                    e.invalid(_c(_i(_c(p, key), j), "ip"), ip, _IP_MSG)
        _endpoint_ports(e, subset.get("ports"), _c(p, "ports"), require_port=True)


def _endpoint_ports(e: _Errors, ports: Any, path: str, require_port: bool) -> None:
    items = _dicts(ports)
    names: set[str] = set()
    for i, port in items:
        p = _i(path, i)
        name = port.get("name")
        if isinstance(name, str) and name:
            e.unique(_c(p, "name"), name, names, is_dns1123_label(name))
        elif require_port and len(items) > 1:
            e.required(_c(p, "name"))
        number = _int_field(e, port, "port", p)
        if number is not None:
            e.each(_c(p, "port"), number, _is_port_num(number))
        elif require_port:
            e.required(_c(p, "port"))
        protocol = port.get("protocol")
        if protocol not in (None, "") and protocol not in _PROTOCOLS:
            e.not_supported(_c(p, "protocol"), protocol, _PROTOCOLS)


def _validate_endpoint_slice(e: _Errors, obj: dict[str, Any]) -> None:
    address_type = obj.get("addressType")
    supported = ("IPv4", "IPv6", "FQDN")
    if not address_type:
        e.required("addressType")
    elif address_type not in supported:
        e.not_supported("addressType", address_type, supported)
    for i, endpoint in _dicts(obj.get("endpoints")):
        p = _c(_i("endpoints", i), "addresses")
        addresses = _l(endpoint.get("addresses"))
        if not addresses:
            e.required(p, "must contain at least 1 address")
        elif len(addresses) > 100:
            e.too_many(p, len(addresses), 100)
        for j, address in enumerate(addresses):
            text = _s(address)
            if address_type in ("IPv4", "IPv6"):
                try:
                    ok = ipaddress.ip_address(text).version == (4 if address_type == "IPv4" else 6)
                except ValueError:
                    ok = False
                if not ok:
                    e.invalid(_i(p, j), address, f"must be a valid {address_type} address")
            elif address_type == "FQDN":
                e.each(_i(p, j), address, is_dns1123_subdomain(text))
    _endpoint_ports(e, obj.get("ports"), "ports", require_port=False)
