"""Long-lived, bidirectional, flow-controlled streams multiplexed over peer connections.

Pod logs and exec cross from the node serving the API to the pod's node over the peer
link that already exists, in whichever direction it was dialled (an edge node behind NAT
dials out; its streams come back over that connection). Each stream is a sequence of
ONEWAY frames on the STREAM channel of :mod:`shoal.mesh.tls_transport`, the frame's
request id being the stream id, and the payload starting with an operation byte:

* ``OPEN`` + JSON header: the opener says what it wants; the acceptor's handler decides.
* ``DATA`` + one message: messages keep their boundaries (exec frames each one by channel).
* ``END``: the sender sends no more (a half close); the other side may still send.
* ``RESET`` + reason: the stream is over in both directions (error, or a side went away).
* ``CREDIT`` + 4 bytes: the receiver consumed that many bytes; the sender may send more.

Flow control is by credit: a sender may have at most ``WINDOW`` bytes unconsumed by the
other side, so one slow reader (a stalled ``kubectl logs -f``) queues at most a window and
never blocks the connection's reader, which also carries the mesh. The opener numbers
its streams odd if it dialled the connection and even otherwise, so ids never collide.
Only authenticated nodes reach here: the transport passes STREAM frames of certified
connections only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from shoal.mesh.tls_transport import TlsTransport
from shoal.mesh.transport import TransportError

log = logging.getLogger(__name__)

OPEN, DATA, END, RESET, CREDIT = 1, 2, 3, 4, 5
WINDOW = 512 * 1024
"""Bytes a sender may have in flight per stream before the receiver grants more."""
MAX_MESSAGE = 1024 * 1024
_CREDIT = struct.Struct("!I")


class StreamLink(Protocol):
    """The connection a stream rides on (``tls_transport._Conn`` is one)."""

    @property
    def peer_name(self) -> str | None: ...
    @property
    def is_open(self) -> bool: ...
    outbound: bool

    def send_stream_frame(self, sid: int, payload: bytes) -> None: ...
    async def drain(self) -> None: ...
    def on_close(self, callback: Callable[[], None]) -> None: ...


class StreamReset(TransportError):
    """The other side reset the stream, or the connection under it was lost."""


class Stream:
    """One stream; ``send`` and ``recv`` may be used from different tasks."""

    def __init__(self, mux: StreamMux, link: StreamLink, sid: int,
                 header: dict[str, Any]) -> None:
        self._mux = mux
        self.link = link
        self.sid = sid
        self.header = header
        self._inbox: collections.deque[bytes | None] = collections.deque()
        self._readable = asyncio.Event()
        self._credit = WINDOW
        self._credit_event = asyncio.Event()
        self._credit_event.set()
        self._consumed = 0
        self._queued = 0
        self._reset: str | None = None
        self._ended = False  # we sent END
        self._remote_ended = False

    @property
    def peer(self) -> str | None:
        """The authenticated name of the node on the other end."""
        return self.link.peer_name

    @property
    def closed(self) -> bool:
        return self._reset is not None or (self._ended and self._remote_ended)

    # -- sending -----------------------------------------------------------------------------

    async def send(self, message: bytes) -> None:
        """Send one message, waiting while the receiver holds a full window."""
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"stream message of {len(message)} bytes exceeds {MAX_MESSAGE}")
        while self._credit <= 0 and self._reset is None:
            self._credit_event.clear()
            await self._credit_event.wait()
        self._check_sendable()
        # One message may overshoot the window: the overshoot is bounded by MAX_MESSAGE.
        self._credit -= len(message)
        self.link.send_stream_frame(self.sid, bytes([DATA]) + message)
        await self.link.drain()

    async def end(self) -> None:
        """Half close: no more messages from this side."""
        if self._ended or self._reset is not None:
            return
        self._ended = True
        with contextlib.suppress(TransportError):
            self.link.send_stream_frame(self.sid, bytes([END]))
            await self.link.drain()
        self._maybe_forget()

    def reset(self, reason: str = "") -> None:
        """Abort both directions (the other side's ``recv`` raises :class:`StreamReset`)."""
        if self._reset is not None:
            return
        if not (self._ended and self._remote_ended):
            with contextlib.suppress(TransportError):
                self.link.send_stream_frame(self.sid, bytes([RESET]) + reason.encode())
        self._fail(reason or "reset by this side")

    def _check_sendable(self) -> None:
        if self._reset is not None:
            raise StreamReset(self._reset)
        if self._ended:
            raise StreamReset("the stream was ended by this side")

    # -- receiving ---------------------------------------------------------------------------

    async def recv(self) -> bytes | None:
        """The next message, or None once the other side ended the stream."""
        while not self._inbox:
            if self._reset is not None:
                raise StreamReset(self._reset)
            self._readable.clear()
            await self._readable.wait()
        message = self._inbox.popleft()
        if message is None:
            self._inbox.appendleft(None)  # end of stream stays visible to later calls
            return None
        self._queued -= len(message)
        self._consumed += len(message)
        if self._consumed >= WINDOW // 4 and self._reset is None:
            with contextlib.suppress(TransportError):
                self.link.send_stream_frame(self.sid, bytes([CREDIT]) +
                                            _CREDIT.pack(self._consumed))
            self._consumed = 0
        return message

    # -- called by the mux on frames ---------------------------------------------------------

    def _on_frame(self, op: int, body: bytes) -> None:
        if op == DATA:
            if self._remote_ended:
                return
            self._queued += len(body)
            if self._queued > WINDOW + MAX_MESSAGE:
                self.reset("the sender ignored flow control")
                return
            self._inbox.append(body)
            self._readable.set()
        elif op == END:
            self._remote_ended = True
            self._inbox.append(None)
            self._readable.set()
            self._maybe_forget()
        elif op == RESET:
            self._fail(body.decode(errors="replace") or "reset by the peer")
        elif op == CREDIT and len(body) == _CREDIT.size:
            self._credit += _CREDIT.unpack(body)[0]
            self._credit_event.set()

    def _fail(self, reason: str) -> None:
        if self._reset is None:
            self._reset = reason
        self._readable.set()
        self._credit_event.set()
        self._mux._forget(self)

    def _maybe_forget(self) -> None:
        if self._ended and self._remote_ended:
            self._mux._forget(self)


Acceptor = Callable[[Stream], Awaitable[None]]


class StreamMux:
    """Opens streams to nodes by name and hands the streams they open to an acceptor."""

    def __init__(self, transport: TlsTransport) -> None:
        self.transport = transport
        self._streams: dict[tuple[int, int], Stream] = {}
        self._links: dict[int, StreamLink] = {}
        self._ids = itertools.count(1)
        self._acceptor: Acceptor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        transport.set_stream_sink(self._on_frame)

    def set_acceptor(self, acceptor: Acceptor) -> None:
        self._acceptor = acceptor

    async def open(self, node: str, address: str | None, header: dict[str, Any],
                   timeout: float) -> Stream:
        """Open a stream to ``node`` over any live connection to it, else by dialling."""
        link = await self.transport.link_to(node, address, timeout)
        return self.open_on(link, header)

    def open_on(self, link: StreamLink, header: dict[str, Any]) -> Stream:
        sid = 2 * next(self._ids) + (1 if link.outbound else 0)
        stream = self._register(link, sid, header)
        link.send_stream_frame(sid, bytes([OPEN]) + orjson.dumps(header))
        return stream

    def _register(self, link: StreamLink, sid: int, header: dict[str, Any]) -> Stream:
        stream = Stream(self, link, sid, header)
        self._streams[(id(link), sid)] = stream
        if id(link) not in self._links:
            self._links[id(link)] = link
            link.on_close(lambda: self._link_closed(link))
        return stream

    def _forget(self, stream: Stream) -> None:
        if self._streams.get((id(stream.link), stream.sid)) is stream:
            del self._streams[(id(stream.link), stream.sid)]

    def _link_closed(self, link: StreamLink) -> None:
        self._links.pop(id(link), None)
        for key, stream in list(self._streams.items()):
            if key[0] == id(link):
                stream._fail(f"the connection to node {link.peer_name} was lost")

    def _on_frame(self, link: StreamLink, sid: int, payload: bytes) -> None:
        if not payload:
            return
        op, body = payload[0], payload[1:]
        stream = self._streams.get((id(link), sid))
        if op == OPEN:
            if stream is not None:
                stream.reset("stream id reused")
                return
            self._accept(link, sid, body)
        elif stream is not None:
            stream._on_frame(op, body)
        elif op != RESET:  # a late frame of a stream that is gone: tell the sender once
            with contextlib.suppress(TransportError):
                link.send_stream_frame(sid, bytes([RESET]) + b"no such stream")

    def _accept(self, link: StreamLink, sid: int, body: bytes) -> None:
        try:
            header = orjson.loads(body)
            if not isinstance(header, dict):
                raise ValueError("the header is not an object")
        except (orjson.JSONDecodeError, ValueError) as e:
            with contextlib.suppress(TransportError):
                link.send_stream_frame(sid, bytes([RESET]) + f"bad stream header: {e}".encode())
            return
        stream = self._register(link, sid, header)
        if self._acceptor is None:
            stream.reset("this node serves no streams")
            return
        task = asyncio.get_running_loop().create_task(self._serve(stream, self._acceptor),
                                                      name=f"stream {link.peer_name}/{sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, stream: Stream, acceptor: Acceptor) -> None:
        try:
            await acceptor(stream)
        except StreamReset:
            pass
        except Exception as e:
            log.warning("stream from %s (%s) failed: %r", stream.peer, stream.header.get("op"), e)
            stream.reset(f"the node failed to serve the stream: {e}")
            return
        if not stream.closed:
            await stream.end()

    async def close(self) -> None:
        for stream in list(self._streams.values()):
            stream.reset("the node is stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
