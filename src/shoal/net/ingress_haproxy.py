"""Running Debian's haproxy in master-worker mode: start, restart when it dies, reload, stop.

A reload is SIGUSR2 to the master, which starts new workers on the new configuration and
hands them the listening sockets (``expose-fd listeners``), while the old workers finish
the connections they hold: no connection is refused or cut. A configuration is checked
with ``haproxy -c`` first; one haproxy refuses is not written, and the running one keeps
serving the last good one. The master runs in its own session with a parent-death
signal, so it stops with the node even when the node is killed with -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from shoal.net.replica_follower import cancel
from shoal.node.subprocesses import communicate

log = logging.getLogger(__name__)


# haproxy refuses a UNIX socket whose path is longer than this (it adds suffixes of its own).
MAX_SOCKET_PATH = 97


def stats_socket_path(directory: Path) -> Path:
    """The master's admin socket (it hands the listeners to new workers on a reload): in
    ``directory``, or, when that path is too long for haproxy (a deep data dir), in a private
    directory of the temp dir named after it."""
    path = directory / "haproxy.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(directory.absolute()).encode()).hexdigest()[:16]
    private = Path(tempfile.gettempdir()) / f"shoal-ingress-{digest}"
    private.mkdir(mode=0o700, exist_ok=True)
    st = private.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        # Someone else's directory: keep the long path, which haproxy refuses by name.
        log.error("ingress: %s is not this user's private directory; not using it for "
                  "haproxy's socket", private)
        return path
    return private / "haproxy.sock"


def haproxy_path() -> str | None:
    """The haproxy binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("haproxy")
    if found is None and os.access("/usr/sbin/haproxy", os.X_OK):
        found = "/usr/sbin/haproxy"
    return found


class ConfigRefused(Exception):
    """``haproxy -c`` refused a configuration."""


class HaproxySupervisor:
    """Keeps one haproxy master running on ``config_file``."""

    def __init__(self, config_file: Path, log_file: Path, binary: str | None = None,
                 backoff: float = 1.0) -> None:
        self.config_file = config_file
        self.log_file = log_file
        self.binary = binary or haproxy_path() or "haproxy"
        self.backoff = backoff
        self.restarts = 0
        self.reloads = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def check(self, path: Path) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-c", "-f", str(path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await communicate(proc, None)
        if proc.returncode != 0:
            lines = out.decode(errors="replace").splitlines()
            alerts = [line for line in lines if "[ALERT]" in line] or lines
            raise ConfigRefused("\n".join(alerts).strip()[-2000:])

    async def apply(self, text: str) -> None:
        """Check ``text``, write it, and start haproxy on it or tell it to reload."""
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        candidate = self.config_file.with_suffix(".new")
        candidate.write_text(text)
        os.chmod(candidate, 0o600)
        try:
            await self.check(candidate)
        except ConfigRefused:
            candidate.unlink(missing_ok=True)
            raise
        candidate.replace(self.config_file)
        pid = self.pid
        if pid is None:
            await self._spawn()
            if self._task is None:
                self._task = asyncio.create_task(self._watch(), name="ingress-haproxy")
            return
        self.reloads += 1
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR2)

    async def _spawn(self) -> None:
        argv = [self.binary, "-W", "-db", "-f", str(self.config_file)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "SIGKILL", *argv]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        log.info("ingress: haproxy %d started on %s", self._proc.pid, self.config_file)

    async def _watch(self) -> None:
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            log.warning("ingress: haproxy %d exited with %s; starting it again in %.1f s "
                        "(its log: %s)", proc.pid, code, self.backoff, self.log_file)
            await asyncio.sleep(self.backoff)
            self.restarts += 1
            if not self._stopping:
                await self._spawn()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the master and its workers: SIGTERM, then SIGKILL after ``timeout``."""
        self._stopping = True
        await cancel(self._task)
        self._task = None
        proc = self._proc
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, None)):
            if proc is None or proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), wait)

