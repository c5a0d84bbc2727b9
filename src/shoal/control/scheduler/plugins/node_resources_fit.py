"""NodeResourcesFit: a pod fits a node whose allocatable covers its requests.

Filter checks the pod count, cpu, memory, ephemeral-storage and every
extended (scalar) resource the pod requests against the node's allocatable
minus what its pods already request. The pod's request is the sum of its
containers, at least its largest init container, plus its overhead
(:func:`shoal.control.scheduler.resources.pod_requests`). Each missing resource
is its own reason (``Insufficient cpu``, ``Too many pods``).

Score is the LeastAllocated strategy, the default: for each scored resource
(cpu and memory, weight 1 each) ``(allocatable - requested) * 100 /
allocatable``, averaged by weight. Requests here use the non-zero defaults
(100m cpu, 200Mi memory for a container that asks for nothing), so empty
pods still spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.control.scheduler.framework import MAX_NODE_SCORE, CycleState
from shoal.control.scheduler.resources import CPU, EPHEMERAL_STORAGE, MEMORY, Resource
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status

NAME = "NodeResourcesFit"

ERR_REASON_TOO_MANY_PODS = "Too many pods"
ERR_REASON_INSUFFICIENT = "Insufficient {}"

LEAST_ALLOCATED = "LeastAllocated"
DEFAULT_RESOURCES: tuple[tuple[str, int], ...] = ((CPU, 1), (MEMORY, 1))

_PRE_FILTER_KEY = "PreFilter" + NAME


def insufficient_resources(
    request: Resource, node: NodeInfo, ignored: frozenset[str] = frozenset()
) -> list[str]:
    """The reasons ``request`` does not fit on ``node``, in kube-scheduler's order."""
    reasons: list[str] = []
    if len(node.pods) + 1 > node.allocatable.pods:
        reasons.append(ERR_REASON_TOO_MANY_PODS)
    if request.is_zero():
        return reasons
    alloc, used = node.allocatable, node.requested
    if request.milli_cpu > 0 and request.milli_cpu > alloc.milli_cpu - used.milli_cpu:
        reasons.append(ERR_REASON_INSUFFICIENT.format(CPU))
    if request.memory > 0 and request.memory > alloc.memory - used.memory:
        reasons.append(ERR_REASON_INSUFFICIENT.format(MEMORY))
    if (
        request.ephemeral_storage > 0
        and request.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    ):
        reasons.append(ERR_REASON_INSUFFICIENT.format(EPHEMERAL_STORAGE))
    # Go ranges over a map here; sorting keeps the reasons stable.
    for name in sorted(request.scalar):
        want = request.scalar[name]
        if want == 0 or name in ignored or _group(name) in ignored:
            continue
        if want > alloc.scalar.get(name, 0) - used.scalar.get(name, 0):
            reasons.append(ERR_REASON_INSUFFICIENT.format(name))
    return reasons


def _group(name: str) -> str:
    # "example.com/foo" is in the group "example.com" (ignoredResourceGroups).
    return name.split("/", 1)[0] if "/" in name else ""


def least_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


@dataclass(frozen=True)
class NodeResourcesFit:
    """``ignored_resources`` are skipped by Filter (names or groups, as in ``NodeResourcesFitArgs``)."""

    ignored: frozenset[str] = frozenset()
    resources: tuple[tuple[str, int], ...] = DEFAULT_RESOURCES
    name: str = NAME

    def pre_filter(self, state: CycleState, pod: Mapping[str, Any]) -> Status | None:
        state.write(_PRE_FILTER_KEY, state.pod_info.requests)
        return None

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        reasons = insufficient_resources(state.read(_PRE_FILTER_KEY, Resource), node, self.ignored)
        return Status.unschedulable(*reasons) if reasons else None

    def pre_score(
        self, state: CycleState, pod: Mapping[str, Any], nodes: Sequence[NodeInfo]
    ) -> Status | None:
        return None

    def score(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> int:
        info = state.pod_info
        node_score = weight_sum = 0
        for name, weight in self.resources:
            alloc = node.allocatable.get(name)
            if name in (CPU, MEMORY):
                requested = node.non_zero_requested.get(name) + info.non_zero_requests.get(name)
            else:
                want = info.requests.get(name)
                if want == 0:
                    continue  # an extended resource the pod does not use is not scored
                requested = node.requested.get(name) + want
            if alloc == 0:
                continue
            node_score += least_requested_score(requested, alloc) * weight
            weight_sum += weight
        return node_score // weight_sum if weight_sum else 0


def new(args: Mapping[str, Any]) -> NodeResourcesFit:
    """Reads ``ignoredResources``, ``ignoredResourceGroups`` and ``scoringStrategy.resources``."""
    ignored = frozenset(
        [str(x) for x in args.get("ignoredResources") or []]
        + [str(x) for x in args.get("ignoredResourceGroups") or []]
    )
    strategy = args.get("scoringStrategy") or {}
    kind = strategy.get("type", LEAST_ALLOCATED)
    if kind != LEAST_ALLOCATED:
        raise ValueError(f"scoring strategy {kind!r} is not supported; use {LEAST_ALLOCATED!r}")
    resources = tuple(
        (str(r["name"]), int(r.get("weight", 1))) for r in strategy.get("resources") or []
    )
    return NodeResourcesFit(ignored=ignored, resources=resources or DEFAULT_RESOURCES)
