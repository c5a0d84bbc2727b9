"""Validation: the field errors the Kubernetes apiserver returns, with its paths and words.

:func:`validate` checks an object of a served kind (after :func:`~shoal.model.defaults.
apply_defaults`, as the apiserver does) and, given the old object, the rules of an
update. It returns :class:`Cause` values, which are ``metav1.StatusCause``: a
``reason`` (the ``CauseType``, such as ``FieldValueRequired``), a ``message`` (the
error body, such as ``Required value``) and a ``field`` (such as
``spec.containers[0].image``). :func:`invalid_message` joins them into the message of
the 422 ``Invalid`` status::

    Deployment.apps "web" is invalid: spec.template.spec.containers[0].image: Required value

Values in messages are printed the way Go's ``field.Error`` prints them: strings
quoted, label maps as ``map[string]string{...}``, selectors as ``v1.LabelSelector{...}``.

Custom resources are checked against their CRD version's ``openAPIV3Schema``.
Unknown fields are not errors: :func:`prune_unknown` drops them and says where they
were, and :func:`unknown_fields` lists them for built-in kinds too, so that the
server can reject them under ``fieldValidation=Strict`` or warn under ``Warn``.

What is checked is what users hit first, not all of Kubernetes' validation: the
object metadata, pod specs (containers, ports, resources, env, volumes, probes,
tolerations), workload selectors and templates, services, config maps and secrets,
jobs, leases, endpoints, endpoint slices, events, nodes, CRDs and custom resources.
CEL rules (``x-kubernetes-validations``) and string ``format`` are not checked.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import Any

from shoal.model.defaults import (
    JOB_CONTROLLER_UID_LABEL,
    LEGACY_JOB_CONTROLLER_UID_LABEL,
    LEGACY_JOB_NAME_LABEL,
    VOLUME_SOURCES,
)
from shoal.model.kinds import Kind
from shoal.model.quantity import QuantityError, parse_quantity
from shoal.model.scope_schema import HAND_WRITTEN_SCHEMAS
from shoal.model.selectors import LabelSelector, SelectorError, is_label_value, is_qualified_name

__all__ = [
    "DUPLICATE",
    "FORBIDDEN",
    "INVALID",
    "NOT_FOUND",
    "NOT_SUPPORTED",
    "REQUIRED",
    "TOO_LONG",
    "TOO_MANY",
    "TYPE_INVALID",
    "Cause",
    "invalid_message",
    "is_dns1035_label",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_path_segment_name",
    "prune_unknown",
    "qualified_kind",
    "unknown_fields",
    "validate",
    "validate_schema",
]

# metav1.CauseType values.
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
NOT_FOUND = "FieldValueNotFound"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"

IMMUTABLE = "field is immutable"
TOTAL_ANNOTATION_SIZE = 256 * 1024
MAX_CONFIG_SIZE = 1024 * 1024  # core.MaxSecretSize, shared by ConfigMaps

POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)
STATEFULSET_UPDATE_FORBIDDEN = (
    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
)


@dataclass(frozen=True)
class Cause:
    """One field error, as ``metav1.StatusCause``."""

    reason: str
    message: str
    field: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def qualified_kind(kind: Kind) -> str:
    """``Deployment.apps``, or ``Pod`` for the core group (``GroupKind.String``)."""
    return f"{kind.kind}.{kind.group}" if kind.group else kind.kind


def invalid_message(kind: Kind, name: str, causes: list[Cause]) -> str:
    """The message of the 422 status: one cause as is, several in brackets, repeats dropped."""
    head = f"{qualified_kind(kind)} {json.dumps(name)} is invalid"
    parts = list(dict.fromkeys(str(c) for c in causes))
    if not parts:
        return head
    if len(parts) == 1:
        return f"{head}: {parts[0]}"
    return f"{head}: [{', '.join(parts)}]"


# --- printing values the way field.Error does -----------------------------------------


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _go_map(value: dict[str, Any] | None) -> str:
    if value is None:
        return "map[string]string(nil)"
    items = ", ".join(f"{_q(str(k))}:{_q(str(v))}" for k, v in sorted(value.items()))
    return "map[string]string{" + items + "}"


def _go_strings(value: list[Any] | None) -> str:
    if value is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(_q(str(v)) for v in value) + "}"


def _go_selector(sel: Any) -> str:
    if not isinstance(sel, dict):
        return "null"
    labels = sel.get("matchLabels")
    exprs = sel.get("matchExpressions")
    if isinstance(exprs, list):
        rendered = ", ".join(
            "v1.LabelSelectorRequirement{"
            f"Key:{_q(str(x.get('key', '')))}, Operator:{_q(str(x.get('operator', '')))}, "
            f"Values:{_go_strings(x.get('values'))}}}"
            for x in exprs
            if isinstance(x, dict)
        )
        expr_text = "[]v1.LabelSelectorRequirement{" + rendered + "}"
    else:
        expr_text = "[]v1.LabelSelectorRequirement(nil)"
    label_text = _go_map(labels if isinstance(labels, dict) else None)
    return f"v1.LabelSelector{{MatchLabels:{label_text}, MatchExpressions:{expr_text}}}"


def _go(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, str):
        return _q(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return _go_map(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _go_strings(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --- the error list -------------------------------------------------------------------


class _Errors:
    """Collects causes with the constructors of ``k8s.io/apimachinery/.../field``."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def _add(self, reason: str, field: str, body: str, detail: str = "") -> None:
        self.causes.append(Cause(reason, f"{body}: {detail}" if detail else body, field))

    def required(self, field: str, detail: str = "") -> None:
        self._add(REQUIRED, field, "Required value", detail)

    def invalid(self, field: str, value: Any, detail: str) -> None:
        self._add(INVALID, field, f"Invalid value: {_go(value)}", detail)

    def invalid_shown(self, field: str, shown: str, detail: str) -> None:
        """Invalid, with the value already printed (selectors, label maps)."""
        self._add(INVALID, field, f"Invalid value: {shown}", detail)

    def type_invalid(self, field: str, value: Any, detail: str) -> None:
        self._add(TYPE_INVALID, field, f"Invalid value: {_go(value)}", detail)

    def not_supported(self, field: str, value: Any, valid: Iterable[str]) -> None:
        supported = ", ".join(_q(v) for v in valid)
        detail = f"supported values: {supported}" if supported else ""
        self._add(NOT_SUPPORTED, field, f"Unsupported value: {_go(value)}", detail)

    def duplicate(self, field: str, value: Any) -> None:
        self._add(DUPLICATE, field, f"Duplicate value: {_go(value)}")

    def duplicate_shown(self, field: str, shown: str) -> None:
        self._add(DUPLICATE, field, f"Duplicate value: {shown}")

    def not_found(self, field: str, value: Any) -> None:
        self._add(NOT_FOUND, field, f"Not found: {_go(value)}")

    def forbidden(self, field: str, detail: str) -> None:
        self._add(FORBIDDEN, field, "Forbidden", detail)

    def too_long(self, field: str, max_bytes: int) -> None:
        self._add(TOO_LONG, field, "Too long", f"must have at most {max_bytes} bytes")

    def too_long_length(self, field: str, max_length: int) -> None:
        self._add(TOO_LONG, field, "Too long", f"may not be longer than {max_length}")

    def too_many(self, field: str, actual: int, max_items: int) -> None:
        self._add(TOO_MANY, field, f"Too many: {actual}", f"must have at most {max_items} items")

    def immutable(self, field: str, value: Any) -> None:
        self.invalid(field, value, IMMUTABLE)

    def each(self, field: str, value: Any, messages: Iterable[str]) -> None:
        for msg in messages:
            self.invalid(field, value, msg)


def _c(path: str, *names: str) -> str:
    for name in names:
        path = f"{path}.{name}" if path else name
    return path


def _i(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _k(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, item) for i, item in enumerate(_l(value)) if isinstance(item, dict)]


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _as_int(value: Any) -> int | None:
    return int(value) if _is_int(value) else None


def _int_field(e: _Errors, d: dict[str, Any], key: str, path: str) -> int | None:
    """``d[key]`` as an int, or None when absent; a non-integer is reported."""
    value = d.get(key)
    if value is None:
        return None
    if _is_int(value):
        return int(value)
    e.type_invalid(_c(path, key), value, "must be of type integer")
    return None


def _nonneg(e: _Errors, d: dict[str, Any], key: str, path: str) -> int | None:
    value = _int_field(e, d, key, path)
    if value is not None and value < 0:
        e.invalid(_c(path, key), value, "must be greater than or equal to 0")
    return value


# --- names and keys (k8s.io/apimachinery/pkg/util/validation) ----------------------------


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # RegexError's odd "',  or '" spacing is kept so the messages match byte for byte.
    out = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            out += " or "
        out += f"'{example}', "
    return out + f"regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL = re.compile(_DNS1035_LABEL_FMT)
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character"
)
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_CONFIG_KEY = re.compile(_CONFIG_KEY_FMT)
_CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
_PERCENT_FMT = "[0-9]+%"
_PERCENT = re.compile(_PERCENT_FMT)
_PORT_NAME_CHARS = re.compile("[-a-z0-9]+")
_PORT_NAME_LETTER = re.compile("[a-z]")


def is_dns1123_label(value: str) -> list[str]:
    """Why ``value`` is not an RFC 1123 label (namespace names, container names)."""
    errs = [_max_len(63)] if len(value) > 63 else []
    if not _DNS1123_LABEL.fullmatch(value):
        errs.append(_regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """Why ``value`` is not an RFC 1123 subdomain (the names of most kinds)."""
    errs = [_max_len(253)] if len(value) > 253 else []
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """Why ``value`` is not a DNS-1035 label (service names: they become DNS names)."""
    errs = [_max_len(63)] if len(value) > 63 else []
    if not _DNS1035_LABEL.fullmatch(value):
        errs.append(_regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_path_segment_name(value: str) -> list[str]:
    """Why ``value`` cannot be a name in a URL path; every kind's names must pass this."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{ch}'" for ch in ("/", "%") if ch in value]


def _is_config_key(value: str) -> list[str]:
    errs = [_max_len(253)] if len(value) > 253 else []
    if not _CONFIG_KEY.fullmatch(value):
        errs.append(
            _regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name")
        )
    if value in (".", ".."):
        errs.append(f"must not be '{value}'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def _is_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


def _is_port_name(name: str) -> list[str]:
    errs: list[str] = []
    if len(name) > 15:
        errs.append(_max_len(15))
    if not _PORT_NAME_CHARS.fullmatch(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_LETTER.search(name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def _mask_trailing_dash(name: str) -> str:
    # A generateName prefix may end in '-': check it as if a suffix followed.
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


def _port_or_name(e: _Errors, value: Any, path: str) -> None:
    """An IntOrString port: a port number, or an IANA service name."""
    if _is_int(value):
        e.each(path, int(value), _is_port_num(int(value)))
    elif isinstance(value, str):
        if not value:
            e.required(path)
        else:
            e.each(path, value, _is_port_name(value))
    else:
        e.type_invalid(path, value, "must be an integer or a string")


# --- metadata -------------------------------------------------------------------------

_NameCheck = Callable[[str], list[str]]

_NAME_CHECKS: dict[tuple[str, str], _NameCheck] = {
    ("", "Namespace"): is_dns1123_label,
    ("", "Service"): is_dns1035_label,
    # Core/v1 events keep their legacy, unchecked names (beyond the URL rules).
    ("", "Event"): lambda _name: [],
    # --- authz: RBAC names are path segments only (ValidateRBACName), e.g. "system:node" ---
    ("rbac.authorization.k8s.io", "Role"): lambda _name: [],
    ("rbac.authorization.k8s.io", "ClusterRole"): lambda _name: [],
    ("rbac.authorization.k8s.io", "RoleBinding"): lambda _name: [],
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): lambda _name: [],
    # --- end authz ---
}


def _name_check(kind: Kind) -> _NameCheck:
    return _NAME_CHECKS.get((kind.group, kind.kind), is_dns1123_subdomain)


def _labels(e: _Errors, labels: Any, path: str) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        e.type_invalid(path, labels, "must be an object of strings")
        return
    for key, value in labels.items():
        e.each(path, key, is_qualified_name(key))
        if not isinstance(value, str):
            e.type_invalid(path, value, "must be a string")
        else:
            e.each(path, value, is_label_value(value))


def _annotations(e: _Errors, annotations: Any, path: str) -> None:
    if annotations is None:
        return
    if not isinstance(annotations, dict):
        e.type_invalid(path, annotations, "must be an object of strings")
        return
    total = 0
    for key, value in annotations.items():
        e.each(path, key, is_qualified_name(key.lower()))
        if not isinstance(value, str):
            e.type_invalid(path, value, "must be a string")
            continue
        total += len(key.encode()) + len(value.encode())
    if total > TOTAL_ANNOTATION_SIZE:
        e.too_long(path, TOTAL_ANNOTATION_SIZE)


def _owner_references(e: _Errors, refs: Any, path: str) -> None:
    controllers: list[str] = []
    for _, ref in _dicts(refs):
        api_version = _s(ref.get("apiVersion"))
        if not api_version.rpartition("/")[2]:
            e.invalid(_c(path, "apiVersion"), api_version, "version must not be empty")
        if not ref.get("kind"):
            e.invalid(_c(path, "kind"), _s(ref.get("kind")), "kind must not be empty")
        if not ref.get("name"):
            e.invalid(_c(path, "name"), _s(ref.get("name")), "name must not be empty")
        if not ref.get("uid"):
            e.invalid(_c(path, "uid"), _s(ref.get("uid")), "uid must not be empty")
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        e.invalid(
            path,
            refs,
            'Only one reference can have Controller set to true. Found "true" in references for '
            + " and ".join(controllers),
        )


def _object_meta(
    e: _Errors, meta: Any, namespaced: bool, check: _NameCheck, path: str = "metadata"
) -> None:
    if not isinstance(meta, dict):
        e.required(_c(path, "name"), "name or generateName is required")
        return
    generate_name = meta.get("generateName")
    if isinstance(generate_name, str) and generate_name:
        e.each(_c(path, "generateName"), generate_name, check(_mask_trailing_dash(generate_name)))
    name = meta.get("name")
    if not name:
        e.required(_c(path, "name"), "name or generateName is required")
    elif not isinstance(name, str):
        e.type_invalid(_c(path, "name"), name, "must be a string")
    else:
        e.each(_c(path, "name"), name, check(name))
        e.each(_c(path, "name"), name, is_path_segment_name(name))
    namespace = meta.get("namespace")
    if namespaced:
        if not namespace:
            e.required(_c(path, "namespace"))
        elif isinstance(namespace, str):
            e.each(_c(path, "namespace"), namespace, is_dns1123_label(namespace))
    elif namespace:
        e.forbidden(_c(path, "namespace"), "not allowed on this type")
    _nonneg(e, meta, "generation", path)
    _labels(e, meta.get("labels"), _c(path, "labels"))
    _annotations(e, meta.get("annotations"), _c(path, "annotations"))
    _owner_references(e, meta.get("ownerReferences"), _c(path, "ownerReferences"))
    for i, finalizer in enumerate(_l(meta.get("finalizers"))):
        if isinstance(finalizer, str):
            e.each(_i(_c(path, "finalizers"), i), finalizer, is_qualified_name(finalizer))


def _object_meta_update(e: _Errors, meta: Any, old_meta: Any) -> None:
    new, old = _d(meta), _d(old_meta)
    for key in ("name", "namespace"):
        if old.get(key) and new.get(key) != old.get(key):
            e.immutable(_c("metadata", key), new.get(key))


def _template_meta(e: _Errors, template: dict[str, Any], path: str) -> None:
    meta = _d(template.get("metadata"))
    _labels(e, meta.get("labels"), _c(path, "metadata", "labels"))
    _annotations(e, meta.get("annotations"), _c(path, "metadata", "annotations"))


# --- label selectors ------------------------------------------------------------------


def _label_selector(e: _Errors, sel: Any, path: str) -> None:
    if not isinstance(sel, dict):
        e.type_invalid(path, sel, "must be an object")
        return
    for i, expr in _dicts(sel.get("matchExpressions")):
        p = _i(_c(path, "matchExpressions"), i)
        op = expr.get("operator")
        values = _l(expr.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                e.required(_c(p, "values"), "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                e.forbidden(
                    _c(p, "values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
        else:
            e.invalid(_c(p, "operator"), op, "not a valid selector operator")
        e.each(_c(p, "key"), _s(expr.get("key")), is_qualified_name(_s(expr.get("key"))))
        for j, value in enumerate(values):
            if isinstance(value, str):
                e.each(_i(_c(p, "values"), j), value, is_label_value(value))
    _labels(e, sel.get("matchLabels"), _c(path, "matchLabels"))


def _selector_is_empty(sel: dict[str, Any]) -> bool:
    return not sel.get("matchLabels") and not sel.get("matchExpressions")


def _selector_matches(sel: dict[str, Any], labels: Any) -> bool | None:
    """Whether the selector matches the labels; None when it cannot be evaluated."""
    try:
        selector = LabelSelector.from_api(sel)
    except (SelectorError, AttributeError, TypeError):
        return None  # the selector's own errors are reported by _label_selector
    return selector.matches(labels if isinstance(labels, dict) else {})


# --- containers -----------------------------------------------------------------------

_PROTOCOLS = ("SCTP", "TCP", "UDP")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef")


def _container_ports(e: _Errors, ports: Any, path: str, host_network: bool) -> None:
    names: set[str] = set()
    for i, port in _dicts(ports):
        p = _i(path, i)
        name = port.get("name")
        if isinstance(name, str) and name:
            e.each(_c(p, "name"), name, _is_port_name(name))
            if name in names:
                e.duplicate(_c(p, "name"), name)
            names.add(name)
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


def _volumes(e: _Errors, volumes: Any, path: str) -> set[str]:
    names: set[str] = set()
    for i, v in _dicts(volumes):
        p = _i(path, i)
        name = v.get("name")
        if not name:
            e.required(_c(p, "name"))
        elif isinstance(name, str):
            e.each(_c(p, "name"), name, is_dns1123_label(name))
            if name in names:
                e.duplicate(_c(p, "name"), name)
            names.add(name)
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
        for i, c in _dicts(spec.get(key)):
            p = _i(_c(path, key), i)
            name = c.get("name")
            if not name:
                e.required(_c(p, "name"))
            elif isinstance(name, str):
                e.each(_c(p, "name"), name, is_dns1123_label(name))
                if name in names:
                    e.duplicate(_c(p, "name"), name)
                names.add(name)
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


def _validate_pod(e: _Errors, obj: dict[str, Any]) -> None:
    _pod_spec(e, obj.get("spec"), "spec")


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
            e.each(_c(p, "name"), name, is_dns1123_label(name))
            if name in names:
                e.duplicate(_c(p, "name"), name)
            names.add(name)
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


def _config_data(
    e: _Errors, obj: dict[str, Any], fields: tuple[str, ...], binary: tuple[str, ...]
) -> int:
    """Check the keys of the data maps and return their total size in bytes."""
    total = 0
    seen: dict[str, str] = {}
    for field in fields:
        data = obj.get(field)
        if data is None:
            continue
        if not isinstance(data, dict):
            e.type_invalid(field, data, "must be an object")
            continue
        for key, value in data.items():
            p = _k(field, key)
            e.each(p, key, _is_config_key(key))
            if key in seen:
                e.invalid(p, key, f"duplicate of key present in {seen[key]}")
            seen[key] = field
            if field in binary:
                try:
                    total += len(base64.b64decode(_s(value), validate=True))
                except (binascii.Error, ValueError):
                    # A secret's data is never echoed back, even when it is malformed.
                    shown = "<secret contents redacted>" if field == "data" else value
                    e.invalid(p, shown, "illegal base64 data")
            elif isinstance(value, str):
                total += len(value.encode())
            else:
                e.type_invalid(p, value, "must be a string")
    return total


def _validate_config_map(e: _Errors, obj: dict[str, Any]) -> None:
    total = _config_data(e, obj, ("data", "binaryData"), ("binaryData",))
    if total > MAX_CONFIG_SIZE:
        e.too_long("data", MAX_CONFIG_SIZE)


_SECRET_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def _validate_secret(e: _Errors, obj: dict[str, Any]) -> None:
    total = _config_data(e, obj, ("data",), ("data",))
    if total > MAX_CONFIG_SIZE:
        e.too_long("data", MAX_CONFIG_SIZE)
    data = _d(obj.get("data"))
    secret_type = obj.get("type")
    for key in _SECRET_REQUIRED_KEYS.get(_s(secret_type), ()):
        if not data.get(key):
            e.required(_k("data", key))
    if secret_type == "kubernetes.io/basic-auth" and not (
        data.get("username") or data.get("password")
    ):
        e.required(_k("data", "username"))
        e.required(_k("data", "password"))
    if secret_type == "kubernetes.io/service-account-token":
        annotations = _d(_d(obj.get("metadata")).get("annotations"))
        if not annotations.get("kubernetes.io/service-account.name"):
            e.required(_k("metadata.annotations", "kubernetes.io/service-account.name"))


def _immutable_data(
    e: _Errors, obj: dict[str, Any], old: dict[str, Any], fields: tuple[str, ...]
) -> None:
    if old.get("immutable") is not True:
        return
    detail = "field is immutable when `immutable` is set"
    if obj.get("immutable") is not True:
        e.forbidden("immutable", detail)
    for field in fields:
        if _semantic(obj.get(field) or {}) != _semantic(old.get(field) or {}):
            e.forbidden(field, detail)


def _validate_config_map_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    _immutable_data(e, obj, old, ("data", "binaryData"))


def _validate_secret_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    if obj.get("type") != old.get("type"):
        e.immutable("type", obj.get("type"))
    _immutable_data(e, obj, old, ("data",))


def _validate_namespace(e: _Errors, obj: dict[str, Any]) -> None:
    for i, finalizer in enumerate(_l(_d(obj.get("spec")).get("finalizers"))):
        if isinstance(finalizer, str):
            e.each(_i("spec.finalizers", i), finalizer, is_qualified_name(finalizer))


def _validate_node(e: _Errors, obj: dict[str, Any]) -> None:
    seen: set[tuple[str, str]] = set()
    for i, taint in _dicts(_d(obj.get("spec")).get("taints")):
        p = _i("spec.taints", i)
        key = _s(taint.get("key"))
        if not key:
            e.required(_c(p, "key"))
        else:
            e.each(_c(p, "key"), key, is_qualified_name(key))
        e.each(_c(p, "value"), _s(taint.get("value")), is_label_value(_s(taint.get("value"))))
        effect = _s(taint.get("effect"))
        if not effect:
            e.required(_c(p, "effect"))
        elif effect not in _TAINT_EFFECTS:
            e.not_supported(_c(p, "effect"), effect, _TAINT_EFFECTS)
        if (key, effect) in seen:
            e.duplicate(p, taint)
        seen.add((key, effect))


def _validate_node_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    for key, path in (("podCIDR", "spec.podCIDRs"), ("providerID", "spec.providerID")):
        if old_spec.get(key) and spec.get(key) != old_spec.get(key):
            e.forbidden(path, f'node updates may not change {key} except from "" to valid')


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
            e.each(_c(p, "name"), name, is_dns1123_label(name))
            if name in names:
                e.duplicate(_c(p, "name"), name)
            names.add(name)
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


def _validate_event(e: _Errors, obj: dict[str, Any]) -> None:
    # Legacy events: the event lives in its object's namespace (or "default" for
    # cluster-scoped objects, as old clients did).
    if obj.get("eventTime"):
        return
    namespace = _s(_d(obj.get("metadata")).get("namespace"))
    involved = _s(_d(obj.get("involvedObject")).get("namespace"))
    if (not involved and namespace not in ("", "default")) or (involved and involved != namespace):
        e.invalid("involvedObject.namespace", involved, "does not match event.namespace")


def _validate_lease(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    duration = _int_field(e, spec, "leaseDurationSeconds", "spec")
    if duration is not None and duration <= 0:
        e.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    _nonneg(e, spec, "leaseTransitions", "spec")


# --- apps/v1 and batch/v1 -------------------------------------------------------------


def _workload_selector(
    e: _Errors, spec: dict[str, Any], empty_message: str
) -> dict[str, Any] | None:
    sel = spec.get("selector")
    if sel is None:
        e.required("spec.selector")
        return None
    _label_selector(e, sel, "spec.selector")
    if not isinstance(sel, dict):
        return None
    if _selector_is_empty(sel):
        e.invalid_shown("spec.selector", _go_selector(sel), empty_message)
        return None
    return sel


def _workload_template(
    e: _Errors,
    spec: dict[str, Any],
    sel: dict[str, Any] | None,
    restart_policies: tuple[str, ...] = ("Always",),
    deadline_owner: str | None = None,
) -> None:
    template = spec.get("template")
    if not isinstance(template, dict):
        e.required("spec.template")
        return
    labels = _d(template.get("metadata")).get("labels")
    if sel is not None and _selector_matches(sel, labels) is False:
        e.invalid_shown(
            "spec.template.metadata.labels",
            _go_map(labels if isinstance(labels, dict) else None),
            "`selector` does not match template `labels`",
        )
    _template_meta(e, template, "spec.template")
    pod_spec = template.get("spec")
    _pod_spec(e, pod_spec, "spec.template.spec")
    restart = _d(pod_spec).get("restartPolicy")
    if restart not in restart_policies:
        e.not_supported("spec.template.spec.restartPolicy", restart or "", restart_policies)
    if deadline_owner is not None and _d(pod_spec).get("activeDeadlineSeconds") is not None:
        e.forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            f"activeDeadlineSeconds in {deadline_owner} is not Supported",
        )


def _int_or_percent(e: _Errors, value: Any, path: str) -> int | None:
    """An IntOrString count: a non-negative int, or a percent; the percent is returned."""
    if value is None:
        return None
    if _is_int(value):
        if value < 0:
            e.invalid(path, value, "must be greater than or equal to 0")
        return int(value)
    if isinstance(value, str):
        if not _PERCENT.fullmatch(value):
            e.invalid(
                path,
                value,
                _regex_error(
                    "a valid percent string must be a numeric string followed by an ending '%'",
                    _PERCENT_FMT,
                    "1%",
                    "93%",
                ),
            )
            return None
        return int(value[:-1])
    e.type_invalid(path, value, "must be an integer or a string")
    return None


def _rolling_update(e: _Errors, rolling: dict[str, Any], path: str, zero_message: str) -> None:
    unavailable = _int_or_percent(e, rolling.get("maxUnavailable"), _c(path, "maxUnavailable"))
    surge = _int_or_percent(e, rolling.get("maxSurge"), _c(path, "maxSurge"))
    max_unavailable = rolling.get("maxUnavailable")
    if isinstance(max_unavailable, str) and unavailable is not None and unavailable > 100:
        e.invalid(_c(path, "maxUnavailable"), max_unavailable, "must not be greater than 100%")
    if unavailable == 0 and surge == 0:
        e.invalid(_c(path, "maxUnavailable"), rolling.get("maxUnavailable"), zero_message)


def _validate_deployment(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _nonneg(e, spec, "replicas", "spec")
    sel = _workload_selector(e, spec, "empty selector is invalid for deployment")
    _workload_template(e, spec, sel, deadline_owner="ReplicaSet")
    strategy = _d(spec.get("strategy"))
    strategy_type = strategy.get("type")
    if strategy_type not in (None, "", "Recreate", "RollingUpdate"):
        e.not_supported("spec.strategy.type", strategy_type, ["Recreate", "RollingUpdate"])
    rolling = strategy.get("rollingUpdate")
    if strategy_type == "Recreate" and rolling is not None:
        e.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        )
    elif isinstance(rolling, dict):
        _rolling_update(
            e, rolling, "spec.strategy.rollingUpdate", "may not be 0 when `maxSurge` is 0"
        )
    min_ready = _nonneg(e, spec, "minReadySeconds", "spec")
    _nonneg(e, spec, "revisionHistoryLimit", "spec")
    deadline = _nonneg(e, spec, "progressDeadlineSeconds", "spec")
    if deadline is not None and min_ready is not None and deadline <= min_ready:
        e.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")


def _validate_replica_set(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _nonneg(e, spec, "replicas", "spec")
    _nonneg(e, spec, "minReadySeconds", "spec")
    sel = _workload_selector(e, spec, "empty selector is invalid for deployment")
    _workload_template(e, spec, sel, deadline_owner="ReplicaSet")


def _validate_daemon_set(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    sel = _workload_selector(e, spec, "empty selector is invalid for daemonset")
    _workload_template(e, spec, sel, deadline_owner="DaemonSet")
    _nonneg(e, spec, "minReadySeconds", "spec")
    _nonneg(e, spec, "revisionHistoryLimit", "spec")
    strategy = _d(spec.get("updateStrategy"))
    strategy_type = strategy.get("type")
    if strategy_type not in (None, "", "OnDelete", "RollingUpdate"):
        e.not_supported("spec.updateStrategy.type", strategy_type, ["OnDelete", "RollingUpdate"])
    rolling = strategy.get("rollingUpdate")
    if strategy_type == "RollingUpdate" and isinstance(rolling, dict):
        _rolling_update(
            e, rolling, "spec.updateStrategy.rollingUpdate", "cannot be 0 when maxSurge is 0"
        )


def _validate_stateful_set(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    policy = spec.get("podManagementPolicy")
    if policy not in (None, "", "OrderedReady", "Parallel"):
        e.invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'")
    strategy = _d(spec.get("updateStrategy"))
    strategy_type = strategy.get("type")
    if strategy_type not in (None, "", "RollingUpdate", "OnDelete"):
        e.invalid("spec.updateStrategy", strategy, "must be 'RollingUpdate' or 'OnDelete'")
    if strategy_type == "OnDelete" and strategy.get("rollingUpdate") is not None:
        e.invalid(
            "spec.updateStrategy.rollingUpdate",
            strategy["rollingUpdate"],
            "only allowed for updateStrategy 'RollingUpdate'",
        )
    rolling = strategy.get("rollingUpdate")
    if isinstance(rolling, dict):
        _nonneg(e, rolling, "partition", "spec.updateStrategy.rollingUpdate")
    _nonneg(e, spec, "replicas", "spec")
    _nonneg(e, spec, "minReadySeconds", "spec")
    service_name = spec.get("serviceName")
    if isinstance(service_name, str) and service_name:
        e.each("spec.serviceName", service_name, is_dns1035_label(service_name))
    sel = _workload_selector(e, spec, "empty selector is not valid for statefulset.")
    _workload_template(e, spec, sel)
    if _d(_d(spec.get("template")).get("spec")).get("activeDeadlineSeconds") is not None:
        e.invalid(
            "spec.template.spec.activeDeadlineSeconds",
            _d(spec["template"]["spec"])["activeDeadlineSeconds"],
            "must not be specified",
        )


def _selector_immutable(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    sel = _d(obj.get("spec")).get("selector")
    old_sel = _d(old.get("spec")).get("selector")
    if _semantic(sel) != _semantic(old_sel):
        e.invalid_shown("spec.selector", _go_selector(sel), IMMUTABLE)


_STATEFULSET_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _validate_stateful_set_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    def fixed(spec: Any) -> Any:
        return _semantic({k: v for k, v in _d(spec).items() if k not in _STATEFULSET_MUTABLE})

    if fixed(obj.get("spec")) != fixed(old.get("spec")):
        e.forbidden("spec", STATEFULSET_UPDATE_FORBIDDEN)


_COMPLETION_MODES = ("NonIndexed", "Indexed")


def _validate_job(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        _nonneg(e, spec, key, "spec")
    deadline = _int_field(e, spec, "activeDeadlineSeconds", "spec")
    if deadline is not None and deadline <= 0:
        e.invalid("spec.activeDeadlineSeconds", deadline, "must be greater than 0")
    mode = spec.get("completionMode")
    if mode not in (None, "") and mode not in _COMPLETION_MODES:
        e.not_supported("spec.completionMode", mode, _COMPLETION_MODES)
    if mode == "Indexed" and spec.get("completions") is None:
        e.required("spec.completions", "when completion mode is Indexed")
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None and replacement not in ("Failed", "TerminatingOrFailed"):
        e.not_supported("spec.podReplacementPolicy", replacement, ["Failed", "TerminatingOrFailed"])
    sel = spec.get("selector")
    if sel is None:
        e.required("spec.selector")
    else:
        _label_selector(e, sel, "spec.selector")
    _workload_template(
        e, spec, sel if isinstance(sel, dict) else None, restart_policies=("OnFailure", "Never")
    )
    _generated_job_selector(e, obj)


def _generated_job_selector(e: _Errors, obj: dict[str, Any]) -> None:
    """With a generated selector, the template must carry this job's uid and name."""
    spec = _d(obj.get("spec"))
    meta = _d(obj.get("metadata"))
    sel = spec.get("selector")
    uid = meta.get("uid")
    if spec.get("manualSelector") is True or not isinstance(sel, dict) or not uid:
        return
    template_meta = _d(_d(spec.get("template")).get("metadata"))
    labels = _d(template_meta.get("labels"))
    path = "spec.template.metadata.labels"
    for key, expected in (
        (LEGACY_JOB_CONTROLLER_UID_LABEL, uid),
        (LEGACY_JOB_NAME_LABEL, meta.get("name")),
    ):
        if key not in labels:
            e.required(_k(path, key), str(expected))
        elif labels[key] != expected:
            e.invalid_shown(_k(path, key), _go_map(labels), f"must be '{expected}'")
    if _selector_matches(sel, {JOB_CONTROLLER_UID_LABEL: uid}) is False:
        e.invalid_shown("spec.selector", _go_selector(sel), "`selector` not auto-generated")


def _validate_job_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    _selector_immutable(e, obj, old)
    template, old_template = copy.deepcopy(_d(spec.get("template"))), _d(old_spec.get("template"))
    # A suspended job that never started may still change where its pods go.
    if old_spec.get("suspend") is True and not _d(old.get("status")).get("startTime"):
        template_meta = _d(template.get("metadata"))
        old_template_meta = _d(old_template.get("metadata"))
        template_meta.pop("labels", None)
        template_meta.pop("annotations", None)
        for key in ("labels", "annotations"):
            if key in old_template_meta:
                template_meta[key] = old_template_meta[key]
        template["metadata"] = template_meta
        template_spec = _d(template.get("spec"))
        old_template_spec = _d(old_template.get("spec"))
        for key in ("nodeSelector", "tolerations", "affinity", "schedulingGates"):
            template_spec.pop(key, None)
            if key in old_template_spec:
                template_spec[key] = old_template_spec[key]
        template["spec"] = template_spec
    if _semantic(template) != _semantic(old_template):
        e.immutable("spec.template", spec.get("template"))
    for key in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex"):
        if _semantic(spec.get(key)) != _semantic(old_spec.get(key)):
            e.immutable(_c("spec", key), spec.get(key))
    completions, old_completions = spec.get("completions"), old_spec.get("completions")
    # Indexed jobs may scale when completions and parallelism move together.
    elastic = (
        spec.get("completionMode") == "Indexed"
        and completions == spec.get("parallelism")
        and old_completions == old_spec.get("parallelism")
    )
    if completions != old_completions and not elastic:
        e.immutable("spec.completions", completions)


# --- apiextensions.k8s.io/v1 ----------------------------------------------------------

_SCHEMA_TYPES = ("array", "boolean", "integer", "number", "object", "string")


def _structural(e: _Errors, schema: Any, path: str, what: str) -> None:
    """The structural-schema rule users hit first: every specified field has a type."""
    if not isinstance(schema, dict):
        e.type_invalid(path, schema, "must be an object")
        return
    t = schema.get("type")
    if t is None or t == "":
        if not (
            schema.get("x-kubernetes-int-or-string") is True
            or schema.get("x-kubernetes-preserve-unknown-fields") is True
        ):
            e.required(_c(path, "type"), f"must not be empty for specified {what}")
    elif t not in _SCHEMA_TYPES:
        e.not_supported(_c(path, "type"), t, _SCHEMA_TYPES)
    props = schema.get("properties")
    additional = schema.get("additionalProperties")
    if isinstance(props, dict):
        if isinstance(additional, dict) or additional is True:
            e.forbidden(
                _c(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            )
        for name, sub in props.items():
            _structural(e, sub, _k(_c(path, "properties"), name), "object fields")
    if isinstance(additional, dict):
        _structural(e, additional, _c(path, "additionalProperties"), "object fields")
    items = schema.get("items")
    if isinstance(items, dict):
        _structural(e, items, _c(path, "items"), "array items")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            e.invalid(_c(path, "pattern"), pattern, f"must be a valid regular expression: {exc}")


def _validate_crd(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    names = _d(spec.get("names"))
    group = _s(spec.get("group"))
    if not group:
        e.required("spec.group")
    else:
        e.each("spec.group", group, is_dns1123_subdomain(group))
        if "." not in group:
            e.invalid("spec.group", group, "should be a domain with at least one dot")
    plural = _s(names.get("plural"))
    name = _s(_d(obj.get("metadata")).get("name"))
    if name and plural and group and name != f"{plural}.{group}":
        e.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    for key in ("plural", "singular", "kind", "listKind"):
        value = names.get(key)
        p = _c("spec.names", key)
        if not value:
            e.required(p)
        elif isinstance(value, str):
            errs = is_dns1035_label(value.lower() if key in ("kind", "listKind") else value)
            if errs and key in ("kind", "listKind"):
                e.invalid(
                    p, value, "may have mixed case, but should otherwise match: " + ",".join(errs)
                )
            elif errs:
                e.invalid(p, value, ",".join(errs))
    for i, short in enumerate(_l(names.get("shortNames"))):
        e.each(_i("spec.names.shortNames", i), short, is_dns1035_label(_s(short)))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        e.invalid("spec.names.listKind", names["listKind"], "kind and listKind may not be the same")
    scope = spec.get("scope")
    if not scope:
        e.required("spec.scope")
    elif scope not in ("Cluster", "Namespaced"):
        e.not_supported("spec.scope", scope, ["Cluster", "Namespaced"])
    versions = _l(spec.get("versions"))
    if not versions:
        e.required("spec.versions", "must have at least one version")
    seen: set[str] = set()
    storage = 0
    for i, version in _dicts(versions):
        p = _i("spec.versions", i)
        version_name = _s(version.get("name"))
        if not version_name:
            e.required(_c(p, "name"))
        else:
            e.each(_c(p, "name"), version_name, is_dns1035_label(version_name))
            if version_name in seen:
                e.duplicate(_c(p, "name"), version_name)
            seen.add(version_name)
        if version.get("storage") is True:
            storage += 1
        schema = _d(version.get("schema")).get("openAPIV3Schema")
        sp = _c(p, "schema", "openAPIV3Schema")
        if schema is None:
            e.required(sp, "schemas are required")
        elif isinstance(schema, dict):
            root_type = schema.get("type")
            if not root_type:
                e.required(_c(sp, "type"), "must not be empty at the root")
            elif root_type != "object":
                e.invalid(_c(sp, "type"), root_type, "must be object at the root")
            _structural(e, {**schema, "type": "object"}, sp, "object fields")
        else:
            e.type_invalid(sp, schema, "must be an object")
    if versions and storage != 1:
        e.invalid(
            "spec.versions", versions, "must have exactly one version marked as storage version"
        )
    conversion = _d(spec.get("conversion"))
    strategy = conversion.get("strategy")
    if strategy not in (None, "", "None", "Webhook"):
        e.not_supported("spec.conversion.strategy", strategy, ["None", "Webhook"])
    if strategy == "Webhook" and not conversion.get("webhook"):
        e.required("spec.conversion.webhook", "required when strategy is set to Webhook")


def _validate_crd_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    for key in ("group", "scope"):
        if old_spec.get(key) and spec.get(key) != old_spec.get(key):
            e.immutable(_c("spec", key), spec.get(key))


# --- custom resources: structural schemas ---------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(value: Any, t: str) -> bool:
    actual = _json_type(value)
    if t == "integer":
        return _is_int(value)
    if t == "number":
        return actual in ("integer", "number")
    return actual == t


def _json_key(value: Any) -> str:
    # Equality as JSON sees it: true is not 1, and 1 equals 1.0.
    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _body(path: str) -> str:
    return f"{path} in body" if path else "body"


def _schema_string(e: _Errors, schema: dict[str, Any], value: str, path: str) -> None:
    min_length = _as_int(schema.get("minLength"))
    if min_length is not None and len(value) < min_length:
        e.invalid(path, value, f"{_body(path)} should be at least {min_length} chars long")
    max_length = _as_int(schema.get("maxLength"))
    if max_length is not None and len(value) > max_length:
        e.too_long_length(path, max_length)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True  # the CRD's own validation reports a bad pattern
        if not matched:
            e.invalid(path, value, f"{_body(path)} should match '{pattern}'")


def _schema_number(e: _Errors, schema: dict[str, Any], value: float, path: str) -> None:
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float) and not isinstance(minimum, bool):
        if schema.get("exclusiveMinimum") is True and value <= minimum:
            e.invalid(path, value, f"{_body(path)} should be greater than {_num(minimum)}")
        elif value < minimum:
            e.invalid(
                path, value, f"{_body(path)} should be greater than or equal to {_num(minimum)}"
            )
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float) and not isinstance(maximum, bool):
        if schema.get("exclusiveMaximum") is True and value >= maximum:
            e.invalid(path, value, f"{_body(path)} should be less than {_num(maximum)}")
        elif value > maximum:
            e.invalid(path, value, f"{_body(path)} should be less than or equal to {_num(maximum)}")
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and not isinstance(multiple, bool) and multiple > 0:
        quotient = Decimal(str(value)) / Decimal(str(multiple))
        if quotient != quotient.to_integral_value():
            e.invalid(path, value, f"{_body(path)} should be a multiple of {_num(multiple)}")


def _schema_array(e: _Errors, schema: dict[str, Any], value: list[Any], path: str) -> None:
    min_items = _as_int(schema.get("minItems"))
    if min_items is not None and len(value) < min_items:
        e.invalid(path, value, f"{_body(path)} should have at least {min_items} items")
    max_items = _as_int(schema.get("maxItems"))
    if max_items is not None and len(value) > max_items:
        e.too_many(path, len(value), max_items)
    list_type = schema.get("x-kubernetes-list-type")
    if schema.get("uniqueItems") is True or list_type == "set":
        seen: set[str] = set()
        for i, item in enumerate(value):
            key = _json_key(item)
            if key in seen:
                e.duplicate(_i(path, i), item)
            seen.add(key)
    elif list_type == "map":
        map_keys = [k for k in _l(schema.get("x-kubernetes-list-map-keys")) if isinstance(k, str)]
        seen_keys: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key_values = {k: item.get(k) for k in map_keys}
            key = _json_key(key_values)
            if key in seen_keys:
                shown = ", ".join(f"{_q(k)}:{_go(v)}" for k, v in key_values.items())
                e.duplicate_shown(_i(path, i), f"map[string]interface {{}}{{{shown}}}")
            seen_keys.add(key)
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _schema_value(e, items, item, _i(path, i))


def _schema_object(e: _Errors, schema: dict[str, Any], value: dict[str, Any], path: str) -> None:
    for key in _l(schema.get("required")):
        if isinstance(key, str) and key not in value:
            e.required(_c(path, key))
    min_props = _as_int(schema.get("minProperties"))
    if min_props is not None and len(value) < min_props:
        e.invalid(path, value, f"{_body(path)} should have at least {min_props} properties")
    max_props = _as_int(schema.get("maxProperties"))
    if max_props is not None and len(value) > max_props:
        e.invalid(path, value, f"{_body(path)} should have at most {max_props} properties")
    props = _d(schema.get("properties"))
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        sub = props.get(key)
        if isinstance(sub, dict):
            _schema_value(e, sub, item, _c(path, key))
        elif isinstance(additional, dict):
            _schema_value(e, additional, item, _c(path, key))


def _schema_junctors(e: _Errors, schema: dict[str, Any], value: Any, path: str) -> None:
    def passes(sub: Any) -> bool:
        if not isinstance(sub, dict):
            return True
        probe = _Errors()
        _schema_value(probe, sub, value, path)
        return not probe.causes

    for sub in _l(schema.get("allOf")):
        if isinstance(sub, dict):
            _schema_value(e, sub, value, path)
    any_of = _l(schema.get("anyOf"))
    if any_of and not any(passes(s) for s in any_of):
        e.invalid(path, value, f"{_body(path)} must validate at least one schema (anyOf)")
    one_of = _l(schema.get("oneOf"))
    if one_of and sum(passes(s) for s in one_of) != 1:
        e.invalid(path, value, f"{_body(path)} must validate one and only one schema (oneOf)")
    not_schema = schema.get("not")
    if isinstance(not_schema, dict) and passes(not_schema):
        e.invalid(path, value, f"{_body(path)} must not validate the schema (not)")


def _schema_value(e: _Errors, schema: dict[str, Any], value: Any, path: str) -> None:
    t = schema.get("type")
    if value is None:
        if not schema.get("nullable") and t:
            e.type_invalid(path, "null", f'{_body(path)} must be of type {t}: "null"')
        return
    if schema.get("x-kubernetes-int-or-string") is True:
        if not (isinstance(value, str) or _is_int(value)):
            actual = _json_type(value)
            e.type_invalid(
                path, actual, f'{_body(path)} must be of type integer,string: "{actual}"'
            )
            return
    elif isinstance(t, str) and t and not _has_type(value, t):
        actual = _json_type(value)
        e.type_invalid(path, actual, f'{_body(path)} must be of type {t}: "{actual}"')
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and _json_key(value) not in {_json_key(v) for v in enum}:
        e.not_supported(path, value, [v if isinstance(v, str) else _go(v) for v in enum])
    if isinstance(value, str):
        _schema_string(e, schema, value, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _schema_number(e, schema, value, path)
    elif isinstance(value, list):
        _schema_array(e, schema, value, path)
    elif isinstance(value, dict):
        _schema_object(e, schema, value, path)
    _schema_junctors(e, schema, value, path)


_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def validate_schema(schema: dict[str, Any], obj: dict[str, Any]) -> list[Cause]:
    """Check a custom resource against its ``openAPIV3Schema`` (not its metadata)."""
    e = _Errors()
    root = {k: v for k, v in schema.items() if k not in ("properties", "required")}
    root["properties"] = {
        k: v for k, v in _d(schema.get("properties")).items() if k not in _ROOT_FIELDS
    }
    root["required"] = [k for k in _l(schema.get("required")) if k not in _ROOT_FIELDS]
    body = {k: v for k, v in obj.items() if k not in _ROOT_FIELDS}
    _schema_value(e, root, body, "")
    return e.causes


def _crd_schema(kind: Kind) -> dict[str, Any] | None:
    schema = _d(_d(kind.crd_version).get("schema")).get("openAPIV3Schema")
    return schema if isinstance(schema, dict) else None


# --- Scope (shoal.dev) ------------------------------------------------------------------


def _scope_names(e: _Errors, value: Any, path: str,
                 check: _NameCheck = is_dns1123_subdomain) -> list[str]:
    """A list of DNS-1123 names (node names; namespace names are labels), each once."""
    if value is None:
        return []
    if not isinstance(value, list):
        return []  # the schema check reports the type
    seen: set[str] = set()
    out: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str):
            continue
        p = _i(path, i)
        if not name:
            e.required(p)
            continue
        e.each(p, name, check(name))
        if name in seen:
            e.duplicate(p, name)
        seen.add(name)
        out.append(name)
    return out


def _validate_scope(e: _Errors, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return  # the schema check says spec is required or of the wrong type
    namespaces = _scope_names(e, spec.get("namespaces"), "spec.namespaces", is_dns1123_label)
    ns_selector = spec.get("namespaceSelector")
    for key in ("namespaceSelector", "memberSelector"):
        if spec.get(key) is not None:
            _label_selector(e, spec[key], _c("spec", key))
    if not namespaces and ns_selector is None and isinstance(spec.get("namespaces"), list | None):
        e.required("spec.namespaces", "at least one of namespaces and namespaceSelector "
                   "is required")
    members = _scope_names(e, spec.get("members"), "spec.members")
    writers = _scope_names(e, spec.get("writers"), "spec.writers")
    if spec.get("writers") is not None and spec.get("memberSelector") is None:
        # With a selector, membership depends on Node labels, so it cannot be checked here.
        for i, w in enumerate(writers):
            if w not in members:
                e.invalid(_i("spec.writers", i), w, "must be one of spec.members")


# --- pruning and unknown fields -------------------------------------------------------

# The fields of ObjectMeta that a client may send; anything else in metadata is unknown.
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def _prune_meta(meta: Any, path: str, out: list[str]) -> None:
    if isinstance(meta, dict):
        for key in [k for k in meta if k not in _OBJECT_META_FIELDS]:
            del meta[key]
            out.append(_c(path, key))


def _prune(schema: dict[str, Any], value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        props = _d(schema.get("properties"))
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key in list(value):
            sub = props.get(key)
            child = _c(path, key)
            if isinstance(sub, dict):
                _prune(sub, value[key], child, out)
            elif isinstance(additional, dict):
                _prune(additional, value[key], child, out)
            elif embedded and key in _ROOT_FIELDS:
                if key == "metadata":
                    _prune_meta(value[key], child, out)
            elif not preserve and additional is not True:
                del value[key]
                out.append(child)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _prune(items, item, _i(path, i), out)


def prune_unknown(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Drop the fields of a custom resource its schema does not know; return their paths.

    ``apiVersion`` and ``kind`` are kept; ``metadata`` is pruned to ObjectMeta's
    fields. ``x-kubernetes-preserve-unknown-fields`` keeps a node's unknown fields
    (while still pruning inside the fields it specifies), as Kubernetes does.
    """
    out: list[str] = []
    root = {k: v for k, v in schema.items() if k != "properties"}
    root["properties"] = {
        k: v for k, v in _d(schema.get("properties")).items() if k not in _ROOT_FIELDS
    }
    for key in list(obj):
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            _prune_meta(obj[key], "metadata", out)
            continue
        sub = root["properties"].get(key)
        if isinstance(sub, dict):
            _prune(sub, obj[key], key, out)
        elif root.get("x-kubernetes-preserve-unknown-fields") is not True:
            del obj[key]
            out.append(key)
    return out


_CLIENT_MODELS: dict[tuple[str, str], str] = {
    ("", "Namespace"): "V1Namespace",
    ("", "Pod"): "V1Pod",
    ("", "Node"): "V1Node",
    ("", "Service"): "V1Service",
    ("", "Endpoints"): "V1Endpoints",
    ("", "ConfigMap"): "V1ConfigMap",
    ("", "Secret"): "V1Secret",
    ("", "Event"): "CoreV1Event",
    ("", "ServiceAccount"): "V1ServiceAccount",
    ("apps", "Deployment"): "V1Deployment",
    ("apps", "ReplicaSet"): "V1ReplicaSet",
    ("apps", "DaemonSet"): "V1DaemonSet",
    ("apps", "StatefulSet"): "V1StatefulSet",
    ("batch", "Job"): "V1Job",
    ("coordination.k8s.io", "Lease"): "V1Lease",
    ("discovery.k8s.io", "EndpointSlice"): "V1EndpointSlice",
    ("apiextensions.k8s.io", "CustomResourceDefinition"): "V1CustomResourceDefinition",
}


@functools.cache
def _client_models() -> ModuleType | None:
    # Imported on first use: the models module is large and only Strict needs it.
    try:
        import kubernetes.client.models as models
    except ImportError:  # pragma: no cover - kubernetes is a dependency
        return None
    return models


@functools.cache
def _model_fields(models: ModuleType, name: str) -> dict[str, str] | None:
    """JSON field name to the field's type name, for a client model class."""
    cls = getattr(models, name, None)
    attribute_map = getattr(cls, "attribute_map", None)
    openapi_types = getattr(cls, "openapi_types", None)
    if not isinstance(attribute_map, dict) or not isinstance(openapi_types, dict):
        return None
    return {json_name: openapi_types[attr] for attr, json_name in attribute_map.items()}


def _walk_model(models: ModuleType, type_name: str, value: Any, path: str, out: list[str]) -> None:
    type_name = type_name.strip()
    if type_name.startswith("List[") and type_name.endswith("]"):
        for i, item in enumerate(_l(value)):
            _walk_model(models, type_name[5:-1], item, _i(path, i), out)
        return
    if type_name.startswith("Dict[") and type_name.endswith("]"):
        inner = type_name[5:-1].split(",", 1)[1]
        for key, item in _d(value).items():
            _walk_model(models, inner, item, _c(path, key), out)
        return
    fields = _model_fields(models, type_name)
    if fields is None or not isinstance(value, dict):
        return  # a primitive, a quantity, an IntOrString or free-form JSON
    for key, item in value.items():
        if key not in fields:
            out.append(_c(path, key))
        else:
            _walk_model(models, fields[key], item, _c(path, key), out)


def unknown_fields(kind: Kind, obj: dict[str, Any]) -> list[str]:
    """The paths of the fields ``fieldValidation=Strict`` rejects as ``unknown field "..."``.

    Built-in kinds are checked against the ``kubernetes`` client's models (so fields
    newer than the client are reported too); custom resources against their schema,
    without changing ``obj``.
    """
    if kind.is_custom:
        schema = _crd_schema(kind)
        return prune_unknown(schema, copy.deepcopy(obj)) if schema is not None else []
    own = HAND_WRITTEN_SCHEMAS.get((kind.group, kind.kind))
    if own is not None:
        return prune_unknown(own, copy.deepcopy(obj))
    name = _CLIENT_MODELS.get((kind.group, kind.kind))
    models = _client_models()
    if name is None or models is None:
        return []
    out: list[str] = []
    _walk_model(models, name, obj, "", out)
    return out


# --- dispatch -------------------------------------------------------------------------

_Check = Callable[[_Errors, dict[str, Any]], None]
_UpdateCheck = Callable[[_Errors, dict[str, Any], dict[str, Any]], None]

_CHECKS: dict[tuple[str, str], _Check] = {
    ("", "Pod"): _validate_pod,
    ("", "Service"): _validate_service,
    ("", "ConfigMap"): _validate_config_map,
    ("", "Secret"): _validate_secret,
    ("", "Namespace"): _validate_namespace,
    ("", "Node"): _validate_node,
    ("", "Endpoints"): _validate_endpoints,
    ("", "Event"): _validate_event,
    ("apps", "Deployment"): _validate_deployment,
    ("apps", "ReplicaSet"): _validate_replica_set,
    ("apps", "DaemonSet"): _validate_daemon_set,
    ("apps", "StatefulSet"): _validate_stateful_set,
    ("batch", "Job"): _validate_job,
    ("coordination.k8s.io", "Lease"): _validate_lease,
    ("discovery.k8s.io", "EndpointSlice"): _validate_endpoint_slice,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _validate_crd,
    ("shoal.dev", "Scope"): _validate_scope,
}

_UPDATE_CHECKS: dict[tuple[str, str], _UpdateCheck] = {
    ("", "Pod"): _validate_pod_update,
    ("", "Service"): _validate_service_update,
    ("", "ConfigMap"): _validate_config_map_update,
    ("", "Secret"): _validate_secret_update,
    ("", "Node"): _validate_node_update,
    ("apps", "Deployment"): _selector_immutable,
    ("apps", "ReplicaSet"): _selector_immutable,
    ("apps", "DaemonSet"): _selector_immutable,
    ("apps", "StatefulSet"): _validate_stateful_set_update,
    ("batch", "Job"): _validate_job_update,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _validate_crd_update,
}


def validate(
    kind: Kind,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    *,
    subresource: str | None = None,
) -> list[Cause]:
    """The field errors of ``obj``, and of the change from ``old`` when it is an update.

    Call it after defaulting (and, for Jobs, after the selector is generated), as the
    apiserver does. The server fills ``metadata.name`` from ``generateName`` first,
    so a name is required here. ``uid`` and ``creationTimestamp`` are the server's.

    ``subresource`` names the subresource an update goes through. The update rules of
    the kind (immutable fields, the pod spec) apply to the object itself and to
    ``scale``; ``status``, ``binding`` (which sets a pod's ``spec.nodeName``),
    ``resize`` and ``ephemeralcontainers`` write fields those rules protect, so
    Kubernetes skips them there and so does this.
    """
    e = _Errors()
    _object_meta(e, obj.get("metadata"), kind.namespaced, _name_check(kind))
    if kind.is_custom:
        schema = _crd_schema(kind)
        if schema is not None:
            e.causes.extend(validate_schema(schema, obj))
    else:
        own = HAND_WRITTEN_SCHEMAS.get((kind.group, kind.kind))
        if own is not None:
            e.causes.extend(validate_schema(own, obj))
        check = _CHECKS.get((kind.group, kind.kind))
        if check is not None:
            check(e, obj)
    if old is not None:
        _object_meta_update(e, obj.get("metadata"), old.get("metadata"))
        update_check = _UPDATE_CHECKS.get((kind.group, kind.kind))
        if update_check is not None and not kind.is_custom and subresource in (None, "scale"):
            update_check(e, obj, old)
    return e.causes
