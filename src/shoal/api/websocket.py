"""The server side of WebSocket (RFC 6455) for Shoal's own HTTP server, with the names
of ``aiohttp``'s (``WebSocketResponse``, ``WSMsgType``, ``WSMessage``): the handshake
with subprotocol choice, masked client frames, fragments, ping/pong and the close
handshake. No extensions (kubectl and the Python client ask for none)."""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, NamedTuple

from shoal.api.http_messages import (
    HTTPBadRequest,
    HTTPMethodNotAllowed,
    Request,
    StreamResponse,
)
from shoal.api.http_protocol import HttpProtocol

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BUFFERED_HIGH = 1024 * 1024
"""Bytes of received messages held before reading from the client pauses."""


class WSMsgType(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    PING = 0x9
    PONG = 0xA
    CLOSE = 0x8
    CLOSING = 0x100
    CLOSED = 0x101
    ERROR = 0x102


class WSMessage(NamedTuple):
    type: WSMsgType
    data: Any
    extra: Any


CLOSED_MESSAGE = WSMessage(WSMsgType.CLOSED, None, None)
CLOSING_MESSAGE = WSMessage(WSMsgType.CLOSING, None, None)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def unmask(mask: bytes, payload: bytes) -> bytes:
    """XOR the payload with the 4-byte mask, a machine word at a time (big ints)."""
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """A server frame (final, unmasked)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class WebSocketResponse(StreamResponse):
    def __init__(self, *, protocols: Iterable[str] = (), max_msg_size: int = 4 * 1024 * 1024,
                 autoping: bool = True, autoclose: bool = True, timeout: float = 10.0,
                 **_: Any) -> None:
        super().__init__(status=101)
        self._protocols = tuple(protocols)
        self._max_msg_size = max_msg_size
        self._autoping = autoping
        self._autoclose = autoclose
        self._close_timeout = timeout
        self.ws_protocol: str | None = None
        self._conn: HttpProtocol | None = None
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_type = 0
        self._queue: deque[WSMessage] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False  # we sent a close frame (or the connection is gone)
        self._peer_closed: asyncio.Event = asyncio.Event()
        self._lost = False
        self.close_code: int | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the handshake -------------------------------------------------------------------

    async def prepare(self, request: Request) -> None:
        if self._prepared:
            return
        if request.method != "GET":
            raise HTTPMethodNotAllowed()
        headers = request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            raise HTTPBadRequest(text="No WebSocket UPGRADE hdr: {}".format(
                headers.get("Upgrade")))
        if "upgrade" not in (t.strip() for t in headers.get("Connection", "").lower().split(",")):
            raise HTTPBadRequest(text="No CONNECTION upgrade hdr")
        if headers.get("Sec-WebSocket-Version", "") != "13":
            raise HTTPBadRequest(text="Unsupported version: {}".format(
                headers.get("Sec-WebSocket-Version")))
        key = headers.get("Sec-WebSocket-Key", "")
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                raise ValueError(key)
        except ValueError:
            raise HTTPBadRequest(text=f"Handshake error: {key!r}") from None
        offered = [p.strip() for v in headers.getall("Sec-WebSocket-Protocol", [])
                   for p in v.split(",") if p.strip()]
        self.ws_protocol = next((p for p in offered if p in self._protocols), None)
        conn = request._protocol
        if conn is None:
            raise RuntimeError("the request has no connection")
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
                 "Connection: upgrade", f"Sec-WebSocket-Accept: {accept_key(key)}"]
        if self.ws_protocol:
            lines.append(f"Sec-WebSocket-Protocol: {self.ws_protocol}")
        self._prepared = True
        self._eof_sent = True
        self._conn = conn
        self._protocol = conn
        request.response = self
        conn.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        conn.upgrade(self._feed, self._connection_lost)

    # -- receiving -----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._buf += data
        try:
            while self._parse_one():
                pass
        except ProtocolError as e:
            self._buf.clear()
            self._deliver(WSMessage(WSMsgType.CLOSE, e.code, str(e)))
            self._send_close_frame(e.code, str(e).encode()[:120])
            if self._conn is not None:
                self._conn.close()

    def _parse_one(self) -> bool:
        buf = self._buf
        if len(buf) < 2:
            return False
        b0, b1 = buf[0], buf[1]
        fin, opcode, length = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
        if b0 & 0x70:
            raise ProtocolError(1002, "reserved bits set (no extension was agreed)")
        if not b1 & 0x80:
            raise ProtocolError(1002, "a client frame is not masked")
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return False
            (length,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return False
            (length,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if opcode >= 0x8 and (not fin or length > 125):
            raise ProtocolError(1002, "a control frame is fragmented or too long")
        if opcode not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA):
            raise ProtocolError(1002, f"unknown opcode {opcode}")
        size = sum(len(f) for f in self._fragments) + length
        if self._max_msg_size and size > self._max_msg_size and opcode < 0x8:
            raise ProtocolError(1009, f"message size {size} exceeds {self._max_msg_size}")
        if len(buf) < pos + 4 + length:
            return False
        mask = bytes(buf[pos:pos + 4])
        payload = unmask(mask, bytes(buf[pos + 4:pos + 4 + length]))
        del buf[:pos + 4 + length]
        self._frame(bool(fin), opcode, payload)
        return True

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:
            if self._autoping and not self._closed:
                self._send_raw(frame(0xA, payload))
            else:
                self._deliver(WSMessage(WSMsgType.PING, payload, None))
            return
        if opcode == 0xA:
            if not self._autoping:
                self._deliver(WSMessage(WSMsgType.PONG, payload, None))
            return
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_code = code
            self._peer_closed.set()
            self._deliver(WSMessage(WSMsgType.CLOSE, code,
                                    payload[2:].decode("utf-8", "replace")))
            return
        if opcode == 0x0:
            if not self._fragment_type:
                raise ProtocolError(1002, "a continuation frame with nothing to continue")
        else:
            if self._fragment_type:
                raise ProtocolError(1002, "a new message inside a fragmented one")
            self._fragment_type = opcode
        self._fragments.append(payload)
        if not fin:
            return
        data = b"".join(self._fragments)
        kind, self._fragment_type, self._fragments = self._fragment_type, 0, []
        if kind == 0x1:
            try:
                self._deliver(WSMessage(WSMsgType.TEXT, data.decode("utf-8"), None))
            except UnicodeDecodeError:
                raise ProtocolError(1007, "a text message is not valid UTF-8") from None
        else:
            self._deliver(WSMessage(WSMsgType.BINARY, data, None))

    def _deliver(self, msg: WSMessage) -> None:
        self._queue.append(msg)
        if isinstance(msg.data, (bytes, str)):
            self._queued += len(msg.data)
            if self._queued > BUFFERED_HIGH and self._conn is not None:
                self._conn.pause_body()
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _connection_lost(self) -> None:
        self._lost = True
        self._closed = True
        self._peer_closed.set()
        self._wake()

    async def receive(self, timeout: float | None = None) -> WSMessage:
        while not self._queue:
            if self._lost:
                return CLOSED_MESSAGE
            if self._closed:
                return CLOSING_MESSAGE
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            finally:
                self._waiter = None
        msg = self._queue.popleft()
        if isinstance(msg.data, (bytes, str)):
            self._queued -= len(msg.data)
            if self._queued < BUFFERED_HIGH // 4 and self._conn is not None:
                self._conn.resume_body()
        if msg.type == WSMsgType.CLOSE and self._autoclose and not self._closed:
            await self.close()
        return msg

    def __aiter__(self) -> AsyncIterator[WSMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[WSMessage]:
        while True:
            msg = await self.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            yield msg

    # -- sending -------------------------------------------------------------------------

    def _send_raw(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("send before prepare()")
        if self._closed:
            raise ConnectionResetError("Cannot write to closing transport")
        conn.send(data)

    async def _send(self, data: bytes) -> None:
        self._send_raw(data)
        assert self._conn is not None
        await self._conn.drain()

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        await self._send(frame(0x2, bytes(data)))

    async def send_str(self, data: str) -> None:
        await self._send(frame(0x1, data.encode()))

    async def ping(self, message: bytes = b"") -> None:
        await self._send(frame(0x9, message))

    def _send_close_frame(self, code: int, message: bytes) -> None:
        if not self._closed and self._conn is not None and not self._conn.closed:
            self._conn.send(frame(0x8, struct.pack("!H", code) + message))
        self._closed = True
        self._wake()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send a close frame, wait (``timeout``) for the client's, then close the
        connection. False if it was closed already."""
        if self._closed:
            return False
        self._send_close_frame(code, message)
        if not self._peer_closed.is_set():
            # The client's close frame is read by _feed, whoever is in receive().
            try:
                async with asyncio.timeout(self._close_timeout):
                    await self._peer_closed.wait()
            except TimeoutError:
                pass
        if self._conn is not None:
            self._conn.close()
        return True

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("a WebSocket is written with send_bytes or send_str")

    async def write_eof(self, data: bytes = b"") -> None:
        return None
