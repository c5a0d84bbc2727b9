"""Shoal's own HTTP/1.1 server: an ``asyncio.BufferedProtocol`` on the running loop (uvloop's
where the node runs on it), with the runner and site names of ``aiohttp.web``.

One request at a time per connection (pipelined requests wait in the buffer); bodies
by ``Content-Length`` or chunked, streamed to the handler with flow control; keep-alive;
the idle timer closes a connection that waits for a request (idle, or whose headers
trickle in) ``idle_timeout`` after it opened or after its last response, and never
fires while a handler runs. A malformed request gets a 4xx Status and the connection
is closed. A handler whose streamed response is under way is cancelled when the client
goes; an upgraded connection (WebSocket) hands its bytes to :mod:`shoal.api.websocket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from shoal.api.http_messages import (
    EMPTY_BODY,
    REASONS,
    Application,
    BodyStream,
    HTTPBadRequest,
    HTTPException,
    HTTPMethodNotAllowed,
    HTTPNotFound,
    Request,
    Response,
    StreamResponse,
)

log = logging.getLogger("shoal.api.http")

MAX_HEAD = 64 * 1024
"""Request line and headers together (Go's default is 1 MiB; kubectl sends ~1 KiB)."""
MAX_REQUEST_LINE = 16 * 1024
MAX_HEADERS = 256
MAX_CHUNK_LINE = 1024
MAX_TRAILERS = 16 * 1024
PIPELINE_LIMIT = 256 * 1024
"""Bytes of later requests buffered while one is served before reading pauses."""

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^\x00-\x20\x7f]+) HTTP/1\.([01])")
_FIELD = rf"{_TOKEN}:[^\x00-\x08\x0a-\x1f\x7f]*"
_HEADER_FIELDS = re.compile(rf"{_FIELD}(?:\r\n{_FIELD})*")
_VERSIONS = {"0": (1, 0), "1": (1, 1)}
_HEX = re.compile(r"[0-9A-Fa-f]{1,16}")

HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILERS, UPGRADED = range(7)


class BadRequest(Exception):
    """The request cannot be parsed: answered with ``code`` and the connection closed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_bytes(code: int, message: str) -> bytes:
    """A Kubernetes ``Status`` for an answer the protocol gives itself."""
    reason = {400: "BadRequest", 408: "Timeout", 413: "RequestEntityTooLarge",
              414: "RequestURITooLong", 431: "RequestHeaderFieldsTooLarge",
              501: "NotImplemented", 505: "HTTPVersionNotSupported"}.get(code, "BadRequest")
    return orjson.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Failure", "message": message, "reason": reason,
                         "code": code})


def _request_line_error(line: str) -> NoReturn:
    """Why a request line does not parse (the slow path: only for bad input)."""
    if len(line) > MAX_REQUEST_LINE:
        raise BadRequest(414, "the request line is too long")
    parts = line.split(" ")
    if (len(parts) == 3 and re.fullmatch(r"HTTP/\d\.\d", parts[2])
            and parts[2] not in ("HTTP/1.0", "HTTP/1.1")):
        raise BadRequest(505, f"{parts[2]} is not supported")
    raise BadRequest(400, f"a malformed request line: {line[:80]!r}")


def _header_error(fields: str) -> NoReturn:
    for f in fields.split("\r\n"):
        if not re.fullmatch(_FIELD, f):
            raise BadRequest(400, f"a malformed header line: {f[:80]!r}")
    raise BadRequest(400, "malformed header lines")


HEADERS_KEPT_MAX = 4096
"""A connection keeps its last header block for the next request if it is at most this long."""
READ_BUFFER = 64 * 1024
"""Bytes one read of a connection may take (a larger body takes several reads)."""


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class HttpServer:
    """What every connection of one application shares."""

    def __init__(self, app: Application, idle_timeout: float) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.connections: set[HttpProtocol] = set()
        # Every connection reads into this one buffer and copies out what arrived: the loop
        # calls get_buffer and buffer_updated in one callback, one connection at a time.
        # A plain Protocol under uvloop's TLS got a new 256 KiB bytes object per read
        # (SSLObject.read(256 KiB)): above the mmap threshold (api.memory), so an mmap, an
        # mremap and a munmap per request (issue 11).
        self.read_buffer = memoryview(bytearray(READ_BUFFER))
        self._not_found = self._wrap(_not_found)
        self._not_allowed = self._wrap(_not_allowed)
        for route in app.router.routes:
            route.wrapped = self._wrap(route.handler)

    def _wrap(self, handler: Callable[[Request], Awaitable[StreamResponse]]
              ) -> Callable[[Request], Awaitable[StreamResponse]]:
        for mw in reversed(self.app.middlewares):
            handler = functools.partial(mw, handler=handler)
        return handler

    async def dispatch(self, request: Request) -> StreamResponse:
        route, info, path_matched = self.app.router.resolve(request.method, request.match_path)
        if route is None:
            return await (self._not_allowed if path_matched else self._not_found)(request)
        request.match_info = info
        handler: Callable[[Request], Awaitable[StreamResponse]] = route.wrapped
        return await handler(request)

    def protocol(self) -> HttpProtocol:
        return HttpProtocol(self)


async def _not_found(request: Request) -> StreamResponse:
    raise HTTPNotFound()


async def _not_allowed(request: Request) -> StreamResponse:
    raise HTTPMethodNotAllowed()


class HttpProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self._read_buffer = server.read_buffer
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.keep_alive = True
        self._buf = bytearray()
        self._last_fields: str | None = None
        self._last_headers: CIMultiDictProxy[str] = _NO_HEADERS
        self._state = HEAD
        self._remaining = 0
        self._trailer_bytes = 0
        self._body: BodyStream = EMPTY_BODY
        self._request: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_deadline: float | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_paused: set[str] = set()
        self._upgrade_feed: Callable[[bytes], None] | None = None
        self._upgrade_lost: Callable[[], None] | None = None
        self.closed = False

    # -- the connection ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no subclass
        self.server.connections.add(self)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._stop_timer()
        if not self._body.is_eof():
            self._body.set_exception(ConnectionResetError("the client closed the connection"))
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))
        if self._upgrade_lost is not None:
            self._upgrade_lost()
        elif self._task is not None and self._request is not None:
            resp = self._request.response
            if resp is not None and resp.prepared:  # a streamed answer: nobody to read it
                self._task.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closed or t.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        t.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("Cannot write to closing transport")
        if not self._write_paused:
            return
        self._drain_waiter = self.loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def _pause(self, why: str) -> None:
        if not self._read_paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._read_paused.add(why)

    def _resume(self, why: str) -> None:
        if why in self._read_paused:
            self._read_paused.discard(why)
            if not self._read_paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def pause_body(self) -> None:
        self._pause("body")

    def resume_body(self) -> None:
        self._resume("body")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- timers ------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        """The connection waits for a request from now on. One timer handle lives across
        requests (re-armed when it fires early), not one per request."""
        idle = self.server.idle_timeout
        if not idle:
            return
        self._idle_deadline = self.loop.time() + idle
        if self._timer is None:
            self._timer = self.loop.call_at(self._idle_deadline, self._idle)

    def _cancel_timer(self) -> None:
        self._idle_deadline = None

    def _stop_timer(self) -> None:
        self._idle_deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> None:
        self._timer = None
        deadline = self._idle_deadline
        if deadline is None or self._task is not None:
            return  # a request is in progress: re-armed once it is answered
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._idle)
            return
        self.close()

    # -- reading -----------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._upgrade_feed is not None:
            self._upgrade_feed(bytes(self._read_buffer[:nbytes]))
            return
        self._buf += self._read_buffer[:nbytes]
        try:
            self._process()
        except BadRequest as e:
            self._fail(e)

    def data_received(self, data: bytes) -> None:
        if self._upgrade_feed is not None:
            self._upgrade_feed(data)
            return
        self._buf += data
        try:
            self._process()
        except BadRequest as e:
            self._fail(e)

    def _process(self) -> None:
        buf = self._buf
        while buf:
            state = self._state
            if state == HEAD:
                if self._task is not None:  # a pipelined request waits for the one served
                    if len(buf) > PIPELINE_LIMIT:
                        self._pause("pipeline")
                    return
                if not self._start_request():
                    return
            elif state in (BODY, CHUNK_DATA):
                n = min(self._remaining, len(buf))
                self._body.feed(bytes(buf[:n]))
                del buf[:n]
                self._remaining -= n
                if not self._remaining:
                    if state == BODY:
                        self._end_body()
                    else:
                        self._state = CHUNK_CRLF
            elif state == CHUNK_CRLF:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise BadRequest(400, "a chunk of the body does not end with CRLF")
                del buf[:2]
                self._state = CHUNK_SIZE
            elif state == CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_CHUNK_LINE:
                        raise BadRequest(400, "a chunk size line is too long")
                    return
                size = bytes(buf[:end]).split(b";", 1)[0].strip().decode("latin-1")
                del buf[:end + 2]
                if not _HEX.fullmatch(size):
                    raise BadRequest(400, f"invalid chunk size {size[:20]!r}")
                self._remaining = int(size, 16)
                self._state = CHUNK_DATA if self._remaining else TRAILERS
            elif state == TRAILERS:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_TRAILERS:
                        raise BadRequest(400, "the trailers are too long")
                    return
                self._trailer_bytes += end + 2
                if self._trailer_bytes > MAX_TRAILERS:
                    raise BadRequest(400, "the trailers are too long")
                del buf[:end + 2]
                if end == 0:
                    self._end_body()
            else:
                return

    def _end_body(self) -> None:
        self._body.feed_eof()
        self._state = HEAD

    def _start_request(self) -> bool:
        """Parse a request's head from the buffer and start its handler; False: the head
        is not all here yet."""
        buf = self._buf
        while buf.startswith(b"\r\n"):  # RFC 9112: empty lines before a request line are ignored
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise BadRequest(431, "the request's headers are too large")
            line_end = buf.find(b"\r\n")
            if (line_end < 0 and len(buf) > MAX_REQUEST_LINE) or line_end > MAX_REQUEST_LINE:
                raise BadRequest(414, "the request line is too long")
            return False
        if end > MAX_HEAD:
            raise BadRequest(431, "the request's headers are too large")
        head = buf[:end].decode("utf-8", "replace")  # one copy, not two
        del buf[:end + 4]
        self._cancel_timer()
        request = self._parse_head(head)
        self._request = request
        self._task = self.loop.create_task(self._serve(request))
        return True

    def _parse_head(self, head: str) -> Request:
        line, _, fields = head.partition("\r\n")
        m = _REQUEST_LINE.fullmatch(line) if len(line) <= MAX_REQUEST_LINE else None
        if m is None:
            _request_line_error(line)
        method, target, minor = m.groups()
        version = _VERSIONS[minor]
        if target[0] != "/":
            scheme, sep, rest = target.partition("://")
            if not sep or scheme.lower() not in ("http", "https"):
                raise BadRequest(400, f"a malformed request target: {target[:80]!r}")
            slash = rest.find("/")
            target = rest[slash:] if slash >= 0 else "/"
        if fields == self._last_fields:
            # A client sends the same header block on each request of a connection, and a
            # proxy is read-only: the last request's is this one's (issue 11, gets).
            headers = self._last_headers
        else:
            pairs: list[tuple[str, str]] = []
            if fields:
                if fields.count("\n") >= MAX_HEADERS:
                    raise BadRequest(431, f"more than {MAX_HEADERS} headers")
                if not _HEADER_FIELDS.fullmatch(fields):
                    _header_error(fields)
                pairs = [(n, v.strip(" \t")) for n, _, v in
                         (f.partition(":") for f in fields.split("\r\n"))]
            headers = CIMultiDictProxy(CIMultiDict(pairs))
            if len(fields) <= HEADERS_KEPT_MAX:
                self._last_fields, self._last_headers = fields, headers
        conn = headers.get("Connection", "").lower()
        if version == (1, 0):
            self.keep_alive = "keep-alive" in conn
        elif "close" in conn:
            self.keep_alive = False
        body = self._frame_body(headers, version)
        if body is not EMPTY_BODY and headers.get("Expect", "").lower() == "100-continue":
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        return Request(self.server.app, method, target, version, headers, body, self)

    def _frame_body(self, headers: CIMultiDictProxy[str], version: tuple[int, int]
                    ) -> BodyStream:
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            self._body = EMPTY_BODY  # a GET's: no body
            return EMPTY_BODY
        te = headers.getall("Transfer-Encoding", [])
        lengths = headers.getall("Content-Length", [])
        if te:
            codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
            if lengths:
                raise BadRequest(400, "both Transfer-Encoding and Content-Length")
            if version < (1, 1):
                raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
            if codings != ["chunked"]:
                raise BadRequest(501, f"transfer coding {','.join(codings)[:40]!r} is not "
                                      "supported")
            self._body = BodyStream(self)
            self._state = CHUNK_SIZE
            self._trailer_bytes = 0
            return self._body
        if lengths:
            values = {v.strip() for v in lengths}
            if len(values) != 1:
                raise BadRequest(400, "conflicting Content-Length headers")
            value = values.pop()
            if not value.isdigit() or len(value) > 18:
                raise BadRequest(400, f"invalid Content-Length {value[:20]!r}")
            n = int(value)
            if n:
                self._body = BodyStream(self)
                self._state = BODY
                self._remaining = n
                return self._body
        self._body = EMPTY_BODY
        return EMPTY_BODY

    def _fail(self, e: BadRequest) -> None:
        """Answer a request that cannot be parsed, then close (what follows cannot be framed)."""
        self.keep_alive = False
        self._state = UPGRADED  # read nothing more
        if self._task is not None:  # mid-body: the handler's read fails with the reason
            self._body.set_exception(HTTPBadRequest(text=e.message))
            return
        body = status_bytes(e.code, e.message)
        head = (f"HTTP/1.1 {e.code} {REASONS.get(e.code, 'Bad Request')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            self.send(head.encode() + body)
        self.close()

    # -- serving -----------------------------------------------------------------------

    async def _serve(self, request: Request) -> None:
        resp: StreamResponse | None = None
        try:
            try:
                resp = await self.server.dispatch(request)
            except HTTPException as e:
                resp = e.response()
            except (ConnectionError, asyncio.CancelledError):
                resp = None
                self.keep_alive = False
            except Exception:
                log.exception("internal error serving %s %s", request.method, request.path_qs)
                resp = Response(status=500, body=status_bytes(500, "an internal error occurred"),
                                content_type="application/json")
            if self._upgrade_feed is not None or self.closed or resp is None:
                return
            if self._state != HEAD:  # the body was not read whole: the connection cannot go on
                self.keep_alive = False
            if not resp.prepared and isinstance(resp, Response):
                self.send(resp.serialize(request, self.keep_alive))  # and its eof: all sent
            else:
                if not resp.prepared:
                    await resp.prepare(request)
                await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            self.keep_alive = False
        finally:
            self._done()

    def _done(self) -> None:
        self._task = None
        self._request = None
        if self._upgrade_feed is not None or not self.keep_alive or self.closed:
            self.close()
            return
        self._arm_timer()
        self._resume("pipeline")
        if self._buf:
            try:
                self._process()
            except BadRequest as e:
                self._fail(e)

    # -- upgrades ----------------------------------------------------------------------

    def upgrade(self, feed: Callable[[bytes], None], lost: Callable[[], None]) -> None:
        """Hand every later byte of the connection to ``feed`` (a WebSocket's reader)."""
        self._state = UPGRADED
        self._upgrade_feed = feed
        self._upgrade_lost = lost
        if self._buf:
            rest = bytes(self._buf)
            self._buf.clear()
            feed(rest)


# -- the aiohttp.web names for starting a server ----------------------------------------

class AppRunner:
    def __init__(self, app: Application, *, keepalive_timeout: float = 75.0,
                 shutdown_timeout: float = 60.0, **_: Any) -> None:
        self.app = app
        self.keepalive_timeout = keepalive_timeout
        self.shutdown_timeout = shutdown_timeout
        self.server: HttpServer | None = None
        self.sites: list[TCPSite] = []

    async def setup(self) -> None:
        self.server = HttpServer(self.app, self.keepalive_timeout)

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for site in self.sites for s in site.sockets]

    async def cleanup(self) -> None:
        for site in list(self.sites):
            await site.stop()
        server = self.server
        if server is None:
            return
        tasks = [c._task for c in server.connections if c._task is not None]
        for c in list(server.connections):
            if c._task is None:
                c.close()
        if tasks:
            await asyncio.wait(tasks, timeout=self.shutdown_timeout)
        for c in list(server.connections):
            if c._task is not None:
                c._task.cancel()
            c.close()


class TCPSite:
    def __init__(self, runner: AppRunner, host: str | None = None, port: int | None = None,
                 *, ssl_context: ssl.SSLContext | None = None, backlog: int = 128,
                 reuse_address: bool | None = None, reuse_port: bool | None = None,
                 sock: Any = None, ssl_handshake_timeout: float | None = None) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.ssl_handshake_timeout = ssl_handshake_timeout
        """Seconds a TLS handshake may take; None: the idle timeout, at most 60 s."""
        self.backlog = backlog
        self.sock = sock
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        server = self.runner.server
        assert server is not None, "call runner.setup() first"
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if self.ssl_context is not None and self.ssl_handshake_timeout:
            extra["ssl_handshake_timeout"] = self.ssl_handshake_timeout
        elif self.ssl_context is not None and server.idle_timeout:
            extra["ssl_handshake_timeout"] = min(60.0, server.idle_timeout)
        if self.sock is not None:
            self._server = await loop.create_server(
                server.protocol, sock=self.sock, ssl=self.ssl_context, backlog=self.backlog,
                **extra)
        else:
            self._server = await loop.create_server(
                server.protocol, self.host, self.port, ssl=self.ssl_context,
                backlog=self.backlog, reuse_address=True, **extra)
        self.runner.sites.append(self)

    @property
    def sockets(self) -> list[Any]:
        return list(self._server.sockets) if self._server is not None else []

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self in self.runner.sites:
            self.runner.sites.remove(self)
