"""Processes of this host found by their command line, for what an earlier run left.

A helper a node starts as a daemon (``wireguard-go`` forks one) or in a session of its
own (``nats-server``) outlives the node when only the node's pid is killed. The next
start finds it by its exact command line, which names something only that node owns (a
device named after its data dir, a file in its data dir), so another node's process on
the same host is never matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path


def cmdline(pid: int) -> list[str]:
    """The arguments of process ``pid`` (empty when it is gone, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def matching(wanted: Callable[[list[str]], bool]) -> list[int]:
    """The pids whose arguments ``wanted`` accepts (this process excluded)."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            args = cmdline(int(entry.name))
            if args and wanted(args):
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
