"""Short-lived commands (runc, ip, nft, wg, the CNI plugins) that are always reaped.

``Process.communicate()`` that is cancelled (the agent or the pod network stopping,
a ``wait_for`` timing out) leaves the command running and its transport unclosed.
Collected after its event loop has closed, that transport raises "Event loop is
closed" from ``__del__``, in whatever code runs then. So a cancelled command is
killed and waited for before the cancellation goes on.

:func:`spawn` starts a process with ``subprocess.Popen`` in a worker thread instead of
the event loop (uvloop forks the whole node from the loop's thread, and its parent
blocks until the child has exec'd), and hands back a :class:`SpawnedProcess` that
reads like ``asyncio.subprocess.Process``.

Its pipes reach the loop through :func:`_for_the_loop`: uvloop closes a pipe's descriptor
twice (libuv closes it, then the file object it was given closes the same number), and the
second close took whatever another thread had opened in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable
from typing import Any

ProtocolFactory = Callable[[], asyncio.Protocol]


def _for_the_loop(loop: asyncio.AbstractEventLoop, pipe: Any) -> Any:
    """The file object to give ``loop.connect_read_pipe`` or ``connect_write_pipe`` for
    ``pipe`` (a ``Popen`` pipe), so that its descriptor is closed once.

    uvloop (0.23; MagicStack/uvloop#763) hands the pipe's fd itself to libuv, which closes it
    with the transport, and then closes the file object too: the same number a second time.
    If another thread had been given that number meanwhile (a ``Popen`` in a worker thread
    here, or a container's log file, a pidfd), its descriptor was closed under it: a CI run
    lost a Job pod's log line, another the pidfd a container's exit was awaited on
    (EBADF), so the pod never finished. For uvloop libuv gets a duplicate of its own, in a
    file object that leaves the fd to libuv, and the pipe is closed here, once. asyncio's
    transports close the file object they are given, once: it gets the pipe as it is."""
    if not type(loop).__module__.startswith("uvloop"):
        return pipe
    fd = os.dup(pipe.fileno())
    pipe.close()
    return open(fd, "wb" if "w" in pipe.mode else "rb", buffering=0,
                closefd=False)


async def spawn(argv: list[str], output: tuple[ProtocolFactory, ProtocolFactory] | None = None,
                **popen: Any) -> SpawnedProcess:
    """``subprocess.Popen(argv, **popen)`` in a worker thread, its pipes opened unbuffered
    (the loop reads their fds), seen from the loop; raises what Popen raises. With
    ``output``, stdout and stderr go to those protocols instead of stream readers."""
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, bufsize=0, **popen)

    return await SpawnedProcess.attach(await asyncio.to_thread(start), output)


class SpawnedProcess:
    """A ``subprocess.Popen`` child seen from the event loop: its pipes as streams, its
    exit through a pidfd (a thread blocked in ``wait`` where there is no pidfd)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self._transports: list[asyncio.BaseTransport] = []

    @classmethod
    async def attach(cls, proc: subprocess.Popen[bytes],
                     output: tuple[ProtocolFactory, ProtocolFactory] | None = None
                     ) -> SpawnedProcess:
        child = cls(proc)
        loop = asyncio.get_running_loop()
        try:
            if output is None:
                child.stdout = await child._reader(loop, proc.stdout)
                child.stderr = await child._reader(loop, proc.stderr)
            else:
                for pipe, factory in zip((proc.stdout, proc.stderr), output, strict=True):
                    if pipe is not None:
                        pipe_transport, _ = await loop.connect_read_pipe(
                            factory, _for_the_loop(loop, pipe))
                        child._transports.append(pipe_transport)
            if proc.stdin is not None:
                transport, protocol = await loop.connect_write_pipe(
                    lambda: asyncio.streams.FlowControlMixin(loop=loop),
                    _for_the_loop(loop, proc.stdin))
                child._transports.append(transport)
                child.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
            child.close()
            raise
        return child

    async def _reader(self, loop: asyncio.AbstractEventLoop,
                      pipe: object) -> asyncio.StreamReader | None:
        if pipe is None:
            return None
        reader = asyncio.StreamReader(loop=loop)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), _for_the_loop(loop, pipe))
        self._transports.append(transport)
        return reader

    async def wait(self) -> int:
        """The exit status (``Popen.returncode``), once the process has exited."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            return await asyncio.to_thread(self.proc.wait)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        rc = self.proc.wait()  # exited: reaps it at once
        if self.stdin is not None:
            self.stdin.close()  # nobody reads it now; stdout and stderr close at their end
        return rc

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        """Write ``input`` (then close stdin), read both pipes to their end, wait."""
        if self.stdin is not None:
            if input:
                self.stdin.write(input)
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    await self.stdin.drain()
            self.stdin.close()

        async def read(reader: asyncio.StreamReader | None) -> bytes:
            return await reader.read() if reader is not None else b""

        out, err = await asyncio.gather(read(self.stdout), read(self.stderr))
        await self.wait()
        self.close()
        return out, err

    def close(self) -> None:
        for t in self._transports:
            t.close()
        self._transports.clear()



async def communicate(proc: asyncio.subprocess.Process | SpawnedProcess,
                      stdin: bytes | None = None) -> tuple[bytes, bytes]:
    """``proc.communicate(stdin)``; if that is interrupted, ``proc`` is killed and reaped."""
    try:
        out, err = await proc.communicate(stdin)
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        raise
    return out or b"", err or b""
