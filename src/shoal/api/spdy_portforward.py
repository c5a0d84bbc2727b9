"""``kubectl port-forward``: SPDY/3.1 tunnelled over a WebSocket (kubectl 1.31 and later).

kubectl offers the WebSocket subprotocol ``SPDY/3.1+portforward.k8s.io`` and then
speaks plain SPDY/3.1 inside binary messages, as one byte stream. For each local
connection it opens two SPDY streams sharing a ``requestid`` header: ``streamtype:
error`` (we write a message there if the pod's port cannot be reached, then close it)
and ``streamtype: data`` with the ``port`` (the connection's bytes, both ways). The
server answers every SYN_STREAM with a SYN_REPLY, echoes PINGs and grants window
as it consumes data. Where the bytes go is the caller's: a local TCP connection for
a pod on this node, a stream over the peer link for a pod elsewhere.

Only what kubectl uses is implemented: no server-initiated streams, no SETTINGS.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from shoal.api import web
from shoal.api.web import WSMsgType

PROTOCOL = "SPDY/3.1+portforward.k8s.io"

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FLAG_FIN = 0x01
RST_CANCEL = 5
CHUNK = 32 * 1024

# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed
# header names and values, then a run of common text.
_NAMES = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status"
)
_WORDS = [*_NAMES.split(), "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
          "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504"
    "505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, "
    "Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack("!I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


def offered(request: web.Request) -> bool:
    """Whether the client asks for kubectl's SPDY-over-WebSocket port-forward."""
    offers = request.headers.get("Sec-WebSocket-Protocol", "")
    return PROTOCOL in (p.strip() for p in offers.split(","))


class Duplex(Protocol):
    """One forwarded connection to the pod's port."""

    async def recv(self) -> bytes | None:
        """Bytes from the pod, or None at its end of stream."""
        ...

    async def send(self, data: bytes) -> None: ...
    async def end(self) -> None:
        """No more bytes to the pod (the client half-closed)."""
        ...

    def close(self) -> None: ...


Connect = Callable[[int], Awaitable[Duplex]]
"""Opens a connection to the pod's port; raises OSError (or another Exception) with why not."""


class SpdyError(Exception):
    pass


class _Session:
    def __init__(self, ws: web.WebSocketResponse, connect: Connect) -> None:
        self.ws = ws
        self.connect = connect
        self.buf = bytearray()
        self.deflate = zlib.compressobj(zdict=DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.headers: dict[int, dict[str, str]] = {}
        self.error_streams: dict[str, int] = {}  # requestid -> stream id
        self.inbound: dict[int, asyncio.Queue[bytes | None]] = {}  # data stream id -> client bytes
        self.tasks: set[asyncio.Task[None]] = set()
        self.write_lock = asyncio.Lock()

    # -- writing -------------------------------------------------------------------

    async def _write(self, frame: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_bytes(frame)

    async def control(self, ftype: int, flags: int, body: bytes) -> None:
        await self._write(struct.pack("!HHI", 0x8003, ftype, (flags << 24) | len(body)) + body)

    async def data(self, sid: int, payload: bytes, fin: bool = False) -> None:
        flags = FLAG_FIN if fin else 0
        await self._write(struct.pack("!II", sid, (flags << 24) | len(payload)) + payload)

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k.encode() + struct.pack("!I", len(v)) + v.encode()
            for k, v in headers.items())
        # Header blocks share one compression context per direction: the lock keeps order.
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    async def reply(self, sid: int, fin: bool = False) -> None:
        async with self.write_lock:
            await self.control(SYN_REPLY, FLAG_FIN if fin else 0,
                               struct.pack("!I", sid) + self._header_block({}))

    # -- reading -------------------------------------------------------------------

    def _parse_headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        (n,), pos, out = struct.unpack_from("!I", raw), 4, {}
        for _ in range(n):
            (klen,) = struct.unpack_from("!I", raw, pos)
            key = raw[pos + 4:pos + 4 + klen].decode()
            pos += 4 + klen
            (vlen,) = struct.unpack_from("!I", raw, pos)
            out[key.lower()] = raw[pos + 4:pos + 4 + vlen].decode().split("\0")[0]
            pos += 4 + vlen
        return out

    async def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while len(self.buf) >= 8:
            (length,) = struct.unpack_from("!I", self.buf, 4)
            flags, length = length >> 24, length & 0xFFFFFF
            if len(self.buf) < 8 + length:
                return
            head, body = bytes(self.buf[:8]), bytes(self.buf[8:8 + length])
            del self.buf[:8 + length]
            if head[0] & 0x80:
                _, ftype = struct.unpack_from("!HH", head)
                await self.on_control(ftype, flags, body)
            else:
                (sid,) = struct.unpack_from("!I", head)
                await self.on_data(sid & 0x7FFFFFFF, flags, body)

    async def on_control(self, ftype: int, flags: int, body: bytes) -> None:
        if ftype == SYN_STREAM:
            (sid,) = struct.unpack_from("!I", body)
            sid &= 0x7FFFFFFF
            headers = self._parse_headers(body[10:])
            self.headers[sid] = headers
            await self.reply(sid)
            rid = headers.get("requestid", "")
            if headers.get("streamtype") == "error":
                self.error_streams[rid] = sid
            elif headers.get("streamtype") == "data":
                queue: asyncio.Queue[bytes | None] = asyncio.Queue()
                self.inbound[sid] = queue
                if flags & FLAG_FIN:
                    queue.put_nowait(None)
                self._spawn(self.forward(sid, rid, headers.get("port", ""), queue))
        elif ftype == PING:
            await self.control(PING, 0, body)
        elif ftype == RST_STREAM:
            (sid,) = struct.unpack_from("!I", body)
            queue_ = self.inbound.pop(sid & 0x7FFFFFFF, None)
            if queue_ is not None:
                queue_.put_nowait(None)
        elif ftype == GOAWAY:
            raise SpdyError("the client said goodbye")
        # SETTINGS, HEADERS, WINDOW_UPDATE: nothing kubectl needs from us.

    async def on_data(self, sid: int, flags: int, body: bytes) -> None:
        queue = self.inbound.get(sid)
        if queue is not None:
            if body:
                queue.put_nowait(body)
                # Grant back what arrived, so a client that keeps a send window never stalls.
                await self.control(WINDOW_UPDATE, 0, struct.pack("!II", sid, len(body)))
            if flags & FLAG_FIN:
                queue.put_nowait(None)

    # -- one forwarded connection ----------------------------------------------------

    async def forward(self, sid: int, rid: str, port_text: str,
                      inbound: asyncio.Queue[bytes | None]) -> None:
        err_sid = self.error_streams.pop(rid, None)
        try:
            port = int(port_text)
            conn = await self.connect(port)
        except Exception as e:  # unreachable port, refused by the pod's node...
            if err_sid is not None:
                await self.data(err_sid, f"error forwarding port {port_text}: {e}".encode(),
                                fin=True)
            await self.data(sid, b"", fin=True)
            return

        async def to_pod() -> None:
            while (chunk := await inbound.get()) is not None:
                await conn.send(chunk)
            await conn.end()

        async def from_pod() -> None:
            while (chunk := await conn.recv()) is not None:
                for i in range(0, len(chunk), CHUNK):
                    await self.data(sid, chunk[i:i + CHUNK])
            await self.data(sid, b"", fin=True)

        up = asyncio.ensure_future(to_pod())
        try:
            await from_pod()
        except Exception as e:
            if err_sid is not None:
                await self.data(err_sid, f"error forwarding port {port}: {e}".encode())
        finally:
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)
            conn.close()
            self.inbound.pop(sid, None)
            if err_sid is not None:  # kubectl waits for the error stream to end
                await self.data(err_sid, b"", fin=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def serve(ws: web.WebSocketResponse, connect: Connect) -> None:
    """Serve one ``kubectl port-forward`` session on a prepared WebSocket."""
    session = _Session(ws, connect)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await session.feed(msg.data)
    except (SpdyError, struct.error, zlib.error, UnicodeDecodeError):
        pass  # a broken or finished session: close it
    finally:
        for t in list(session.tasks):
            t.cancel()
        await asyncio.gather(*session.tasks, return_exceptions=True)
        await ws.close()


class TcpDuplex:
    """A forwarded connection to a port of the pod (its address, or the host's)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> TcpDuplex:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def recv(self) -> bytes | None:
        try:
            return await self.reader.read(CHUNK) or None
        except ConnectionError:
            return None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def end(self) -> None:
        with contextlib.suppress(OSError):
            self.writer.write_eof()

    def close(self) -> None:
        self.writer.close()
