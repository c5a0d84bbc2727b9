"""PodTopologySpread: spread matching pods evenly over topology domains.

A constraint counts the pods its ``labelSelector`` matches (in the pod's
namespace, terminating pods excluded) in each domain of ``topologyKey``. The
skew of a node is the count in its domain, plus one if the incoming pod
matches, minus the smallest count over all eligible domains (taken as 0 when
fewer than ``minDomains`` domains exist).

* ``whenUnsatisfiable: DoNotSchedule`` constraints filter: a node whose skew
  would exceed ``maxSkew``, or which lacks the topology label, is rejected.
* ``ScheduleAnyway`` constraints score: fewer matching pods in the node's
  domains is better, weighted by log(number of domains + 2).

A node counts as a domain only if it has every constraint's topology label
and, per constraint, passes ``nodeAffinityPolicy`` (default ``Honor``: the pod's
node selector and required node affinity) and ``nodeTaintsPolicy`` (default
``Ignore``; ``Honor`` leaves out nodes with taints the pod does not tolerate).
``matchLabelKeys`` adds the pod's own values of those labels to the selector.

A pod with no constraints that is controlled by a ReplicaSet, StatefulSet or
ReplicationController gets the system defaults: ScheduleAnyway over
``topology.kubernetes.io/zone`` (maxSkew 5) and ``kubernetes.io/hostname``
(maxSkew 3), counting the pods of the same controller. Kubernetes selects them
with the owners' (and Services') selectors; the controller uid selects the
same pods without reading the owners.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.control.scheduler.framework import MAX_NODE_SCORE, CycleState
from shoal.control.scheduler.plugins.node_affinity import RequiredNodeAffinity
from shoal.control.scheduler.plugins.taint_toleration import untolerated_do_not_schedule_taint
from shoal.control.scheduler.pod_info import PodInfo
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status
from shoal.model.selectors import LabelSelector, Operator, Requirement, SelectorError

NAME = "PodTopologySpread"

ERR_REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL_NOT_MATCH = ERR_REASON_CONSTRAINTS_NOT_MATCH + " (missing required label)"

DO_NOT_SCHEDULE = "DoNotSchedule"
SCHEDULE_ANYWAY = "ScheduleAnyway"
HONOR = "Honor"
IGNORE = "Ignore"

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"

# The system default constraints (kube-scheduler's systemDefaultConstraints).
SYSTEM_DEFAULT_CONSTRAINTS: tuple[tuple[str, int], ...] = ((LABEL_ZONE, 5), (LABEL_HOSTNAME, 3))
DEFAULT_SPREAD_OWNER_KINDS = frozenset({"ReplicaSet", "StatefulSet", "ReplicationController"})

_PRE_FILTER_KEY = "PreFilter" + NAME
_PRE_SCORE_KEY = "PreScore" + NAME
_UNBOUNDED = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Constraint:
    """A parsed ``TopologySpreadConstraint``; ``owner_uid`` set means a system default."""

    max_skew: int
    topology_key: str
    selector: LabelSelector
    min_domains: int = 1
    node_affinity_policy: str = HONOR
    node_taints_policy: str = IGNORE
    owner_uid: str | None = None

    def matches(self, pod: PodInfo) -> bool:
        if self.owner_uid is not None:
            return pod.controller_uid == self.owner_uid
        return self.selector.matches(pod.labels)

    def includes_node(
        self, pod: Mapping[str, Any], node: NodeInfo, required: RequiredNodeAffinity
    ) -> bool:
        """``matchNodeInclusionPolicies``: whether ``node`` counts as a domain for the pod."""
        if self.node_affinity_policy == HONOR and not required.matches(node):
            return False
        return not (
            self.node_taints_policy == HONOR
            and untolerated_do_not_schedule_taint(node, pod) is not None
        )


def _parse(raw: Mapping[str, Any], pod: PodInfo) -> Constraint:
    selector = LabelSelector.from_api(raw.get("labelSelector"))
    keys = raw.get("matchLabelKeys") or []
    extra = [
        Requirement(k, Operator.EQUALS, (pod.labels[k],))
        for k in keys
        if isinstance(k, str) and k in pod.labels
    ]
    if extra and not selector.matches_nothing:
        selector = LabelSelector(selector.requirements + tuple(extra))
    min_domains = raw.get("minDomains")
    return Constraint(
        max_skew=int(raw.get("maxSkew") or 1),
        topology_key=str(raw.get("topologyKey") or ""),
        selector=selector,
        min_domains=min_domains if isinstance(min_domains, int) and min_domains > 0 else 1,
        node_affinity_policy=str(raw.get("nodeAffinityPolicy") or HONOR),
        node_taints_policy=str(raw.get("nodeTaintsPolicy") or IGNORE),
    )


def pod_constraints(pod: Mapping[str, Any], info: PodInfo, action: str) -> list[Constraint]:
    """The pod's constraints with ``whenUnsatisfiable == action``."""
    raw = (pod.get("spec") or {}).get("topologySpreadConstraints") or []
    return [
        _parse(c, info)
        for c in raw
        if isinstance(c, Mapping) and c.get("whenUnsatisfiable") == action
    ]


def default_constraints(info: PodInfo) -> list[Constraint]:
    """The system default (ScheduleAnyway) constraints, for a pod a workload controller owns."""
    if info.controller_uid is None or info.controller_kind not in DEFAULT_SPREAD_OWNER_KINDS:
        return []
    return [
        Constraint(skew, key, LabelSelector.everything(), owner_uid=info.controller_uid)
        for key, skew in SYSTEM_DEFAULT_CONSTRAINTS
    ]


def _has_all_keys(node: NodeInfo, constraints: Sequence[Constraint]) -> bool:
    return all(c.topology_key in node.labels for c in constraints)


def _count(node: NodeInfo, c: Constraint, namespace: str) -> int:
    return sum(
        1 for p in node.pods if not p.terminating and p.namespace == namespace and c.matches(p)
    )


@dataclass
class _FilterState:
    constraints: list[Constraint]
    counts: list[dict[str, int]]  # per constraint: topology value -> matching pods
    minimums: list[int]


@dataclass
class _ScoreState:
    constraints: list[Constraint]
    ignored: set[str]
    counts: list[dict[str, int]]
    weights: list[float]


class PodTopologySpread:
    name = NAME

    def pre_filter(self, state: CycleState, pod: Mapping[str, Any]) -> Status | None:
        info = state.pod_info
        try:
            constraints = pod_constraints(pod, info, DO_NOT_SCHEDULE)
        except SelectorError as exc:
            return Status.error(f"get constraints from pod: {exc}")
        if not constraints:
            return Status.skip()
        required = RequiredNodeAffinity.of(pod)
        counts: list[dict[str, int]] = [{} for _ in constraints]
        for node in state.snapshot.nodes:
            if not _has_all_keys(node, constraints):
                continue
            for i, c in enumerate(constraints):
                if not c.includes_node(pod, node, required):
                    continue
                value = node.labels[c.topology_key]
                counts[i][value] = counts[i].get(value, 0) + _count(node, c, info.namespace)
        minimums = []
        for c, by_value in zip(constraints, counts, strict=True):
            low = min(by_value.values(), default=_UNBOUNDED)
            # Too few domains: the missing ones count as empty.
            minimums.append(0 if len(by_value) < c.min_domains else low)
        state.write(_PRE_FILTER_KEY, _FilterState(constraints, counts, minimums))
        return None

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        s = state.read(_PRE_FILTER_KEY, _FilterState)
        info = state.pod_info
        for i, c in enumerate(s.constraints):
            value = node.labels.get(c.topology_key)
            if value is None:
                return Status.unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH)
            self_match = 1 if c.matches(info) else 0
            skew = s.counts[i].get(value, 0) + self_match - s.minimums[i]
            if skew > c.max_skew:
                return Status.unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH)
        return None

    def pre_score(
        self, state: CycleState, pod: Mapping[str, Any], nodes: Sequence[NodeInfo]
    ) -> Status | None:
        info = state.pod_info
        explicit = bool((pod.get("spec") or {}).get("topologySpreadConstraints"))
        try:
            constraints = (
                pod_constraints(pod, info, SCHEDULE_ANYWAY)
                if explicit
                else default_constraints(info)
            )
        except SelectorError as exc:
            return Status.error(f"obtaining pod's soft topology spread constraints: {exc}")
        if not constraints:
            return Status.skip()
        # System defaults do not require every label, so nodes without a zone still spread by host.
        require_all = explicit
        ignored: set[str] = set()
        counts: list[dict[str, int]] = [{} for _ in constraints]
        sizes = [0] * len(constraints)
        for node in nodes:
            if require_all and not _has_all_keys(node, constraints):
                ignored.add(node.name)
                continue
            for i, c in enumerate(constraints):
                if c.topology_key == LABEL_HOSTNAME:
                    continue  # per-node counts are taken in score
                value = node.labels.get(c.topology_key, "")
                if value not in counts[i]:
                    counts[i][value] = 0
                    sizes[i] += 1
        weights = [
            math.log(
                (len(nodes) - len(ignored) if c.topology_key == LABEL_HOSTNAME else sizes[i]) + 2
            )
            for i, c in enumerate(constraints)
        ]
        required = RequiredNodeAffinity.of(pod)
        for node in state.snapshot.nodes:
            if require_all and not _has_all_keys(node, constraints):
                continue
            for i, c in enumerate(constraints):
                if not c.includes_node(pod, node, required):
                    continue
                value = node.labels.get(c.topology_key, "")
                if value in counts[i] and c.topology_key != LABEL_HOSTNAME:
                    counts[i][value] += _count(node, c, info.namespace)
        state.write(_PRE_SCORE_KEY, _ScoreState(constraints, ignored, counts, weights))
        return None

    def score(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> int:
        s = state.read(_PRE_SCORE_KEY, _ScoreState)
        if node.name in s.ignored:
            return 0
        total = 0.0
        for i, c in enumerate(s.constraints):
            value = node.labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == LABEL_HOSTNAME:
                count = _count(node, c, state.pod_info.namespace)
            else:
                count = s.counts[i].get(value, 0)
            # maxSkew - 1 waters down small differences between domains.
            total += count * s.weights[i] + (c.max_skew - 1)
        return math.floor(total + 0.5)  # Go's math.Round for non-negative numbers

    def normalize_score(
        self, state: CycleState, pod: Mapping[str, Any], scores: dict[str, int]
    ) -> Status | None:
        s = state.read(_PRE_SCORE_KEY, _ScoreState)
        live = [v for k, v in scores.items() if k not in s.ignored]
        low, high = min(live, default=0), max(live, default=0)
        for k, v in scores.items():
            if k in s.ignored:
                scores[k] = 0
            elif high == 0:
                scores[k] = MAX_NODE_SCORE
            else:
                scores[k] = MAX_NODE_SCORE * (high + low - v) // high
        return None


def new(args: Mapping[str, Any]) -> PodTopologySpread:
    return PodTopologySpread()
