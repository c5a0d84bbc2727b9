"""LimitRanger admission: a LimitRange's defaults and bounds on every pod created.

A store admission hook (``ObjectStore.admission``), so pods created by the API and
by controllers on any peer get it alike, from that peer's replica. As
kube-apiserver's LimitRanger: a ``Container`` limit fills each container's
missing limits (``default``) and requests (``defaultRequest``), then ``min``,
``max`` and ``maxLimitRequestRatio`` are checked per container, and a ``Pod``
limit against the sum of the containers. A violation is a 403 with Kubernetes'
messages. Missing requests are read from limits, as defaulting will store them. A
``PersistentVolumeClaim`` limit bounds a claim's storage request (min, max).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from shoal.control.quota_usage import format_amount
from shoal.control.scheduler.resources import CPU, quantity_value
from shoal.model.kinds import Kind
from shoal.model.quantity import QuantityError, parse_quantity
from shoal.store.objects import Forbidden
from shoal.store.replica import Replica


def _value(name: str, raw: Any) -> int:
    return quantity_value(name, raw)


def _show(name: str, value: int) -> str:
    return format_amount("cpu" if name == CPU else name, value)


class LimitRanger:
    """The hook: ``LimitRanger(replica)(kind, obj)``."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def __call__(self, kind: Kind, obj: dict[str, Any]) -> None:
        if kind.group or kind.kind not in ("Pod", "PersistentVolumeClaim"):
            return
        meta = obj.get("metadata") or {}
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        ranges = self.replica.list("limitranges", meta.get("namespace") or "default")
        items = [item for lr in sorted(ranges, key=lambda r: r["metadata"]["name"])
                 for item in (lr.get("spec") or {}).get("limits") or [] if isinstance(item, dict)]
        if not items:
            return
        if kind.kind == "PersistentVolumeClaim":
            _check_claim(meta, spec, items)
            return
        containers = [c for key in ("containers", "initContainers")
                      for c in spec.get(key) or [] if isinstance(c, dict)]
        for item in items:
            if item.get("type") == "Container":
                for c in containers:
                    _apply_defaults(item, c)
        errors: list[str] = []
        for item in items:
            if item.get("type") == "Container":
                for c in containers:
                    errors.extend(_check("Container", item, *_resources(c)))
            elif item.get("type") == "Pod":
                errors.extend(_check("Pod", item, *_pod_totals(spec)))
        if errors:
            text = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise Forbidden(f'pods "{meta.get("name", "")}" is forbidden: {text}')


def _check_claim(meta: Mapping[str, Any], spec: Mapping[str, Any],
                 items: list[dict[str, Any]]) -> None:
    """A claim's storage request within a PersistentVolumeClaim item's min and max."""
    raw = ((spec.get("resources") or {}).get("requests") or {})
    requests = {str(k): _value(str(k), v) for k, v in raw.items()} if isinstance(
        raw, Mapping) else {}
    errors = []
    for item in items:
        if item.get("type") != "PersistentVolumeClaim":
            continue
        scope = "PersistentVolumeClaim"
        errors.extend(_minimums(scope, item, requests))
        for name, high in _bounds(item, "max"):
            if name in requests and requests[name] > high:
                errors.append(f"maximum {name} usage per {scope} is {_show(name, high)}, but "
                              f"request is {_show(name, requests[name])}")
    if errors:
        text = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
        raise Forbidden(f'persistentvolumeclaims "{meta.get("name", "")}" is forbidden: {text}')


def _apply_defaults(item: Mapping[str, Any], c: dict[str, Any]) -> None:
    res = c.get("resources")
    if not isinstance(res, dict):
        res = c["resources"] = {}
    for source, target in (("default", "limits"), ("defaultRequest", "requests")):
        values = item.get(source)
        if not isinstance(values, dict) or not values:
            continue
        into = res.get(target)
        if not isinstance(into, dict):
            into = res[target] = {}
        for name, value in values.items():
            into.setdefault(name, value)


def _resources(c: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    res = c.get("resources") or {}
    limits = {str(k): _value(str(k), v) for k, v in (res.get("limits") or {}).items()}
    requests = dict(limits) | {str(k): _value(str(k), v)
                               for k, v in (res.get("requests") or {}).items()}
    return requests, limits


def _pod_totals(spec: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    requests: dict[str, int] = {}
    limits: dict[str, int] = {}
    for c in spec.get("containers") or []:
        if isinstance(c, Mapping):
            r, lim = _resources(c)
            _add(requests, r)
            _add(limits, lim)
    return requests, limits


def _add(into: dict[str, int], other: Mapping[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _bounds(item: Mapping[str, Any], key: str) -> Iterable[tuple[str, int]]:
    values = item.get(key) or {}
    return ((str(k), _value(str(k), v)) for k, v in values.items()) if isinstance(
        values, Mapping) else ()


def _minimums(scope: str, item: Mapping[str, Any], requests: Mapping[str, int]) -> list[str]:
    errors = []
    for name, low in _bounds(item, "min"):
        if name not in requests:
            errors.append(f"minimum {name} usage per {scope} is {_show(name, low)}.  "
                          "No request is specified")
        elif requests[name] < low:
            errors.append(f"minimum {name} usage per {scope} is {_show(name, low)}, but request "
                          f"is {_show(name, requests[name])}")
    return errors


def _check(scope: str, item: Mapping[str, Any], requests: Mapping[str, int],
           limits: Mapping[str, int]) -> list[str]:
    """Kubernetes' LimitRanger messages for one item of a LimitRange."""
    errors = _minimums(scope, item, requests)
    for name, high in _bounds(item, "max"):
        if name not in limits:
            errors.append(f"maximum {name} usage per {scope} is {_show(name, high)}.  "
                          "No limit is specified")
        elif limits[name] > high:
            errors.append(f"maximum {name} usage per {scope} is {_show(name, high)}, but limit "
                          f"is {_show(name, limits[name])}")
    ratios = item.get("maxLimitRequestRatio") or {}
    for name, raw in ratios.items() if isinstance(ratios, Mapping) else ():
        try:
            ratio = parse_quantity(raw)
        except QuantityError:
            continue
        limit, request = limits.get(name), requests.get(name)
        if limit is None:
            errors.append(f"{name} max limit to request ratio per {scope} is {raw}, but no "
                          "limit is specified")
        elif request and Decimal(limit) / Decimal(request) > ratio:
            errors.append(f"{name} max limit to request ratio per {scope} is {raw}, but "
                          f"provided ratio is {limit / request:.6f}")
    return errors
