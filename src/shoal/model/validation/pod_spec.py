"""Pod specs (containers, ports, resources, env, volumes, probes, tolerations) and the Pod kind."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

from shoal.model.defaults import (
    VOLUME_SOURCES,
)
from shoal.model.quantity import QuantityError, parse_quantity
from shoal.model.selectors import is_label_value, is_qualified_name
from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import (
    _as_int,
    _c,
    _d,
    _dicts,
    _i,
    _int_field,
    _k,
    _l,
    _nonneg,
    _s,
)
from shoal.model.validation.names import (
    _IP_MSG,
    _is_ip,
    _is_port_name,
    _is_port_num,
    _port_or_name,
    is_dns1123_label,
    is_dns1123_subdomain,
)
from shoal.model.validation.object_meta import _labels
from shoal.model.value_memo import ValueMemo

POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


# --- containers -----------------------------------------------------------------------

_PROTOCOLS = ("SCTP", "TCP", "UDP")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef")

# Kubernetes counts none of these; only its 1.5 MiB object limit bounds them (60,000 bare
# containers would fit). Shoal bounds each list far above any real pod (the largest carry a
# few dozen containers and a few hundred env entries) and far below what would make the
# node agent start thousands of processes or mounts for one pod: over it is a 422
# ``FieldValueTooMany`` naming the list, and its items are not checked one by one.
MAX_CONTAINERS = 500
"""Per list: ``containers``, ``initContainers`` and ``ephemeralContainers`` each."""
MAX_VOLUMES = 1000
MAX_VOLUME_MOUNTS = 1000
"""Per container."""
MAX_ENV = 5000
"""``env`` entries per container (``envFrom`` too)."""


def _within(e: _Errors, items: Any, path: str, max_items: int) -> bool:
    """Whether the list ``items`` has at most ``max_items`` entries (else a 422 cause)."""
    if isinstance(items, list) and len(items) > max_items:
        e.too_many(path, len(items), max_items)
        return False
    return True


def _container_ports(e: _Errors, ports: Any, path: str, host_network: bool) -> None:
    names: set[str] = set()
    for i, port in _dicts(ports):
        p = _i(path, i)
        name = port.get("name")
        if isinstance(name, str) and name:
            e.unique(_c(p, "name"), name, names, _is_port_name(name))
        container_port = _int_field(e, port, "containerPort", p)
        if port.get("containerPort") in (None, 0):
            e.required(_c(p, "containerPort"))
        elif container_port is not None:
            e.each(_c(p, "containerPort"), container_port, _is_port_num(container_port))
        host_port = _int_field(e, port, "hostPort", p)
        if host_port:
            e.each(_c(p, "hostPort"), host_port, _is_port_num(host_port))
            if host_network and container_port and host_port != container_port:
                e.invalid(
                    _c(p, "hostPort"),
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                )
        protocol = port.get("protocol")
        if protocol is not None and protocol not in _PROTOCOLS:
            e.not_supported(_c(p, "protocol"), protocol, _PROTOCOLS)
        host_ip = port.get("hostIP")
        if isinstance(host_ip, str) and host_ip and not _is_ip(host_ip):
            e.invalid(_c(p, "hostIP"), host_ip, _IP_MSG)


def _resource_list(e: _Errors, values: Any, path: str) -> dict[str, tuple[Any, Decimal]]:
    parsed: dict[str, tuple[Any, Decimal]] = {}
    if values is None:
        return parsed
    if not isinstance(values, dict):
        e.type_invalid(path, values, "must be an object")
        return parsed
    for name, raw in values.items():
        p = _k(path, name)
        e.each(p, name, is_qualified_name(name))
        try:
            quantity = parse_quantity(raw)
        except QuantityError as exc:
            e.invalid(p, raw, str(exc))
            continue
        if quantity < 0:
            e.invalid(p, raw, "must be greater than or equal to 0")
        parsed[name] = (raw, quantity)
    return parsed


def _resources(e: _Errors, resources: Any, path: str) -> None:
    res = _d(resources)
    limits = _resource_list(e, res.get("limits"), _c(path, "limits"))
    requests = _resource_list(e, res.get("requests"), _c(path, "requests"))
    for name, (raw, request) in requests.items():
        if name in limits and request > limits[name][1]:
            e.invalid(
                _k(_c(path, "requests"), name),
                raw if isinstance(raw, str) else str(raw),
                f"must be less than or equal to {name} limit of {limits[name][0]}",
            )


def _env(e: _Errors, env: Any, path: str) -> None:
    if not _within(e, env, path, MAX_ENV):
        return
    for i, var in _dicts(env):
        p = _i(path, i)
        name = var.get("name")
        if not name:
            e.required(_c(p, "name"))
        elif isinstance(name, str) and "=" in name:
            e.invalid(
                _c(p, "name"),
                name,
                "a valid environment variable name must consist only of printable ASCII "
                "characters other than '='",
            )
        value_from = var.get("valueFrom")
        if not isinstance(value_from, dict):
            continue
        vp = _c(p, "valueFrom")
        sources = [s for s in _ENV_SOURCES if value_from.get(s) is not None]
        if not sources:
            e.invalid(
                vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or "
                "`secretKeyRef`",
            )
        elif len(sources) > 1:
            e.invalid(vp, "", "may not have more than one field specified at a time")
        if var.get("value"):
            e.invalid(vp, "", "may not be specified when `value` is not empty")
        for ref in ("configMapKeyRef", "secretKeyRef"):
            selector = value_from.get(ref)
            if isinstance(selector, dict) and not selector.get("key"):
                e.required(_c(vp, ref, "key"))
        field_ref = value_from.get("fieldRef")
        if isinstance(field_ref, dict) and not field_ref.get("fieldPath"):
            e.required(_c(vp, "fieldRef", "fieldPath"))


def _volume_mounts(e: _Errors, mounts: Any, path: str, volumes: set[str] | None) -> None:
    paths: set[str] = set()
    if not _within(e, mounts, path, MAX_VOLUME_MOUNTS):
        return
    for i, mount in _dicts(mounts):
        p = _i(path, i)
        name = mount.get("name")
        if not name:
            e.required(_c(p, "name"))
        elif volumes is not None and name not in volumes:
            e.not_found(_c(p, "name"), name)
        mount_path = mount.get("mountPath")
        if not mount_path:
            e.required(_c(p, "mountPath"))
        elif isinstance(mount_path, str):
            if mount_path in paths:
                e.invalid(_c(p, "mountPath"), mount_path, "must be unique")
            paths.add(mount_path)


def _probe(e: _Errors, probe: Any, path: str, success_must_be_one: bool) -> None:
    if not isinstance(probe, dict):
        return
    handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(h) is not None]
    if not handlers:
        e.required(path, "must specify a handler type")
    elif len(handlers) > 1:
        e.forbidden(_c(path, handlers[1]), "may not specify more than 1 handler type")
    for key in (
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    ):
        _nonneg(e, probe, key, path)
    success = _int_field(e, probe, "successThreshold", path)
    if success_must_be_one and success is not None and success != 1:
        e.invalid(_c(path, "successThreshold"), success, "must be 1")
    for handler in ("httpGet", "tcpSocket"):
        action = probe.get(handler)
        if isinstance(action, dict):
            _port_or_name(e, action.get("port"), _c(path, handler, "port"))
    grpc = probe.get("grpc")
    if isinstance(grpc, dict):
        port = _int_field(e, grpc, "port", _c(path, "grpc"))
        if port is not None:
            e.each(_c(path, "grpc", "port"), port, _is_port_num(port))


def _container(
    e: _Errors,
    c: dict[str, Any],
    path: str,
    volumes: set[str] | None,
    host_network: bool,
    init: bool,
) -> None:
    image = c.get("image")
    if not image:
        e.required(_c(path, "image"))
    elif isinstance(image, str) and image != image.strip():
        e.invalid(_c(path, "image"), image, "must not have leading or trailing whitespace")
    policy = c.get("imagePullPolicy")
    if policy not in (None, "") and policy not in _PULL_POLICIES:
        e.not_supported(_c(path, "imagePullPolicy"), policy, _PULL_POLICIES)
    policy = c.get("terminationMessagePolicy")
    if policy not in (None, "") and policy not in _TERMINATION_MESSAGE_POLICIES:
        e.not_supported(_c(path, "terminationMessagePolicy"), policy, _TERMINATION_MESSAGE_POLICIES)
    if init and c.get("restartPolicy") not in (None, "Always"):
        e.not_supported(_c(path, "restartPolicy"), c.get("restartPolicy"), ["Always"])
    _container_ports(e, c.get("ports"), _c(path, "ports"), host_network)
    _env(e, c.get("env"), _c(path, "env"))
    _within(e, c.get("envFrom"), _c(path, "envFrom"), MAX_ENV)
    _volume_mounts(e, c.get("volumeMounts"), _c(path, "volumeMounts"), volumes)
    _resources(e, c.get("resources"), _c(path, "resources"))
    sidecar = init and c.get("restartPolicy") == "Always"
    if not init or sidecar:
        _probe(e, c.get("livenessProbe"), _c(path, "livenessProbe"), True)
        _probe(e, c.get("readinessProbe"), _c(path, "readinessProbe"), False)
        _probe(e, c.get("startupProbe"), _c(path, "startupProbe"), True)
    else:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if c.get(probe) is not None:
                e.forbidden(_c(path, probe), "may not be set for init containers")


def _volumes(e: _Errors, volumes: Any, path: str) -> set[str] | None:
    """The volumes' names; None when there are too many to check (mounts are not
    checked against them then)."""
    names: set[str] = set()
    if not _within(e, volumes, path, MAX_VOLUMES):
        return None
    for i, v in _dicts(volumes):
        p = _i(path, i)
        name = v.get("name")
        if not name:
            e.required(_c(p, "name"))
        elif isinstance(name, str):
            e.unique(_c(p, "name"), name, names, is_dns1123_label(name))
        sources = [s for s in VOLUME_SOURCES if v.get(s) is not None]
        if not sources:
            e.required(p, "must specify a volume type")
        elif len(sources) > 1:
            e.forbidden(_c(p, sources[1]), "may not specify more than 1 volume type")
        required_keys = {
            "configMap": "name",
            "secret": "secretName",
            "persistentVolumeClaim": "claimName",
            "hostPath": "path",
        }
        for source, key in required_keys.items():
            spec = v.get(source)
            if isinstance(spec, dict) and not spec.get(key):
                e.required(_c(p, source, key))
    return names


def _tolerations(e: _Errors, tolerations: Any, path: str) -> None:
    for i, t in _dicts(tolerations):
        p = _i(path, i)
        key = _s(t.get("key"))
        if key:
            e.each(_c(p, "key"), key, is_qualified_name(key))
        op = t.get("operator") or "Equal"
        if not key and op != "Exists":
            e.invalid(
                _c(p, "operator"),
                op,
                'operator must be Exists when `key` is empty, which means "match all values and '
                'all keys"',
            )
        effect = t.get("effect")
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            e.invalid(
                _c(p, "effect"),
                _s(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )
        value = _s(t.get("value"))
        if op == "Equal":
            e.each(_c(p, "value"), value, is_label_value(value))
        elif op == "Exists":
            if value:
                e.invalid(_c(p, "operator"), t, "value must be empty when `operator` is 'Exists'")
        else:
            e.not_supported(_c(p, "operator"), op, ["Equal", "Exists"])
        if effect not in (None, "") and effect not in _TAINT_EFFECTS:
            e.not_supported(_c(p, "effect"), effect, _TAINT_EFFECTS)


def _pod_spec(e: _Errors, spec: Any, path: str) -> None:
    if not isinstance(spec, dict):
        e.required(path)
        return
    host_network = spec.get("hostNetwork") is True
    volumes = _volumes(e, spec.get("volumes"), _c(path, "volumes"))
    if not _l(spec.get("containers")):
        e.required(_c(path, "containers"))
    names: set[str] = set()
    for key in ("initContainers", "containers", "ephemeralContainers"):
        if not _within(e, spec.get(key), _c(path, key), MAX_CONTAINERS):
            continue
        for i, c in _dicts(spec.get(key)):
            p = _i(_c(path, key), i)
            name = c.get("name")
            if not name:
                e.required(_c(p, "name"))
            elif isinstance(name, str):
                e.unique(_c(p, "name"), name, names, is_dns1123_label(name))
            _container(e, c, p, volumes, host_network, init=key == "initContainers")
    restart = spec.get("restartPolicy")
    if restart not in (None, "") and restart not in _RESTART_POLICIES:
        e.not_supported(_c(path, "restartPolicy"), restart, _RESTART_POLICIES)
    dns = spec.get("dnsPolicy")
    if dns not in (None, "") and dns not in _DNS_POLICIES:
        e.not_supported(_c(path, "dnsPolicy"), dns, _DNS_POLICIES)
    if dns == "None" and not spec.get("dnsConfig"):
        e.required(_c(path, "dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None")
    deadline = _int_field(e, spec, "activeDeadlineSeconds", path)
    if deadline is not None and not 1 <= deadline <= 2147483647:
        e.invalid(
            _c(path, "activeDeadlineSeconds"),
            deadline,
            "must be between 1 and 2147483647, inclusive",
        )
    _int_field(e, spec, "terminationGracePeriodSeconds", path)
    _labels(e, spec.get("nodeSelector"), _c(path, "nodeSelector"))
    for key, check in (
        ("serviceAccountName", is_dns1123_subdomain),
        ("nodeName", is_dns1123_subdomain),
        ("hostname", is_dns1123_label),
        ("subdomain", is_dns1123_label),
    ):
        value = spec.get(key)
        if isinstance(value, str) and value:
            e.each(_c(path, key), value, check(value))
    _tolerations(e, spec.get("tolerations"), _c(path, "tolerations"))


# --- core/v1 kinds --------------------------------------------------------------------


_VALID_SPECS: ValueMemo[bool] = ValueMemo()
"""Pod specs that passed ``_pod_spec``: a pure check of the spec alone (issue 11)."""


def _validate_pod(e: _Errors, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    key = ValueMemo.key(spec) if type(spec) is dict else None
    if key is not None and _VALID_SPECS.get(key):
        return
    found = len(e.causes)
    _pod_spec(e, spec, "spec")
    if key is not None and len(e.causes) == found:
        _VALID_SPECS.put(key, True)


def _semantic(value: Any, key: str = "") -> Any:
    """A form for equality as ``apiequality.Semantic`` sees it: nil equals empty, and
    quantities compare by value."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if v is None or v == [] or v == {}:
                continue
            if key in ("limits", "requests") and isinstance(v, str | int | float):
                try:
                    out[k] = parse_quantity(v)
                    continue
                except QuantityError:
                    pass
            out[k] = _semantic(v, k)
        return out
    if isinstance(value, list):
        return [_semantic(v, key) for v in value]
    return value


def _toleration_key(t: Any) -> str:
    t = {k: v for k, v in _d(t).items() if k != "tolerationSeconds"}
    return json.dumps(_semantic(t), sort_keys=True, default=str)


def _validate_pod_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    munged = copy.deepcopy(spec)
    # Put back what an update may change, then anything left that differs is forbidden.
    for key in ("containers", "initContainers"):
        new_list, old_list = _l(munged.get(key)), _l(old_spec.get(key))
        if len(new_list) == len(old_list):
            for c, old_c in zip(new_list, old_list, strict=True):
                if isinstance(c, dict) and isinstance(old_c, dict):
                    if "image" in old_c:
                        c["image"] = old_c["image"]
                    else:
                        c.pop("image", None)
    old_deadline = old_spec.get("activeDeadlineSeconds")
    new_deadline = spec.get("activeDeadlineSeconds")
    if old_deadline is not None and new_deadline is None:
        e.invalid(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        )
    elif (
        (old_limit := _as_int(old_deadline)) is not None
        and (new_limit := _as_int(new_deadline)) is not None
        and new_limit > old_limit
    ):
        e.invalid(
            "spec.activeDeadlineSeconds",
            new_limit,
            "must be less than or equal to previous value",
        )
    for key in ("activeDeadlineSeconds", "tolerations", "ephemeralContainers"):
        if key in old_spec:
            munged[key] = copy.deepcopy(old_spec[key])
        else:
            munged.pop(key, None)
    kept = {_toleration_key(t) for t in _l(spec.get("tolerations"))}
    if any(_toleration_key(t) not in kept for t in _l(old_spec.get("tolerations"))):
        e.forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        )
    old_grace = _as_int(old_spec.get("terminationGracePeriodSeconds"))
    if old_grace is not None and old_grace < 0 and spec.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    # Scheduling gates may only be removed.
    old_gates = _l(old_spec.get("schedulingGates"))
    new_gates = _l(spec.get("schedulingGates"))
    if all(g in old_gates for g in new_gates):
        if "schedulingGates" in old_spec:
            munged["schedulingGates"] = copy.deepcopy(old_spec["schedulingGates"])
        else:
            munged.pop("schedulingGates", None)
    if _semantic(munged) != _semantic(old_spec):
        e.forbidden("spec", POD_UPDATE_FORBIDDEN)
