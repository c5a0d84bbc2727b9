"""DefaultPreemption: when no node fits a pod, find pods of lower priority to evict.

As kube-scheduler's PostFilter plugin, in the parts that matter here: a pod with
``preemptionPolicy: Never`` preempts nothing; only nodes that rejected the pod
as ``Unschedulable`` (not ``UnschedulableAndUnresolvable``: removing pods would not
help) are candidates; on each, every pod of lower priority is removed from the
node and the pod filtered again; if it then fits, the removed pods are added back
one by one, highest priority first (then longest running), and each one that
still leaves room is reprieved. The candidate chosen has the lowest highest
victim priority, then the lowest sum of victim priorities, then the fewest
victims, then the stable tie-break of (pod uid, node name), so two peers that
see the same nodes choose the same victims. PodDisruptionBudgets count first: pods
whose eviction would take a budget below zero are reprieved first, and the node
whose victims break the fewest budgets wins (a budget may still be broken when
there is no other way, as in Kubernetes).

Not done: the pods nominated to a node are not counted against it when other pods
are filtered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.control.disruption import matching_budgets
from shoal.control.scheduler.framework import (
    CycleState,
    FilterPlugin,
    PreFilterPlugin,
    Profile,
    ScheduleResult,
    tie_break_key,
)
from shoal.control.scheduler.pod_info import PodInfo
from shoal.control.scheduler.snapshot import NodeInfo, Snapshot
from shoal.control.scheduler.status import Code

NAME = "DefaultPreemption"


@dataclass(frozen=True)
class Preemption:
    """The node the pod is nominated to and the pods to evict from it."""

    node_name: str
    victims: tuple[Mapping[str, Any], ...]


def priority(pod: Mapping[str, Any]) -> int:
    value = (pod.get("spec") or {}).get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _start(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    return str(status.get("startTime") or (pod.get("metadata") or {}).get(
        "creationTimestamp") or "")


def fits(pod: Mapping[str, Any], snapshot: Snapshot, profile: Profile, node: NodeInfo) -> bool:
    """Whether every filter of ``profile`` accepts ``pod`` on ``node`` as the snapshot stands."""
    state = CycleState(snapshot, PodInfo(pod))
    for plugin in profile.filters:
        assert isinstance(plugin, FilterPlugin)
        if isinstance(plugin, PreFilterPlugin):
            st = plugin.pre_filter(state, pod)
            if st is not None and st.is_skip:
                continue
            if st is not None and not st.is_success:
                return False
        st = plugin.filter(state, pod, node)
        if st is not None and not st.is_success:
            return False
    return True


def _violating(candidates: Sequence[PodInfo], budgets: Sequence[Mapping[str, Any]]) -> set[str]:
    """The uids of the pods whose eviction, in this order, would take a PodDisruptionBudget
    below zero disruptions allowed (filterPodsWithPDBViolation)."""
    allowed = {str((b.get("metadata") or {}).get("uid")): int(
        (b.get("status") or {}).get("disruptionsAllowed") or 0) for b in budgets}
    out: set[str] = set()
    for p in candidates:
        for b in matching_budgets([dict(b) for b in budgets], dict(p.pod)):
            uid = str((b.get("metadata") or {}).get("uid"))
            allowed[uid] -= 1
            if allowed[uid] < 0:
                out.add(p.uid)
    return out


def _victims_on(pod: Mapping[str, Any], snapshot: Snapshot, profile: Profile,
                node: NodeInfo, budgets: Sequence[Mapping[str, Any]] = ()) -> \
        tuple[list[PodInfo], int] | None:
    """The fewest lower-priority pods of ``node`` whose removal lets ``pod`` fit, and how
    many of them a budget protects; None if removing them all does not help."""
    mine = priority(pod)
    lower = [p for p in node.pods if priority(p.pod) < mine and not p.terminating]
    if not lower:
        return None
    original = list(node.pods)
    for p in lower:
        node.remove_pod(p.uid)
    try:
        if not fits(pod, snapshot, profile, node):
            return None
        victims: list[PodInfo] = []
        ordered = sorted(lower, key=lambda q: (-priority(q.pod), _start(q.pod), q.name))
        protected = _violating(ordered, budgets)
        # Reprieve as many as possible: those a budget protects first, then by importance
        # (then the oldest first), as SelectVictimsOnNode.
        for p in [q for q in ordered if q.uid in protected] + \
                [q for q in ordered if q.uid not in protected]:
            node.add_pod(p)
            if not fits(pod, snapshot, profile, node):
                node.remove_pod(p.uid)
                victims.append(p)
        return (victims, sum(1 for v in victims if v.uid in protected)) if victims else None
    finally:  # the node as it was, in its order
        for p in list(node.pods):
            node.remove_pod(p.uid)
        for p in original:
            node.add_pod(p)


def preempt(pod: Mapping[str, Any], snapshot: Snapshot, profile: Profile,
            result: ScheduleResult, budgets: Sequence[Mapping[str, Any]] = ()) -> \
        Preemption | None:
    """Where ``pod`` would fit by evicting lower-priority pods, and whom; None if nowhere.
    ``budgets`` are the PodDisruptionBudgets: a node whose victims break fewer wins."""
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never" or result.scheduled:
        return None
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    nominated = snapshot.get(str((pod.get("status") or {}).get("nominatedNodeName") or ""))
    if nominated is not None and any(p.terminating and priority(p.pod) < priority(pod)
                                     for p in nominated.pods):
        return None  # its victims are still leaving: wait for them, as PodEligibleToPreemptOthers
    best: tuple[tuple[int, int, int, int, bytes], str, Sequence[PodInfo]] | None = None
    for node in snapshot.nodes:
        status = result.statuses.get(node.name)
        if status is None or status.code is not Code.UNSCHEDULABLE:
            continue
        found = _victims_on(pod, snapshot, profile, node, budgets)
        if found is None:
            continue
        victims, violations = found
        prios = [priority(v.pod) for v in victims]
        rank = (violations, max(prios), sum(prios), len(victims), tie_break_key(uid, node.name))
        if best is None or rank < best[0]:
            best = (rank, node.name, victims)
    if best is None:
        return None
    return Preemption(best[1], tuple(v.pod for v in best[2]))
