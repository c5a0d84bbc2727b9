"""pods/log, pods/exec and pods/portforward for pods on other nodes: proxied over the peer link.

The API node opens a stream (:mod:`shoal.mesh.streams`) to the pod's node by name,
over whichever connection to it is open (an edge node behind NAT dialled us, and its
streams come back over that connection), and relays: log bytes to the HTTP response,
WebSocket messages of the remote command protocol both ways. The node's first answer
is a verdict (:mod:`shoal.node.stream_service`): refusals become the same Status
responses a local pod gets. A node that cannot be reached, or does not answer within
``VERDICT_TIMEOUT``, is a 503 ServiceUnavailable, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson

from shoal.api import spdy_portforward, web
from shoal.api.errors import ApiError
from shoal.api.pod_streams import _bool, _container, _int, _ports, client_frame
from shoal.api.routing import Target
from shoal.api.web import WSMsgType
from shoal.mesh.streams import Stream, StreamMux, StreamReset
from shoal.mesh.transport import TransportError
from shoal.node.stream_service import ERROR

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
CONNECT_TIMEOUT = 3.0
"""Seconds to find or open a connection to the pod's node."""
VERDICT_TIMEOUT = 5.0
"""Seconds the pod's node has to accept or refuse the stream."""


class PodProxy:
    """Opens streams to pods' nodes; ``addresses`` gives node name → peer address."""

    def __init__(self, mux: StreamMux, addresses: Callable[[], dict[str, str]]) -> None:
        self.mux = mux
        self.addresses = addresses

    async def serve(self, request: web.Request, t: Target, pod: dict[str, Any],
                    node: str) -> web.StreamResponse:
        """pods/{log,exec,portforward} of ``pod``, which runs on ``node`` (not this one)."""
        meta = pod["metadata"]
        base: dict[str, Any] = {"op": t.subresource, "namespace": meta.get("namespace", ""),
                                "pod": meta["name"], "uid": meta.get("uid")}
        if t.subresource == "log":
            if request.method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested "
                                    "resource")
            return await self.logs(request, node, {
                **base, "container": _container(request, pod), "follow": _bool(request, "follow"),
                "previous": _bool(request, "previous"), "tailLines": _int(request, "tailLines"),
                "sinceSeconds": _int(request, "sinceSeconds"),
                "sinceTime": request.query.get("sinceTime") or None,
                "timestamps": _bool(request, "timestamps"),
                "limitBytes": _int(request, "limitBytes")})
        if t.subresource == "exec":
            container = _container(request, pod)
            if request.headers.get("Upgrade", "").lower() != "websocket":
                # kubectl retries a failed WebSocket upgrade with SPDY: say why the first failed.
                await self.reachable(node, f"pods/exec: pod {meta['name']}")
                raise ApiError(400, "only the WebSocket streaming protocols (v5.channel.k8s.io, "
                                    "v4.channel.k8s.io) are served; upgrade kubectl to 1.30 or "
                                    "later", "BadRequest")
            argv = request.query.getall("command", [])
            if not argv:
                raise ApiError(400, "you must specify at least 1 command", "BadRequest")
            return await self.exec(request, node, {
                **base, "container": container, "command": list(argv),
                "stdin": _bool(request, "stdin"), "tty": _bool(request, "tty")})
        if t.subresource == "attach":  # relayed like exec: the same channel protocol
            if request.headers.get("Upgrade", "").lower() != "websocket":
                await self.reachable(node, f"pods/attach: pod {meta['name']}")
                raise ApiError(400, "only the WebSocket streaming protocols (v5.channel.k8s.io, "
                                    "v4.channel.k8s.io) are served; upgrade kubectl to 1.30 or "
                                    "later", "BadRequest")
            return await self.exec(request, node, {
                **base, "container": _container(request, pod), "stdin": _bool(request, "stdin")})
        if t.subresource == "portforward":
            if spdy_portforward.offered(request):  # kubectl port-forward
                ws = web.WebSocketResponse(protocols=(spdy_portforward.PROTOCOL,),
                                           max_msg_size=0)
                await ws.prepare(request)

                async def connect(port: int) -> spdy_portforward.Duplex:
                    return StreamDuplex(await self.open(node, {**base, "port": port}))

                await spdy_portforward.serve(ws, connect)
                return ws
            ports = _ports(request)
            if request.headers.get("Upgrade", "").lower() != "websocket":
                raise ApiError(400, "port-forward is served over WebSocket (v4.channel.k8s.io) "
                                    "only; kubectl's SPDY port-forward is not supported yet",
                               "BadRequest")
            return await self.portforward(request, node, base, ports)
        raise ApiError(501, f"pods/{t.subresource} for pods on other nodes is not served yet",
                       "NotImplemented")

    async def reachable(self, node: str, what: str) -> None:
        try:
            await self.mux.transport.link_to(node, self.addresses().get(node), CONNECT_TIMEOUT)
        except TransportError as e:
            raise _unreachable(f'{what} runs on node "{node}"', e) from e

    async def open(self, node: str, header: dict[str, Any]) -> Stream:
        """A stream the pod's node accepted, or the ApiError to answer with."""
        what = f'pods/{header.get("op")}: pod {header.get("pod")} runs on node "{node}"'
        try:
            stream = await self.mux.open(node, self.addresses().get(node), header,
                                         CONNECT_TIMEOUT)
        except TransportError as e:
            raise _unreachable(what, e) from e
        try:
            async with asyncio.timeout(VERDICT_TIMEOUT):
                first = await stream.recv()
        except TimeoutError:
            stream.reset("no verdict in time")
            raise ApiError(503, f"{what}: the node did not answer within {VERDICT_TIMEOUT:g}s",
                           "ServiceUnavailable") from None
        except StreamReset as e:
            raise ApiError(503, f"{what}: {e}", "ServiceUnavailable") from e
        verdict = _verdict(first)
        code = int(verdict.get("code") or 500)
        if code != 200:
            stream.reset()
            raise ApiError(code, str(verdict.get("message") or "refused by the pod's node"),
                           str(verdict.get("reason") or "InternalError"))
        return stream

    async def logs(self, request: web.Request, node: str,
                   header: dict[str, Any]) -> web.StreamResponse:
        stream = await self.open(node, header)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        try:
            await resp.prepare(request)
            while (chunk := await stream.recv()) is not None:
                await resp.write(chunk)
            await resp.write_eof()
        except (ConnectionResetError, StreamReset):
            pass  # the client went away, or the node did: the response just ends
        finally:
            stream.reset()
        return resp

    async def exec(self, request: web.Request, node: str,
                   header: dict[str, Any]) -> web.StreamResponse:
        # Open first, so that a refusal or an unreachable node is an HTTP status, not a
        # WebSocket that closes without a word.
        stream = await self.open(node, header)
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0, autoping=True)
        try:
            await ws.prepare(request)
        except BaseException:
            stream.reset()
            raise

        async def from_node() -> None:
            try:
                while (msg := await stream.recv()) is not None:
                    await ws.send_bytes(msg)
            except StreamReset as e:
                with contextlib.suppress(ConnectionResetError):
                    await ws.send_bytes(bytes([ERROR]) + orjson.dumps({
                        "metadata": {}, "status": "Failure", "reason": "ServiceUnavailable",
                        "message": f'the connection to node "{node}" was lost: {e}'}))

        async def to_node() -> None:
            async for msg in ws:
                frame = client_frame(msg)  # text frames too (the Python client's stdin)
                if frame:
                    await stream.send(frame)

        await _relay(from_node(), to_node(), ws, stream)
        return ws

    async def portforward(self, request: web.Request, node: str, header: dict[str, Any],
                          ports: list[int]) -> web.StreamResponse:
        """The WebSocket channel protocol: port i has data channel 2i and error channel 2i+1."""
        ws = web.WebSocketResponse(protocols=(*PROTOCOLS, "portforward.k8s.io"), max_msg_size=0)
        await ws.prepare(request)
        streams: dict[int, Stream] = {}
        tasks: list[asyncio.Task[None]] = []

        async def send(channel: int, data: bytes) -> None:
            if not ws.closed:
                with contextlib.suppress(ConnectionResetError):
                    await ws.send_bytes(bytes([channel]) + data)

        async def copy_out(i: int, stream: Stream) -> None:
            with contextlib.suppress(StreamReset, ConnectionResetError):
                while (chunk := await stream.recv()) is not None:
                    await send(2 * i, chunk)
            streams.pop(i, None)
            stream.reset()
            if not streams:
                await ws.close()

        for i, port in enumerate(ports):
            header_bytes = port.to_bytes(2, "little")
            await send(2 * i, header_bytes)
            await send(2 * i + 1, header_bytes)
            try:
                stream = await self.open(node, {**header, "port": port})
            except ApiError as e:
                await send(2 * i + 1, e.message.encode())
                continue
            streams[i] = stream
            tasks.append(asyncio.ensure_future(copy_out(i, stream)))
        if not streams:
            await ws.close()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                target = streams.get(channel // 2)
                if channel % 2 == 0 and target is not None and data:
                    with contextlib.suppress(StreamReset):
                        await target.send(data)
        finally:
            for t in tasks:
                t.cancel()
            for s in streams.values():
                s.reset()
            await ws.close()
        return ws


class StreamDuplex:
    """A forwarded connection that is a stream to the pod's node."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def recv(self) -> bytes | None:
        return await self.stream.recv()

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def end(self) -> None:
        await self.stream.end()

    def close(self) -> None:
        self.stream.reset()


def _unreachable(what: str, e: Exception) -> ApiError:
    return ApiError(503, f"{what}, which is unreachable from this node: {e}",
                    "ServiceUnavailable")


def _verdict(first: bytes | None) -> dict[str, Any]:
    if first is None:
        return {"code": 500, "message": "the pod's node ended the stream without a verdict"}
    try:
        v = orjson.loads(first)
    except orjson.JSONDecodeError:
        v = None
    return v if isinstance(v, dict) else {"code": 500, "message": "a garbled verdict"}


async def _relay(from_node: Any, to_node: Any, ws: web.WebSocketResponse,
                 stream: Stream) -> None:
    """Relay until the node ends the session (then close the WebSocket) or the client goes."""
    node_task = asyncio.ensure_future(from_node)
    client_task = asyncio.ensure_future(to_node)
    try:
        await asyncio.wait({node_task, client_task}, return_when=asyncio.FIRST_COMPLETED)
        if client_task.done() and not node_task.done():
            # The client closed its WebSocket: ending our half makes the node stop the command.
            await stream.end()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(node_task), 2.0)
    finally:
        client_task.cancel()
        node_task.cancel()
        await asyncio.gather(node_task, client_task, return_exceptions=True)
        stream.reset()
        await ws.close()
