"""The data dir's lock: one ``shoal server`` per data dir.

A second server on a data dir in use would clean up the first one's pods as
orphans, rewrite its advertised address and write to its replica. ``shoal server``
takes an exclusive, non-blocking ``flock`` on ``DATA_DIR/lock`` before it reads or
writes anything else there, and keeps it for its lifetime; the kernel drops it when
the process dies, however it dies, so a stale lock file never blocks a restart. The
holder writes its pid into the file so that a refused server can name it.

The descriptor is close-on-exec (Python's default, asked for explicitly here): a
pod or a helper (runc, wireguard-go) that inherited it would keep the data dir
locked after the node stopped.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class DataDirInUse(Exception):
    """Another process holds the data dir's lock."""


class DataDirLock:
    """An exclusive hold on a data dir, released by :meth:`release` or by exiting."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / LOCK_FILE
        # No O_TRUNC: a refused server must not touch the holder's pid.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise DataDirInUse(f"the data dir {data_dir} is in use by another shoal server "
                               f"({_holder(path)}); stop it first, or give this one another "
                               "--data-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd, path)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"
