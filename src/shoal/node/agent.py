"""The node agent: runs the pods bound to this node and reports their status.

It watches the local replica for pods whose ``spec.nodeName`` is this node and
runs a :class:`PodWorker` for each. Status goes through the status subresource,
batched (one pass every ``status_interval``) and only when it changed. On start it
kills whatever an earlier run left behind and starts every non-terminal pod the
replica says is bound here, with no peer needed: that is offline autonomy. A pod
being deleted is stopped gracefully and then deleted for good (grace 0).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.control import events
from shoal.node.local_volumes import LocalVolumes  # stateful workloads
from shoal.node.pod_network import PodNetwork
from shoal.node.pod_user import PodIsolation  # at rest
from shoal.node.pod_worker import PodContext, PodWorker, WorkerConfig
from shoal.node.runtime import Runtime
from shoal.node.runtime_process import ProcessRuntime, kill_pods_left_behind, node_marker
from shoal.node.volumes import TokenSource  # service accounts
from shoal.store.change_feed import Change
from shoal.store.objects import NotFound, ObjectStore, StoreError

log = logging.getLogger(__name__)

FORCE_DELETE_GRACE = 2  # seconds a force-deleted pod's containers still get, as the kubelet
EVENT_COMPONENT = "kubelet"  # events.source.component, as kubectl describe shows them
EVENT_NAMES_KEPT = 4096  # repeats of the last this many events bump a count (client-go's LRU)


@dataclass
class AgentConfig:
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    status_interval: float = 0.05
    """Status changes within this window go out together."""
    resync: float = 10.0
    """How often every pod is re-examined even without a change."""
    event_backlog: int = 1000
    """Events waiting to be written; beyond this they are dropped (and counted), so a storm
    of events never holds up pods or grows memory without bound."""


def choose_runtime(data_dir: Path) -> tuple[str, str]:
    """``--runtime auto``: runc if it can run a container here, else the process runtime;
    with the reason, for the start-up log."""
    # Imported here: a node on the process runtime needs none of the image code.
    from shoal.node.runtime_runc import RuncUnusable, check_runc

    try:
        return "runc", check_runc(data_dir / "runc")
    except RuncUnusable as e:
        return "process", f"no runc: {e}"


def make_runtime(name: str, data_dir: Path) -> Runtime:
    """The runtime ``shoal server --runtime`` names (auto, process or runc)."""
    why = f"--runtime {name}"
    if name == "auto":
        name, why = choose_runtime(data_dir)
    if name not in ("process", "runc"):
        raise ValueError(f"unknown runtime {name!r} (auto, process or runc)")
    log.info("runtime: %s (%s)", name, why)
    if name == "process":
        return ProcessRuntime(data_dir)
    from shoal.node.runtime_runc import RuncRuntime

    return RuncRuntime(data_dir)


def other_runtime_left_behind(runtime: str, data_dir: Path) -> int:
    """Kill the pods an earlier run on ``data_dir`` left with the runtime other than
    ``runtime`` (and runc's bundles); how many."""
    if runtime == "runc":
        return kill_pods_left_behind(node_marker(data_dir))
    from shoal.node.runtime_runc import remove_containers_left_behind

    return remove_containers_left_behind(data_dir)


def _is_uid(name: str) -> bool:
    """A pod uid's form: a pods dir named by hand (``--pods-dir``) may hold other things."""
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class NodeAgent:
    def __init__(self, store: ObjectStore, node_name: str, address: str, data_dir: Path,
                 runtime: Runtime, config: AgentConfig | None = None) -> None:
        self.store = store
        self.node_name = node_name
        self.address = address
        self.runtime = runtime
        self.config = config or AgentConfig()
        self.pods_dir = data_dir / "pods"
        self.data_dir = data_dir
        # --- at rest: process pods' users and files (shoal.node.pod_user; set by the node) ---
        self.pod_isolation = PodIsolation()
        # --- end at rest ---
        # --- service accounts: set by the node ---
        self.tokens: TokenSource | None = None  # signs pods' projected tokens
        self.service_env: dict[str, str] = {}  # KUBERNETES_SERVICE_HOST/PORT...
        # --- end service accounts ---
        pod_kind = store.registry.by_kind("v1", "Pod")
        assert pod_kind is not None
        self.pod_kind = pod_kind
        # --- stateful workloads: local-path volumes of this node (shoal.node.local_volumes) ---
        self.local_volumes = LocalVolumes(store, node_name, self._local_path_root)
        # --- end stateful workloads ---
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self._by_key: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        self.status_writes = 0
        self._stopping = False
        self.pod_network: PodNetwork | None = None  # pod network; None: the node's network
        self._events: asyncio.Queue[tuple[dict[str, Any], str, str, str, str]] = asyncio.Queue(
            max(self.config.event_backlog, 1))  # 0 would be an unbounded queue
        self.events_dropped = 0
        self._event_names: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._last_event_ns = 0
        self._last_context: PodContext | None = None

    # -- wiring ----------------------------------------------------------------

    def _mine(self, pod: dict[str, Any] | None) -> bool:
        return pod is not None and (pod.get("spec") or {}).get("nodeName") == self.node_name

    def _accept(self, c: Change) -> bool:
        return c.resource == "pods" and (self._mine(c.obj) or self._mine(c.old))

    def _lookup(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.replica.get(resource, namespace, name)

    def _context(self) -> PodContext:
        """What a new worker gets: the same object as the last worker's while nothing in it
        changed (a context and its copy of the allocatable per pod added up)."""
        ctx = dataclasses.replace(self._node_context(), network=self.pod_network)
        if ctx != self._last_context:
            self._last_context = ctx
        return self._last_context

    def _node_context(self) -> PodContext:
        node = self.store.replica.get("nodes", "", self.node_name) or {}
        alloc = dict((node.get("status") or {}).get("allocatable") or {})
        return PodContext(self.runtime, self._lookup, self.address, self.pods_dir, self._notify,
                          self.config.worker, alloc, event=self._event,
                          isolation=self.pod_isolation,  # at rest
                          claims=self.local_volumes.provision_for,  # stateful workloads
                          tokens=self.tokens, service_env=self.service_env)  # service accounts

    def _local_path_root(self) -> Path:
        """Where local-path volumes go: beside the pods dir when process pods run as other
        users (they cannot enter the data dir), else in the data dir."""
        pods_dir = self.pod_isolation.pods_dir
        if pods_dir is not None and self.pod_isolation.switch_users:
            return pods_dir.with_name(pods_dir.name + "-local-path")
        return self.data_dir / "local-path"

    async def start(self) -> None:
        """Clean up after an earlier run and bring back this node's pods."""
        killed = await asyncio.to_thread(self.runtime.cleanup_orphans, set())
        # A run with the other runtime on this data dir may have left pods running too.
        killed += await asyncio.to_thread(other_runtime_left_behind, self.runtime.name,
                                          self.data_dir)
        if killed:
            log.info("killed %d process(es) left by an earlier run of this node", killed)
        sub = self.store.replica.subscribe(self._accept)
        self.sync_all()
        log.info("node agent (%s runtime) running %d pod(s)", self.runtime.name, len(self.workers))
        stale = self._stale_dirs()
        if removed := await asyncio.to_thread(self._remove_stale_dirs, stale):
            # A new data dir at an old one's path shares its pods dir (named by the path):
            # the pods may be another node's, not deleted ones (a trial, December 4).
            log.info("removed the directories of %d pod(s) this node does not run (deleted "
                     "while it was down, or left by an earlier node on this data dir path) "
                     "under %s", removed, ", ".join(sorted({str(d.parent) for d in stale})))
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._watch(sub), name="agent-watch"),
                        loop.create_task(self._status_loop(), name="agent-status"),
                        loop.create_task(self._resync_loop(), name="agent-resync"),
                        loop.create_task(self._event_loop(), name="agent-events"),
                        loop.create_task(self.local_volumes.run(), name="local-volumes")]

    def _stale_dirs(self) -> list[Path]:
        """The directories a stop kept (logs, working dirs, emptyDir volumes, for the next
        start to run the pods on) whose pods are no longer bound here: deleted meanwhile.
        Listed before anything awaits, so a pod bound after it is never among them."""
        keep = {str(p["metadata"].get("uid")) for p in self.store.list(self.pod_kind)
                if self._mine(p)} | set(self.workers)
        roots = {self.pods_dir}
        if self.pod_isolation.pods_dir is not None and self.pod_isolation.switch_users:
            roots.add(self.pod_isolation.pods_dir)
        return [d for root in roots if root.is_dir() for d in root.iterdir()
                if d.name not in keep and _is_uid(d.name) and d.is_dir() and not d.is_symlink()]

    @staticmethod
    def _remove_stale_dirs(dirs: list[Path]) -> int:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        return len(dirs)

    async def stop(self) -> None:
        """Kill this node's pods without recording it: they are not done, the node is stopping,
        and the next start brings them back, with their directories (logs, working dirs,
        emptyDir volumes), which stay; a start removes those of pods deleted meanwhile."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*(w.kill_now() for w in self.workers.values()),
                             return_exceptions=True)
        tasks = list(self._worker_tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Again, now that no worker runs: a container whose start was under way the first
        # time got only its worker's SIGTERM, cut short by the cancellation.
        await asyncio.gather(*(w.kill_now() for w in self.workers.values()),
                             return_exceptions=True)

    async def _watch(self, sub: Any) -> None:
        while True:
            change = await sub.queue.get()
            if change is None:  # the feed dropped us: start over
                sub = self.store.replica.subscribe(self._accept)
                self.sync_all()
                continue
            self.sync_pod(change.namespace, change.name)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync)
            self.sync_all()

    # -- reconciling -----------------------------------------------------------

    def sync_all(self) -> None:
        keys = {(p["metadata"].get("namespace", ""), p["metadata"]["name"])
                for p in self.store.list(self.pod_kind) if self._mine(p)}
        for key in keys | set(self._by_key):
            self.sync_pod(*key)

    def sync_pod(self, namespace: str, name: str) -> None:
        pod = self.store.find(self.pod_kind, namespace, name)
        if not self._mine(pod):
            pod = None
        uid = self._by_key.get((namespace, name))
        worker = self.workers.get(uid) if uid else None
        if worker is not None and (pod is None or pod["metadata"].get("uid") != worker.uid):
            # Deleted for good (force) or replaced by a pod of the same name.
            if not worker.terminating.is_set():
                gone = copy.deepcopy(worker.pod)
                gone["metadata"]["deletionTimestamp"] = "now"
                gone["metadata"]["deletionGracePeriodSeconds"] = min(worker.grace,
                                                                     FORCE_DELETE_GRACE)
                worker.update(gone)
            if worker.finished.is_set():
                self._forget(worker)
            worker = None
        if pod is None:
            return
        if worker is None:
            if (namespace, name) in self._by_key or (_terminal(pod) \
                    and not pod["metadata"].get("deletionTimestamp")):
                return
            if pod["metadata"].get("deletionTimestamp"):
                # Being deleted and not running here (e.g. it completed): finish the deletion.
                asyncio.get_running_loop().create_task(self._finish_delete(pod))
                return
            worker = PodWorker(pod, self._context())
            self.workers[worker.uid] = worker
            self._by_key[(namespace, name)] = worker.uid
            self._worker_tasks[worker.uid] = asyncio.get_running_loop().create_task(
                self._run_worker(worker), name=f"pod-{namespace}/{name}")
            return
        worker.update(pod)
        if pod.get("status") != worker.status():
            # A merge replaced the status this node wrote: write it again.
            self._notify(worker.uid)

    async def _run_worker(self, worker: PodWorker) -> None:
        await worker.run()
        if self._stopping:
            return
        await self._write_status(worker.uid)
        pod = self.store.find(self.pod_kind, worker.namespace, worker.name)
        if pod is not None and pod["metadata"].get("uid") == worker.uid \
                and pod["metadata"].get("deletionTimestamp") and self._mine(pod):
            await self._finish_delete(pod)
        pod = self.store.find(self.pod_kind, worker.namespace, worker.name)
        if pod is None or pod["metadata"].get("uid") != worker.uid or not self._mine(pod):
            self._forget(worker)
            self.sync_pod(worker.namespace, worker.name)  # a new pod of the same name

    async def _finish_delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.store.delete(self.pod_kind, meta.get("namespace"), meta["name"],
                                    precondition_uid=meta.get("uid"), grace_period=0)
        except NotFound:
            pass
        except StoreError as e:
            log.warning("pod %s/%s: deletion failed: %s", meta.get("namespace"), meta["name"], e)

    def _forget(self, worker: PodWorker) -> None:
        if self.workers.get(worker.uid) is not worker:
            return
        del self.workers[worker.uid]
        self._worker_tasks.pop(worker.uid, None)
        if self._by_key.get((worker.namespace, worker.name)) == worker.uid:
            del self._by_key[(worker.namespace, worker.name)]
        worker.cleanup()
        shutil.rmtree(worker.pod_dir, ignore_errors=True)

    # -- status ----------------------------------------------------------------

    def _notify(self, uid: str) -> None:
        self._dirty.add(uid)
        self._dirty_event.set()

    async def _status_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            await asyncio.sleep(self.config.status_interval)
            self._dirty_event.clear()
            batch, self._dirty = self._dirty, set()
            await asyncio.gather(*(self._write_status(uid) for uid in batch))

    async def _write_status(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is None or self._stopping:
            return
        pod = self.store.find(self.pod_kind, worker.namespace, worker.name)
        # A merge may have bound the pod elsewhere: the status is the other node's to write.
        if pod is None or pod["metadata"].get("uid") != uid or not self._mine(pod):
            return
        status = worker.status()
        if pod.get("status") == status:
            return
        new = dict(pod)
        new["status"] = status
        try:
            await self.store.update(self.pod_kind, new, worker.namespace, worker.name, "status",
                                    check_rv=False)
            self.status_writes += 1
        except StoreError as e:
            log.debug("pod %s/%s: status not written: %s", worker.namespace, worker.name, e)

    # -- events ----------------------------------------------------------------

    def _event(self, pod: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """Queued: a pod worker never waits for an event to be written."""
        try:
            self._events.put_nowait((pod, event_type, reason, message,
                                     self._event_name(pod, reason, message)))
        except asyncio.QueueFull:
            self.events_dropped += 1
            log.debug("event %s on pod %s dropped: %d waiting", reason,
                      (pod.get("metadata") or {}).get("name"), self._events.qsize())

    def _event_name(self, pod: dict[str, Any], reason: str, message: str) -> str:
        """The kubelet's: ``<pod>.<first time in ns, hex>``, so events list in the order they
        first happened (kubectl sorts by seconds only); a repeat gets the same name."""
        meta = pod.get("metadata") or {}
        key = (str(meta.get("uid")), reason, message)
        name = self._event_names.pop(key, None)
        if name is None:
            self._last_event_ns = max(time.time_ns(), self._last_event_ns + 1)
            name = f"{meta.get('name')}.{self._last_event_ns:x}"
        self._event_names[key] = name
        if len(self._event_names) > EVENT_NAMES_KEPT:
            self._event_names.popitem(last=False)
        return name

    async def _event_loop(self) -> None:
        while True:
            pod, event_type, reason, message, name = await self._events.get()
            try:
                await events.record(self.store, pod, event_type, reason, message,
                                    EVENT_COMPONENT, name)
            finally:
                self._events.task_done()

    async def flush_events(self) -> None:
        """Wait until every queued event is written (tests)."""
        await self._events.join()

    # -- for logs and exec -----------------------------------------------------

    def worker_for(self, namespace: str, name: str) -> PodWorker | None:
        uid = self._by_key.get((namespace, name))
        return self.workers.get(uid) if uid else None

    def pod_address(self, namespace: str, name: str) -> str:
        """Where the pod's ports are, from this node (for port-forward): its own address when
        it has a network namespace of its own, else the node's."""
        worker = self.worker_for(namespace, name)
        return worker.pod_ip() if worker is not None else self.address

    def container_dir(self, pod: dict[str, Any], container: str) -> Path:
        return self.pods_dir / str(pod["metadata"].get("uid")) / container

    async def flush(self) -> None:
        """Write every pending status now (tests, shutdown)."""
        batch, self._dirty = self._dirty, set()
        await asyncio.gather(*(self._write_status(uid) for uid in batch))
