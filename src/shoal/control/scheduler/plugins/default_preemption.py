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
see the same nodes choose the same victims.

Not done: PodDisruptionBudgets are not consulted when picking victims, and the
pods nominated to a node are not counted against it when other pods are filtered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def _victims_on(pod: Mapping[str, Any], snapshot: Snapshot, profile: Profile,
                node: NodeInfo) -> list[PodInfo] | None:
    """The fewest lower-priority pods of ``node`` whose removal lets ``pod`` fit, or None."""
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
        # Reprieve as many as possible, the most important (then the oldest) first.
        for p in sorted(lower, key=lambda q: (-priority(q.pod), _start(q.pod), q.name)):
            node.add_pod(p)
            if not fits(pod, snapshot, profile, node):
                node.remove_pod(p.uid)
                victims.append(p)
        return victims or None
    finally:  # the node as it was, in its order
        for p in list(node.pods):
            node.remove_pod(p.uid)
        for p in original:
            node.add_pod(p)


def preempt(pod: Mapping[str, Any], snapshot: Snapshot, profile: Profile,
            result: ScheduleResult) -> Preemption | None:
    """Where ``pod`` would fit by evicting lower-priority pods, and whom; None if nowhere."""
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never" or result.scheduled:
        return None
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    nominated = snapshot.get(str((pod.get("status") or {}).get("nominatedNodeName") or ""))
    if nominated is not None and any(p.terminating and priority(p.pod) < priority(pod)
                                     for p in nominated.pods):
        return None  # its victims are still leaving: wait for them, as PodEligibleToPreemptOthers
    best: tuple[tuple[int, int, int, bytes], str, Sequence[PodInfo]] | None = None
    for node in snapshot.nodes:
        status = result.statuses.get(node.name)
        if status is None or status.code is not Code.UNSCHEDULABLE:
            continue
        victims = _victims_on(pod, snapshot, profile, node)
        if not victims:
            continue
        prios = [priority(v.pod) for v in victims]
        rank = (max(prios), sum(prios), len(victims), tie_break_key(uid, node.name))
        if best is None or rank < best[0]:
            best = (rank, node.name, victims)
    if best is None:
        return None
    return Preemption(best[1], tuple(v.pod for v in best[2]))
