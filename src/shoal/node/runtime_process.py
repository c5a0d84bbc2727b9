"""The ``process`` runtime: a container is a host process in its own process group.

The command and args run directly on the host with the container's env and working
dir. Output goes through the agent, which stamps each line and writes it to
``DATA_DIR/pods/<pod-uid>/<container>/<restartCount>.log`` in the CRI log format
(``<RFC3339Nano> <stdout|stderr> <F|P> <text>``), so logs have timestamps like the
kubelet's. CPU and memory limits use a cgroup v2 when ``/sys/fs/cgroup`` is a
writable v2 hierarchy; otherwise they are not enforced (logged once). The image is
recorded, not pulled.

A container with a user (``ContainerConfig.user``, decided by ``shoal.node.pod_user``)
runs under ``setpriv`` with that uid, gid and groups, and so do its execs; its pipes
are opened before the switch, so its logs need nothing of the user.

A container's process, and every exec in it (probes, hooks, ``kubectl exec``), is
spawned by ``subprocess.Popen`` in a worker thread (``shoal.node.subprocesses.spawn``), not by
the event loop (uvloop forks the whole node from the loop's thread in
``create_subprocess_exec``; a node froze twice around such spawns under load): the
loop only reads its pipes and learns of its exit through a pidfd.

Every process carries ``SHOAL_NODE_MARKER`` (an opaque hash of the data dir, which a
pod is not told) and ``SHOAL_CONTAINER_ID`` in its environment, which is how a
restarted agent recognises what an earlier run left behind (its pipes to the agent
are gone, so it is killed and replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import os
import pty
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

from shoal.node import host_processes
from shoal.node.env import DEFAULT_PATH
from shoal.node.runtime import (
    ContainerConfig,
    ContainerHandle,
    ContainerUser,
    ExecSession,
    RuntimeStartError,
)
from shoal.node.subprocesses import SpawnedProcess, spawn

log = logging.getLogger(__name__)

PARTIAL_LINE = 16 * 1024  # longer lines are split into P(artial) records, as CRI does
CGROUP_ROOT = Path("/sys/fs/cgroup")


MARKER_ENV = "SHOAL_NODE_MARKER"


def node_marker(data_dir: Path) -> str:
    """What marks this node's pod processes: opaque, so a pod learns nothing of the data dir."""
    return hashlib.sha256(b"shoal-node:" + str(data_dir.resolve()).encode()).hexdigest()[:16]


def kill_pods_left_behind(marker: str, keep: Collection[str] = ()) -> int:
    """Kill the pod processes an earlier run of the node ``marker`` (its node_marker)
    left, but those of the containers in ``keep``; how many."""
    marked = f"{MARKER_ENV}={marker}"

    def left_behind(env: list[str]) -> bool:
        cid = next((v.removeprefix("SHOAL_CONTAINER_ID=") for v in env
                    if v.startswith("SHOAL_CONTAINER_ID=")), "")
        return marked in env and cid not in keep

    killed = 0
    for pid in host_processes.matching(left_behind, read=host_processes.environ):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def as_user(argv: list[str], user: ContainerUser | None, env: dict[str, str]) -> list[str]:
    """The command line that runs ``argv`` as ``user`` (unchanged without one).

    uvloop's subprocesses take no ``user``/``group``, and a ``preexec_fn`` is unsafe in a
    process with threads; ``setpriv`` (util-linux) switches after the fork instead. The
    program is looked up first on the container's PATH, so a missing one is still a
    StartError and not an exit code."""
    if user is None:
        return argv
    program = shutil.which(argv[0], path=env.get("PATH", DEFAULT_PATH))
    if program is None:
        raise RuntimeStartError("StartError", f"failed to start container process "
                                f"{argv[0]!r}: executable file not found in $PATH")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeStartError("CreateContainerError", "setpriv (util-linux) is needed to run "
                                "a pod as its own user")
    groups = ",".join(str(g) for g in user.groups)
    return [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}",
            f"--groups={groups}" if groups else "--clear-groups", "--", program, *argv[1:]]


def cri_timestamp(seconds: float) -> str:
    """RFC 3339 with nanoseconds, as kubelet log files carry."""
    dt = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int((seconds % 1) * 1e9):09d}Z"


def exit_code_of(returncode: int) -> int:
    """asyncio reports death by signal N as -N; containers report 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class _Cgroups:
    """Best-effort cgroup v2 limits under ``/sys/fs/cgroup/shoal``."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.base = root / "shoal"
        self.usable = False
        try:
            if (root / "cgroup.controllers").exists() and os.access(root, os.W_OK):
                self.base.mkdir(exist_ok=True)
                (root / "cgroup.subtree_control").write_text("+cpu +memory")
                (self.base / "cgroup.subtree_control").write_text("+cpu +memory")
                self.usable = True
        except OSError as e:
            log.info("cgroup v2 not usable (%s): CPU and memory limits are not enforced", e)
            return
        if not self.usable:
            log.info("%s is not a writable cgroup v2 hierarchy: CPU and memory limits are not "
                     "enforced by the process runtime", root)

    def attach(self, cfg: ContainerConfig, pid: int) -> Path | None:
        if not self.usable or (cfg.cpu_millis is None and cfg.memory_bytes is None):
            return None
        path = self.base / f"{cfg.pod_uid}-{cfg.name}-{cfg.attempt}"
        try:
            path.mkdir(exist_ok=True)
            if cfg.cpu_millis is not None:
                (path / "cpu.max").write_text(f"{max(cfg.cpu_millis, 1) * 100} 100000")
            if cfg.memory_bytes is not None:
                (path / "memory.max").write_text(str(cfg.memory_bytes))
            (path / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            log.warning("cgroup for %s/%s: %s", cfg.pod_name, cfg.name, e)
            return None
        return path

    @staticmethod
    def remove(path: Path | None) -> None:
        if path is not None:
            with contextlib.suppress(OSError):
                path.rmdir()


async def pump(reader: asyncio.StreamReader | None, stream: str, out: LogFile) -> None:
    """Copy one pipe into the log file, one CRI record per line."""
    if reader is None:
        return
    buf = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        now = time.time()
        for line in lines:
            out.record(now, stream, b"F", line)
        while len(buf) >= PARTIAL_LINE:
            out.record(now, stream, b"P", buf[:PARTIAL_LINE])
            buf = buf[PARTIAL_LINE:]
    if buf:
        out.record(time.time(), stream, b"F", buf)


class LogPipe(asyncio.Protocol):
    """One pipe of a container copied into its log file as data arrives, one CRI record per
    line (as :func:`pump`, without a task and a stream reader per pipe: a pod is mostly
    idle, and those were a few KB each)."""

    def __init__(self, stream: str, out: LogFile, closed: asyncio.Future[None]) -> None:
        self.stream = stream
        self.out = out
        self.closed = closed
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        *lines, self.buf = (self.buf + data).split(b"\n")
        now = time.time()
        try:
            for line in lines:
                self.out.record(now, self.stream, b"F", line)
            while len(self.buf) >= PARTIAL_LINE:
                self.out.record(now, self.stream, b"P", self.buf[:PARTIAL_LINE])
                self.buf = self.buf[PARTIAL_LINE:]
        except (OSError, ValueError) as e:  # a full disk: lines are lost, the pipe still drains
            log.debug("container log %s: %s", self.out.path, e)
            self.buf = b""

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buf:
            with contextlib.suppress(OSError, ValueError):
                self.out.record(time.time(), self.stream, b"F", self.buf)
            self.buf = b""
        if not self.closed.done():
            self.closed.set_result(None)


class LogFile:
    """A container attempt's CRI log file (shared by both runtimes, so logs read the same).

    Rotated as the kubelet does (``containerLogMaxSize``, ``containerLogMaxFiles``): when a
    record would take the file past ``max_bytes``, ``N.log`` becomes ``N.log.1`` (older
    ones ``.2``, ...), and at most ``max_files`` files are kept, the current one included.
    ``kubectl logs`` reads the current file; a follower moves on to the new one.
    """

    # --- observability: container log rotation (shoal server --container-log-max-size) ---
    max_bytes = 10 * 1024 * 1024
    max_files = 5
    # --- end observability ---

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.f = open(path, "ab", buffering=0)  # noqa: SIM115 - closed when the container ends
        self.size = self.f.tell()

    def record(self, now: float, stream: str, tag: bytes, text: bytes) -> None:
        line = b"%s %s %s %s\n" % (cri_timestamp(now).encode(), stream.encode(), tag, text)
        if self.size and self.size + len(line) > self.max_bytes:
            self._rotate()
        self.f.write(line)
        self.size += len(line)

    def _rotate(self) -> None:
        self.f.close()
        keep = max(0, self.max_files - 1)
        # Shifting up replaces the oldest kept file (rename overwrites on POSIX).
        for i in range(keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(f"{self.path.name}.{i}").rename(
                    self.path.with_name(f"{self.path.name}.{i + 1}"))
        if keep:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self.f = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        self.f.close()


class ProcessRuntime:
    """Runs containers as host processes (see the module docstring)."""

    name = "process"
    images = False

    def __init__(self, data_dir: Path) -> None:
        self.marker = node_marker(data_dir)
        self._cgroups = _Cgroups()
        self._procs: dict[str, SpawnedProcess] = {}
        self._supervisors: set[asyncio.Task[None]] = set()

    def _env(self, cfg: ContainerConfig, container_id: str) -> dict[str, str]:
        return {"PATH": DEFAULT_PATH, **cfg.env, MARKER_ENV: self.marker,
                "SHOAL_CONTAINER_ID": container_id}

    @staticmethod
    def _cwd(config: ContainerConfig) -> Path:
        # No image WorkingDir here: the container's own directory next to its logs.
        return config.working_dir or config.log_path.parent

    async def pull(self, config: ContainerConfig, pulling: Callable[[], None]) -> None:
        return None  # no images: the command runs on the host

    async def start(self, config: ContainerConfig) -> ContainerHandle:
        cid = f"process://{uuid.uuid4().hex}"
        cwd = self._cwd(config)
        try:
            cwd.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RuntimeStartError("CreateContainerError",
                                    f"working dir {cwd}: {e.strerror}") from e
        env = self._env(config, cid)
        argv = as_user(config.argv, config.user, env)
        logf = LogFile(config.log_path)
        loop = asyncio.get_running_loop()
        closed: list[asyncio.Future[None]] = [loop.create_future(), loop.create_future()]
        try:
            child = await spawn(argv, output=(lambda: LogPipe("stdout", logf, closed[0]),
                                              lambda: LogPipe("stderr", logf, closed[1])),
                                stdin=subprocess.PIPE if config.stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=str(cwd), start_new_session=True)
        except OSError as e:
            logf.close()
            raise RuntimeStartError(
                "StartError", f"failed to start container process {config.argv[0]!r}: "
                f"{e.strerror or e}") from e
        handle = ContainerHandle(config, cid, child.pid, time.time(), stdin=child.stdin)
        self._procs[cid] = child
        cgroup = self._cgroups.attach(config, child.pid)
        task = loop.create_task(self._supervise(handle, child, logf, cgroup, closed))
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)
        return handle

    async def _supervise(self, handle: ContainerHandle, child: SpawnedProcess,
                         logf: LogFile, cgroup: Path | None,
                         closed: list[asyncio.Future[None]]) -> None:
        rc = await child.wait()
        # The container is its process group: what the main process left running goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        # What is still in the pipes reaches the log (a grandchild may hold them open).
        await asyncio.wait(closed, timeout=2.0)
        child.close()
        logf.close()
        self._cgroups.remove(cgroup)
        handle.exit_code = exit_code_of(rc)
        handle.finished_at = time.time()
        self._procs.pop(handle.id, None)
        handle.exited.set()

    async def stop(self, handle: ContainerHandle, grace: float, sig: int | None = None) -> None:
        if handle.exited.is_set():
            return
        # Like a container's PID 1, only the main process hears SIGTERM; SIGKILL takes the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(handle.pid, sig or signal.SIGTERM)
        try:
            await asyncio.wait_for(handle.exited.wait(), timeout=max(grace, 0.0))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pid, signal.SIGKILL)
            await handle.exited.wait()

    async def wait(self, handle: ContainerHandle) -> int:
        await handle.exited.wait()
        assert handle.exit_code is not None
        return handle.exit_code

    async def exec(self, handle: ContainerHandle, argv: list[str], *, stdin: bool = False,
                   tty: bool = False) -> ExecSession:
        env = self._env(handle.config, handle.id)
        cwd = str(self._cwd(handle.config))
        try:
            argv = as_user(argv, handle.config.user, env)
        except RuntimeStartError as e:
            raise OSError(e.message) from e
        if tty:
            master, slave = pty.openpty()
            env.setdefault("TERM", "xterm")
            try:
                # setsid -c makes the pty the controlling terminal (job control works); a
                # preexec_fn cannot, as uvloop runs it before the pty is on fd 0.
                setsid = shutil.which("setsid")
                proc = await spawn([setsid, "-c", *argv] if setsid else argv, stdin=slave,
                                   stdout=slave, stderr=slave, env=env, cwd=cwd,
                                   start_new_session=setsid is None)
            except OSError:
                os.close(master)
                raise
            finally:
                os.close(slave)
            return ExecSession(proc, master)
        proc = await spawn(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                           start_new_session=True)
        return ExecSession(proc)

    def cleanup_orphans(self, keep: set[str]) -> int:
        return kill_pods_left_behind(self.marker, keep)
