"""Processes of this host found by what /proc says of them, for what an earlier run left.

A helper a node starts as a daemon (``wireguard-go`` forks one) outlives the node when
only the node's pid is killed. The next start finds it by its exact command line, which
names something only that node owns (a device named after its data dir), so another
node's process on the same host is never matched. The process runtime finds its pods the
same way, by the node's marker in their environment. ``nats-server`` is found by its pid
file instead (bus.supervisor.kill_stale), which uses only ``cmdline`` from here, to tell a
reused pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path


def _nul_separated(pid: int, name: str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def cmdline(pid: int) -> list[str]:
    """The arguments of process ``pid`` (empty when it is gone, or a zombie)."""
    return _nul_separated(pid, "cmdline")


def environ(pid: int) -> list[str]:
    """The ``NAME=value`` environment process ``pid`` started with (empty when it is
    gone, or not ours to read)."""
    return _nul_separated(pid, "environ")


def matching(wanted: Callable[[list[str]], bool],
             read: Callable[[int], list[str]] = cmdline) -> list[int]:
    """The pids whose ``read`` (arguments by default) ``wanted`` accepts (this process
    excluded)."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            values = read(int(entry.name))
            if values and wanted(values):
                found.append(int(entry.name))
    return found


async def terminate(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL to those still there after ``grace`` seconds. A pid is
    signalled only while its command line is the one it had when found (no reused pid)."""
    seen = {pid: cmdline(pid) for pid in pids}

    def still(pid: int) -> bool:
        return bool(seen[pid]) and cmdline(pid) == seen[pid]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if still(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(still(p) for p in pids) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not any(still(p) for p in pids):
            return
