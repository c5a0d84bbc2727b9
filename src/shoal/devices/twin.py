"""A Device's twin as the mapper keeps it, and the ``status`` it writes from it.

Desired values come from the user (``spec.properties[].desired``) and reported ones from
the device (``status.twins[].reported``): different fields, so in the CRDT merge neither
ever overwrites the other. The mapper writes status only from the node the Device names.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

DEFAULT_COLLECT_MS = 1000
DEFAULT_REPORT_MS = 10000


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class PropertySpec:
    """One property of a Device, with what its model says about it."""

    name: str
    config: dict[str, Any]
    collect_s: float
    report_s: float
    desired: str | None
    minimum: float | None = None
    maximum: float | None = None
    read_only: bool = False


def _cycle(value: Any, default_ms: int) -> float:
    ms = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else default_ms
    return ms / 1000.0


def _bound(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def properties(device: dict[str, Any], model: dict[str, Any] | None) -> list[PropertySpec]:
    """The Device's properties, each with its model property's range and access mode."""
    in_model = {p.get("name"): p for p in _l(_d(_d(model).get("spec")).get("properties"))
                if isinstance(p, dict)}
    out = []
    for p in _l(_d(device.get("spec")).get("properties")):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            continue
        m = _d(in_model.get(p["name"]))
        desired = _d(p.get("desired")).get("value")
        out.append(PropertySpec(
            name=p["name"], config=_d(_d(p.get("visitors")).get("configData")),
            collect_s=_cycle(p.get("collectCycle"), DEFAULT_COLLECT_MS),
            report_s=_cycle(p.get("reportCycle"), DEFAULT_REPORT_MS),
            desired=None if desired is None else str(desired),
            minimum=_bound(m.get("minimum")), maximum=_bound(m.get("maximum")),
            read_only=m.get("accessMode") == "ReadOnly"))
    return out


def not_in_model(device: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """The Device's properties its model does not declare (not served: the model says
    what a property is)."""
    declared = {p.get("name") for p in _l(_d(model.get("spec")).get("properties"))
                if isinstance(p, dict)}
    return [p["name"] for p in _l(_d(device.get("spec")).get("properties"))
            if isinstance(p, dict) and isinstance(p.get("name"), str)
            and p["name"] not in declared]


def desired_problem(prop: PropertySpec) -> str | None:
    """Why the desired value must not be written (None: it may)."""
    if prop.desired is None:
        return None
    if prop.read_only:
        return f"{prop.name} is ReadOnly in its model"
    if prop.minimum is None and prop.maximum is None:
        return None
    try:
        value = float(prop.desired)
    except ValueError:
        return f"{prop.name}: desired {prop.desired!r} is not a number"
    if prop.minimum is not None and value < prop.minimum:
        return f"{prop.name}: desired {prop.desired} is below the minimum {prop.minimum:g}"
    if prop.maximum is not None and value > prop.maximum:
        return f"{prop.name}: desired {prop.desired} is above the maximum {prop.maximum:g}"
    return None


def millis(now: float) -> str:
    return str(int(now * 1000))


def rfc3339(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Twin:
    """What the mapper has read and written since it started serving the Device."""

    reported: dict[str, tuple[str, float]] = field(default_factory=dict)
    """property -> (value, when read)"""
    observed_desired: dict[str, tuple[str, float]] = field(default_factory=dict)
    state: str = "unknown"
    last_online: float | None = None
    message: str = ""

    def status(self, props: list[PropertySpec], old: dict[str, Any]) -> dict[str, Any]:
        """The Device's new status: this twin over what the old status held (a restarted
        mapper keeps the values reported before until it reads new ones)."""
        old_twins = {t.get("propertyName"): t for t in _l(old.get("twins"))
                     if isinstance(t, dict)}
        twins = []
        for p in props:
            twin: dict[str, Any] = {"propertyName": p.name}
            before = _d(old_twins.get(p.name))
            if p.name in self.reported:
                value, at = self.reported[p.name]
                twin["reported"] = {"value": value, "metadata": {"timestamp": millis(at)}}
            elif "reported" in before:
                twin["reported"] = before["reported"]
            if p.name in self.observed_desired:
                value, at = self.observed_desired[p.name]
                twin["observedDesired"] = {"value": value,
                                           "metadata": {"timestamp": millis(at)}}
            elif "observedDesired" in before:
                twin["observedDesired"] = before["observedDesired"]
            twins.append(twin)
        status: dict[str, Any] = {**old, "twins": twins, "state": self.state}
        if self.last_online is not None:
            status["lastOnlineTime"] = rfc3339(self.last_online)
        if self.message:
            status["message"] = self.message
        else:
            status.pop("message", None)
        return status
