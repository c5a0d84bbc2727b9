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


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


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
    if protocol == "modbus":
        config = _d(_d(spec.get("protocol")).get("configData"))
        for field, high in (("port", 65535), ("slaveID", 255)):
            value = config.get(field)
            if value is not None and not _int_in(value, 0 if field == "slaveID" else 1, high):
                e.invalid(f"spec.protocol.configData.{field}", value,
                          f"must be an integer from {0 if field == 'slaveID' else 1} to {high}")
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
            for field, low, required in (("offset", 0, True), ("limit", 1, False)):
                value = config.get(field)
                if (required or value is not None) and not _int_in(value, low, 65535):
                    e.invalid(_c(p, f"visitors.configData.{field}"), value,
                              f"must be an integer from {low} to 65535")
            scale = config.get("scale")
            if scale is not None and (not isinstance(scale, int | float)
                                      or isinstance(scale, bool) or scale == 0):
                e.invalid(_c(p, "visitors.configData.scale"), scale, "must be a number, not 0")
        elif protocol == "mqtt" and not _s(config.get("topic")):
            e.required(_c(p, "visitors.configData.topic"))
