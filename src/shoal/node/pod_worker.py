"""One pod's lifecycle on this node: the kubelet's pod worker.

The worker sets up volumes, runs the init containers one after the other, then
starts every container and keeps it running according to ``restartPolicy``, with
the kubelet's crash-loop backoff: the first restart is immediate, then the delay
doubles from ``backoff_initial`` to ``backoff_max``, and a container that ran for
``backoff_reset`` seconds starts over. Probes decide ``started`` and ``ready`` and
restart a container whose liveness or startup probe fails. When the pod is deleted
it runs the preStop hooks, sends SIGTERM, and SIGKILL at the end of the grace period.

With a runtime that runs images, each attempt first pulls the image (the kubelet's
order: pull, create, start). A failed pull leaves the container ``waiting`` with
``ErrImagePull``, then ``ImagePullBackOff`` while the worker backs off (its own
backoff, per container, 10 s doubling to 300 s as the kubelet's image backoff), and
the pod stays Pending: a pull failure is not a crash.

The worker never writes to the store: it calls ``notify`` when its status changes,
and the agent reads :meth:`PodWorker.status` and writes it in batches. Likewise it
reports the kubelet's events (Pulling, Pulled, Created, Started, Killing, BackOff,
Unhealthy, FailedMount, Failed) through ``PodContext.event``, and the agent records
them off the pod's critical path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.model.quantity import parse_quantity
from shoal.node import ephemeral, volume_updates, volumes
from shoal.node.env import (
    ConfigError,
    Lookup,
    command_and_args,
    command_line,
    container_env,
    pull_credentials,
)
from shoal.node.images import ImageError, normalise
from shoal.node.pod_network import PodNetwork, PodNetworkError, PodSandbox, host_network
from shoal.node.pod_user import PodIsolation, PodUserError, open_to, open_volumes
from shoal.node.probes import Prober, probe_once
from shoal.node.runtime import (
    ContainerConfig,
    ContainerHandle,
    Mount,
    RegistryCredential,
    Runtime,
    RuntimeStartError,
)
from shoal.node.subprocesses import communicate
from shoal.store.objects import now_rfc3339

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    """Timings of the pod lifecycle; the defaults are the kubelet's."""

    backoff_initial: float = 10.0
    """Delay before the second restart of a crashing container, doubled after each crash."""
    backoff_max: float = 300.0
    """The longest crash-loop delay (5 minutes)."""
    backoff_reset: float = 600.0
    """A container that ran this long restarts without delay, and its backoff starts over."""
    config_retry: float = 2.0
    """How often a pod waiting for a ConfigMap, Secret or host path tries again."""
    probe_time_scale: float = 1.0
    """Multiplies probes' periodSeconds and initialDelaySeconds (tests use 0.1)."""
    image_backoff_initial: float = 10.0
    """Delay after a failed image pull before the next, doubled after each failure."""
    image_backoff_max: float = 300.0
    """The longest delay between image pulls (5 minutes)."""


@dataclass
class PodContext:
    """What a worker needs from its node."""

    runtime: Runtime
    lookup: Lookup
    node_ip: str
    pods_dir: Path
    notify: Callable[[str], None]  # called with the pod uid when its status changed
    config: WorkerConfig = field(default_factory=WorkerConfig)
    node_allocatable: dict[str, str] = field(default_factory=dict)
    network: PodNetwork | None = None
    """The pod network (shoal.node.pod_network); None: every pod on the node's network."""
    event: Callable[[dict[str, Any], str, str, str], None] = lambda pod, type_, reason, msg: None
    """Records an event about the pod: (pod, Normal or Warning, reason, message)."""
    # --- service accounts ---
    tokens: volumes.TokenSource | None = None
    """Signs the projected ServiceAccount tokens of this node's pods (shoal.node.pod_tokens)."""
    service_env: dict[str, str] = field(default_factory=dict)
    """KUBERNETES_SERVICE_HOST and the rest (shoal.node.env.kubernetes_service_env)."""
    # --- end service accounts ---
    isolation: PodIsolation = field(default_factory=PodIsolation)
    """Who process-runtime containers run as and where their files go (shoal.node.pod_user)."""
    claims: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    """Binds the pod's Pending local-path claims to volumes on this node before its volumes
    are set up (shoal.node.local_volumes); raises VolumeError while one cannot be."""


# The reasons a pull fails with: the container waits (the pod stays Pending), it did not crash.
PULL_ERRORS = ("ErrImagePull", "ErrImageNeverPull", "InvalidImageName")


def _now() -> str:
    return now_rfc3339(time.time())


def waiting_to_start(pod: dict[str, Any], container: str) -> str:
    """What ``kubectl logs`` says of a container that has no log yet: the kubelet's words."""
    status = pod.get("status") or {}
    reason = "ContainerCreating"
    for c in [*(status.get("initContainerStatuses") or []),
              *(status.get("containerStatuses") or [])]:
        if c.get("name") == container:
            reason = ((c.get("state") or {}).get("waiting") or {}).get("reason") or reason
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        reason = "trying and failing to pull image"
    name = (pod.get("metadata") or {}).get("name")
    return f'container "{container}" in pod "{name}" is waiting to start: {reason}'


def _duration(seconds: float) -> str:
    """As Go prints a duration truncated to milliseconds (the kubelet's Pulled event)."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


async def _no_exec(argv: list[str], timeout: float) -> tuple[int, bytes]:
    return 126, b""


def _limits(spec: dict[str, Any]) -> tuple[int | None, int | None]:
    limits = (spec.get("resources") or {}).get("limits") or {}
    cpu = int(parse_quantity(limits["cpu"]) * 1000) if "cpu" in limits else None
    mem = int(parse_quantity(limits["memory"])) if "memory" in limits else None
    return cpu, mem


class ContainerRecord:
    """What the worker knows of one container across its attempts."""

    def __init__(self, spec: dict[str, Any], init: bool, previous: dict[str, Any] | None) -> None:
        self.spec = spec
        self.name = str(spec.get("name", ""))
        self.init = init
        self.restart_count = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "PodInitializing" if not init
                                                  else "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.handle: ContainerHandle | None = None
        self.ready = False
        self.started = False
        self.ever_ran = False
        self.final = False  # terminated and will not run again
        self.exit_code: int | None = None
        self.backoff = 0.0
        self.pull_backoff = 0.0
        self.pull_failed = False  # the last attempt stopped at its image pull
        self.kill_message = ""
        self.probers: list[asyncio.Task[None]] = []
        self.join_pid: int | None = None  # an ephemeral container's target (node.ephemeral)
        if previous:
            # An earlier run of this agent ran it (the node restarted): count a restart.
            prev_state = previous.get("state") or {}
            if "running" in prev_state or "terminated" in prev_state or previous.get("lastState"):
                self.restart_count = int(previous.get("restartCount") or 0) + 1
                self.ever_ran = True
                if "running" in prev_state:
                    self.last_state = {"terminated": {
                        "exitCode": 255, "reason": "Unknown",
                        "message": "the node agent restarted",
                        "startedAt": prev_state["running"].get("startedAt"),
                        "finishedAt": _now()}}
                else:
                    self.last_state = (
                        {"terminated": prev_state["terminated"]} if "terminated" in prev_state
                        else dict(previous.get("lastState") or {}))

    def next_backoff(self, ran_for: float, cfg: WorkerConfig) -> float:
        if ran_for >= cfg.backoff_reset:
            self.backoff = 0.0
        delay = self.backoff
        self.backoff = cfg.backoff_initial if delay == 0 else min(delay * 2, cfg.backoff_max)
        return delay

    def next_pull_backoff(self, cfg: WorkerConfig) -> float:
        self.pull_backoff = cfg.image_backoff_initial if self.pull_backoff == 0 else min(
            self.pull_backoff * 2, cfg.image_backoff_max)
        return self.pull_backoff

    def stop_probers(self) -> None:
        for t in self.probers:
            t.cancel()
        self.probers = []

    def status(self, images: bool = False) -> dict[str, Any]:
        image = str(self.spec.get("image") or "")
        image_id = image  # the process runtime records the image, it has no digest
        if images:
            # As the kubelet with containerd: the normalised reference, and the digest
            # actually run (pinned when the container started; "" until then).
            with contextlib.suppress(ImageError):
                image = normalise(image)
            image_id = self.handle.image_id if self.handle is not None else ""
        st: dict[str, Any] = {
            "name": self.name, "state": self.state, "lastState": self.last_state,
            "ready": self.ready, "restartCount": self.restart_count, "image": image,
            "imageID": image_id, "started": self.started,
        }
        if self.handle is not None:
            st["containerID"] = self.handle.id
        return st


class PodWorker:
    """Runs one pod until it completes or is deleted (see the module docstring)."""

    def __init__(self, pod: dict[str, Any], ctx: PodContext) -> None:
        self.pod = pod
        self.ctx = ctx
        meta = pod["metadata"]
        self.uid = str(meta["uid"])
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta["name"])
        self.pod_dir = ctx.pods_dir / self.uid  # logs (and, unless isolated, files)
        self.files_dir = self.pod_dir  # working dirs and volumes: set up in _lifecycle
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        if status.get("hostIP") not in (None, ctx.node_ip):
            # Written by another node: two sides bound the pod apart and the merge kept this
            # node's binding. Its containers never ran here, so no restart is counted.
            status = {}
        prev = {c.get("name"): c for c in status.get("containerStatuses") or []}
        prev_init = {c.get("name"): c for c in status.get("initContainerStatuses") or []}
        self.init_records = [ContainerRecord(c, True, prev_init.get(c.get("name")))
                             for c in spec.get("initContainers") or []]
        self.records = [ContainerRecord(c, False, prev.get(c.get("name")))
                        for c in spec.get("containers") or []]
        self.start_time = status.get("startTime") or _now()
        self.initialized = not self.init_records
        self.init_failed = False
        self.terminating = asyncio.Event()
        self.finished = asyncio.Event()
        self.volumes: dict[str, Path] = {}
        self.volume_error = ""
        self.links: list[tuple[Path, Path]] = []
        self._conditions: dict[str, tuple[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # --- pod network ---
        self.sandbox: PodSandbox | None = None
        self.network_error = ""
        self.node_stopping = False  # kill_now: the pod is not done, its network stays
        # --- ephemeral containers (kubectl debug): shoal.node.ephemeral ---
        self.ephemeral_records: list[ContainerRecord] = []
        self.ephemeral_tasks: set[asyncio.Task[None]] = set()
        ephemeral.restored(self, ContainerRecord, status.get("ephemeralContainerStatuses") or [])

    # -- inputs ----------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        """The pod object changed (e.g. it is being deleted)."""
        self.pod = pod
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.terminating.set()
        ephemeral.sync(self, ContainerRecord)  # kubectl debug added a container

    def running_handle(self, container: str | None) -> ContainerHandle | None:
        """The running attempt of a container (the first container by default)."""
        for rec in self.records + self.init_records + self.ephemeral_records:
            if (container is None or rec.name == container) and rec.handle is not None \
                    and not rec.handle.exited.is_set():
                return rec.handle
        return None

    def handles(self) -> list[ContainerHandle]:
        return [r.handle for r in self.init_records + self.records if r.handle is not None]

    def record(self, container: str) -> ContainerRecord | None:
        return next((r for r in self.records + self.init_records + self.ephemeral_records
                     if r.name == container), None)

    @property
    def grace(self) -> float:
        meta = self.pod.get("metadata") or {}
        if meta.get("deletionGracePeriodSeconds") is not None:
            return float(meta["deletionGracePeriodSeconds"])
        return float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)

    # -- the lifecycle ---------------------------------------------------------

    def _notify(self) -> None:
        self.ctx.notify(self.uid)

    def _event(self, event_type: str, reason: str, message: str) -> None:
        self.ctx.event(self.pod, event_type, reason, message)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _sleep_or_terminate(self, seconds: float) -> bool:
        """Sleep; True if the pod started terminating meanwhile. In the caller's task
        (``wait_for`` made a task per sleep, and each pod sleeps in two loops or more)."""
        if self.terminating.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.terminating.wait()
        return self.terminating.is_set()

    async def run(self) -> None:
        try:
            await self._lifecycle()
        except Exception:
            log.exception("pod %s/%s: worker failed", self.namespace, self.name)
        if self.terminating.is_set():
            await self.terminate()
        await self._release_sandbox()
        self.finished.set()
        self._notify()

    async def _lifecycle(self) -> None:
        while not self.terminating.is_set():
            try:
                if not self.ctx.runtime.images:
                    self.files_dir = self.ctx.isolation.files_dir(self.uid, self.pod_dir)
                if self.ctx.claims is not None:  # stateful workloads: local-path claims
                    await self.ctx.claims(self.pod)
                self.volumes = volumes.prepare(self.pod, self.files_dir, self.ctx.lookup,
                                               self.ctx.tokens)  # service accounts: tokens
                open_volumes(self.pod, self.volumes, self.files_dir)
                self.volume_error = ""
                break
            except (volumes.VolumeError, OSError) as e:
                self.volume_error = f"MountVolume.SetUp failed: {e}"
                for rec in self.init_records + self.records:
                    rec.state = {"waiting": {"reason": "ContainerCreating"}}
                self._notify()
                self._event("Warning", "FailedMount", self.volume_error)
                if await self._sleep_or_terminate(self.ctx.config.config_retry):
                    return
        self._spawn(self._renew_tokens())  # service accounts
        self._spawn(volume_updates.follow_sources(  # ConfigMap and Secret changes
            lambda: self.pod, self.files_dir, self.ctx.lookup, self._sleep_or_terminate))
        if not await self._setup_sandbox():
            return
        policy = (self.pod.get("spec") or {}).get("restartPolicy") or "Always"
        for rec in self.init_records:
            while True:
                code = await self._attempt(rec)
                if self.terminating.is_set():
                    return
                if code == 0:
                    rec.final = True
                    rec.ready = True
                    break
                if code is not None and policy == "Never":
                    rec.final = True
                    self.init_failed = True
                    for r in self.records:
                        r.state = {"waiting": {"reason": "PodInitializing"}}
                    self._notify()
                    return
                if await self._backoff(rec, code):
                    return
        self.initialized = True
        for rec in self.records:
            rec.state = {"waiting": {"reason": "ContainerCreating"}}
        self._notify()
        await asyncio.gather(*(self._container_loop(rec, policy) for rec in self.records))

    # --- service accounts: projected tokens renewed before they expire ---
    async def _renew_tokens(self) -> None:
        while not self.terminating.is_set():
            due = volumes.refresh_projected(self.pod, self.files_dir, self.ctx.lookup,
                                            self.ctx.tokens, time.time())
            if due is None:
                return
            if await self._sleep_or_terminate(max(due - time.time(), 1.0)):
                return
    # --- end service accounts ---

    async def _container_loop(self, rec: ContainerRecord, policy: str) -> None:
        while not self.terminating.is_set():
            code = await self._attempt(rec)
            if self.terminating.is_set():
                return
            if code is not None and (policy == "Never" or (policy == "OnFailure" and code == 0)):
                rec.final = True
                self._notify()
                return
            if await self._backoff(rec, code):
                return

    async def _backoff(self, rec: ContainerRecord, code: int | None) -> bool:
        """Wait before the next attempt; True if the pod started terminating meanwhile."""
        if rec.pull_failed:
            return await self._pull_backoff(rec)
        if code is None:  # not started (config error): retry soon, it is not a crash
            return await self._sleep_or_terminate(self.ctx.config.config_retry)
        h = rec.handle
        ran_for = (h.finished_at or time.time()) - h.started_at if h is not None else 0.0
        delay = rec.next_backoff(ran_for, self.ctx.config)
        if delay > 0:
            rec.state = {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container={rec.name} "
                           f"pod={self.name}_{self.namespace}({self.uid})"}}
            self._notify()
            self._event("Warning", "BackOff", f"Back-off restarting failed container {rec.name} "
                        f"in pod {self.name}_{self.namespace}({self.uid})")
            if await self._sleep_or_terminate(delay):
                return True
        rec.restart_count += 1
        return False

    async def _pull_backoff(self, rec: ContainerRecord) -> bool:
        """After a failed pull: the error for a moment, then ImagePullBackOff until the next
        pull. True if the pod started terminating meanwhile."""
        delay = rec.next_pull_backoff(self.ctx.config)
        shown = min(self.ctx.config.config_retry, delay / 2)
        if await self._sleep_or_terminate(shown):
            return True
        waiting = rec.state.get("waiting") or {}
        if waiting.get("reason") == "ErrImagePull":
            image = rec.spec.get("image") or ""
            message = f'Back-off pulling image "{image}"'
            rec.state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
            self._notify()
            self._event("Normal", "BackOff", message)
            self._event("Warning", "Failed", "Error: ImagePullBackOff")
        return await self._sleep_or_terminate(delay - shown)

    async def _attempt(self, rec: ContainerRecord) -> int | None:
        """Start the container and wait for it to exit. None: not started, or terminating."""
        handle = await self._start(rec)
        if handle is None:
            return None if rec.exit_code is None else rec.exit_code
        waiter = asyncio.ensure_future(handle.exited.wait())
        term = asyncio.ensure_future(self.terminating.wait())
        await asyncio.wait({waiter, term}, return_when=asyncio.FIRST_COMPLETED)
        for f in (waiter, term):
            f.cancel()
        if not handle.exited.is_set():
            return None  # terminate() stops it
        rec.stop_probers()
        self._record_exit(rec, handle)
        return handle.exit_code

    def _record_exit(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        code = handle.exit_code if handle.exit_code is not None else 255
        term: dict[str, Any] = {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": now_rfc3339(handle.started_at),
            "finishedAt": now_rfc3339(handle.finished_at or time.time()),
            "containerID": handle.id,
        }
        if code > 128:
            term["signal"] = code - 128
        if rec.kill_message:
            term["message"] = rec.kill_message
            rec.kill_message = ""
        rec.exit_code = code
        rec.ready = False
        rec.state = {"terminated": term}
        rec.last_state = {"terminated": term}
        self._notify()

    async def _start(self, rec: ContainerRecord) -> ContainerHandle | None:
        rec.exit_code = None
        spec = rec.spec
        images = self.ctx.runtime.images
        binds: tuple[Mount, ...] = ()
        command: list[str] | None = None
        args: list[str] | None = None
        user = None
        wd: Path | None = None
        try:
            env = container_env(self.pod, spec, self.ctx.lookup, self.ctx.node_ip,
                                self.ctx.node_allocatable, pod_ip=self.pod_ip(),
                                service_env=self.ctx.service_env)  # service accounts
            if images:
                # Mounted in the container: no host links, no SHOAL_VOLUME_* variables.
                binds = volumes.bind_mounts(spec, self.pod.get("spec") or {}, self.volumes)
                command, args = command_and_args(spec, env)
                argv = [*(command or []), *(args or [])]
            else:
                user = self.ctx.isolation.user_for(self.pod, spec)
                mounts = volumes.mount(spec, self.volumes)
                self.links += mounts.links
                env.update(mounts.env)
                argv = command_line(spec, env)
                # No image WorkingDir: the container's own directory, its user's.
                wd = Path(str(spec["workingDir"])) if spec.get("workingDir") else None
                # --- mountPaths taken on the host: name the volumes instead (part H) ---
                if mounts.rewrites:
                    argv = [volumes.rewritten(a, mounts.rewrites) for a in argv]
                    env = {k: volumes.rewritten(v, mounts.rewrites) for k, v in env.items()}
                    wd = Path(volumes.rewritten(str(wd), mounts.rewrites)) if wd else None
                    moved = ", ".join(f"{mp} -> {t}" for mp, t in sorted(mounts.rewrites.items()))
                    self._event("Normal", "VolumePathTaken", "mountPath taken on the host, so "
                                f"the container's paths name the volume instead: {moved}")
                # --- end mountPaths taken ---
                if wd is None:
                    wd = self.files_dir / rec.name
                    open_to(wd, user)
        except (ConfigError, PodUserError, OSError) as e:
            reason = e.reason if isinstance(e, ConfigError | PodUserError) else \
                "CreateContainerConfigError"
            rec.state = {"waiting": {"reason": reason, "message": str(e)}}
            self._notify()
            self._event("Warning", "Failed", f"Error: {e}")
            return None
        cpu, mem = _limits(spec)
        if images:  # an unset workingDir is the image's WorkingDir
            wd = Path(str(spec["workingDir"])) if spec.get("workingDir") else None
        creds = tuple(RegistryCredential(*c) for c in pull_credentials(self.pod, self.ctx.lookup)
                      ) if images else ()
        cfg = ContainerConfig(
            pod_uid=self.uid, pod_namespace=self.namespace, pod_name=self.name, name=rec.name,
            attempt=rec.restart_count, image=str(spec.get("image") or ""), argv=argv, env=env,
            working_dir=wd, log_path=self.pod_dir / rec.name / f"{rec.restart_count}.log",
            cpu_millis=cpu, memory_bytes=mem, command=command, args=args,
            image_pull_policy=spec.get("imagePullPolicy") or None, mounts=binds + self._sandbox_mounts(images),
            pull_credentials=creds,
            netns=self.sandbox.netns if images and self.sandbox is not None else None,
            user=user,
            stdin=bool(spec.get("stdin")), stdin_once=bool(spec.get("stdinOnce")),  # attach
            join_pid=rec.join_pid,  # ephemeral containers
        )
        rec.pull_failed = False
        try:
            pulled = await self.ctx.runtime.pull(cfg, lambda: self._event(
                "Normal", "Pulling", f'Pulling image "{cfg.image}"'))
            if pulled is not None:
                rec.pull_backoff = 0.0
                self._event("Normal", "Pulled", (
                    f'Successfully pulled image "{cfg.image}" in {_duration(pulled.seconds)}'
                    if pulled.pulled else
                    f'Container image "{cfg.image}" already present on machine'))
                cfg = dataclasses.replace(cfg, image_digest=pulled.digest)
            handle = await self.ctx.runtime.start(cfg)
        except RuntimeStartError as e:
            if e.reason in PULL_ERRORS:
                self._pull_failed(rec, cfg.image, e)
                return None
            self._event("Warning", "Failed", f"Error: {e.message}")
            now = _now()
            term = {"exitCode": 128, "reason": e.reason, "message": e.message,
                    "startedAt": now, "finishedAt": now}
            rec.state, rec.last_state, rec.exit_code = {"terminated": term}, {"terminated": term}, 128
            rec.ever_ran = True
            self._notify()
            return None
        rec.handle = handle
        rec.ever_ran = True
        rec.state = {"running": {"startedAt": now_rfc3339(handle.started_at)}}
        rec.started = False
        rec.ready = False
        self._start_probes(rec, handle)
        self._notify()
        # The runtimes create and start in one step; the kubelet reports both.
        self._event("Normal", "Created", f"Created container: {rec.name}")
        self._event("Normal", "Started", f"Started container {rec.name}")
        return handle

    def _pull_failed(self, rec: ContainerRecord, image: str, e: RuntimeStartError) -> None:
        rec.pull_failed = True
        rec.state = {"waiting": {"reason": e.reason, "message": e.message}}
        self._notify()
        if e.reason == "ErrImagePull":
            self._event("Warning", "Failed", f'Failed to pull image "{image}": {e.message}')
        else:
            self._event("Warning", e.reason, e.message)
        self._event("Warning", "Failed", f"Error: {e.reason}")

    # -- the pod network ---------------------------------------------------------

    async def _setup_sandbox(self) -> bool:
        """The pod's network, before its first container; False if it started terminating."""
        network = self.ctx.network
        if network is None:
            return True
        while not self.terminating.is_set():
            try:
                self.sandbox = await network.setup(self.pod)
                self.network_error = ""
                self._notify()
                return True
            except PodNetworkError as e:
                # The kubelet's FailedCreatePodSandBox: the pod waits in ContainerCreating.
                if str(e) != self.network_error:
                    log.warning("pod %s/%s: %s", self.namespace, self.name, e)
                self.network_error = f"FailedCreatePodSandBox: {e}"
                self._notify()
                if await self._sleep_or_terminate(self.ctx.config.config_retry):
                    return False
        return False

    async def _release_sandbox(self) -> None:
        """Give the pod's network back once the pod is done (not when the node stops)."""
        if self.ctx.network is None or self.node_stopping or self.sandbox is None:
            return
        try:
            await self.ctx.network.teardown(self.uid, self.namespace, self.name)
        except Exception:
            log.exception("pod %s/%s: releasing its network failed", self.namespace, self.name)

    def _sandbox_mounts(self, images: bool) -> tuple[Mount, ...]:
        """The pod's own /etc/resolv.conf and /etc/hosts, for containers in its namespace."""
        sb = self.sandbox
        if not images or sb is None or sb.netns is None:
            return ()
        return tuple(Mount(src, dest) for src, dest in ((sb.resolv_conf, "/etc/resolv.conf"),
                                                        (sb.hosts, "/etc/hosts"))
                     if src is not None)

    def _pod_ips(self, node_ip: str) -> dict[str, Any]:
        """status.podIP(s): the sandbox's addresses; none yet while it is being made."""
        if self.sandbox is not None:
            ips = list(self.sandbox.ips)
        elif self.ctx.network is None or host_network(self.pod):
            ips = [node_ip]
        else:
            return {}
        return {"podIP": ips[0], "podIPs": [{"ip": i} for i in ips]}

    def pod_ip(self) -> str:
        """The pod's own address if it has one (else the node's): where probes and hooks reach
        it, as the kubelet's do, port-forward connects to, and its ``status.podIP`` for the
        downward API."""
        if self.sandbox is not None and self.sandbox.ips:
            return self.sandbox.ips[0]
        return self.ctx.node_ip

    # -- probes ----------------------------------------------------------------

    def _start_probes(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        if rec.init:
            rec.started = True
            return
        startup = rec.spec.get("startupProbe")
        if startup:
            rec.probers.append(self._spawn(self._prober("startup", startup, rec, handle).run()))
        else:
            self._after_startup(rec, handle)

    def _after_startup(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        rec.started = True
        for kind in ("liveness", "readiness"):
            probe = rec.spec.get(f"{kind}Probe")
            if probe:
                rec.probers.append(self._spawn(self._prober(kind, probe, rec, handle).run()))
        if not rec.spec.get("readinessProbe"):
            rec.ready = True

    def _prober(self, kind: str, probe: dict[str, Any], rec: ContainerRecord,
                handle: ContainerHandle) -> Prober:
        async def exec_fn(argv: list[str], timeout: float) -> tuple[int, bytes]:
            return await self.exec_capture(handle, argv, timeout)

        def on_result(kind: str, ok: bool, message: str) -> None:
            if rec.handle is not handle or handle.exited.is_set():
                return
            if not ok:
                self._event("Warning", "Unhealthy",
                            f"{kind.capitalize()} probe failed: {message}")
            if kind == "readiness":
                rec.ready = ok
            elif kind == "startup" and ok:
                rec.stop_probers()
                self._after_startup(rec, handle)
            elif not ok:
                log.info("pod %s/%s: container %s failed its %s probe: %s", self.namespace,
                         self.name, rec.name, kind, message)
                rec.kill_message = (f"Container {rec.name} failed {kind} probe, will be "
                                    f"restarted: {message}")
                self._event("Normal", "Killing",
                            f"Container {rec.name} failed {kind} probe, will be restarted")
                rec.ready = False
                rec.stop_probers()
                grace = probe.get("terminationGracePeriodSeconds")
                self._spawn(self.ctx.runtime.stop(handle, float(grace if grace is not None
                                                                else self.grace)))
            self._notify()

        return Prober(kind, probe, rec.spec, self.pod_ip(), exec_fn, on_result,
                      initial=kind == "liveness", time_scale=self.ctx.config.probe_time_scale)

    async def exec_capture(self, handle: ContainerHandle, argv: list[str],
                           timeout: float) -> tuple[int, bytes]:
        """Run a command in the container; (exit code, stdout+stderr). Probes and hooks."""
        try:
            session = await self.ctx.runtime.exec(handle, argv)
        except OSError as e:
            return 126, str(e).encode()
        proc = session.process
        try:  # timed out or cancelled, it is killed and reaped: nothing is left behind
            out, err = await asyncio.wait_for(communicate(proc), timeout)
        except TimeoutError:
            return 124, b"command timed out"
        return (proc.returncode if proc.returncode is not None else 255), out + err

    # -- termination -----------------------------------------------------------

    async def terminate(self) -> None:
        """preStop hooks, SIGTERM, then SIGKILL when the grace period is over."""
        deadline = time.monotonic() + self.grace
        running = [r for r in self.init_records + self.records
                   if r.handle is not None and not r.handle.exited.is_set()]
        for r in self.init_records + self.records:
            r.stop_probers()
        await asyncio.gather(*(self._stop(r, deadline) for r in running))
        for t in list(self._tasks):
            t.cancel()
        for r in self.init_records + self.records:
            if "terminated" not in r.state:
                r.state = {"waiting": {"reason": "ContainerCreating"}} if not r.ever_ran else r.state
            r.final = True
        self._notify()

    async def _stop(self, rec: ContainerRecord, deadline: float) -> None:
        handle = rec.handle
        assert handle is not None
        hook = ((rec.spec.get("lifecycle") or {}).get("preStop")) or {}

        def left() -> float:
            return max(deadline - time.monotonic(), 0.0)

        self._event("Normal", "Killing", f"Stopping container {rec.name}")
        try:
            if "exec" in hook:
                argv = [str(a) for a in (hook["exec"] or {}).get("command") or []]
                await self.exec_capture(handle, argv, left())
            elif "httpGet" in hook:
                await probe_once({"httpGet": hook["httpGet"], "timeoutSeconds": left()},
                                 rec.spec, self.pod_ip(), _no_exec)
            elif "sleep" in hook:
                await asyncio.sleep(min(float((hook["sleep"] or {}).get("seconds") or 0), left()))
        except Exception as e:
            log.warning("pod %s/%s: preStop hook of %s failed: %s", self.namespace, self.name,
                        rec.name, e)
        await self.ctx.runtime.stop(handle, left())
        self._record_exit(rec, handle)

    async def kill_now(self) -> None:
        """Stop every container at once (the agent is shutting down)."""
        self.node_stopping = True
        self.terminating.set()
        for r in self.init_records + self.records:
            r.stop_probers()
            if r.handle is not None:
                await self.ctx.runtime.stop(r.handle, 0.5)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        # Awaited so probe and hook execs are reaped now, not garbage-collected later.
        await asyncio.gather(*tasks, return_exceptions=True)

    def cleanup(self) -> None:
        volumes.unmount(self.links)
        if self.files_dir != self.pod_dir:  # the logs' directory is the agent's to remove
            shutil.rmtree(self.files_dir, ignore_errors=True)

    # -- status ----------------------------------------------------------------

    def phase(self) -> str:
        if self.init_failed:
            return "Failed"
        if self.records and all(r.final for r in self.records) and self.initialized:
            return "Failed" if any(r.exit_code != 0 for r in self.records) else "Succeeded"
        if self.initialized and any(r.ever_ran for r in self.records):
            return "Running"
        return "Pending"

    def _condition(self, ctype: str, ok: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self._conditions.get(ctype)
        if prev is None or prev[0] != status:
            prev = (status, _now())
            self._conditions[ctype] = prev
        c: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None,
                             "lastTransitionTime": prev[1]}
        if reason and not ok:
            c["reason"] = reason
        return c

    def status(self) -> dict[str, Any]:
        phase = self.phase()
        done = phase in ("Succeeded", "Failed")
        containers_ready = bool(self.records) and all(r.ready for r in self.records) and not done
        not_ready = "PodCompleted" if done else "ContainersNotReady"
        init_reason = "PodCompleted" if done else "ContainersNotInitialized"
        conditions = [
            self._condition("PodReadyToStartContainers", True),
            self._condition("Initialized", self.initialized or done, init_reason),
            self._condition("Ready", containers_ready, not_ready),
            self._condition("ContainersReady", containers_ready, not_ready),
            self._condition("PodScheduled", True),
        ]
        ip = self.ctx.node_ip
        images = self.ctx.runtime.images
        st: dict[str, Any] = {
            "phase": phase, "conditions": conditions, "hostIP": ip, "hostIPs": [{"ip": ip}],
            **self._pod_ips(ip), "startTime": self.start_time,
            "containerStatuses": [r.status(images) for r in self.records],
        }
        if self.init_records:
            st["initContainerStatuses"] = [r.status(images) for r in self.init_records]
        if self.ephemeral_records:
            st["ephemeralContainerStatuses"] = ephemeral.statuses(self, images)
        if self.volume_error:
            st["message"] = self.volume_error
        elif self.network_error:
            st["message"] = self.network_error
        qos = (self.pod.get("status") or {}).get("qosClass")
        if qos:
            st["qosClass"] = qos
        return st
