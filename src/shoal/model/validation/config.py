"""ConfigMaps and Secrets: keys, sizes, Secret types and immutability."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from shoal.model.validation.causes import MAX_CONFIG_SIZE, _Errors
from shoal.model.validation.fields import _d, _k, _s
from shoal.model.validation.names import _is_config_key
from shoal.model.validation.pod_spec import _semantic


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
