"""Builders for nodes and pods, and runners for one plugin, for tests and the simulator.

Like kube-scheduler's ``pkg/scheduler/testing`` wrappers: ``make_pod`` and
``make_node`` return plain dicts with just the fields the scheduler reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shoal.control.scheduler.framework import (
    CycleState,
    FilterPlugin,
    NormalizeScorePlugin,
    Plugin,
    PreFilterPlugin,
    PreScorePlugin,
    ScorePlugin,
)
from shoal.control.scheduler.pod_info import PodInfo
from shoal.control.scheduler.snapshot import Snapshot
from shoal.control.scheduler.status import Status

__all__ = ["filter_all", "make_node", "make_pod", "run_filter", "run_score"]

Obj = dict[str, Any]


def make_node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, Any]] = (),
    allocatable: Mapping[str, str | int] | None = None,
    unschedulable: bool = False,
) -> Obj:
    """A node with a hostname label and, unless told otherwise, 4 cpu, 8Gi and 110 pods."""
    spec: Obj = {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {
            "allocatable": dict(
                allocatable
                if allocatable is not None
                else {"cpu": "4", "memory": "8Gi", "pods": 110}
            )
        },
    }


def make_pod(
    name: str,
    *,
    namespace: str = "default",
    uid: str | None = None,
    labels: Mapping[str, str] | None = None,
    node_name: str | None = None,
    requests: Mapping[str, str | int] | None = None,
    owner: tuple[str, str] | None = None,
    **spec: Any,
) -> Obj:
    """A pod with one container; ``owner`` is (kind, uid) of its controller; ``spec`` adds fields."""
    meta: Obj = {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}"}
    if labels:
        meta["labels"] = dict(labels)
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": owner[1],
                "controller": True,
            }
        ]
    container: Obj = {"name": "main", "image": "busybox"}
    if requests:
        container["resources"] = {"requests": dict(requests)}
    body: Obj = {"containers": [container], **spec}
    if node_name:
        body["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def run_filter(plugin: Plugin, pod: Obj, snapshot: Snapshot, node_name: str) -> Status | None:
    """PreFilter then Filter of one plugin on one node; None when the node passes."""
    return filter_all(plugin, pod, snapshot)[node_name]


def filter_all(plugin: Plugin, pod: Obj, snapshot: Snapshot) -> dict[str, Status | None]:
    assert isinstance(plugin, FilterPlugin)
    state = CycleState(snapshot, PodInfo(pod))
    if isinstance(plugin, PreFilterPlugin):
        st = plugin.pre_filter(state, pod)
        if st is not None and st.is_skip:
            return dict.fromkeys((n.name for n in snapshot.nodes), None)
        if st is not None and not st.is_success:
            return dict.fromkeys((n.name for n in snapshot.nodes), st)
    return {n.name: plugin.filter(state, pod, n) for n in snapshot.nodes}


def run_score(
    plugin: Plugin, pod: Obj, snapshot: Snapshot, *, normalize: bool = True
) -> dict[str, int]:
    """PreScore, Score and NormalizeScore of one plugin, every node taken as feasible."""
    assert isinstance(plugin, ScorePlugin)
    state = CycleState(snapshot, PodInfo(pod))
    if isinstance(plugin, PreFilterPlugin):
        plugin.pre_filter(state, pod)
    if isinstance(plugin, PreScorePlugin):
        st = plugin.pre_score(state, pod, snapshot.nodes)
        if st is not None and st.is_skip:
            return {n.name: 0 for n in snapshot.nodes}
    scores = {n.name: plugin.score(state, pod, n) for n in snapshot.nodes}
    if normalize and isinstance(plugin, NormalizeScorePlugin):
        plugin.normalize_score(state, pod, scores)
    return scores
