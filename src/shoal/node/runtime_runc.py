"""The ``runc`` runtime: each container attempt is an OCI bundle run by Debian's ``runc``.

Per attempt, ``DATA_DIR/runc/bundles/<id>/`` holds ``config.json`` and ``rootfs``:
an overlay of the image's shared, read-only unpacked rootfs (``images.ImageStore``)
with a writable upper directory of its own, or, where overlayfs cannot be mounted,
a plain copy of the rootfs. The bundle goes when the attempt ends.

``runc run`` is used in the foreground (not ``--detach``) and acts as the
container's shim: it stays the parent of the container's init, so it can report
the exit code (a detached init is reparented to PID 1, and its status is lost),
and it is a child of ours that we can wait for. It passes our pipes straight to
the container as stdout and stderr, which the agent writes to the same CRI log
files as the process runtime (``<pod dir>/<container>/<restartCount>.log``).
``runc state`` is not needed to track it; ``runc kill`` signals it, ``runc exec``
runs commands in it (with a pty when asked), and foreground ``runc run`` deletes
the container itself when it ends (``runc delete -f`` tidies after a crash).

A start cancelled while runc creates the container (the agent stopping) waits until
runc has created it and then kills it: ``runc run`` killed mid-create leaves its init,
in a session of its own by then, setting the rootfs up, and may leave runc's binary
bind-mounted in the state dir, which ``runc delete`` cannot remove (``_remove_state``
does).

Networking: a container joins its pod's network namespace (``ContainerConfig.netns``,
made by the pod network, ``shoal.node.pod_network``) and sees the pod's own
``/etc/resolv.conf`` and ``/etc/hosts`` (mounts the pod worker adds). Without one
(``hostNetwork``, no pod network) it shares the node's network and files.
CPU and memory limits go into the bundle's ``linux.resources``, applied by runc
in the cgroup ``/shoal/<id>`` (v1 or v2, whichever the host has).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pty
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shoal.node.images import ImageConfig, ImageError, ImageStore, Reference
from shoal.node.registry_client import (
    NEVER,
    Credentials,
    ImagePuller,
    PeerSource,
    PullError,
    default_pull_policy,
)
from shoal.node.runtime import (
    ContainerConfig,
    ContainerHandle,
    ExecSession,
    Mount,
    PulledImage,
    RuntimeStartError,
)

# The process runtime's log writer, so both runtimes write byte-identical CRI logs.
from shoal.node.runtime_process import LogFile, exit_code_of, pump
from shoal.node.subprocesses import communicate

log = logging.getLogger(__name__)
T = TypeVar("T")

ID_PREFIX = "runc://"
START_TIMEOUT = 30.0  # seconds for runc to create the container and write its pid file
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's default capability set: what images expect to be allowed as root.
CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
          "/proc/scsi"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# With the host's network, the host's resolver and hosts file are the right ones.
HOST_FILES = ["/etc/resolv.conf", "/etc/hosts"]


def _layout(data_dir: Path) -> tuple[Path, Path]:
    """Where a node on ``data_dir`` keeps runc's container state, and the bundles."""
    return data_dir / "runc" / "state", data_dir / "runc" / "bundles"


def find_runc() -> str | None:
    return shutil.which("runc") or next(
        (p for p in ("/usr/sbin/runc", "/usr/bin/runc") if os.access(p, os.X_OK)), None)


class RuncUnusable(Exception):
    """runc cannot run containers on this node; the message says why."""


CHECK_EXEC = "/shoal-runc-check"  # absent from the check's empty rootfs, on purpose


def check_runc(work_dir: Path, runc: str | None = None) -> str:
    """runc's path and version once a throwaway container got as far as its exec here.

    The container has an empty rootfs and runs a program that is not there: runc only
    reports that missing program after it has made the namespaces, the cgroup and the
    mounts, so that error means everything but the program works, with no image needed.
    Raises RuncUnusable with the reason otherwise (not installed, not root, ...).
    """
    runc = runc or find_runc()
    if runc is None:
        raise RuncUnusable("runc is not installed (Debian package runc)")
    if os.geteuid() != 0:
        raise RuncUnusable(f"not running as root (uid {os.geteuid()})")
    try:
        version = subprocess.run([runc, "--version"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout.split("\n")[0].strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuncUnusable(f"{runc} --version: {e}") from e
    work_dir.mkdir(parents=True, exist_ok=True)
    bundle = Path(tempfile.mkdtemp(dir=work_dir, prefix="runc-check-"))
    hexid = "check-" + uuid.uuid4().hex[:12]
    state = bundle / "state"
    try:
        (bundle / "rootfs").mkdir()
        cfg = ContainerConfig(pod_uid="", pod_namespace="", pod_name="runc-check", name="check",
                              attempt=0, image="", argv=[CHECK_EXEC], env={},
                              working_dir=None, log_path=bundle / "log")
        spec = bundle_config(cfg, ImageConfig(), bundle / "rootfs", hexid)
        (bundle / "config.json").write_bytes(orjson.dumps(spec))
        r = subprocess.run([runc, "--root", str(state), "run", "--bundle", str(bundle), hexid],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                           check=False)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 and f"stat {CHECK_EXEC}: no such file" not in out:
            raise RuncUnusable(f"a test container failed: {out.splitlines()[-1] if out else r}")
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuncUnusable(f"a test container failed: {e}") from e
    finally:
        subprocess.run([runc, "--root", str(state), "delete", "--force", hexid],
                       capture_output=True, check=False)
        shutil.rmtree(bundle, ignore_errors=True)
    return f"{version} at {runc}, running as root: a test container started"


def _user(rootfs: Path, spec: str) -> tuple[int, int]:
    """uid and gid for an image's ``User`` (numbers, or names from the image's passwd)."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")

    def lookup(name: str, file: str, gid_field: bool) -> tuple[int, int] | None:
        with contextlib.suppress(OSError):
            for line in (rootfs / "etc" / file).read_text(errors="replace").splitlines():
                f = line.split(":")
                if len(f) > 3 and f[0] == name:
                    return int(f[2]), int(f[3] if not gid_field else f[2])
        return None

    if user.isdigit():
        uid, gid = int(user), 0
    else:
        found = lookup(user, "passwd", False)
        if found is None:
            raise RuntimeStartError("CreateContainerConfigError", f"user {user!r} not in image")
        uid, gid = found
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = lookup(group, "group", True)
            if g is None:
                raise RuntimeStartError("CreateContainerConfigError",
                                        f"group {group!r} not in image")
            gid = g[0]
    return uid, gid


def container_argv(cfg: ContainerConfig, image: ImageConfig) -> list[str]:
    """Kubernetes' rules: command replaces Entrypoint and Cmd, args alone replace only Cmd."""
    if cfg.command:
        return [*cfg.command, *(cfg.args or [])]
    if cfg.args:
        return [*image.entrypoint, *cfg.args]
    if cfg.command is None and cfg.args is None and cfg.argv:
        return list(cfg.argv)  # a caller that only resolved a command line
    return [*image.entrypoint, *image.cmd]


def bundle_config(cfg: ContainerConfig, image: ImageConfig, rootfs: Path, container_id: str,
                  mounts: Sequence[Mount] = ()) -> dict[str, Any]:
    """The OCI runtime spec (config.json) for one container attempt."""
    argv = container_argv(cfg, image)
    if not argv:
        raise RuntimeStartError("CreateContainerConfigError",
                                "no command given and the image has no entrypoint or cmd")
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for kv in image.env:
        k, _, v = kv.partition("=")
        env[k] = v
    env.update(cfg.env)
    env["HOSTNAME"] = cfg.pod_name
    wd = str(cfg.working_dir) if cfg.working_dir is not None else (image.working_dir or "/")
    uid, gid = _user(rootfs, image.user)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if cfg.cpu_millis is not None:
        resources["cpu"] = {"quota": max(cfg.cpu_millis, 1) * 100, "period": 100000}
    if cfg.memory_bytes is not None:
        resources["memory"] = {"limit": cfg.memory_bytes}
    mount_list: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    for f in HOST_FILES if cfg.netns is None else ():
        if os.path.isfile(f):
            mount_list.append({"destination": f, "type": "bind", "source": f,
                               "options": ["rbind", "ro", "nosuid", "nodev"]})
    for m in mounts:
        opts = ["rbind", "rprivate"] + (["ro"] if m.read_only else [])
        mount_list.append({"destination": m.destination, "type": "bind",
                           "source": str(m.source), "options": opts})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": wd if wd.startswith("/") else "/" + wd,
            "capabilities": {k: CAPABILITIES for k in
                             ("bounding", "effective", "permitted")},
            # The node's own file limit: more than the host allows is EPERM in runc's init.
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": cfg.pod_name[:63],
        "mounts": mount_list,
        "linux": {
            "resources": resources,
            "cgroupsPath": f"/shoal/{container_id}",
            "namespaces": _own_namespaces(cfg) + _network_namespace(cfg),
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
        },
    }


def _own_namespaces(cfg: ContainerConfig) -> list[dict[str, Any]]:
    """New pid, ipc, uts and mount namespaces; an ephemeral container joins its target's
    pid, ipc and uts ones (``kubectl debug --target``)."""
    joined = ("pid", "ipc", "uts") if cfg.join_pid is not None else ()
    return [{"type": t, "path": f"/proc/{cfg.join_pid}/ns/{t}"} if t in joined else {"type": t}
            for t in ("pid", "ipc", "uts", "mount")]


def _network_namespace(cfg: ContainerConfig) -> list[dict[str, Any]]:
    """The pod's network namespace; none (the node's network) without a pod network."""
    return [] if cfg.netns is None else [{"type": "network", "path": str(cfg.netns)}]


class RuncRuntime:
    """Runs containers with runc (see the module docstring)."""

    name = "runc"
    images = True

    def __init__(self, data_dir: Path, store: ImageStore | None = None,
                 puller: ImagePuller | None = None, runc: str | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.store = store or ImageStore(self.data_dir)
        self.puller = puller or ImagePuller(self.store)
        runc = runc or find_runc()
        if runc is None:
            raise RuntimeError("runc is not installed (Debian package runc)")
        self.runc = runc
        self.state_root, self.bundles = _layout(self.data_dir)
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.state_root.mkdir(parents=True, exist_ok=True)
        self.last_start_seconds: float | None = None  # runc run until the pid file: a figure

    def _cmd(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.state_root), *args]

    async def _runc(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *self._cmd(*args), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await communicate(proc)
        return proc.returncode or 0, out.decode(errors="replace").strip()

    def add_peer_source(self, source: PeerSource) -> None:
        """Fetch blobs from ``source`` (peers) before the registry, and manifests from it
        when the registry cannot be reached."""
        self.puller.add_peers(source)

    async def pull(self, config: ContainerConfig, pulling: Callable[[], None]) -> PulledImage:
        """The kubelet's pull step: the image present as its pull policy says."""
        self._use_credentials(config)
        try:
            present = self.puller.present(config.image, config.image_pull_policy)
            if present is not None:
                return PulledImage(present, pulled=False, seconds=0.0)
            if (config.image_pull_policy or default_pull_policy(config.image)) != NEVER:
                pulling()  # Never fails below without trying, as the kubelet
            t0 = time.monotonic()
            digest = await self.puller.ensure(config.image, config.image_pull_policy)
        except PullError as e:
            raise RuntimeStartError(e.reason, e.message) from e
        except ImageError as e:
            raise RuntimeStartError("ErrImagePull", f"{config.image}: {e}") from e
        return PulledImage(digest, pulled=True, seconds=time.monotonic() - t0)

    def _use_credentials(self, config: ContainerConfig) -> None:
        for c in config.pull_credentials:
            # Shared by every pull from that registry, as the kubelet's keyring is per node.
            self.puller.registry.credentials[c.registry] = Credentials(c.username, c.password)

    async def start(self, config: ContainerConfig) -> ContainerHandle:
        hexid = uuid.uuid4().hex
        cid = ID_PREFIX + hexid
        self._use_credentials(config)
        try:
            digest = config.image_digest or await self.puller.ensure(config.image,
                                                                     config.image_pull_policy)
            image_rootfs = await asyncio.to_thread(self.store.rootfs, digest)
            image = self.store.config(digest)
        except PullError as e:
            raise RuntimeStartError(e.reason, e.message) from e
        except ImageError as e:
            raise RuntimeStartError("ErrImagePull", f"{config.image}: {e}") from e
        bundle = self.bundles / hexid
        try:
            rootfs, cancelled = await _to_the_end(
                asyncio.to_thread(_prepare_rootfs, image_rootfs, bundle))
            if cancelled:  # only now that the overlay is mounted can the bundle go
                raise asyncio.CancelledError
            spec = bundle_config(config, image, rootfs, hexid, config.mounts)
            (bundle / "config.json").write_bytes(orjson.dumps(spec))
        except (RuntimeStartError, asyncio.CancelledError):
            await asyncio.to_thread(_remove_bundle, bundle)
            raise
        except OSError as e:
            await asyncio.to_thread(_remove_bundle, bundle)
            raise RuntimeStartError("CreateContainerError", f"bundle: {e}") from e
        handle = await self._run(config, cid, hexid, bundle)
        ref = Reference.parse(config.image)
        handle.image_id = f"{ref.registry}/{ref.repository}@{digest}"
        return handle

    async def _run(self, config: ContainerConfig, cid: str, hexid: str,
                   bundle: Path) -> ContainerHandle:
        logf = LogFile(config.log_path)
        pid_file = bundle / "pid"
        runc_log = bundle / "runc.log"
        t0 = time.monotonic()
        try:
            # asyncio's spawn, cancelled, kills `runc run` alone (not its session) and would
            # leave the container's state dir and the bundle: let it finish, undo it below.
            proc, cancelled = await _to_the_end(asyncio.create_subprocess_exec(
                self.runc, "--root", str(self.state_root), "--log", str(runc_log),
                "--log-format", "json", "run",
                "--bundle", str(bundle), "--pid-file", str(pid_file), hexid,
                stdin=asyncio.subprocess.PIPE if config.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True))  # runc run without a terminal passes its stdio through
        except OSError as e:
            logf.close()
            await self._delete(hexid, bundle)
            raise RuntimeStartError("StartError", f"runc: {e}") from e
        pumps = asyncio.gather(pump(proc.stdout, "stdout", logf),
                               pump(proc.stderr, "stderr", logf))
        pid = 0
        wait = asyncio.ensure_future(proc.wait())
        try:
            if cancelled:
                raise asyncio.CancelledError
            while time.monotonic() - t0 < START_TIMEOUT:
                with contextlib.suppress(OSError, ValueError):
                    pid = int(pid_file.read_text())
                    break
                if wait.done():
                    break
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            # Cancelled (the agent stopping) while runc starts the container: nothing would
            # supervise it, and `runc run`'s transport, collected after the loop had closed,
            # failed a later test with "Event loop is closed". Take it down and reap it,
            # to the end even if cancelled again.
            async def take_down() -> None:
                await self._kill_once_created(hexid, wait, pid_file, t0)
                await self._abandon(proc, wait, pumps, logf)
                await self._delete(hexid, bundle)

            await _to_the_end(take_down())
            raise
        if not pid:
            await self._abandon(proc, wait, pumps, logf)
            message = _runc_error(runc_log) or f"runc exited with {proc.returncode}"
            await self._delete(hexid, bundle)
            raise RuntimeStartError("StartError", message)
        self.last_start_seconds = time.monotonic() - t0
        handle = ContainerHandle(config, cid, pid, time.time(), stdin=proc.stdin)
        asyncio.get_running_loop().create_task(
            self._supervise(handle, proc, wait, pumps, logf, bundle))
        return handle

    @staticmethod
    async def _abandon(proc: asyncio.subprocess.Process, wait: asyncio.Future[int],
                       pumps: asyncio.Future[Any], logf: LogFile) -> None:
        """Kill a ``runc run`` that did not start its container (its session: whatever it
        started goes too), reap it and close its log."""
        if not wait.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await wait
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pumps, 2.0)
        logf.close()

    async def _supervise(self, handle: ContainerHandle, proc: asyncio.subprocess.Process,
                         wait: asyncio.Future[int], pumps: asyncio.Future[Any],
                         logf: LogFile, bundle: Path) -> None:
        rc = await wait
        try:
            await asyncio.wait_for(pumps, timeout=2.0)
        except (TimeoutError, OSError, ValueError):
            pumps.cancel()
        logf.close()
        await self._delete(handle.id.removeprefix(ID_PREFIX), bundle)
        # runc reports death by signal N as 128+N already; a killed runc itself as -N.
        handle.exit_code = exit_code_of(rc)
        handle.finished_at = time.time()
        handle.exited.set()

    async def _kill_once_created(self, hexid: str, wait: asyncio.Future[int], pid_file: Path,
                                 t0: float) -> None:
        """Kill a container that `runc run` is creating, once it has been created.

        Killing `runc run` itself mid-create leaves its init (in a session of its own by
        then, so out of reach of a kill of runc's) setting the rootfs up in the bundle we
        are removing, and a bind mount of the runc binary in the state dir, which
        `runc delete` cannot remove. A created container dies the ordinary way.
        """
        while not wait.done() and time.monotonic() - t0 < START_TIMEOUT:
            if pid_file.exists():
                await self._runc("kill", hexid, "KILL")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(wait), 10.0)
                return
            await asyncio.sleep(0.005)

    async def _delete(self, hexid: str, bundle: Path) -> None:
        await self._runc("delete", "--force", hexid)
        if (self.state_root / hexid).exists():
            await asyncio.to_thread(_remove_state, self.state_root / hexid)
        await asyncio.to_thread(_remove_bundle, bundle)

    async def stop(self, handle: ContainerHandle, grace: float, sig: int | None = None) -> None:
        if handle.exited.is_set():
            return
        hexid = handle.id.removeprefix(ID_PREFIX)
        await self._runc("kill", hexid, str(int(sig or signal.SIGTERM)))
        try:
            await asyncio.wait_for(handle.exited.wait(), timeout=max(grace, 0.0))
        except TimeoutError:
            await self._runc("kill", "--all", hexid, "KILL")
            await handle.exited.wait()

    async def wait(self, handle: ContainerHandle) -> int:
        await handle.exited.wait()
        assert handle.exit_code is not None
        return handle.exit_code

    async def exec(self, handle: ContainerHandle, argv: list[str], *, stdin: bool = False,
                   tty: bool = False) -> ExecSession:
        hexid = handle.id.removeprefix(ID_PREFIX)
        if tty:
            master, slave = pty.openpty()
            try:
                # runc, seeing a terminal on its stdin, allocates the container's pty and
                # relays it to ours (and follows our window size on SIGWINCH).
                setsid = shutil.which("setsid")
                cmd = self._cmd("exec", "--tty", "--env", "TERM=xterm", hexid, *argv)
                proc = await asyncio.create_subprocess_exec(
                    *([setsid, "-c", *cmd] if setsid else cmd), stdin=slave, stdout=slave,
                    stderr=slave, start_new_session=setsid is None)
            except OSError:
                os.close(master)
                raise
            finally:
                os.close(slave)
            return ExecSession(proc, master)
        proc = await asyncio.create_subprocess_exec(
            *self._cmd("exec", hexid, *argv),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        return ExecSession(proc)

    def cleanup_orphans(self, keep: set[str]) -> int:
        """Kill and delete the containers an earlier run left (their log pipes are gone)."""
        return remove_containers_left_behind(self.data_dir, keep, self.runc)


def remove_containers_left_behind(data_dir: Path, keep: Collection[str] = (),
                                  runc: str | None = None) -> int:
    """Kill and delete the containers an earlier run on ``data_dir`` left, but those in
    ``keep``, and unmount and remove their bundles; how many containers. A node started
    with the process runtime calls it too: runc's containers outlive a node killed with
    -9 (each in a session of its own). Without runc only the bundles go."""
    data_dir = data_dir.resolve()
    keep_hex = {k.removeprefix(ID_PREFIX) for k in keep}
    state_root, bundles = _layout(data_dir)
    runc = (runc or find_runc()) if state_root.is_dir() else None  # never ran runc: no look-up
    killed = 0
    if runc is not None:
        def cmd(*args: str) -> list[str]:
            return [runc, "--root", str(state_root), *args]

        out = subprocess.run(cmd("list", "--quiet"), capture_output=True, text=True,
                             check=False).stdout
        for hexid in out.split():
            if hexid in keep_hex:
                continue
            subprocess.run(cmd("kill", "--all", hexid, "KILL"), capture_output=True,
                           check=False)
            subprocess.run(cmd("delete", "--force", hexid), capture_output=True, check=False)
            killed += 1
    if bundles.is_dir():
        for bundle in bundles.iterdir():
            if bundle.name not in keep_hex:
                _remove_bundle(bundle)
    return killed


async def _to_the_end(step: Awaitable[T]) -> tuple[T, bool]:
    """``step``'s result, and whether the caller was cancelled meanwhile: the step (a
    spawn, a mount in a thread) runs to its end either way, so that what it made can be
    undone before the cancellation goes on."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True


def _runc_error(runc_log: Path) -> str:
    """The last error runc logged (JSON lines with ``msg``), for the container's status."""
    msg = ""
    with contextlib.suppress(OSError):
        for line in runc_log.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                rec = orjson.loads(line)
                if isinstance(rec, dict) and rec.get("level") in ("error", "fatal"):
                    msg = str(rec.get("msg", ""))
            if not msg and line.strip():
                msg = line.decode(errors="replace")
    return msg.removeprefix("runc run failed: ")


def _prepare_rootfs(image_rootfs: Path, bundle: Path) -> Path:
    """The container's root: the image under a private writable overlay, or a copy of it."""
    rootfs = bundle / "rootfs"
    for d in (rootfs, bundle / "upper", bundle / "work"):
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={image_rootfs},upperdir={bundle / 'upper'},workdir={bundle / 'work'}"
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(rootfs)],
                       capture_output=True, text=True, check=False)
    if r.returncode == 0:
        return rootfs
    log.info("overlayfs unavailable (%s); copying the image rootfs", r.stderr.strip())
    rootfs.rmdir()
    subprocess.run(["cp", "-a", "--reflink=auto", str(image_rootfs), str(rootfs)], check=True)
    return rootfs


def _remove_state(state: Path) -> None:
    """What ``runc delete`` left of a container's state dir: after a `runc run` killed
    mid-create, the bind mount of runc's binary (``runc.XXXXXX``) that its init was
    making, which keeps ``runc delete`` from removing the dir."""
    with contextlib.suppress(FileNotFoundError):
        for entry in state.iterdir():
            subprocess.run(["umount", "-l", str(entry)], capture_output=True, check=False)
    shutil.rmtree(state, ignore_errors=True)


def _remove_bundle(bundle: Path) -> None:
    rootfs = bundle / "rootfs"
    if os.path.ismount(rootfs):
        subprocess.run(["umount", "-l", str(rootfs)], capture_output=True, check=False)
    shutil.rmtree(bundle, ignore_errors=True)
