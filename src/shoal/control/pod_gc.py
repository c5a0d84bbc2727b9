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
"""

from __future__ import annotations

import copy
import logging
from typing import Any

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
REASON = "DeletionByPodGC"
MESSAGE = "PodGC: node no longer exists"


class PodGC(Controller):
    name = "pod-gc"

    def __init__(self, store: ObjectStore, view: PeerView | None = None,
                 quarantine: float = QUARANTINE, never_seen_wait: float = NEVER_SEEN_WAIT,
                 **kw: Any) -> None:
        kw.setdefault("resync", 10.0)
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.quarantine = quarantine
        self.never_seen_wait = never_seen_wait
        r = store.registry
        pod, node = r.by_kind("v1", "Pod"), r.by_kind("v1", "Node")
        assert pod is not None and node is not None
        self.pod_kind, self.node_kind = pod, node
        self.missing_since: dict[str, float] = {}
        """Node name -> when this peer first saw pods bound to it while it was missing."""
        self.deleted = 0
        self._timer = WakeTimer(self._wake)

    def relevant(self, change: Change) -> bool:
        if change.resource == "nodes":
            return change.type == "DELETED"
        if change.resource != "pods" or change.type != "ADDED":
            return False
        # Only a pod bound to a missing node can be an orphan: a pass lists every pod.
        bound = (change.obj.get("spec") or {}).get("nodeName")
        return isinstance(bound, str) and bool(bound) \
            and self.store.replica.get("nodes", "", bound) is None

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        nodes = {n["metadata"]["name"] for n in self.store.list(self.node_kind)}
        orphans: dict[str, list[dict[str, Any]]] = {}
        for pod in self.store.list(self.pod_kind):
            bound = (pod.get("spec") or {}).get("nodeName")
            if bound and bound not in nodes:
                orphans.setdefault(bound, []).append(pod)
        self.missing_since = {n: self.missing_since.get(n, now) for n in orphans}
        ends = []
        for node, pods in sorted(orphans.items()):
            end = self.missing_since[node] + self._wait(node)
            if now < end:
                ends.append(end - now)
                continue
            scopes = self.scopes.current()
            for pod in pods:
                # The pods of a scope are deleted by its writers only.
                if not should_act(self.view, f"pod-gc/{node}",
                                  scope_of(scopes, "pods", pod), scopes):
                    continue
                if not await self._delete(pod, node):
                    ends.append(0.5)
        # Look again when the next wait ends, or soon if a deletion failed.
        self._timer.arm(max(0.5, min(ends)) if ends else None)
        return False

    def _wait(self, node: str) -> float:
        """The quarantine, or longer when this replica never held the node."""
        entry = self.store.replica.entry("nodes", "", node)
        return self.quarantine if entry is not None else self.never_seen_wait

    async def _delete(self, pod: dict[str, Any], node: str) -> bool:
        m = pod["metadata"]
        ns, name = m.get("namespace"), m["name"]
        try:
            if m.get("finalizers") and not m.get("deletionTimestamp"):
                await self._mark_failed(pod)
            await self.store.delete(self.pod_kind, ns, name, precondition_uid=m.get("uid"),
                                    grace_period=0)
        except StoreError as e:
            log.debug("pod %s/%s not collected: %s", ns, name, e)
            return False
        self.deleted += 1
        log.info("deleted pod %s/%s: its node %s no longer exists", ns, name, node)
        return True

    async def _mark_failed(self, pod: dict[str, Any]) -> None:
        new = copy.deepcopy(pod)
        status = new.setdefault("status", {})
        now = now_rfc3339(self.store.replica.wall.now())
        status["conditions"] = [c for c in status.get("conditions") or []
                                if isinstance(c, dict) and c.get("type") != "DisruptionTarget"]
        status["conditions"].append({"type": "DisruptionTarget", "status": "True",
                                     "reason": REASON, "message": MESSAGE,
                                     "lastTransitionTime": now})
        if status.get("phase") not in ("Succeeded", "Failed"):
            status["phase"] = "Failed"
        m = pod["metadata"]
        await self.store.update(self.pod_kind, new, m.get("namespace"), m["name"], "status")
