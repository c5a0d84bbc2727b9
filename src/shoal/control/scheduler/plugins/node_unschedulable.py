"""NodeUnschedulable: a cordoned node (``spec.unschedulable``) takes no new pods.

A pod that tolerates the ``node.kubernetes.io/unschedulable:NoSchedule`` taint
may still land there (DaemonSet pods do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal.control.scheduler.framework import CycleState
from shoal.control.scheduler.plugins.taint_toleration import (
    NO_SCHEDULE,
    pod_tolerations,
    tolerated,
)
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status

NAME = "NodeUnschedulable"

TAINT_NODE_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"

_UNSCHEDULABLE_TAINT = {"key": TAINT_NODE_UNSCHEDULABLE, "effect": NO_SCHEDULE}


class NodeUnschedulable:
    name = NAME

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        if not node.unschedulable or tolerated(pod_tolerations(pod), _UNSCHEDULABLE_TAINT):
            return None
        return Status.unresolvable(ERR_REASON_UNSCHEDULABLE)


def new(args: Mapping[str, Any]) -> NodeUnschedulable:
    return NodeUnschedulable()
