"""A simulated kubelet: one peer's Node, its Lease heartbeat, and the pods bound to it.

It follows the real node agent (``shoal.node.agent``) where the controllers can
tell: it registers a Node with a fixed allocatable, renews its Lease through the
real ``NodeStatusReporter``, starts a copy of every pod bound to it and reports
it Running and Ready after a seeded delay, stops a copy when the pod is deleted
(then finishes the deletion with grace 0), when the merge moved its binding to
another node, or when the merge replaced it by a pod of the same name with
another uid. No processes run: a copy is a record in the shared ``Timeline``,
which is the ground truth the checkers read. Killing the peer stops its copies
at once; a partition does not touch them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import ipaddress
import logging
import random
from dataclasses import dataclass
from typing import Any

from shoal.node.node_status import NodeStatusReporter
from shoal.sim.timeline import Copy, Timeline
from shoal.store.objects import NotFound, ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "0"}


@dataclass(frozen=True, slots=True)
class KubeletTiming:
    start_min: float = 0.5
    """Seconds at least from seeing a pod bound here to reporting it Ready (image pull, start)."""
    start_max: float = 3.0
    stop_min: float = 0.1
    """Seconds at least from seeing a deletion (or a lost binding) to the copy being gone."""
    stop_max: float = 1.0
    heartbeat: float = 10.0
    """Lease renewal interval, as ``shoal server``'s default."""
    resync: float = 10.0
    """Every pod is re-examined this often even without a change, as the real agent does."""
    like_agent_today: bool = False
    """Behave as ``shoal.node.agent.NodeAgent`` does today where the two differ: after losing
    a binding, write the stopped copy's final status (Failed, not ready), since
    ``_run_worker``/``_write_status`` check the pod's uid but not its ``nodeName``; and never
    re-assert a status that a merge replaced, since status is written only when the
    worker's own status changes. Off: what the agent should do."""


class _SimNodeStatus(NodeStatusReporter):
    """The real Lease heartbeat, with a Node whose capacity does not depend on the host."""

    async def register(self) -> None:
        node_k, _, ns_k = self._kinds()
        now = now_rfc3339(self.store.replica.wall.now())
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if self.store.find(ns_k, None, ns) is None:
                with contextlib.suppress(StoreError):
                    await self.store.create(ns_k, {"metadata": {"name": ns}})
        current = self.store.find(node_k, None, self.name)
        if current is None:
            current = await self.store.create(node_k, {"metadata": {
                "name": self.name,
                "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                           "node.shoal.dev/peer": "true"}}})
        new = copy.deepcopy(current)
        new["status"] = {
            "capacity": dict(ALLOCATABLE), "allocatable": dict(ALLOCATABLE),
            "conditions": [{"type": "Ready", "status": "True", "reason": "ShoalReady",
                            "message": "simulated node agent", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": self.address}],
        }
        await self.store.update(node_k, new, None, self.name, "status", check_rv=False)


def _bound_here(pod: dict[str, Any] | None, node: str) -> bool:
    return pod is not None and (pod.get("spec") or {}).get("nodeName") == node


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class SimKubelet:
    def __init__(self, store: ObjectStore, node: str, address: str, timeline: Timeline,
                 rng: random.Random, timing: KubeletTiming | None = None) -> None:
        self.store = store
        self.node = node
        self.timeline = timeline
        self.rng = rng
        self.timing = timing or KubeletTiming()
        # The Node's status is written every heartbeat here, as before the real agent's
        # 5-minute report (node_status.STATUS_REPORT_SECONDS): the recorded seeds'
        # schedules depend on it.
        self.status = _SimNodeStatus(store, node, address, self.timing.heartbeat,
                                     report_every=0.0)
        pod_kind = store.registry.by_kind("v1", "Pod")
        assert pod_kind is not None
        self.pod_kind = pod_kind
        node_kind = store.registry.by_kind("v1", "Node")
        assert node_kind is not None
        self.status_kind = node_kind
        self._actions: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Register, then bring back every pod bound here (offline autonomy, as the agent)."""
        await self.status.register()
        sub = self.store.replica.subscribe(lambda c: c.resource == "pods")
        self.sync_all()
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self.status.run(), name=f"lease-{self.node}"),
                        loop.create_task(self._watch(sub), name=f"kubelet-{self.node}"),
                        loop.create_task(self._resync(), name=f"kubelet-resync-{self.node}")]

    async def stop(self) -> None:
        """The peer dies: every copy stops now, and nothing is written."""
        tasks = [*self._tasks, *self._actions.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._actions.clear()
        self.timeline.drop_node(self.node)

    async def _watch(self, sub: Any) -> None:
        while True:
            change = await sub.queue.get()
            if change is None:  # the feed dropped us: start over, as the agent does
                sub = self.store.replica.subscribe(lambda c: c.resource == "pods")
                self.sync_all()
                continue
            self.sync_pod(change.namespace, change.name)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.timing.resync)
            self.sync_all()

    def sync_all(self) -> None:
        keys = {(p["metadata"].get("namespace", ""), p["metadata"]["name"])
                for p in self.store.list(self.pod_kind) if _bound_here(p, self.node)}
        keys |= {(c.namespace, c.name) for c in self.timeline.copies_on(self.node)}
        for key in sorted(keys):
            self.sync_pod(*key)

    def sync_pod(self, namespace: str, name: str) -> None:
        if (namespace, name) in self._actions:
            return  # a start or stop is under way; it re-examines the pod when done
        pod = self.store.find(self.pod_kind, namespace, name)
        mine = pod if _bound_here(pod, self.node) else None
        running = self.timeline.copy(self.node, namespace, name)
        if running is not None:
            if mine is None:
                self._act(namespace, name, self._stop(running, "binding moved or pod gone",
                                                      lost=pod))
            elif mine["metadata"].get("uid") != running.uid:
                self._act(namespace, name, self._stop(running, "replaced by another uid"))
            elif mine["metadata"].get("deletionTimestamp"):
                self._act(namespace, name, self._stop(running, "deleted", finish=mine))
            elif running.ready and not _ready_in(mine) and not self.timing.like_agent_today:
                self._act(namespace, name, self._report(mine))  # a merge hid our status
            return
        if mine is None:
            return
        if mine["metadata"].get("deletionTimestamp"):
            self._act(namespace, name, self._finish_delete(mine))
        elif not _terminal(mine):
            self._act(namespace, name, self._start(mine))

    def _act(self, namespace: str, name: str, work: Any) -> None:
        key = (namespace, name)

        async def run() -> None:
            try:
                await work
            except StoreError as e:
                log.debug("%s: pod %s/%s: %s", self.node, namespace, name, e)
            finally:
                self._actions.pop(key, None)
            self.sync_pod(namespace, name)

        self._actions[key] = asyncio.get_running_loop().create_task(run())

    def _delay(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    async def _start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        c = Copy(self.node, meta.get("namespace", ""), meta["name"], meta["uid"],
                 dict(meta.get("labels") or {}))
        self.timeline.start(c)
        await asyncio.sleep(self._delay(self.timing.start_min, self.timing.start_max))
        self.timeline.set_ready(c, True, wall=self.store.replica.wall.now())
        fresh = self.store.find(self.pod_kind, c.namespace, c.name)
        if fresh is not None and fresh["metadata"].get("uid") == c.uid:
            await self._report(fresh)

    async def _report(self, pod: dict[str, Any]) -> None:
        """Write Running and Ready, as the agent's status loop does."""
        meta = pod["metadata"]
        c = self.timeline.copy(self.node, meta.get("namespace", ""), meta["name"])
        if c is None or c.ready_at is None:
            return
        since = now_rfc3339(c.ready_at_wall)
        new = copy.deepcopy(pod)
        old_status = new.get("status") or {}
        conds = [x for x in old_status.get("conditions") or []
                 if x.get("type") not in ("Ready", "ContainersReady", "Initialized")]
        conds += [{"type": t, "status": "True", "lastProbeTime": None,
                   "lastTransitionTime": since}
                  for t in ("Initialized", "ContainersReady", "Ready")]
        new["status"] = {**old_status, "phase": "Running", "startTime": since,
                         "hostIP": self.status.address, "conditions": conds}
        ip = self.pod_ip(meta["uid"])
        if ip is not None:
            new["status"] |= {"podIP": ip, "podIPs": [{"ip": ip}]}
        await self.store.update(self.pod_kind, new, meta.get("namespace"), meta["name"],
                                "status", check_rv=False)

    def pod_ip(self, uid: str) -> str | None:
        """An address in this node's pod CIDR, from the pod's uid (no pod network runs here;
        Services and endpoints only need one); None until the node has a CIDR."""
        node = self.store.find(self.status_kind, None, self.node) or {}
        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr:
            return None
        net = ipaddress.ip_network(cidr)
        host = int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=4).digest(), "big")
        return str(net.network_address + 2 + host % (net.num_addresses - 3))

    async def _stop(self, running: Copy, why: str, finish: dict[str, Any] | None = None,
                    lost: dict[str, Any] | None = None) -> None:
        self.timeline.set_ready(running, False, terminating=True)
        await asyncio.sleep(self._delay(self.timing.stop_min, self.timing.stop_max))
        self.timeline.stop(running, why)
        if finish is not None:
            await self._finish_delete(finish)
        if lost is not None and self.timing.like_agent_today:
            await self._write_final_status(running)

    async def _write_final_status(self, running: Copy) -> None:
        pod = self.store.find(self.pod_kind, running.namespace, running.name)
        if pod is None or pod["metadata"].get("uid") != running.uid:
            return  # the agent's only check
        new = copy.deepcopy(pod)
        now = now_rfc3339(self.store.replica.wall.now())
        new["status"] = {"phase": "Failed", "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted",
             "lastProbeTime": None, "lastTransitionTime": now}]}
        await self.store.update(self.pod_kind, new, running.namespace, running.name, "status",
                                check_rv=False)

    async def _finish_delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(NotFound):
            await self.store.delete(self.pod_kind, meta.get("namespace"), meta["name"],
                                    precondition_uid=meta.get("uid"), grace_period=0)


def _ready_in(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])
