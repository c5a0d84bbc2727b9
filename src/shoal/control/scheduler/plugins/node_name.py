"""NodeName: a pod that names its node (``spec.nodeName``) fits only that node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal.control.scheduler.framework import CycleState
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status

NAME = "NodeName"

ERR_REASON = "node(s) didn't match the requested node name"


class NodeName:
    name = NAME

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        wanted = (pod.get("spec") or {}).get("nodeName")
        if wanted and wanted != node.name:
            return Status.unresolvable(ERR_REASON)
        return None


def new(args: Mapping[str, Any]) -> NodeName:
    return NodeName()
