"""What the node agent needs from a container runtime, whatever runs the containers.

A runtime starts one container (one attempt: a restart is a new start), stops it
with a signal and a grace period, waits for it, and runs extra commands in its
context (exec probes, preStop hooks, ``kubectl exec``). Pod-level concerns (restarts,
probes, volumes, status) live in the pod worker, not here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shoal.node.subprocesses import SpawnedProcess


@dataclass(frozen=True)
class Mount:
    """A volume bind-mounted into a container (runtimes that can mount: runc)."""

    source: Path
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class RegistryCredential:
    """A username and password for one registry, from the pod's imagePullSecrets."""

    registry: str
    username: str
    password: str


@dataclass(frozen=True)
class ContainerUser:
    """The uid, gid and supplementary groups a container's processes get."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class ContainerConfig:
    """Everything needed to start one attempt of one container."""

    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str
    attempt: int  # the restart count this attempt will have
    image: str
    argv: list[str]  # command + args: what the process runtime runs (it reads no image)
    env: dict[str, str]
    working_dir: Path | None  # None: the image's WorkingDir (a host dir for the process runtime)
    log_path: Path
    cpu_millis: int | None = None  # limits.cpu; None: unlimited
    memory_bytes: int | None = None  # limits.memory; None: unlimited
    # Kept apart so a runtime with images can apply Kubernetes' rules: command replaces the
    # image's Entrypoint (and drops its Cmd), args alone replace only its Cmd.
    # None: not given in the pod spec.
    command: list[str] | None = None
    args: list[str] | None = None
    image_pull_policy: str | None = None  # None: Kubernetes' default for the tag
    mounts: tuple[Mount, ...] = ()
    pull_credentials: tuple[RegistryCredential, ...] = ()
    # --- pod network: the network namespace the container joins (shoal.node.pod_network) ---
    netns: Path | None = None  # None: the node's own network
    # --- images: the manifest digest the pull step just made present (Runtime.pull) ---
    image_digest: str | None = None  # None: start() resolves the image itself, pulling if needed
    # --- at rest: who the process runtime runs it as (shoal.node.pod_user) ---
    user: ContainerUser | None = None  # None: the node's own user
    # --- attach: spec.stdin and spec.stdinOnce (shoal.node.attach) ---
    stdin: bool = False  # keep a pipe to the container's stdin (else it reads /dev/null)
    stdin_once: bool = False  # the first attach session that ends closes that pipe
    # --- ephemeral containers: the target container's main process (its host pid) ---
    join_pid: int | None = None  # runc: join its pid, ipc and uts namespaces


@dataclass(frozen=True)
class PulledImage:
    """An image made present for a container: what the kubelet's Pulled event tells."""

    digest: str  # the manifest digest
    pulled: bool  # False: it was already present on the machine
    seconds: float  # how long the pull took (0 when it was present)


@dataclass
class ContainerHandle:
    """One started container attempt, as the runtime tracks it."""

    config: ContainerConfig
    id: str  # e.g. process://<hex>, shown as containerStatuses[].containerID
    pid: int
    started_at: float  # wall clock seconds
    exit_code: int | None = None  # set once it has exited
    finished_at: float | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    image_id: str = ""  # the image it runs, pinned (repo@sha256:...); "" if not pulled
    stdin: asyncio.StreamWriter | None = None  # with config.stdin, if the runtime keeps one


@dataclass
class ExecSession:
    """A command running in a container's context, with pipes (or a pty) to stream."""

    process: asyncio.subprocess.Process | SpawnedProcess
    pty_master: int | None = None  # with a tty, stdin and stdout are this fd


class Runtime(Protocol):
    """A container runtime (``process`` or ``runc``)."""

    name: str
    images: bool
    """Whether it runs images (then a container may rely on the image's Entrypoint, Cmd and
    WorkingDir, and volumes are mounted rather than linked on the host)."""

    async def pull(self, config: ContainerConfig, pulling: Callable[[], None]
                   ) -> PulledImage | None:
        """Make the container's image present as its pull policy says, calling ``pulling``
        first if it must be fetched. None: this runtime runs no images. Raises
        RuntimeStartError with the kubelet's reason (ErrImagePull, ErrImageNeverPull)."""

    async def start(self, config: ContainerConfig) -> ContainerHandle:
        """Start the container; raises RuntimeStartError if it cannot."""

    async def stop(self, handle: ContainerHandle, grace: float, sig: int | None = None) -> None:
        """Send ``sig`` (SIGTERM by default), then SIGKILL after ``grace`` seconds."""

    async def wait(self, handle: ContainerHandle) -> int:
        """The exit code, once the container has exited (128+N for signal N)."""


    async def exec(self, handle: ContainerHandle, argv: list[str], *, stdin: bool = False,
                   tty: bool = False) -> ExecSession:
        """Run a command in the container's context."""

    def cleanup_orphans(self, keep: set[str]) -> int:
        """Kill what an earlier run of this node left behind, except container ids in ``keep``.

        Returns how many processes (or containers) it killed.
        """


class RuntimeStartError(Exception):
    """The container could not be started (bad command, working dir, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
