"""The node side of pod logs, exec and port-forward for API requests served by other peers.

A peer serving ``kubectl logs`` or ``kubectl exec`` for a pod bound here opens a
stream (:mod:`shoal.mesh.streams`) to this node. The stream header says what it wants::

    {"op": "log" | "exec" | "portforward", "namespace": ..., "pod": ..., "uid": ...,
     "container": ..., <the operation's options>}

The first message back is a verdict, ``{"code": 200}`` or a Status-like
``{"code": 400, "reason": ..., "message": ...}`` that the API node returns to its
client. Then: for ``log``, the log bytes; for ``exec``, the messages of the remote
command protocol (a channel byte, then data: 0 stdin, 1 stdout, 2 stderr, 3 the final
Status, 4 resize, 255 close a channel); for ``portforward``, the connection's bytes.
Only authenticated cluster nodes can open streams (the transport accepts STREAM frames
on certified connections only); this node serves only the pods bound to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import termios
from collections.abc import AsyncIterator
from typing import Any

import orjson

from shoal.mesh.streams import Stream
from shoal.node.agent import NodeAgent
from shoal.node.attach import run_attach
from shoal.node.logs import LogOptions, log_file, read_logs
from shoal.node.pod_worker import waiting_to_start
from shoal.node.runtime import ContainerHandle, ExecSession

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
CHUNK = 64 * 1024


class StreamError(Exception):
    """A request this node refuses; becomes the verdict."""

    def __init__(self, code: int, message: str, reason: str = "BadRequest") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def exec_status(code: int, message: str = "") -> bytes:
    """The final Status on the error channel, as the kubelet writes it."""
    if code == 0:
        return orjson.dumps({"metadata": {}, "status": "Success"})
    return orjson.dumps({
        "metadata": {}, "status": "Failure",
        "message": message or f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    })


class PodStreamService:
    """Serves the streams other peers open for this node's pods."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    async def handle(self, stream: Stream) -> None:
        if stream.peer is None:  # the transport never lets one through; belt and braces
            stream.reset("only cluster nodes may open streams")
            return
        h = stream.header
        try:
            pod = self._pod(h)
            op = h.get("op")
            if op == "log":
                await self._logs(stream, pod, h)
            elif op == "exec":
                await self._exec(stream, pod, h)
            elif op == "portforward":
                await self._portforward(stream, pod, h)
            elif op == "attach":  # the container's own output and stdin
                await self._attach(stream, pod, h)
            else:
                raise StreamError(400, f"unknown stream operation {op!r}")
        except StreamError as e:
            await stream.send(orjson.dumps({"code": e.code, "reason": e.reason,
                                            "message": e.message}))

    def _pod(self, h: dict[str, Any]) -> dict[str, Any]:
        ns, name = str(h.get("namespace") or ""), str(h.get("pod") or "")
        pod = self.agent.store.find(self.agent.pod_kind, ns, name)
        if pod is None or (h.get("uid") and pod["metadata"].get("uid") != h["uid"]):
            raise StreamError(404, f'pods "{name}" not found on node {self.agent.node_name}',
                              "NotFound")
        if (pod.get("spec") or {}).get("nodeName") != self.agent.node_name:
            raise StreamError(400, f"pod {name} is not bound to node {self.agent.node_name}")
        return pod

    # -- logs ----------------------------------------------------------------------

    async def _logs(self, stream: Stream, pod: dict[str, Any], h: dict[str, Any]) -> None:
        container = str(h.get("container") or "")
        opts = LogOptions(
            follow=bool(h.get("follow")), previous=bool(h.get("previous")),
            tail_lines=_opt_int(h.get("tailLines")),
            since_seconds=float(h["sinceSeconds"]) if h.get("sinceSeconds") is not None
            else None,
            since_time=h.get("sinceTime") or None, timestamps=bool(h.get("timestamps")),
            limit_bytes=_opt_int(h.get("limitBytes")),
        )
        pod_name = pod["metadata"]["name"]
        path = log_file(self.agent.container_dir(pod, container), opts.previous)
        if path is None:
            if opts.previous:
                raise StreamError(400, f'previous terminated container "{container}" in pod '
                                       f'"{pod_name}" not found')
            raise StreamError(400, waiting_to_start(pod, container))
        worker = self.agent.worker_for(pod["metadata"].get("namespace", ""), pod_name)

        def running() -> bool:
            if opts.previous or worker is None:
                return False
            handle = worker.running_handle(container)
            return handle is not None and handle.config.log_path == path

        await stream.send(orjson.dumps({"code": 200}))

        async def pump() -> None:
            async for chunk in read_logs(path, opts, running):
                for i in range(0, len(chunk), CHUNK):
                    await stream.send(chunk[i:i + CHUNK])

        # The API side ends or resets the stream when its client goes away: stop following.
        await _until_first(pump(), _drain_input(stream))

    # -- exec ----------------------------------------------------------------------

    async def _exec(self, stream: Stream, pod: dict[str, Any], h: dict[str, Any]) -> None:
        container = str(h.get("container") or "")
        argv = [str(a) for a in h.get("command") or []]
        if not argv:
            raise StreamError(400, "you must specify at least 1 command")
        handle = self._running(pod, container)
        await stream.send(orjson.dumps({"code": 200}))
        try:
            session = await self.agent.runtime.exec(handle, argv, stdin=bool(h.get("stdin")),
                                                    tty=bool(h.get("tty")))
        except OSError as e:
            code = 127 if isinstance(e, FileNotFoundError) else 126
            msg = f'exec: "{argv[0]}": {e.strerror or e}'
            await stream.send(bytes([STDERR]) + msg.encode() + b"\n")
            await stream.send(bytes([ERROR]) + exec_status(code, msg))
            return
        await _pump_session(stream, session)

    def _running(self, pod: dict[str, Any], container: str) -> ContainerHandle:
        """The container's running attempt, for exec and attach; else the kubelet's 400."""
        pod_name = pod["metadata"]["name"]
        worker = self.agent.worker_for(pod["metadata"].get("namespace", ""), pod_name)
        handle = worker.running_handle(container) if worker is not None else None
        if handle is None:
            raise StreamError(400, f"unable to upgrade connection: container {container} not "
                                   f"found in pod {pod_name} or not running")
        return handle

    # -- attach ----------------------------------------------------------------------

    async def _attach(self, stream: Stream, pod: dict[str, Any], h: dict[str, Any]) -> None:
        container = str(h.get("container") or "")
        handle = self._running(pod, container)
        await stream.send(orjson.dumps({"code": 200}))

        async def send(channel: int, data: bytes) -> None:
            await stream.send(bytes([channel]) + data)

        async def frames() -> AsyncIterator[bytes]:
            while (msg := await stream.recv()) is not None:
                yield msg

        await run_attach(handle, send, frames(), bool(h.get("stdin")))

    # -- port-forward ----------------------------------------------------------------

    async def _portforward(self, stream: Stream, pod: dict[str, Any],
                           h: dict[str, Any]) -> None:
        port = _opt_int(h.get("port"))
        if port is None or not 0 < port < 65536:
            raise StreamError(400, f"invalid port {h.get('port')!r}")
        try:
            meta = pod["metadata"]
            address = self.agent.pod_address(meta.get("namespace", ""), meta["name"])
            reader, writer = await asyncio.open_connection(address, port)
        except OSError as e:
            raise StreamError(500, f"error forwarding port {port} to pod {h.get('pod')}: {e}",
                              "InternalError") from e
        await stream.send(orjson.dumps({"code": 200}))

        async def out() -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(CHUNK):
                    await stream.send(chunk)

        async def into() -> None:
            while (data := await stream.recv()) is not None:
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()
            await asyncio.Event().wait()  # the pod's side decides when the connection ends

        try:
            await _until_first(out(), into())
        finally:
            writer.close()


def _opt_int(v: Any) -> int | None:
    return None if v is None or v == "" else int(v)


async def _drain_input(stream: Stream) -> None:
    """Wait until the other side ends the stream (anything it sends meanwhile is ignored)."""
    while await stream.recv() is not None:
        pass


async def _until_first(*coros: Any) -> None:
    """Run the coroutines until the first one returns or raises; cancel the rest."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        t.result()


def resize_tty(fd: int, data: bytes) -> None:
    """Apply a resize message (``{"Width": …, "Height": …}``) to a pty."""
    with contextlib.suppress(ValueError, OSError, orjson.JSONDecodeError):
        size = orjson.loads(data)
        fcntl.ioctl(fd, termios.TIOCSWINSZ,
                    struct.pack("HHHH", int(size.get("Height", 24)), int(size.get("Width", 80)),
                                0, 0))


async def _pump_session(stream: Stream, session: ExecSession) -> None:
    """Copy an exec session to and from the stream; the exit status is the last message."""
    proc = session.process
    master = session.pty_master
    loop = asyncio.get_running_loop()

    async def copy_out(reader: asyncio.StreamReader | None, channel: int) -> None:
        if reader is None:
            return
        while chunk := await reader.read(CHUNK):
            await stream.send(bytes([channel]) + chunk)

    async def copy_pty() -> None:
        assert master is not None
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, CHUNK)
            except OSError:
                data = b""  # EIO: every holder of the terminal is gone
            if not data:
                loop.remove_reader(master)
            queue.put_nowait(data)

        loop.add_reader(master, readable)
        while data := await queue.get():
            await stream.send(bytes([STDOUT]) + data)

    async def copy_in() -> None:
        while (msg := await stream.recv()) is not None:
            if not msg:
                continue
            channel, data = msg[0], msg[1:]
            if channel == STDIN and data:
                if master is not None:
                    os.write(master, data)
                elif proc.stdin is not None:
                    proc.stdin.write(data)
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        await proc.stdin.drain()
            elif channel == RESIZE and master is not None:
                resize_tty(master, data)
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                if master is not None:
                    os.write(master, b"\x04")
                elif proc.stdin is not None:
                    proc.stdin.close()
        # The API side ended its half: its client went away.
        raise ConnectionResetError("the client went away")

    async def copy_all() -> None:
        if master is not None:
            await copy_pty()
        else:
            await asyncio.gather(copy_out(proc.stdout, STDOUT), copy_out(proc.stderr, STDERR))

    reader = asyncio.ensure_future(copy_in())
    out_task = asyncio.ensure_future(copy_all())
    try:
        done, _ = await asyncio.wait({out_task, reader}, return_when=asyncio.FIRST_COMPLETED)
        if out_task not in done:  # the client went away (or the stream broke): stop the command
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            out_task.cancel()
        rc = await proc.wait()
        code = 128 - rc if rc < 0 else rc
        if out_task in done and out_task.exception() is None:
            await stream.send(bytes([ERROR]) + exec_status(code))
    finally:
        reader.cancel()
        out_task.cancel()
        await asyncio.gather(reader, out_task, return_exceptions=True)
        if master is not None:
            with contextlib.suppress(OSError):
                loop.remove_reader(master)
                os.close(master)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
