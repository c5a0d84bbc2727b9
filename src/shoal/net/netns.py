"""Persistent network namespaces for pods: a namespace bind-mounted on a file.

``unshare --net=FILE`` makes the namespace and keeps it alive with a bind mount,
as ``ip netns add`` does under ``/run/netns``; ours live in the node's data dir,
so that two nodes on one host (the tests) never share a name. A namespace
outlives the containers in it, and a restart of Shoal finds it again. A file
that is no longer a mount (the host rebooted, or the mount namespace that held
it is gone) is a stale namespace: it is removed and made afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from shoal.node.subprocesses import communicate


class NetnsError(Exception):
    pass


def alive(path: Path) -> bool:
    """Whether ``path`` is a live namespace (a mount), not a stale file."""
    return os.path.ismount(path)


async def create(path: Path) -> None:
    """Make a fresh network namespace at ``path`` (a stale file there is replaced)."""
    if alive(path):
        raise NetnsError(f"{path} is already a network namespace")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.touch()  # unshare mounts onto an existing file
    out = await _run("unshare", f"--net={path}", "true")
    if out is not None:
        path.unlink(missing_ok=True)
        raise NetnsError(f"unshare --net={path}: {out}")
    # A new namespace's loopback is down; the CNI loopback plugin brings it up.


async def remove(path: Path) -> None:
    """Unmount and delete the namespace file; the namespace goes with its last process."""
    if alive(path):
        out = await _run("umount", "-l", str(path))
        if out is not None:
            raise NetnsError(f"umount {path}: {out}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def _run(*argv: str) -> str | None:
    """None on success, else the command's error output."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await communicate(proc)
    return None if proc.returncode == 0 else err.decode(errors="replace").strip()
