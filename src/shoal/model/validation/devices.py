"""DeviceModel and Device (devices.shoal.dev): the rules a schema cannot say.

What needs another object (a Device's model, a desired value against the model's range)
is the mapper's to check: it reports it in the Device's status instead of failing.
"""

from __future__ import annotations

from typing import Any

from shoal.model.device_schema import MODBUS_REGISTERS
from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _c, _d, _dicts, _i, _s
from shoal.model.validation.names import is_dns1123_subdomain

PROTOCOLS = ("modbus", "mqtt")
"""The protocols Shoal's built-in mappers speak."""


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _unique_names(e: _Errors, items: list[tuple[int, dict[str, Any]]], path: str) -> None:
    seen: set[str] = set()
    for i, item in items:
        name = _s(item.get("name"))
        p = _c(_i(path, i), "name")
        if not name:
            e.required(p)
        elif name in seen:
            e.duplicate(p, name)
        seen.add(name)


def _validate_device_model(e: _Errors, obj: dict[str, Any]) -> None:
    path = "spec.properties"
    props = _dicts(_d(obj.get("spec")).get("properties"))
    _unique_names(e, props, path)
    for i, prop in props:
        p = _i(path, i)
        low, high = prop.get("minimum"), prop.get("maximum")
        for field, value in (("minimum", low), ("maximum", high)):
            if value not in (None, "") and _number(value) is None:
                e.invalid(_c(p, field), value, "must be a number")
        lo, hi = _number(low), _number(high)
        if lo is not None and hi is not None and lo > hi:
            e.invalid(_c(p, "maximum"), high, "must be greater than or equal to minimum")


def _positive(e: _Errors, path: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
        e.invalid(path, value, "must be greater than 0")


def _validate_device(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    ref = _s(_d(spec.get("deviceModelRef")).get("name"))
    if not ref:
        e.required("spec.deviceModelRef.name")
    node = spec.get("nodeName")
    if isinstance(node, str) and node:
        e.each("spec.nodeName", node, is_dns1123_subdomain(node))
    protocol = _s(_d(spec.get("protocol")).get("protocolName"))
    if not protocol:
        e.required("spec.protocol.protocolName")
    elif protocol not in PROTOCOLS:
        e.not_supported("spec.protocol.protocolName", protocol, PROTOCOLS)
    path = "spec.properties"
    props = _dicts(spec.get("properties"))
    _unique_names(e, props, path)
    for i, prop in props:
        p = _i(path, i)
        _positive(e, _c(p, "collectCycle"), prop.get("collectCycle"))
        _positive(e, _c(p, "reportCycle"), prop.get("reportCycle"))
        config = _d(_d(prop.get("visitors")).get("configData"))
        if protocol == "modbus":
            register = config.get("register")
            if register not in MODBUS_REGISTERS:
                e.not_supported(_c(p, "visitors.configData.register"), register,
                                MODBUS_REGISTERS)
            offset = config.get("offset")
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                e.invalid(_c(p, "visitors.configData.offset"), offset,
                          "must be an integer of at least 0")
        elif protocol == "mqtt" and not _s(config.get("topic")):
            e.required(_c(p, "visitors.configData.topic"))
