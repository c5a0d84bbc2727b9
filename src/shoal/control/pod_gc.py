"""Pods bound to a Node that does not exist are deleted (Kubernetes' PodGC, orphaned pods).

``kubectl delete node X`` leaves X's pods bound to a name nobody runs. As
Kubernetes' pod garbage collector does, such a pod is force-deleted (grace 0: no
agent will ever confirm it stopped) once its node has been missing for
``quarantine`` seconds, with the DisruptionTarget condition (``DeletionByPodGC``)
written first when finalizers will keep the pod visible.

The quarantine matters more without a coordinator than in Kubernetes: a pod can
reach a replica before its Node does (they replicate independently), and a node
whose Node object was deleted while it still runs registers again at its next
heartbeat. So the clock starts when *this peer* first sees the pod's node
missing, any sight of the Node resets it, and a node this replica holds no
tombstone of (it never saw it) waits ``NEVER_SEEN_WAIT`` instead. The preferred actor of the node's
name deletes its pods; any peer does when that actor is unreachable.

*A node that left a pod's scope.* A pod of a scope bound to a node that exists but is not
a member of the scope (removed from ``members``, or its labels no longer match
``memberSelector``, or the pod's Namespace came into the scope by its labels) is lost
just the same: that node dropped the scope's objects and
stopped the pod, and no update of it will come. Once the node has been out of the scope
for ``out_of_scope_wait`` seconds as this peer sees it (a Scope edit that is undone, or a
label that flaps, resets the clock), one live writer of the scope marks the pod Failed
(``status.reason`` ``NodeNotInScope`` and the ``DisruptionTarget`` condition, reason
``DeletionByPodGC``), records a Warning Event ``NodeNotInScope`` on it and deletes it
with grace 0, so its ReplicaSet, StatefulSet or Job replaces it on a member. A pod that
already Succeeded or Failed is left alone: it runs nowhere, and its owner may count it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.authz.scopes import SCOPES
from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.wake_timer import WakeTimer
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

QUARANTINE = 40.0
"""Seconds a pod's node must stay missing before the pod goes (Kubernetes' quarantineTime)."""
NEVER_SEEN_WAIT = 300.0
"""Seconds instead, when this replica holds no trace of the node at all (no tombstone): it
may be a peer still pulling its first copy, where a busy Node (updated by every heartbeat)
can arrive after the pods bound to it."""
TERMINAL = ("Succeeded", "Failed")
REASON = "DeletionByPodGC"
MESSAGE = "PodGC: node no longer exists"
OUT_OF_SCOPE_WAIT = 15.0
"""Seconds a pod's node must stay out of the pod's scope before the pod goes: long enough for
an undone Scope edit to reach the writers, short next to the QUARANTINE of a missing node
(the node that left the scope stopped the pod as soon as it learnt it)."""
NOT_IN_SCOPE = "NodeNotInScope"
"""The pod's ``status.reason`` and the Event's reason when its node left its scope."""


class PodGC(Controller):
    name = "pod-gc"

    def __init__(self, store: ObjectStore, view: PeerView | None = None,
                 quarantine: float = QUARANTINE, never_seen_wait: float = NEVER_SEEN_WAIT,
                 out_of_scope_wait: float = OUT_OF_SCOPE_WAIT, **kw: Any) -> None:
        kw.setdefault("resync", 10.0)
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.quarantine = quarantine
        self.never_seen_wait = never_seen_wait
        self.out_of_scope_wait = out_of_scope_wait
        r = store.registry
        pod, node = r.by_kind("v1", "Pod"), r.by_kind("v1", "Node")
        assert pod is not None and node is not None
        self.pod_kind, self.node_kind = pod, node
        self.missing_since: dict[str, float] = {}
        """Node name -> when this peer first saw pods bound to it while it was missing."""
        self.out_of_scope_since: dict[tuple[str, str], float] = {}
        """(scope, node) -> when this peer first saw pods of the scope bound to the node
        while the node was not a member of the scope."""
        self.deleted = 0
        self._timer = WakeTimer(self._wake)

    def relevant(self, change: Change) -> bool:
        if change.resource == SCOPES:
            return True  # a member removed: its pods of the scope may be lost
        if change.resource == "nodes":
            # Its labels may have left a Scope's memberSelector (a heartbeat changes none).
            return change.type == "DELETED" or _labels(change.obj) != _labels(change.old)
        if change.resource == "namespaces":
            # Its labels may have brought it into a Scope's namespaceSelector.
            return _labels(change.obj) != _labels(change.old)
        if change.resource != "pods" or change.type != "ADDED":
            return False
        # Only a pod bound to a missing node can be an orphan: a pass lists every pod.
        bound = (change.obj.get("spec") or {}).get("nodeName")
        return isinstance(bound, str) and bool(bound) \
            and self.store.replica.get("nodes", "", bound) is None

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        nodes = {n["metadata"]["name"] for n in self.store.list(self.node_kind)}
        scopes = self.scopes.current()
        orphans: dict[str, list[dict[str, Any]]] = {}
        strays: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for pod in self.store.list(self.pod_kind):
            bound = (pod.get("spec") or {}).get("nodeName")
            if not bound:
                continue
            if bound not in nodes:
                orphans.setdefault(bound, []).append(pod)
            elif scopes.rules:
                scope = scope_of(scopes, "pods", pod)
                if (not scopes.is_member(scope, bound)  # the cluster scope: every node
                        and (pod.get("status") or {}).get("phase") not in TERMINAL):
                    strays.setdefault((scope, bound), []).append(pod)
        self.missing_since = {n: self.missing_since.get(n, now) for n in orphans}
        self.out_of_scope_since = {k: self.out_of_scope_since.get(k, now) for k in strays}
        ends = []
        for node, pods in sorted(orphans.items()):
            end = self.missing_since[node] + self._wait(node)
            if now < end:
                ends.append(end - now)
                continue
            for pod in pods:
                # The pods of a scope are deleted by its writers only.
                if not should_act(self.view, f"pod-gc/{node}",
                                  scope_of(scopes, "pods", pod), scopes):
                    continue
                if not await self._delete(pod, node):
                    ends.append(0.5)
        for (scope, node), pods in sorted(strays.items()):
            end = self.out_of_scope_since[(scope, node)] + self.out_of_scope_wait
            if now < end:
                ends.append(end - now)
                continue
            if not should_act(self.view, f"pod-gc/{node}", scope, scopes):
                continue
            for pod in pods:
                if not await self._delete(pod, node, scope):
                    ends.append(0.5)
        # Look again when the next wait ends, or soon if a deletion failed.
        self._timer.arm(max(0.5, min(ends)) if ends else None)
        return False

    def _wait(self, node: str) -> float:
        """The quarantine, or longer when this replica never held the node."""
        entry = self.store.replica.entry("nodes", "", node)
        return self.quarantine if entry is not None else self.never_seen_wait

    async def _delete(self, pod: dict[str, Any], node: str, scope: str | None = None) -> bool:
        """Delete (grace 0) a pod whose node is gone, or with ``scope``, whose node is not a
        member of the pod's scope: that pod is marked Failed and gets an Event first."""
        m = pod["metadata"]
        ns, name = m.get("namespace"), m["name"]
        why = (f"node {node} no longer exists" if scope is None
               else f"node {node} is not a member of scope {scope}")
        try:
            if scope is not None:
                await self._mark_failed(pod, f"PodGC: {why}", NOT_IN_SCOPE)
                await events.record(self.store, pod, "Warning", NOT_IN_SCOPE,
                                    f"Deleting pod: {why}", "pod-garbage-collector")
            elif m.get("finalizers") and not m.get("deletionTimestamp"):
                await self._mark_failed(pod)
            await self.store.delete(self.pod_kind, ns, name, precondition_uid=m.get("uid"),
                                    grace_period=0)
        except StoreError as e:
            log.debug("pod %s/%s not collected: %s", ns, name, e)
            return False
        self.deleted += 1
        log.info("deleted pod %s/%s: its %s", ns, name, why)
        return True

    async def _mark_failed(self, pod: dict[str, Any], message: str = MESSAGE,
                           reason: str | None = None) -> None:
        new = copy.deepcopy(pod)
        status = new.setdefault("status", {})
        now = now_rfc3339(self.store.replica.wall.now())
        status["conditions"] = [c for c in status.get("conditions") or []
                                if isinstance(c, dict) and c.get("type") != "DisruptionTarget"]
        status["conditions"].append({"type": "DisruptionTarget", "status": "True",
                                     "reason": REASON, "message": message,
                                     "lastTransitionTime": now})
        if status.get("phase") not in TERMINAL:
            status["phase"] = "Failed"
            if reason:
                status["reason"], status["message"] = reason, message
        m = pod["metadata"]
        await self.store.update(self.pod_kind, new, m.get("namespace"), m["name"], "status")


def _labels(obj: dict[str, Any] | None) -> object:
    return ((obj or {}).get("metadata") or {}).get("labels")
