"""pods/attach: a client joins a running container's output, and its stdin if it has one.

The output comes from the container's CRI log file, followed from its current end (what
the container writes from now on), each record on the channel of the stream it came
from: 1 stdout, 2 stderr. Both runtimes write those files, so attach reads the same for
both. Stdin reaches the container only when it was started with ``stdin: true`` and the
runtime kept a pipe to it (the process runtime does; runc containers get none yet):
bytes on channel 0 are written to it, and when the client closes its stdin (channel 255,
then 0) a ``stdinOnce`` container's stdin is closed, as the kubelet does. The session
ends when the container exits (a Success status) or when the client goes away; the
container keeps running then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson

from shoal.node.logs import follow_records
from shoal.node.runtime import ContainerHandle

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
SUCCESS = orjson.dumps({"metadata": {}, "status": "Success"})

Send = Callable[[int, bytes], Awaitable[None]]


async def follow_output(path: Path, running: Callable[[], bool]
                        ) -> AsyncIterator[tuple[int, bytes]]:
    """(channel, bytes) for every record written to the log from now on, until it stops."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        async for records in follow_records(f, path, running):
            for record in records:
                parts = record.split(b" ", 3)
                if len(parts) < 3:
                    continue
                text = parts[3] if len(parts) == 4 else b""
                yield (STDERR if parts[1] == b"stderr" else STDOUT,
                       text + (b"" if parts[2] == b"P" else b"\n"))


async def run_attach(handle: ContainerHandle, send: Send, frames: AsyncIterator[bytes],
                     stdin: bool) -> None:
    """Relay the container's output to ``send`` and ``frames``' stdin to the container."""

    def running() -> bool:
        return not handle.exited.is_set()

    async def out() -> None:
        async for channel, data in follow_output(handle.config.log_path, running):
            await send(channel, data)

    def close_once() -> None:
        if stdin and handle.config.stdin_once and handle.stdin is not None:
            handle.stdin.close()

    async def into() -> None:
        try:
            async for frame in frames:
                if not frame:
                    continue
                channel, data = frame[0], frame[1:]
                writer = handle.stdin
                if channel == STDIN and data and stdin and writer is not None \
                        and not writer.is_closing():
                    writer.write(data)
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                elif channel == CLOSE and data[:1] == bytes([STDIN]):
                    close_once()
        finally:
            close_once()  # the first session of a stdinOnce container ends its stdin

    out_task = asyncio.ensure_future(out())
    in_task = asyncio.ensure_future(into())
    try:
        done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if out_task in done and out_task.exception() is None:
            await send(ERROR, SUCCESS)  # the container exited: the session is over
    finally:
        for t in (out_task, in_task):
            t.cancel()
        await asyncio.gather(out_task, in_task, return_exceptions=True)
