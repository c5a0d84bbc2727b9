"""ScopeMembership: a pod of a scope runs only on a node that is a member of the scope.

A node that is not a member does not hold the scope's objects, so it would never see the
pod bound to it. Pods of the cluster scope (every pod while there are no Scope objects)
skip the filter. The scope map comes with the snapshot (``Snapshot.scopes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal.authz.scopes import CLUSTER
from shoal.control.scheduler.framework import CycleState
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status

NAME = "ScopeMembership"

ERR_REASON_NOT_MEMBER = "node(s) were not members of the pod's scope"

_STATE_KEY = NAME + "/scope"


class ScopeMembership:
    name = NAME

    def pre_filter(self, state: CycleState, pod: Mapping[str, Any]) -> Status | None:
        ns = (pod.get("metadata") or {}).get("namespace")
        scope = state.snapshot.scopes.scope_of("pods", ns if isinstance(ns, str) else "")
        if scope == CLUSTER:
            return Status.skip()
        state.write(_STATE_KEY, scope)
        return None

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        scope = state.read(_STATE_KEY, str)
        if state.snapshot.scopes.is_member(scope, node.name):
            return None
        # Unresolvable: no change to the pod makes a non-member hold its scope.
        return Status.unresolvable(ERR_REASON_NOT_MEMBER)


def new(args: Mapping[str, Any]) -> ScopeMembership:
    return ScopeMembership()
