"""Requests, responses and HTTP errors of Shoal's own HTTP/1.1 server
(:mod:`shoal.api.http_protocol`), with the names and the subset of behaviour of
``aiohttp.web`` that the API's handlers use, so they work on either server
(:mod:`shoal.api.web` picks one)."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

if TYPE_CHECKING:
    from shoal.api.http_protocol import HttpProtocol
    from shoal.api.http_routing import UrlDispatcher

T = TypeVar("T")

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted",
    204: "No Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


class RequestKey(Generic[T]):
    """A typed key for values a middleware leaves on a request."""

    __slots__ = ("name", "type")

    def __init__(self, name: str, t: type[T]) -> None:
        self.name = name
        self.type = t

    def __repr__(self) -> str:
        return f"<RequestKey {self.name}>"


class AppKey(RequestKey[T]):
    """A typed key for values stored on the application."""


Handler = Callable[["Request"], Awaitable["StreamResponse"]]


def middleware(f: T) -> T:
    """Marks a middleware (as aiohttp's decorator does; the marker is all it does)."""
    return f


class TypedState:
    """Values kept under typed keys (a request's, an application's)."""

    def __init__(self) -> None:
        self._state: dict[Any, Any] = {}

    def __getitem__(self, key: RequestKey[T]) -> T:
        return cast(T, self._state[key])

    def __setitem__(self, key: RequestKey[T], value: T) -> None:
        self._state[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def get(self, key: RequestKey[T], default: Any = None) -> Any:
        return self._state.get(key, default)

    def setdefault(self, key: RequestKey[T], default: T) -> T:
        return cast(T, self._state.setdefault(key, default))


class Application(TypedState):
    """Routes, middlewares and settings of one server."""

    def __init__(self, *, middlewares: Iterable[Callable[..., Awaitable[StreamResponse]]] = (),
                 client_max_size: int = 1024 * 1024) -> None:
        from shoal.api.http_routing import UrlDispatcher

        super().__init__()
        self.middlewares = list(middlewares)
        self.client_max_size = client_max_size
        self.router: UrlDispatcher = UrlDispatcher()


# -- request bodies ------------------------------------------------------------------

class BodyStream:
    """A request's body as it arrives: the protocol feeds it, the handler reads it.
    Reading past ``high_water`` buffered bytes is paused until the handler catches up."""

    high_water = 1024 * 1024

    def __init__(self, protocol: HttpProtocol | None) -> None:
        self._protocol = protocol
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.received = 0

    # -- the protocol's side
    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self.received += len(data)
        self._wake()
        if self._size > self.high_water and self._protocol is not None:
            self._protocol.pause_body()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- the handler's side
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def is_eof(self) -> bool:
        return self._eof

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error

    def _take(self, n: int) -> bytes:
        first = self._chunks[0]
        if n < 0 or len(first) <= n:
            self._chunks.pop(0)
            out = first
        else:
            out, self._chunks[0] = first[:n], first[n:]
        self._size -= len(out)
        if self._protocol is not None and self._size < self.high_water // 4:
            self._protocol.resume_body()
        return out

    async def readany(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            await self._wait()
        return self._take(-1)

    async def read(self, n: int = -1) -> bytes:
        if n >= 0:
            while not self._chunks:
                if self._eof:
                    return b""
                await self._wait()
            return self._take(n)
        parts: list[bytes] = []
        while True:
            chunk = await self.readany()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        while chunk := await self.read(n):
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.iter_chunked(65536)


EMPTY_BODY = BodyStream(None)
EMPTY_BODY.feed_eof()


# -- requests ------------------------------------------------------------------------

class Request(TypedState):
    """One request, as the handlers see it (and what the middlewares leave on it)."""

    def __init__(self, app: Application, method: str, target: str, version: tuple[int, int],
                 headers: CIMultiDictProxy[str], content: BodyStream,
                 protocol: HttpProtocol | None) -> None:
        super().__init__()
        self.app = app
        self.method = method
        self.raw_path = target
        self.version = version
        self.headers = headers
        self.content = content
        self._protocol = protocol
        self.transport: asyncio.Transport | None = protocol.transport if protocol else None
        path, _, self.query_string = target.partition("?")
        self._raw = path
        self.path = _unquote(path) if "%" in path else path
        self.match_info: dict[str, str] = {}
        self._query: MultiDictProxy[str] | None = None
        self._read: bytes | None = None
        self.response: StreamResponse | None = None

    @property
    def config_dict(self) -> Application:
        return self.app

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            qs = self.query_string
            self._query = MultiDictProxy(MultiDict(
                urllib.parse.parse_qsl(qs, keep_blank_values=True))) if qs else _NO_QUERY
        return self._query

    @property
    def path_qs(self) -> str:
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    @property
    def match_path(self) -> str:
        """The path the router matches: decoded, except ``%2F`` and ``%25`` (a slash or a
        percent sign inside one segment stays inside it), as aiohttp's router does."""
        raw = self._raw
        if "%" not in raw:
            return raw
        parts = _SAFE.split(raw)
        return "".join(p if i % 2 else _unquote(p) for i, p in enumerate(parts))

    @property
    def content_type(self) -> str:
        raw = self.headers.get("Content-Type")
        if not raw:
            return "application/octet-stream"
        return raw.split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for param in self.headers.get("Content-Type", "").split(";")[1:]:
            k, _, v = param.partition("=")
            if k.strip().lower() == "charset":
                return v.strip().strip('"')
        return None

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        return int(raw) if raw is not None else None

    @property
    def can_read_body(self) -> bool:
        return not self.content.at_eof()

    @property
    def body_exists(self) -> bool:
        return self.content is not EMPTY_BODY

    @property
    def keep_alive(self) -> bool:
        return self._protocol is not None and self._protocol.keep_alive

    async def read(self) -> bytes:
        """The whole body; past the application's ``client_max_size``: 413."""
        if self._read is None:
            limit = self.app.client_max_size
            parts: list[bytes] = []
            size = 0
            while chunk := await self.content.readany():
                size += len(chunk)
                if limit and size > limit:
                    raise HTTPRequestEntityTooLarge(
                        text=f"the request body is larger than {limit} bytes")
                parts.append(chunk)
            self._read = b"".join(parts)
        return self._read

    async def text(self) -> str:
        return (await self.read()).decode(self.charset or "utf-8")


def _unquote(s: str) -> str:
    return urllib.parse.unquote(s)


_SAFE = re.compile(r"(%2[Ff]|%25)")
_NO_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())
"""Every request without a query string shares it (read-only: a proxy of a dict no one holds)."""


# -- responses -----------------------------------------------------------------------

_date_cache: tuple[int, bytes, bytes] = (0, b"", b"")


def _dated() -> tuple[int, bytes, bytes]:
    """(second, the ``Date`` header's value, a head's end with it), made once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        value = email.utils.formatdate(now, usegmt=True).encode()
        _date_cache = (now, value, b"\r\nDate: " + value + b"\r\n\r\n")
    return _date_cache


def http_date() -> bytes:
    """The ``Date`` header's value, formatted once a second."""
    return _dated()[1]


class StreamResponse:
    """A response whose body is written in pieces after :meth:`prepare` (chunked on
    HTTP/1.1 unless a ``Content-Length`` is set)."""

    def __init__(self, *, status: int = 200, reason: str | None = None,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers: CIMultiDict[str] = CIMultiDict(headers or ())
        self._chunked = False
        self._prepared = False
        self._eof_sent = False
        self._protocol: HttpProtocol | None = None
        self._head = False

    # -- headers
    @property
    def prepared(self) -> bool:
        return self._prepared

    @property
    def content_type(self) -> str:
        raw = self.headers.get("Content-Type", "application/octet-stream")
        return raw.split(";", 1)[0].strip()

    @content_type.setter
    def content_type(self, value: str) -> None:
        self.headers["Content-Type"] = value

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        return int(raw) if raw is not None else None

    @content_length.setter
    def content_length(self, value: int | None) -> None:
        if value is None:
            self.headers.popall("Content-Length", None)
        else:
            self.headers["Content-Length"] = str(value)

    def enable_chunked_encoding(self) -> None:
        self._chunked = True

    def set_status(self, status: int, reason: str | None = None) -> None:
        self.status, self.reason = status, reason

    def _head_bytes(self, keep_alive: bool) -> bytes:
        reason = self.reason or REASONS.get(self.status, "Unknown")
        head = f"HTTP/1.1 {self.status} {reason}"
        for k, v in self.headers.items():  # a few: no list to build and join
            head += f"\r\n{k}: {v}"
        if not keep_alive:
            head += "\r\nConnection: close"
        return head.encode("latin-1", "replace") + _dated()[2]

    # -- the body
    async def prepare(self, request: Request) -> None:
        """Send the status line and headers."""
        if self._prepared:
            return
        protocol = request._protocol
        if protocol is None:
            raise RuntimeError("the request has no connection")
        self._prepared = True
        self._protocol = protocol
        request.response = self
        self._head = request.method == "HEAD"
        if self.status in (204, 304) or self.status < 200:
            self.headers.popall("Content-Length", None)
            self._chunked = False
            self._head = True  # no body, whatever is written
        elif "Content-Length" in self.headers:
            self._chunked = False
        elif request.version >= (1, 1):
            self._chunked = True
        else:
            protocol.keep_alive = False  # HTTP/1.0 and no length: the body ends at the close
        if self._chunked:
            self.headers["Transfer-Encoding"] = "chunked"
        self.headers.setdefault("Content-Type", "application/octet-stream")
        protocol.send(self._head_bytes(protocol.keep_alive))

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        protocol = self._protocol
        if protocol is None:
            raise RuntimeError("write() before prepare()")
        if self._eof_sent:
            raise RuntimeError("write() after write_eof()")
        if not data or self._head:
            return
        if self._chunked:
            protocol.send(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        else:
            protocol.send(bytes(data))
        await protocol.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        if data:
            await self.write(data)
        protocol = self._protocol
        if protocol is None:
            raise RuntimeError("write_eof() before prepare()")
        self._eof_sent = True
        if self._chunked and not self._head:
            protocol.send(b"0\r\n\r\n")
        await protocol.drain()


class Response(StreamResponse):
    """A response with the whole body at hand, sent with its ``Content-Length``."""

    def __init__(self, *, body: bytes | bytearray | None = None, status: int = 200,
                 reason: str | None = None, text: str | None = None,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 content_type: str | None = None, charset: str | None = None) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        if text is not None:
            body = text.encode(charset or "utf-8")
            if "Content-Type" not in self.headers:
                self.headers["Content-Type"] = (f"{content_type or 'text/plain'}; "
                                                f"charset={charset or 'utf-8'}")
        elif content_type is not None:
            self.headers["Content-Type"] = (f"{content_type}; charset={charset}" if charset
                                            else content_type)
        self.body: bytes | bytearray | None = body

    @property
    def text(self) -> str | None:
        return None if self.body is None else bytes(self.body).decode("utf-8", "replace")

    def serialize(self, request: Request, keep_alive: bool) -> bytes:
        """Head and body in one piece (the common, fast case)."""
        self._prepared = True
        self._eof_sent = True
        body = self.body or b""
        if self.status in (204, 304) or self.status < 200:
            body = b""
        else:
            self.headers["Content-Length"] = str(len(body))
            if body and "Content-Type" not in self.headers:
                self.headers["Content-Type"] = "application/octet-stream"
        head = self._head_bytes(keep_alive)
        return head if request.method == "HEAD" else head + bytes(body)

    async def prepare(self, request: Request) -> None:
        if self._prepared:
            return
        protocol = request._protocol
        if protocol is None:
            raise RuntimeError("the request has no connection")
        self._protocol = protocol
        request.response = self
        protocol.send(self.serialize(request, protocol.keep_alive))
        await protocol.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        self._eof_sent = True


def json_response(data: Any, *, status: int = 200) -> Response:
    import orjson

    return Response(body=orjson.dumps(data), status=status, content_type="application/json")


# -- errors raised as responses --------------------------------------------------------

class HTTPException(Exception):
    status_code = 500

    def __init__(self, *, text: str | None = None, reason: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.reason = reason or REASONS.get(self.status_code, "")
        self.text = text if text is not None else f"{self.status_code}: {self.reason}"
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        super().__init__(self.text)

    @property
    def status(self) -> int:
        return self.status_code

    def response(self) -> Response:
        return Response(status=self.status_code, reason=self.reason, text=self.text,
                        headers=self.headers)


class HTTPRedirection(HTTPException):
    def __init__(self, location: str) -> None:
        super().__init__(headers={"Location": location})
        self.location = location


class HTTPMovedPermanently(HTTPRedirection):
    status_code = 301


class HTTPFound(HTTPRedirection):
    status_code = 302


class HTTPBadRequest(HTTPException):
    status_code = 400


class HTTPNotFound(HTTPException):
    status_code = 404


class HTTPMethodNotAllowed(HTTPException):
    status_code = 405


class HTTPRequestEntityTooLarge(HTTPException):
    status_code = 413
