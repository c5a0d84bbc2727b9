"""The scheduler loop: bind pending pods with the pure scheduler, on every peer at once.

Each pending pod is scheduled by its rendezvous-preferred peer (any peer when that
one is unreachable). The choice is deterministic for a given view of the nodes,
so two peers that schedule the same pod while apart usually pick the same node;
when they do not, the merge keeps one binding (last writer wins on
``spec.nodeName``) and the node that lost stops its copy.

A peer that has just started (a node that has just joined) may hold pods before it
holds the Node objects of the peers it already sees: a write is pushed to it at once,
older objects come with its first pulls. Scheduling then would put every pod on the
nodes it happens to know (a topology spread over one node is no spread). So for its
first ``CATCH_UP`` seconds it schedules only once it holds the Node of every other live
peer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from shoal.authz.scopes import ScopeMap
from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_state import controller_uid
from shoal.control.scheduler import Snapshot, default_profile, schedule
from shoal.control.scheduler.plugins.default_preemption import (  # issue 12
    Preemption,
    preempt,
    priority,
)
from shoal.control.scheduler.snapshot import VolumeCatalog
from shoal.control.statefulset import schedules_here
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

SCHEDULER_NAMES = ("default-scheduler", "shoal-scheduler")
CATCH_UP = 10.0
"""Seconds after start during which the scheduler waits for the live peers' Nodes."""


def _condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "PodScheduled":
            return c
    return None


class Scheduler(Controller):
    name = "scheduler"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        kw.setdefault("debounce", 0.005)
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.profile = default_profile()
        r = store.registry
        pod, node, ns = r.by_kind("v1", "Pod"), r.by_kind("v1", "Node"), r.by_kind("v1", "Namespace")
        assert pod is not None and node is not None and ns is not None
        self.pod_kind, self.node_kind, self.ns_kind = pod, node, ns
        self.bound = 0
        self._started: float | None = None

    def _catching_up(self, nodes: list[dict[str, Any]]) -> bool:
        """Whether this replica still lacks the Node of a live peer, shortly after start."""
        assert self._started is not None
        if asyncio.get_running_loop().time() - self._started >= CATCH_UP:
            return False
        missing = set(self.view.live()) - {self.view.name} - {n["metadata"]["name"] for n in nodes}
        if missing:
            log.debug("scheduling waits for the Node objects of %s", sorted(missing))
        return bool(missing)

    def relevant(self, change: Change) -> bool:
        if change.resource in ("nodes", "persistentvolumeclaims", "persistentvolumes"):
            return True
        if change.resource != "pods":
            return False
        if change.type == "DELETED":
            return True  # room freed on a node
        spec = change.obj.get("spec") or {}
        return not spec.get("nodeName") and spec.get(
            "schedulerName", "default-scheduler") in SCHEDULER_NAMES

    def _pending(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for p in pods:
            spec = p.get("spec") or {}
            if spec.get("nodeName") or p["metadata"].get("deletionTimestamp"):
                continue
            if spec.get("schedulerName", "default-scheduler") not in SCHEDULER_NAMES:
                continue
            if spec.get("schedulingGates"):
                continue
            out.append(p)
        # The highest priority first (kube-scheduler's PrioritySort), then the oldest.
        out.sort(key=lambda p: (-priority(p), p["metadata"].get("creationTimestamp", ""),
                                p["metadata"]["name"]))
        return out

    async def sync(self) -> bool:
        if self._started is None:  # the first pass runs at start
            self._started = asyncio.get_running_loop().time()
        pods = self.store.list(self.pod_kind)
        scopes = self.scopes.current()
        # Siblings share an actor (the owner's), so one snapshot spreads them evenly. A
        # scope's pods are bound by its writers (a binding is a write of the pod).
        nodes = self.store.list(self.node_kind)
        pending = [p for p in self._pending(pods) if self._binds(p, nodes, scopes)]
        if not pending:
            return False
        if self._catching_up(nodes):
            return True  # look again shortly: the Nodes come with the first pulls
        snapshot = Snapshot(nodes, pods, self.store.list(self.ns_kind), scopes,
                            self._volumes())
        for pod in pending:
            result = schedule(pod, snapshot, self.profile)
            try:
                if result.node_name is not None:
                    await self._bind(pod, result.node_name)
                    snapshot.bind(pod, result.node_name)
                else:
                    await self._unschedulable(pod, result.message)
                    # --- priorities (issue 12): evict lower-priority pods to make room ---
                    plan = preempt(pod, snapshot, self.profile, result, self._budgets())
                    if plan is not None:
                        await self._preempt(pod, plan)
                        for victim in plan.victims:
                            snapshot.remove_pod(victim)
            except StoreError as e:
                log.debug("scheduling %s: %s", pod["metadata"]["name"], e)
        return False

    def _volumes(self) -> VolumeCatalog:
        """Claims, volumes and classes, for the VolumeBinding filter (stateful workloads)."""
        r = self.store.registry
        kinds = [r.by_kind("v1", "PersistentVolumeClaim"), r.by_kind("v1", "PersistentVolume"),
                 r.by_kind("storage.k8s.io/v1", "StorageClass")]
        claims, pvs, classes = (self.store.list(k) if k is not None else [] for k in kinds)
        return VolumeCatalog(claims, pvs, classes)

    def _binds(self, pod: dict[str, Any], nodes: list[dict[str, Any]], scopes: ScopeMap) -> bool:
        """Whether this peer binds ``pod``: a StatefulSet's pod only on its home peer (so two
        sides of a partition never bind it to two nodes), any other on the preferred actor."""
        home = schedules_here(self.view, pod, nodes, scopes)  # stateful workloads (issue 12)
        if home is not None:
            return home
        return should_act(self.view, controller_uid(pod) or pod["metadata"]["uid"],
                          scope_of(scopes, "pods", pod), scopes)

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        ns = meta.get("namespace")
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = node
        bound = await self.store.update(self.pod_kind, bound, ns, meta["name"], "binding")
        status = copy.deepcopy(bound)
        now = now_rfc3339(self.store.replica.wall.now())
        conds = [c for c in (status.get("status") or {}).get("conditions") or []
                 if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": now})
        status.setdefault("status", {})["conditions"] = conds
        status["status"].pop("nominatedNodeName", None)  # bound: no longer nominated (issue 12)
        await self.store.update(self.pod_kind, status, ns, meta["name"], "status")
        self.bound += 1
        # Named by time, so it lists before the node agent's events of the same second
        # (a hash name put Scheduled last in kubectl describe). One binder records it.
        await events.record(self.store, bound, "Normal", "Scheduled",
                            f"Successfully assigned {ns}/{meta['name']} to {node}",
                            "default-scheduler",
                            name=events.time_ordered_name(meta["name"],
                                                          self.store.replica.wall.now()))

    # --- priorities (issue 12) ---
    def _budgets(self) -> list[dict[str, Any]]:
        pdb = self.store.registry.by_kind("policy/v1", "PodDisruptionBudget")
        return self.store.list(pdb) if pdb is not None else []

    async def _preempt(self, pod: dict[str, Any], plan: Preemption) -> None:
        """Delete the victims (gracefully) and nominate the node, as DefaultPreemption."""
        meta = pod["metadata"]
        for victim in plan.victims:
            vmeta = victim["metadata"]
            await events.record(self.store, dict(victim), "Normal", "Preempted",
                                f"Preempted by pod {meta.get('uid')} on node {plan.node_name}",
                                "default-scheduler")
            await self.store.delete(self.pod_kind, vmeta.get("namespace"), vmeta["name"],
                                    precondition_uid=vmeta.get("uid"))
        current = self.store.find(self.pod_kind, meta.get("namespace"), meta["name"])
        if current is not None and (current.get("status") or {}).get(
                "nominatedNodeName") != plan.node_name:
            new = copy.deepcopy(current)
            new.setdefault("status", {})["nominatedNodeName"] = plan.node_name
            await self.store.update(self.pod_kind, new, meta.get("namespace"), meta["name"],
                                    "status")
    # --- end priorities ---

    async def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        c = _condition(pod)
        if c is not None and c.get("status") == "False" and c.get("message") == message:
            return  # already said; wait for the nodes to change
        meta = pod["metadata"]
        now = now_rfc3339(self.store.replica.wall.now())
        new = copy.deepcopy(pod)
        conds = [x for x in (new.get("status") or {}).get("conditions") or []
                 if x.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                      "message": message, "lastProbeTime": None, "lastTransitionTime": now})
        new.setdefault("status", {})["conditions"] = conds
        await self.store.update(self.pod_kind, new, meta.get("namespace"), meta["name"], "status")
        await events.record(self.store, pod, "Warning", "FailedScheduling", message,
                            "default-scheduler")
