"""Reading container logs: the files the runtime writes, with kubectl's options.

A container attempt's log is ``<pod dir>/<container>/<restartCount>.log`` in the
CRI format, one record per line: ``<RFC3339Nano> <stdout|stderr> <F|P> <text>``
(``P`` marks a piece of a longer line). The current log is the highest attempt;
``previous`` is the one before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shoal.node.runtime_process import cri_timestamp

FOLLOW_POLL = 0.1  # seconds between looks at a followed file


@dataclass
class LogOptions:
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    since_seconds: float | None = None
    since_time: str | None = None  # RFC 3339
    timestamps: bool = False
    limit_bytes: int | None = None


def attempts(container_dir: Path) -> list[Path]:
    """The container's log files, oldest attempt first."""
    files = [p for p in container_dir.glob("*.log") if p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


def log_file(container_dir: Path, previous: bool) -> Path | None:
    files = attempts(container_dir)
    if previous:
        return files[-2] if len(files) >= 2 else None
    return files[-1] if files else None


def _since(opts: LogOptions) -> str | None:
    if opts.since_seconds is not None:
        return cri_timestamp(time.time() - opts.since_seconds)
    if opts.since_time:
        # 2024-01-02T03:04:05[.123]Z compares as text with our stamps once its fraction is 9 digits.
        whole, _, frac = opts.since_time.rstrip("Z").partition(".")
        return f"{whole}.{frac[:9].ljust(9, '0')}Z"
    return None


def _render(record: bytes, timestamps: bool, since: str | None) -> bytes | None:
    """One CRI record as kubectl shows it; None if it is filtered out or malformed."""
    parts = record.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, _stream, tag = parts[0], parts[1], parts[2]
    text = parts[3] if len(parts) == 4 else b""
    if since is not None and ts.decode() < since:
        return None
    out = text + (b"" if tag == b"P" else b"\n")
    return ts + b" " + out if timestamps else out


class _Limit:
    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self, data: bytes) -> bytes:
        if self.left is None:
            return data
        data = data[: self.left]
        self.left -= len(data)
        return data

    @property
    def done(self) -> bool:
        return self.left is not None and self.left <= 0


def _rotated(f: BinaryIO, path: Path) -> bool:
    """Whether ``path`` is now another file than the one ``f`` reads."""
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except OSError:
        return False


async def read_logs(path: Path, opts: LogOptions,
                    running: Callable[[], bool] = lambda: False) -> AsyncIterator[bytes]:
    """The log as kubectl shows it; with ``follow``, until the container stops."""
    since = _since(opts)
    limit = _Limit(opts.limit_bytes)
    with contextlib.ExitStack() as files:
        f = files.enter_context(open(path, "rb"))
        data = f.read()
        complete, sep, _ = data.rpartition(b"\n")
        pos = len(complete) + len(sep)
        records = complete.split(b"\n") if complete else []
        if opts.tail_lines is not None:
            records = records[-opts.tail_lines:] if opts.tail_lines > 0 else []
        chunk = b"".join(r for r in (_render(x, opts.timestamps, since) for x in records) if r)
        if chunk:
            yield limit.take(chunk)
        if not opts.follow or limit.done:
            return
        f.seek(pos)
        async for records in follow_records(f, path, running):
            out = b"".join(r for r in (_render(x, opts.timestamps, since) for x in records) if r)
            if out:
                yield limit.take(out)
            if limit.done:
                return


async def follow_records(f: BinaryIO, path: Path, running: Callable[[], bool]
                         ) -> AsyncIterator[list[bytes]]:
    """The complete CRI records written to ``path`` after ``f``'s position, in batches, until
    the container stops running; ``f`` is closed when the runtime rotates the file."""
    with contextlib.ExitStack() as files:
        buf = b""
        while True:
            new = f.read()
            if not new and _rotated(f, path):
                # The runtime rotated the file (LogFile): what is left of the old one was
                # read; go on with the new one from its start.
                f.close()
                f = files.enter_context(open(path, "rb"))
                new = f.read()
            if not new:
                if not running():
                    new = f.read()  # what was written while the container exited
                    if not new:
                        return
                else:
                    await asyncio.sleep(FOLLOW_POLL)
                    continue
            buf += new
            complete, _, buf = buf.rpartition(b"\n") if b"\n" in buf else (b"", b"", buf)
            if complete:
                yield complete.split(b"\n")
