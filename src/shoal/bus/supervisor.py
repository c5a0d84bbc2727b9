"""Running one nats-server: start, restart with backoff when it dies, reload, stop.

The server runs in its own process group (its own session) with a parent-death signal
(``setpriv --pdeathsig``), so it stops with the node even when the node is killed with -9;
its pid is kept in a file in the data dir, and a server left behind by an earlier run of
the node (found through that file, checked against its command line) is killed before a
new one starts. A change that a reload can apply is sent as SIGHUP, which keeps every
client connection; anything else restarts the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from shoal.node.host_processes import cmdline

log = logging.getLogger(__name__)

BINARY = "nats-server"


def nats_server_path() -> str | None:
    """The nats-server binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which(BINARY)
    if found is None and os.access("/usr/sbin/nats-server", os.X_OK):
        found = "/usr/sbin/nats-server"
    return found


def kill_stale(pid_file: Path, config_file: Path) -> bool:
    """Kill the nats-server that ``pid_file`` names if it still runs with ``config_file``
    (a pid reused by another program is left alone). True if one was killed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    args = cmdline(pid)
    if not any(a.endswith(BINARY) for a in args) or str(config_file) not in args:
        return False
    log.warning("bus: killing nats-server %d left behind by an earlier run", pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or not cmdline(pid):
            break
        time.sleep(0.02)
    return True


class NatsSupervisor:
    """Keeps one nats-server running on ``config_file``."""

    def __init__(self, config_file: Path, pid_file: Path, log_file: Path,
                 binary: str | None = None, min_backoff: float = 0.5,
                 max_backoff: float = 30.0, stable_after: float = 60.0) -> None:
        self.config_file = config_file
        self.pid_file = pid_file
        self.log_file = log_file
        self.binary = binary or nats_server_path() or BINARY
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.restarts = 0
        """How many times the server was started again after it died."""
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._restart_requested = asyncio.Event()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def write_config(self, text: str) -> None:
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        tmp.replace(self.config_file)

    async def start(self, text: str) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        kill_stale(self.pid_file, self.config_file)
        self.write_config(text)
        await self._spawn()
        self._task = asyncio.create_task(self._watch(), name="bus-supervisor")

    def reload(self, text: str) -> None:
        """Write ``text`` and tell the server to read it again (SIGHUP)."""
        self.write_config(text)
        pid = self.pid
        if pid is not None:
            log.info("bus: reloading nats-server %d", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    def restart(self, text: str) -> None:
        """Write ``text`` and start the server again on it."""
        self.write_config(text)
        self._restart_requested.set()
        pid = self.pid
        if pid is not None:
            log.info("bus: restarting nats-server %d for a change a reload cannot make", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    async def _spawn(self) -> None:
        argv = [self.binary, "-c", str(self.config_file)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "SIGKILL", *argv]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        log.info("bus: nats-server %d started on %s", self._proc.pid, self.config_file)

    async def _watch(self) -> None:
        backoff = self.min_backoff
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            if self._restart_requested.is_set():
                self._restart_requested.clear()
                backoff = self.min_backoff
            else:
                if time.monotonic() - started >= self.stable_after:
                    backoff = self.min_backoff
                log.warning("bus: nats-server %d exited with %s; starting it again in %.1f s "
                            "(its log: %s)", proc.pid, code, backoff, self.log_file)
                # A new configuration (restart()) cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._restart_requested.wait()
                self._restart_requested.clear()
                backoff = min(backoff * 2, self.max_backoff)
                self.restarts += 1
            if self._stopping:
                return
            await self._spawn()

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
