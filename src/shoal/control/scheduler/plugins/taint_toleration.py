"""TaintToleration: taints keep pods away unless the pod tolerates them.

Filter rejects a node with a ``NoSchedule`` or ``NoExecute`` taint the pod does
not tolerate. Score prefers nodes with fewer untolerated ``PreferNoSchedule``
taints. :func:`no_execute_grace` tells the node lifecycle controller how long
a pod may stay on a node with ``NoExecute`` taints (``tolerationSeconds``).

A toleration matches a taint when its effect is empty or equal, its key is
empty or equal, and with ``Exists`` (any value) or ``Equal`` (the default, same
value). An empty key with ``Exists`` tolerates every taint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shoal.control.scheduler.framework import CycleState, default_normalize_score
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status

NAME = "TaintToleration"

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"

ERR_REASON_UNTOLERATED = "node(s) had untolerated taint {{{key}: {value}}}"

_PRE_SCORE_KEY = "PreScore" + NAME
_DO_NOT_SCHEDULE = (NO_SCHEDULE, NO_EXECUTE)

Toleration = Mapping[str, Any]
Taint = Mapping[str, Any]


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """``Toleration.ToleratesTaint``."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def tolerated(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def pod_tolerations(pod: Mapping[str, Any]) -> list[Toleration]:
    raw = (pod.get("spec") or {}).get("tolerations") or []
    return [t for t in raw if isinstance(t, Mapping)] if isinstance(raw, list) else []


def find_untolerated(
    taints: Iterable[Taint], tolerations: Sequence[Toleration], effects: Sequence[str]
) -> Taint | None:
    """The first taint with one of ``effects`` that no toleration tolerates."""
    for taint in taints:
        if taint.get("effect") in effects and not tolerated(tolerations, taint):
            return taint
    return None


def untolerated_do_not_schedule_taint(node: NodeInfo, pod: Mapping[str, Any]) -> Taint | None:
    """The taint (NoSchedule or NoExecute) that keeps ``pod`` off ``node``, if any."""
    if not node.taints:
        return None
    return find_untolerated(node.taints, pod_tolerations(pod), _DO_NOT_SCHEDULE)


def no_execute_grace(tolerations: Sequence[Toleration], taints: Iterable[Taint]) -> float | None:
    """Seconds a pod may stay bound under ``taints``' NoExecute taints; None for ever.

    0 means evict now: some NoExecute taint is not tolerated. Otherwise it is
    the smallest ``tolerationSeconds`` among the tolerations used (negative
    counts as 0), and a toleration without it tolerates for ever (as the
    taint eviction controller's ``getMinTolerationTime``).
    """
    grace: float | None = None
    for taint in taints:
        if taint.get("effect") != NO_EXECUTE:
            continue
        used = [t for t in tolerations if tolerates(t, taint)]
        if not used:
            return 0
        for t in used:
            seconds = t.get("tolerationSeconds")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                seconds = max(0, seconds)
                grace = seconds if grace is None else min(grace, seconds)
    return grace


class TaintToleration:
    name = NAME

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        taint = untolerated_do_not_schedule_taint(node, pod)
        if taint is None:
            return None
        return Status.unresolvable(
            ERR_REASON_UNTOLERATED.format(key=taint.get("key", ""), value=taint.get("value", ""))
        )

    def pre_score(
        self, state: CycleState, pod: Mapping[str, Any], nodes: Sequence[NodeInfo]
    ) -> Status | None:
        # Only tolerations that can apply to PreferNoSchedule taints count here.
        relevant = [
            t for t in pod_tolerations(pod) if (t.get("effect") or "") in ("", PREFER_NO_SCHEDULE)
        ]
        state.write(_PRE_SCORE_KEY, relevant)
        return None

    def score(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> int:
        if not node.taints:
            return 0
        tolerations = state.read(_PRE_SCORE_KEY, list)
        return sum(
            1
            for taint in node.taints
            if taint.get("effect") == PREFER_NO_SCHEDULE and not tolerated(tolerations, taint)
        )

    def normalize_score(
        self, state: CycleState, pod: Mapping[str, Any], scores: dict[str, int]
    ) -> Status | None:
        # More untolerated taints is worse, so the scale is reversed.
        default_normalize_score(scores, reverse=True)
        return None


def new(args: Mapping[str, Any]) -> TaintToleration:
    return TaintToleration()
