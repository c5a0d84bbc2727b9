"""pods/log, pods/exec and pods/attach for pods that run on this node.

``log`` streams the container's log file (kubectl's -f, --previous, --tail, --since,
--since-time, --timestamps, --limit-bytes). ``exec`` speaks the WebSocket remote
command protocol that current kubectl uses (``v5.channel.k8s.io``, and
``v4.channel.k8s.io``): every binary message starts with a channel byte, 0 stdin,
1 stdout, 2 stderr, 3 the final Status, 4 terminal resize, and in v5 255 closes the
channel named by the next byte. Pods on other nodes are proxied to the pod's node over
the peer link (:mod:`shoal.api.pod_proxy`). SPDY is not served: kubectl only falls back to it
when the WebSocket upgrade is refused.

``portforward`` serves the WebSocket channel protocol (the ``kubernetes`` Python
client's): with ``?ports=P1,P2``, port i has data channel 2i and error channel
2i+1, each opened with the port number (2 bytes, little-endian). kubectl speaks
SPDY for port-forward, tunnelled over WebSocket since 1.31: that is served by
:mod:`shoal.api.spdy_portforward`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from shoal.api import request_options, spdy_portforward, web
from shoal.api.errors import ApiError
from shoal.api.routing import Target
from shoal.api.web import WSMessage, WSMsgType
from shoal.node.agent import NodeAgent
from shoal.node.attach import run_attach
from shoal.node.logs import LogOptions, log_file, read_logs
from shoal.node.pod_worker import waiting_to_start
from shoal.node.runtime import ContainerHandle, ExecSession
from shoal.node.stream_service import exec_status, resize_tty
from shoal.store.objects import ObjectStore

if TYPE_CHECKING:  # pod_proxy imports this module's request helpers
    from shoal.api.pod_proxy import PodProxy

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
SINCE_EPOCH_MAX = 4_000_000_000
"""sinceSeconds beyond this (more than the seconds since 1970, until 2096) means the whole log."""
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


async def serve(request: web.Request, t: Target, store: ObjectStore,
                agent: NodeAgent | None, proxy: PodProxy | None = None) -> web.StreamResponse:
    assert t.name is not None
    pod = store.get(t.kind, t.namespace, t.name)
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise ApiError(400, f"pod {t.name} does not have a host assigned", "BadRequest")
    if (agent is None or node != agent.node_name) and proxy is not None:
        return await proxy.serve(request, t, pod, node)  # over the peer link to the pod's node
    if agent is None or node != agent.node_name:
        raise ApiError(501, f'pod {t.name} runs on node "{node}": pods/{t.subresource} for pods '
                            "on other nodes is not served yet (it will be proxied over the peer "
                            "link)", "NotImplemented")
    if t.subresource == "log":
        if request.method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        return await _logs(request, pod, agent)
    if t.subresource in ("exec", "attach"):
        return await _exec(request, pod, agent, attach=t.subresource == "attach")
    if t.subresource == "portforward":
        return await _portforward(request, pod, agent)
    raise ApiError(501, f"pods/{t.subresource} is not served yet by this node", "NotImplemented")


def _container(request: web.Request, pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    all_names = names + [c.get("name") for key in ("initContainers", "ephemeralContainers")
                         for c in spec.get(key) or []]
    name = request.query.get("container")
    pod_name = pod["metadata"]["name"]
    if name:
        if name not in all_names:
            raise ApiError(400, f"container {name} is not valid for pod {pod_name}", "BadRequest")
        return name
    if len(names) == 1:
        return str(names[0])
    raise ApiError(400, f"a container name must be specified for pod {pod_name}, choose one of: "
                        f"[{' '.join(str(n) for n in names)}]", "BadRequest")


def _int(request: web.Request, key: str) -> int | None:
    """An int64 query parameter, as the apiserver parses it (a 400 otherwise)."""
    return request_options.int_param(request, key)


def _bool(request: web.Request, key: str) -> bool:
    return request.query.get(key, "").lower() in ("true", "1")


# -- logs ------------------------------------------------------------------------

async def _logs(request: web.Request, pod: dict[str, Any], agent: NodeAgent) -> web.StreamResponse:
    container = _container(request, pod)
    since = _int(request, "sinceSeconds")
    opts = LogOptions(
        follow=_bool(request, "follow"), previous=_bool(request, "previous"),
        tail_lines=_int(request, "tailLines"),
        # (any more than the seconds since 1970 is all of the log, not an overflow)
        since_seconds=float(min(since, SINCE_EPOCH_MAX)) if since is not None else None,
        since_time=request.query.get("sinceTime") or None,
        timestamps=_bool(request, "timestamps"), limit_bytes=_int(request, "limitBytes"),
    )
    cdir = agent.container_dir(pod, container)
    path = log_file(cdir, opts.previous)
    pod_name = pod["metadata"]["name"]
    if path is None:
        if opts.previous:
            raise ApiError(400, f'previous terminated container "{container}" in pod "{pod_name}" '
                                "not found", "BadRequest")
        raise ApiError(400, waiting_to_start(pod, container), "BadRequest")
    worker = agent.worker_for(pod["metadata"].get("namespace", ""), pod_name)

    def running() -> bool:
        if opts.previous or worker is None:
            return False
        handle = worker.running_handle(container)
        return handle is not None and handle.config.log_path == path

    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    try:
        async for chunk in read_logs(path, opts, running):
            await resp.write(chunk)
    except (ConnectionResetError, asyncio.CancelledError):
        return resp
    await resp.write_eof()
    return resp


# -- exec ------------------------------------------------------------------------

async def _exec(request: web.Request, pod: dict[str, Any], agent: NodeAgent,
                attach: bool) -> web.StreamResponse:
    container = _container(request, pod)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "only the WebSocket streaming protocols (v5.channel.k8s.io, "
                            "v4.channel.k8s.io) are served; upgrade kubectl to 1.30 or later",
                       "BadRequest")
    if attach:  # the container's own output and stdin (shoal.node.attach)
        return await _attach(request, pod, agent, container)
    argv = request.query.getall("command", [])
    if not argv:
        raise ApiError(400, "you must specify at least 1 command", "BadRequest")
    stdin, tty = _bool(request, "stdin"), _bool(request, "tty")
    handle = _running(pod, agent, container)
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0, autoping=True)
    await ws.prepare(request)
    v5 = ws.ws_protocol == PROTOCOLS[0]
    try:
        session = await agent.runtime.exec(handle, list(argv), stdin=stdin, tty=tty)
    except OSError as e:
        code = 127 if isinstance(e, FileNotFoundError) else 126
        msg = f'exec: "{argv[0]}": {e.strerror or e}'
        await ws.send_bytes(bytes([STDERR]) + msg.encode() + b"\n")
        await ws.send_bytes(bytes([ERROR]) + exec_status(code, msg))
        await ws.close()
        return ws
    await _pump_session(ws, session, v5)
    return ws


def _running(pod: dict[str, Any], agent: NodeAgent, container: str) -> ContainerHandle:
    """The container's running attempt, for exec and attach; else the kubelet's 400."""
    pod_name = pod["metadata"]["name"]
    worker = agent.worker_for(pod["metadata"].get("namespace", ""), pod_name)
    handle = worker.running_handle(container) if worker is not None else None
    if handle is None:
        raise ApiError(400, f"unable to upgrade connection: container {container} not found in "
                            f'pod {pod_name} or not running', "BadRequest")
    return handle


async def _attach(request: web.Request, pod: dict[str, Any], agent: NodeAgent,
                  container: str) -> web.StreamResponse:
    handle = _running(pod, agent, container)
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0, autoping=True)
    await ws.prepare(request)

    async def send(channel: int, data: bytes) -> None:
        if not ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(bytes([channel]) + data)

    async def frames() -> AsyncIterator[bytes]:
        async for msg in ws:
            frame = client_frame(msg)
            if frame:
                yield frame

    await run_attach(handle, send, frames(), _bool(request, "stdin"))
    await ws.close()
    return ws


def client_frame(msg: WSMessage) -> bytes | None:
    """A channel frame from the client: binary, or text as the official Python client's
    ``write_stdin("...")`` sends it (``chr(channel)`` then the text, UTF-8 on the wire)."""
    if msg.type == WSMsgType.BINARY and msg.data:
        return bytes(msg.data)
    if msg.type == WSMsgType.TEXT and msg.data:
        return str(msg.data).encode()
    return None


async def _pump_session(ws: web.WebSocketResponse, session: ExecSession, v5: bool) -> None:
    proc = session.process
    master = session.pty_master
    loop = asyncio.get_running_loop()

    async def send(channel: int, data: bytes) -> None:
        if not ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(bytes([channel]) + data)

    async def copy_out(reader: asyncio.StreamReader | None, channel: int) -> None:
        if reader is None:
            return
        while chunk := await reader.read(65536):
            await send(channel, chunk)

    async def copy_pty() -> None:
        assert master is not None
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""  # EIO: every holder of the terminal is gone
            if not data:
                loop.remove_reader(master)
            queue.put_nowait(data)

        loop.add_reader(master, readable)
        while data := await queue.get():
            await send(STDOUT, data)

    async def copy_in() -> None:
        async for msg in ws:
            frame = client_frame(msg)
            if not frame:
                continue
            channel, data = frame[0], frame[1:]
            if channel == STDIN and data:
                if master is not None:
                    os.write(master, data)
                elif proc.stdin is not None:
                    proc.stdin.write(data)
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        await proc.stdin.drain()
            elif channel == RESIZE and master is not None:
                resize_tty(master, data)
            elif channel == CLOSE and v5 and data[:1] == bytes([STDIN]):
                if master is not None:
                    os.write(master, b"\x04")
                elif proc.stdin is not None:
                    proc.stdin.close()

    async def copy_all() -> None:
        if master is not None:
            await copy_pty()
        else:
            await asyncio.gather(copy_out(proc.stdout, STDOUT), copy_out(proc.stderr, STDERR))

    reader = asyncio.ensure_future(copy_in())
    out_task = asyncio.ensure_future(copy_all())
    done, _ = await asyncio.wait({out_task, reader}, return_when=asyncio.FIRST_COMPLETED)
    if out_task not in done:  # the client went away: stop the command
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        out_task.cancel()
    rc = await proc.wait()
    code = 128 - rc if rc < 0 else rc
    await send(ERROR, exec_status(code))
    reader.cancel()
    if master is not None:
        with contextlib.suppress(OSError):
            loop.remove_reader(master)
            os.close(master)
    await ws.close()


# -- port-forward ----------------------------------------------------------------

def _ports(request: web.Request) -> list[int]:
    ports: list[int] = []
    for value in request.query.getall("ports", []):
        for part in value.split(","):
            if not part.strip().isdigit() or not 0 < int(part) < 65536:
                raise ApiError(400, f"invalid port {part!r}", "BadRequest")
            ports.append(int(part))
    if not ports:
        raise ApiError(400, "query parameter \"ports\" is required", "BadRequest")
    return ports


async def _portforward(request: web.Request, pod: dict[str, Any],
                       agent: NodeAgent) -> web.StreamResponse:
    meta = pod["metadata"]
    address = agent.pod_address(meta.get("namespace", ""), meta["name"])
    if spdy_portforward.offered(request):  # kubectl port-forward: SPDY inside the WebSocket
        ws = web.WebSocketResponse(protocols=(spdy_portforward.PROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        await spdy_portforward.serve(
            ws, lambda port: spdy_portforward.TcpDuplex.open(address, port))
        return ws
    ports = _ports(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "port-forward is served over WebSocket (v4.channel.k8s.io) only; "
                            "kubectl's SPDY port-forward is not supported yet", "BadRequest")
    ws = web.WebSocketResponse(protocols=(*PROTOCOLS, "portforward.k8s.io"), max_msg_size=0)
    await ws.prepare(request)
    writers: dict[int, asyncio.StreamWriter] = {}
    tasks: list[asyncio.Task[None]] = []

    async def send(channel: int, data: bytes) -> None:
        if not ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(bytes([channel]) + data)

    async def copy_out(i: int, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                await send(2 * i, chunk)
        # The pod closed the connection: the channel protocol cannot close one port, so the
        # session ends when every port's connection has.
        w = writers.pop(i, None)
        if w is not None:
            w.close()
        if not writers:
            await ws.close()

    for i, port in enumerate(ports):
        header = port.to_bytes(2, "little")
        await send(2 * i, header)
        await send(2 * i + 1, header)
        try:
            reader, writer = await asyncio.open_connection(address, port)
        except OSError as e:
            await send(2 * i + 1, f"error forwarding port {port} to pod "
                                  f"{pod['metadata']['name']}: {e}".encode())
            continue
        writers[i] = writer
        tasks.append(asyncio.ensure_future(copy_out(i, reader)))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            w = writers.get(channel // 2)
            if channel % 2 == 0 and w is not None and data:
                w.write(data)
                with contextlib.suppress(ConnectionError):
                    await w.drain()
    finally:
        for t in tasks:
            t.cancel()
        for w in writers.values():
            w.close()
        await ws.close()
    return ws
