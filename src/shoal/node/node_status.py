"""This node's Node object and its Lease heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
import platform
import socket
from collections.abc import Callable, Mapping
from typing import Any

from shoal import __version__
from shoal.control.kubernetes_service import API_PORT_ANNOTATION
from shoal.store.objects import AlreadyExists, NotFound, ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", LEASE_NAMESPACE)
"""The namespaces every node creates if its replica lacks them (kube-apiserver's)."""
NAMESPACE_POLL = 0.5
"""Seconds between two heartbeats while a system namespace is missing (a joiner waiting for
its first pull): its Lease is written as soon as ``kube-node-lease`` arrives."""
LEASE_SECONDS = 40
"""A node's Lease holds at least this long (the kubelet's ``nodeLeaseDurationSeconds``)."""
WEAK_HEARTBEAT_SECONDS = 30.0
"""A weak peer's default renewal interval (``--sync-via super``): each renewal is a push to
each of its super-peers, most of an idle weak device's traffic at the kubelet's 10 s."""


def lease_seconds(interval: float) -> int:
    """The ``leaseDurationSeconds`` a node renewing every ``interval`` seconds declares: four
    renewals, as the kubelet renews at a quarter of its Lease, and at least LEASE_SECONDS.
    Node lifecycle judges a node by it when it is longer than its grace period."""
    return max(LEASE_SECONDS, math.ceil(4 * interval))
STATUS_REPORT_SECONDS = 300.0
"""The kubelet's ``nodeStatusReportFrequency`` (5 minutes), which ``shoal server
--node-status-report-frequency 5m`` restores: by default the Node's status is written only
when it changed (a condition, disk pressure, a restart), and the Lease alone is the
heartbeat (nothing in Shoal reads a condition's ``lastHeartbeatTime``). Each refresh of
every node reaches every peer, weak ones included, as a ~470 B delta of the ~4 KB Node:
0.014 kbit/s per node for each peer, so 0.25 kbit/s per weak peer, issue 10's whole idle
budget, at about 18 nodes, and 14 kbit/s at 1,000: the one part of an idle weak peer's
traffic that grew with the cluster."""


def _memory_kib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def node_object(name: str, address: str, now: str, runtime: str = "process") -> dict[str, Any]:
    """The Node this peer registers; ``runtime`` is the node agent's (``runc``, ``process``),
    shown by ``kubectl get nodes -o wide`` as CONTAINER-RUNTIME."""
    cpus = os.cpu_count() or 1
    mem = f"{_memory_kib()}Ki"
    resources = {"cpu": str(cpus), "memory": mem, "pods": "110", "ephemeral-storage": "0"}
    ready = {
        "type": "Ready", "status": "True", "reason": "ShoalReady",
        "message": "shoal node agent is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": _arch(),
                "node.shoal.dev/peer": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [*_pressure(now), ready],
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": socket.gethostname()},
            ],
            "nodeInfo": {
                "architecture": _arch(),
                "operatingSystem": "linux",
                "osImage": platform.platform(),
                "kernelVersion": platform.release(),
                "kubeletVersion": f"v1.37.0-shoal-{__version__}",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": f"shoal-{runtime}://{__version__}",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    }


def _pressure(now: str) -> list[dict[str, Any]]:
    """The kubelet's pressure conditions; the node agent does not evict. DiskPressure
    follows the data dir's disk (``disk_pressure``); the others stay False."""
    memory, pid = ({"type": t, "status": "False", "reason": f"KubeletHasSufficient{what}",
                    "message": f"kubelet has sufficient {what.lower()} available",
                    "lastHeartbeatTime": now, "lastTransitionTime": now}
                   for t, what in (("MemoryPressure", "Memory"), ("PIDPressure", "PID")))
    return [memory, disk_pressure_condition(None, now), pid]


def disk_pressure_condition(pressure: str | None, now: str) -> dict[str, Any]:
    """The DiskPressure condition as the kubelet words it; ``pressure`` says why, if any."""
    if pressure is None:
        return {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                "message": "kubelet has no disk pressure",
                "lastHeartbeatTime": now, "lastTransitionTime": now}
    return {"type": "DiskPressure", "status": "True", "reason": "KubeletHasDiskPressure",
            "message": f"kubelet has disk pressure: {pressure}",
            "lastHeartbeatTime": now, "lastTransitionTime": now}


def _report_disk_pressure(conditions: list[dict[str, Any]], pressure: str | None,
                          now: str) -> None:
    wanted = disk_pressure_condition(pressure, now)
    for c in conditions:
        if c.get("type") == "DiskPressure":
            if c.get("status") != wanted["status"] or c.get("message") != wanted["message"]:
                if c.get("status") == wanted["status"]:
                    wanted["lastTransitionTime"] = c.get("lastTransitionTime", now)
                c.clear()
                c.update(wanted)
            return
    if pressure is not None:
        conditions.insert(0, wanted)


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


class NodeStatusReporter:
    """Registers the node and renews its Lease and Ready heartbeat."""

    def __init__(self, store: ObjectStore, name: str, address: str, interval: float = 10.0,
                 labels: Mapping[str, str | None] | None = None,
                 report_every: float | None = None, runtime: str = "process",
                 api_port: int | None = None,
                 may_create: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.may_create = may_create
        """Whether the system namespaces this replica lacks may be created
        (``catch_up.may_create_defaults``): a joiner's, created before its first pull
        completed, would be the later creates and replace the cluster's in the merge (new
        uids and ages). Until then ``register`` skips them and the heartbeat tries again."""
        self.runtime = runtime
        self.name = name
        self.address = address
        self.api_port = api_port
        """The port this node serves the API on, said on its Node (``API_PORT_ANNOTATION``)
        so that the ``kubernetes`` Service lists it there; None: not said."""
        self.interval = interval
        self.report_every = report_every
        """Seconds between status writes when nothing changed; None: never by time
        (``STATUS_REPORT_SECONDS``)."""
        self._reported_at: float | None = None
        """When this process last wrote the Node's status (wall seconds), None: not yet."""
        self.labels = dict(labels or {})
        """Labels this node sets on its Node at registration (its role and site, from the
        command line); None removes one (a peer restarted without --super-peer)."""
        self.disk_pressure = store.replica.persistence.disk_pressure
        """Why the data dir's disk is short, or None (reported as DiskPressure)."""

    def _kinds(self) -> tuple[Any, Any, Any]:
        r = self.store.registry
        return (r.by_kind("v1", "Node"), r.by_kind("coordination.k8s.io/v1", "Lease"),
                r.by_kind("v1", "Namespace"))

    async def ensure_namespaces(self) -> bool:
        """Creates the system namespaces this replica lacks, if it may (``may_create``);
        whether all of them are in place."""
        _, _, ns_k = self._kinds()
        missing = [ns for ns in SYSTEM_NAMESPACES if self.store.find(ns_k, None, ns) is None]
        if not missing:
            return True
        if not self.may_create():
            return False
        for ns in missing:
            with contextlib.suppress(AlreadyExists):  # a pull brought it meanwhile
                await self.store.create(ns_k, {"metadata": {"name": ns}})
        return True

    async def register(self) -> None:
        """The Node, its labels and status; the system namespaces if it may create them
        (not on a joiner before its first pull: the heartbeat does then). The Node is
        cluster-scoped and needs none of them."""
        node_k, _, _ = self._kinds()
        now = now_rfc3339(self.store.replica.wall.now())
        await self.ensure_namespaces()
        desired = node_object(self.name, self.address, now, self.runtime)
        current = self.store.find(node_k, None, self.name)
        if current is None:
            created = await self.store.create(node_k, {k: v for k, v in desired.items()
                                                       if k != "status"})
            current = created
        current = await self._set_labels(node_k, current)
        new = copy.deepcopy(current)
        new["status"] = desired["status"]
        await self.store.update(node_k, new, None, self.name, "status", check_rv=False)
        self._reported_at = self.store.replica.wall.now()
        log.info("node %s registered (%s)", self.name, self.address)

    async def _set_labels(self, node_k: Any, current: dict[str, Any]) -> dict[str, Any]:
        """This node's labels, and its API port annotation."""
        labels = dict((current.get("metadata") or {}).get("labels") or {})
        annotations = dict((current.get("metadata") or {}).get("annotations") or {})
        wanted = {k: v for k, v in self.labels.items() if v is not None}
        gone = [k for k, v in self.labels.items() if v is None and k in labels]
        port = {} if self.api_port is None else {API_PORT_ANNOTATION: str(self.api_port)}
        if all(labels.get(k) == v for k, v in wanted.items()) and not gone and all(
                annotations.get(k) == v for k, v in port.items()):
            return current
        for k in gone:
            del labels[k]
        new = copy.deepcopy(current)
        new["metadata"]["labels"] = {**labels, **wanted}
        if port:
            new["metadata"]["annotations"] = {**annotations, **port}
        return await self.store.update(node_k, new, None, self.name, check_rv=False)

    async def heartbeat(self) -> None:
        """The Lease (once ``kube-node-lease`` exists), then the Node's status if due."""
        node_k, _, ns_k = self._kinds()
        now_s = self.store.replica.wall.now()
        now = now_rfc3339(now_s)
        await self.ensure_namespaces()
        if self.store.find(ns_k, None, LEASE_NAMESPACE) is not None:
            await self._renew_lease(now)
        try:
            node = self.store.get(node_k, None, self.name)
        except NotFound:
            await self.register()
            return
        new = copy.deepcopy(node)
        status = new.get("status")
        conditions = status.get("conditions") if isinstance(status, dict) else None
        if isinstance(conditions, list):
            _report_disk_pressure(conditions, self.disk_pressure(), now)
        for c in conditions or []:
            if c.get("type") == "Ready" and c.get("status") != "True":
                # Peers marked us Unknown while we were unreachable; we are back.
                c.update(status="True", reason="ShoalReady", lastTransitionTime=now,
                         message="shoal node agent is posting ready status")
        due = (self._reported_at is None
               or (self.report_every is not None
                   and now_s - self._reported_at >= self.report_every)
               or now_s < self._reported_at)  # the clock went back: report, do not wait
        if not due and new == node:
            return  # the Lease alone says we are alive
        for c in conditions or []:
            c["lastHeartbeatTime"] = now  # every condition, as the kubelet (node agent)
        await self.store.update(node_k, new, None, self.name, "status", check_rv=False)
        self._reported_at = now_s

    async def _renew_lease(self, now: str) -> None:
        _, lease_k, _ = self._kinds()
        lease = self.store.find(lease_k, LEASE_NAMESPACE, self.name)
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": lease_seconds(self.interval),
                "renewTime": now.replace("Z", ".000000Z")}
        if lease is None:
            await self.store.create(lease_k, {"metadata": {"name": self.name}, "spec": spec},
                                    LEASE_NAMESPACE)
        else:
            new = copy.deepcopy(lease)
            new["spec"] = {**(new.get("spec") or {}), **spec}
            await self.store.update(lease_k, new, LEASE_NAMESPACE, self.name, check_rv=False)

    def _lease_written(self) -> bool:
        _, lease_k, _ = self._kinds()
        return self.store.find(lease_k, LEASE_NAMESPACE, self.name) is not None

    async def run(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except StoreError as e:
                log.warning("heartbeat failed: %s", e)
            # A joiner without kube-node-lease yet: look again soon, not a whole interval on.
            await asyncio.sleep(self.interval if self._lease_written()
                                else min(self.interval, NAMESPACE_POLL))
