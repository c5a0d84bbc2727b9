"""What a pod requests and what a node offers, as integers the scheduler can compare.

CPU is counted in millicores and everything else in whole units, both rounded
up as ``Quantity.MilliValue()`` and ``Quantity.Value()`` round, so the numbers
match kube-scheduler's. A pod's request follows ``k8s.io/component-helpers``
``PodRequests``: the sum of its containers, raised to the largest init
container (restartable "sidecar" init containers run alongside the others and
add up), plus ``spec.overhead``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_UP
from functools import lru_cache
from typing import Any

from shoal.model.quantity import QuantityError, parse_quantity

__all__ = [
    "CPU",
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "EPHEMERAL_STORAGE",
    "MEMORY",
    "PODS",
    "Resource",
    "node_allocatable",
    "pod_requests",
    "quantity_value",
]

CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
PODS = "pods"

# What scoring assumes for a container that requests nothing (pkg/scheduler/util),
# so that best-effort pods still spread instead of piling onto one node.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

_ResourceList = dict[str, int]


@lru_cache(maxsize=4096)
def _cached_value(name: str, raw: str | int | float) -> int:
    q = parse_quantity(raw)
    if name == CPU:
        q = q * 1000
    # Away from zero, as Quantity.Value() and MilliValue() round.
    return int(q.to_integral_value(rounding=ROUND_UP))


def quantity_value(name: str, raw: Any) -> int:
    """``raw`` as an integer: millicores for ``cpu``, whole units otherwise; 0 if malformed."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return 0
    try:
        return _cached_value(name, raw)
    except (QuantityError, ArithmeticError):
        return 0


def _resource_list(raw: Any) -> _ResourceList:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): quantity_value(str(k), v) for k, v in raw.items()}


def _add(into: _ResourceList, other: Mapping[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _max(into: _ResourceList, other: Mapping[str, int]) -> None:
    for k, v in other.items():
        into[k] = max(v, into[k]) if k in into else v


def _container_requests(container: Mapping[str, Any], non_zero: bool) -> _ResourceList:
    resources = container.get("resources") or {}
    reqs = _resource_list(resources.get("requests") if isinstance(resources, Mapping) else None)
    if non_zero:
        reqs.setdefault(CPU, DEFAULT_MILLI_CPU_REQUEST)
        reqs.setdefault(MEMORY, DEFAULT_MEMORY_REQUEST)
    return reqs


def _containers(spec: Mapping[str, Any], key: str) -> Iterable[Mapping[str, Any]]:
    items = spec.get(key) or []
    return [c for c in items if isinstance(c, Mapping)] if isinstance(items, list) else []


def pod_requests(pod: Mapping[str, Any], *, non_zero: bool = False) -> _ResourceList:
    """The resources ``pod`` asks for, by resource name.

    With ``non_zero``, a container that requests no cpu or memory counts as
    requesting the scheduler's defaults; scoring uses this, filtering does not.
    """
    spec = pod.get("spec") or {}
    reqs: _ResourceList = {}
    for c in _containers(spec, "containers"):
        _add(reqs, _container_requests(c, non_zero))
    sidecars: _ResourceList = {}
    init_max: _ResourceList = {}
    for c in _containers(spec, "initContainers"):
        creqs = _container_requests(c, non_zero)
        if c.get("restartPolicy") == "Always":
            # A sidecar keeps running: it adds to the pod and to every later init container.
            _add(reqs, creqs)
            _add(sidecars, creqs)
            step = dict(sidecars)
        else:
            step = dict(creqs)
            _add(step, sidecars)
        _max(init_max, step)
    _max(reqs, init_max)
    _add(reqs, _resource_list(spec.get("overhead")))
    return reqs


def node_allocatable(node: Mapping[str, Any]) -> _ResourceList:
    """``status.allocatable``, or ``status.capacity`` for a node that reports no allocatable."""
    status = node.get("status") or {}
    raw = status.get("allocatable")
    if not raw:
        raw = status.get("capacity")
    return _resource_list(raw)


@dataclass(slots=True)
class Resource:
    """A vector of resource amounts: the first four are named, the rest are scalar resources."""

    milli_cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    pods: int = 0
    scalar: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_list(cls, reqs: Mapping[str, int]) -> Resource:
        r = cls()
        r.add(reqs)
        return r

    def add(self, reqs: Mapping[str, int], sign: int = 1) -> None:
        for name, v in reqs.items():
            if name == CPU:
                self.milli_cpu += sign * v
            elif name == MEMORY:
                self.memory += sign * v
            elif name == EPHEMERAL_STORAGE:
                self.ephemeral_storage += sign * v
            elif name == PODS:
                self.pods += sign * v
            else:
                self.scalar[name] = self.scalar.get(name, 0) + sign * v

    def add_resource(self, other: Resource, sign: int = 1) -> None:
        self.milli_cpu += sign * other.milli_cpu
        self.memory += sign * other.memory
        self.ephemeral_storage += sign * other.ephemeral_storage
        self.pods += sign * other.pods
        for name, v in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + sign * v

    def get(self, name: str) -> int:
        if name == CPU:
            return self.milli_cpu
        if name == MEMORY:
            return self.memory
        if name == EPHEMERAL_STORAGE:
            return self.ephemeral_storage
        if name == PODS:
            return self.pods
        return self.scalar.get(name, 0)

    def is_zero(self) -> bool:
        return not (
            self.milli_cpu or self.memory or self.ephemeral_storage or any(self.scalar.values())
        )
