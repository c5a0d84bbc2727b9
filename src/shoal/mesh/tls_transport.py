"""The real peer transport: framed messages over TCP with mutual TLS.

Every peer listens on one port (``--peer-port``). A connection carries frames::

    type (1 byte) | channel (1 byte) | request id (8 bytes) | length (4 bytes) | payload

``type`` is request, response, one-way, error or hello; ``channel`` separates the
mesh protocol (opaque bytes for :mod:`shoal.mesh.peer`) from the control
channel (joins and certificate renewals, :mod:`shoal.mesh.join`). One
connection per peer is kept open, reused and multiplexed by request id;
a broken one is dropped and the next message reconnects.

Both ends present a certificate signed by the cluster CA with the node role
(``O=shoal:nodes``, ``CN=<node name>``). A client with no certificate may only
send control requests (the join exchange), small and few, on a short deadline.
Anything else (a foreign CA, a non-node certificate, plain HTTP, garbage, an
oversized frame) is refused and logged at warning with the remote address.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.mesh.transport import Handler, TransportError, serving
from shoal.store.system_crypto import CryptoError, load_der_certificate, load_pem_certificate

log = logging.getLogger("shoal.mesh.tls")

NODE_ORG = "shoal:nodes"
"""The organization that marks a certificate as a cluster node's identity."""

MAX_FRAME = 16 * 1024 * 1024
"""Largest payload accepted from an authenticated peer (a full-state sync fits)."""

MAX_UNAUTH_FRAME = 64 * 1024
"""Largest payload accepted from a client with no certificate (a CSR and a token)."""

MAX_UNAUTH_REQUESTS = 8
MAX_HELLO = 300
"""Longest hello (the host:port a peer advertises): it names the peer's stats, kept for
the node's life, so a 16 MiB one per connection would pile up."""
UNAUTH_DEADLINE = 30.0
"""A certificate-less connection is closed after this many seconds, whatever it does."""

UNAUTH_IDLE = 5.0
"""A certificate-less connection must send each frame, whole, within this many seconds
of the last (a join sends a few small frames at once)."""

IDLE_TIMEOUT = 60.0
"""Default --peer-idle-timeout: an inbound connection on which nothing arrives for this
long, with no request or stream in flight, is closed (peers ping every second or so), and
a frame that stops arriving for this long mid-way is dropped with it."""

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0

_HEADER = struct.Struct("!BBQI")


class FrameType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    ONEWAY = 3
    ERROR = 4
    HELLO = 5
    """First frame of an authenticated client: the address it can be reached at."""


class Channel(enum.IntEnum):
    MESH = 0
    CONTROL = 1
    STREAM = 2
    """Long-lived byte streams between nodes (pod logs, exec): :mod:`shoal.mesh.streams`."""


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a connection."""

    address: str
    """The peer's advertised ``host:port`` if it said hello, else its socket address."""
    name: str | None
    """The authenticated node name (the certificate's CN), or None without a certificate."""


ControlHandler = Callable[[PeerIdentity, bytes], Awaitable[bytes]]

# --- streams: the sink gets every STREAM frame of an authenticated connection, in order ---
StreamSink = Callable[["_Conn", int, bytes], None]
# --- end streams ---

_current_peer: contextvars.ContextVar[PeerIdentity | None] = contextvars.ContextVar(
    "shoal_mesh_peer", default=None
)


def current_peer() -> PeerIdentity | None:
    """The authenticated sender of the message being handled (inside a ``Handler``)."""
    return _current_peer.get()


# --- partition routing: a kept-open connection across a cut dies in seconds, not minutes ---
UNACKED_TIMEOUT = 10.0
"""Seconds sent data may stay unacknowledged before the kernel drops the connection
(TCP_USER_TIMEOUT). Without it a connection across a cut lives on with its retransmissions
backed off to tens of seconds, and after the heal every request on it waits for the next
retransmission (35 s measured) instead of a new connection being dialled."""


def bound_unacked_time(sock: socket.socket | None) -> None:
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            int(UNACKED_TIMEOUT * 1000))
# --- end partition routing ---


class IdleTimeout(Exception):
    """Nothing arrived on a connection for too long."""


class FrameError(Exception):
    """The remote end broke the framing rules."""


@dataclass
class PeerStats:
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0


@dataclass(frozen=True)
class TlsIdentity:
    """A node's certificate, key and the cluster CA, as files."""

    cert: Path
    key: Path
    ca: Path

    @property
    def name(self) -> str:
        return load_pem_certificate(self.cert.read_bytes()).common_name

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(self.ca)
        # Optional so that a joining node (no certificate yet) can reach the join exchange;
        # a certificate that is presented must verify against the cluster CA.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(self.ca)
        # Peers are identified by the node role in their certificate, not by the address we
        # dialled (addresses change at the edge; names do not).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def node_name_of(peercert: dict[str, object] | None) -> str | None:
    """The CN of a verified certificate that carries the node role, else None."""
    if not peercert:
        return None
    orgs: list[str] = []
    cn: str | None = None
    for rdn in peercert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "organizationName":
                orgs.append(str(value))
            elif key == "commonName":
                cn = str(value)
    return cn if NODE_ORG in orgs and cn else None


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise TransportError(f"bad peer address {address!r} (want host:port)")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Conn:
    """One TLS connection, either direction; frames in both directions are multiplexed."""

    def __init__(self, owner: TlsTransport | None, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: PeerIdentity, *, max_frame: int,
                 stats: PeerStats) -> None:
        self.owner = owner
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.max_frame = max_frame
        self.stats = stats
        self.next_id = 1
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.closed = False
        self.tasks: set[asyncio.Task[None]] = set()
        # --- streams: what shoal.mesh.streams needs of a connection (a StreamLink) ---
        self.outbound = False
        self._close_callbacks: list[Callable[[], None]] = []

    @property
    def peer_name(self) -> str | None:
        return self.peer.name

    @property
    def is_open(self) -> bool:
        return not self.closed and not self.writer.is_closing()

    def send_stream_frame(self, sid: int, payload: bytes) -> None:
        self.write(FrameType.ONEWAY, Channel.STREAM, sid, payload)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise TransportError(f"{self.peer.address}: {e}") from e

    def on_close(self, callback: Callable[[], None]) -> None:
        if self.closed:
            callback()
        else:
            self._close_callbacks.append(callback)
        # --- end streams ---

    def write(self, ftype: FrameType, channel: Channel, rid: int, payload: bytes) -> None:
        if self.closed or self.writer.is_closing():
            raise TransportError(f"connection to {self.peer.address} is closed")
        if len(payload) > MAX_FRAME:
            raise TransportError(f"payload of {len(payload)} bytes exceeds {MAX_FRAME}")
        # One write call per frame: asyncio never interleaves it with another frame.
        self.writer.write(_HEADER.pack(ftype, channel, rid, len(payload)) + payload)
        self.stats.bytes_sent += _HEADER.size + len(payload)
        self.stats.frames_sent += 1

    @property
    def busy(self) -> bool:
        """Requests or streams in flight: silence is expected (a stream may be quiet)."""
        return bool(self.pending or self.tasks or self._close_callbacks)

    async def read_frame(self, idle: float | None = None, whole: bool = False,
                         ) -> tuple[FrameType, Channel, int, bytes]:
        """The next frame. With ``idle``: IdleTimeout if no frame starts within it (unless
        ``busy``), or if a frame stops arriving for that long mid-way; with ``whole``, the
        frame must be over within ``idle`` of when we began to wait for it (a
        certificate-less client)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            waited = asyncio.timeout(idle)
            try:
                async with waited:
                    header = await self.reader.readexactly(_HEADER.size)
                break
            except TimeoutError:
                if not waited.expired():
                    # The connection's own ETIMEDOUT (a TimeoutError too), raised again by
                    # every read: looping on it spun the loop and grew its traceback.
                    raise
                if self.busy:
                    start = loop.time()
                    continue  # work in flight (a stream, a request being answered)
                raise IdleTimeout(f"no frame for {idle:g}s") from None
        ftype, channel, rid, length = _HEADER.unpack(header)
        try:
            ft, ch = FrameType(ftype), Channel(channel)
        except ValueError:
            raise FrameError(f"unknown frame type {ftype} or channel {channel}") from None
        if length > self.max_frame:
            raise FrameError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
        if not length:
            payload = b""
        elif idle is None:
            payload = await self.reader.readexactly(length)
        elif whole:
            try:
                async with asyncio.timeout_at(start + idle):
                    payload = await self.reader.readexactly(length)
            except TimeoutError:
                raise IdleTimeout(f"a frame took over {idle:g}s") from None
        else:
            payload = await self._read_progressing(length, idle)
        self.stats.bytes_received += _HEADER.size + length
        self.stats.frames_received += 1
        return ft, ch, rid, payload

    async def _read_progressing(self, length: int, idle: float) -> bytes:
        """``length`` bytes, as long as some arrive every ``idle`` seconds (a big frame on
        a slow link takes long, a stalled one is dropped)."""
        parts: list[bytes] = []
        left = length
        while left:
            try:
                async with asyncio.timeout(idle):
                    chunk = await self.reader.read(min(left, 1 << 20))
            except TimeoutError:
                raise IdleTimeout(f"a frame stalled for {idle:g}s") from None
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), length)
            parts.append(chunk)
            left -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def request(self, channel: Channel, payload: bytes, timeout: float) -> bytes:
        rid = self.next_id
        self.next_id += 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        try:
            self.write(FrameType.REQUEST, channel, rid, payload)
            async with asyncio.timeout(timeout):
                await self.writer.drain()
                return await fut
        except TimeoutError:
            raise TransportError(
                f"no answer from {self.peer.address} within {timeout:.3g}s") from None
        except (ConnectionError, OSError) as e:
            raise TransportError(f"{self.peer.address}: {e}") from e
        finally:
            self.pending.pop(rid, None)

    def fail_pending(self, why: str) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(TransportError(why))
        self.pending.clear()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.fail_pending(f"connection to {self.peer.address} closed")
        for callback in self._close_callbacks:  # streams: fail the streams it carried
            with contextlib.suppress(Exception):
                callback()
        self._close_callbacks.clear()
        for t in list(self.tasks):
            t.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


@dataclass
class _Limits:
    max_requests: int | None = None
    channels: frozenset[Channel] = field(default_factory=lambda: frozenset(Channel))
    idle: float | None = None
    """Close the connection after this many seconds without a frame (see read_frame)."""
    whole: bool = False
    """Each frame must arrive whole within ``idle`` (certificate-less clients)."""


class TlsTransport:
    """The :class:`~shoal.mesh.transport.Transport` of a real node.

    ``handler`` (the mesh) reads :func:`current_peer` for the authenticated sender;
    the control handler gets it as an argument.
    """

    def __init__(self, identity: TlsIdentity, *, bind: str = "127.0.0.1", port: int = 0,
                 advertise: str | None = None, max_frame: int = MAX_FRAME,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 advertise_address: str | None = None,
                 idle_timeout: float | None = IDLE_TIMEOUT) -> None:
        self.identity = identity
        self.name = identity.name
        self._bind = bind
        self._port = port
        self._advertise_host = advertise or (bind if bind not in ("0.0.0.0", "::") else "127.0.0.1")
        # host:port peers dial, when it is not ours (a NAT port mapping, a proxy).
        self._advertise_address = advertise_address
        self._max_frame = max_frame
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout or None
        """Seconds an inbound connection may stay silent (None: forever); see IDLE_TIMEOUT."""
        self._server_ctx = identity.server_context()
        self._client_ctx = identity.client_context()
        self._handler: Handler | None = None
        self._control: ControlHandler | None = None
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._out: dict[str, _Conn] = {}
        self._dialing: dict[str, asyncio.Task[_Conn]] = {}
        self._inbound: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats: dict[str, PeerStats] = {}
        self._stream_sink: StreamSink | None = None  # streams
        self.refused = 0
        """Connections refused since start (no node certificate, bad TLS, bad frames)."""
        self.idle_closed = 0
        """Inbound connections closed for silence or a stalled frame."""

    # -- Transport protocol ------------------------------------------------------------------

    @property
    def address(self) -> str:
        if self._advertise_address:
            return self._advertise_address
        return join_address(self._advertise_host, self._port)

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    def set_control_handler(self, handler: ControlHandler) -> None:
        self._control = handler

    @property
    def control_handler(self) -> ControlHandler | None:
        """The installed control handler, so a service can wrap it (answer its own requests
        and pass the rest on)."""
        return self._control

    async def request(self, address: str, payload: bytes, timeout: float) -> bytes:
        return await self._request(address, Channel.MESH, payload, timeout)

    async def request_control(self, address: str, payload: bytes, timeout: float) -> bytes:
        return await self._request(address, Channel.CONTROL, payload, timeout)

    async def send(self, address: str, payload: bytes) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout + self._handshake_timeout):
                conn = await self._connection(address)
                conn.write(FrameType.ONEWAY, Channel.MESH, 0, payload)
                await conn.writer.drain()
        except TimeoutError:
            raise TransportError(f"could not reach {address} in time") from None
        except (ConnectionError, OSError) as e:
            self._drop(address)
            raise TransportError(f"{address}: {e}") from e

    async def close(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        if self._listener is not None:
            self._listener.close()
        for dial in list(self._dialing.values()):
            dial.cancel()
        conns = [*self._out.values(), *self._inbound]
        self._out.clear()
        self._inbound.clear()
        for c in conns:
            await c.close()
        for t in list(self._tasks):
            t.cancel()

    # -- extras --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the peer port (port 0 picks a free one; :attr:`address` then has it)."""
        # Accepting raw sockets and wrapping them ourselves (rather than start_server with
        # ssl=) lets us see, time-limit and log every failed handshake with its address.
        family = socket.AF_INET6 if ":" in self._bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind, self._port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        if self._port == 0:
            self._port = int(sock.getsockname()[1])
        self._accept_task = asyncio.create_task(self._accept_loop(), name="peer-accept")
        log.info("peer transport of %s listening on %s (advertised as %s)", self.name,
                 join_address(self._bind, self._port), self.address)

    def stats(self) -> dict[str, PeerStats]:
        """Bytes and frames per peer address, both directions, headers included."""
        return dict(self._stats)

    # --- streams: the hooks of shoal.mesh.streams ---
    def set_stream_sink(self, sink: StreamSink) -> None:
        self._stream_sink = sink

    async def link_to(self, name: str, address: str | None, timeout: float) -> _Conn:
        """An open connection to the node called ``name``, in either direction.

        A connection the peer dialled counts: a node behind NAT cannot be dialled, but the
        connection it opened to us carries frames both ways. Only then is ``address`` dialled.
        """
        for conn in [*self._out.values(), *self._inbound]:
            if conn.peer.name == name and conn.is_open:
                return conn
        if address is None:
            raise TransportError(f"no connection to node {name} and no address to dial")
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connection(address)
        except TimeoutError:
            raise TransportError(f"could not reach {address} within {timeout:.3g}s") from None
        if conn.peer.name != name:
            raise TransportError(f"{address} is node {conn.peer.name}, not {name}")
        return conn
    # --- end streams ---

    # --- peer identity: certificate renewal and proof of a member's key ---
    def reload_identity(self) -> None:
        """Load the identity's certificate and key again (after a renewal): new connections,
        both directions, present the new certificate; open ones keep theirs."""
        self._server_ctx.load_cert_chain(self.identity.cert, self.identity.key)
        self._client_ctx.load_cert_chain(self.identity.cert, self.identity.key)

    async def peer_public_key(self, name: str, address: str | None, timeout: float) -> bytes:
        """The public key (DER SubjectPublicKeyInfo) that node ``name`` proved it holds in the
        mutual-TLS handshake of a connection to it, dialled if there is none."""
        conn = await self.link_to(name, address, timeout)
        ssl_obj = conn.writer.get_extra_info("ssl_object")
        der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if not der:
            raise TransportError(f"the connection to node {name} carries no certificate")
        try:
            return load_der_certificate(der).spki_der
        except CryptoError as e:
            raise TransportError(f"node {name}'s certificate does not parse: {e}") from e
    # --- end peer identity ---

    # -- outbound ------------------------------------------------------------------------------

    async def _request(self, address: str, channel: Channel, payload: bytes,
                       timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connection(address)
        except (TimeoutError, TransportError) as e:
            # A peer behind NAT cannot be dialled, but the connection it opened carries requests
            # back (the other end serves every frame type on any connection).
            back = next((c for c in self._inbound
                         if c.peer.address == address and c.peer.name and c.is_open), None)
            if back is None:
                if isinstance(e, TransportError):
                    raise
                raise TransportError(f"could not reach {address} within {timeout:.3g}s") from None
            conn = back
        try:
            return await conn.request(channel, payload, max(0.0, deadline - loop.time()))
        except TransportError:
            if conn.closed or conn.writer.is_closing():
                self._drop(address)
            raise

    async def _connection(self, address: str) -> _Conn:
        conn = self._out.get(address)
        if conn is not None and not conn.closed and not conn.writer.is_closing():
            return conn
        task = self._dialing.get(address)
        if task is None:
            task = asyncio.create_task(self._dial(address), name=f"dial {address}")
            self._dialing[address] = task
            task.add_done_callback(lambda t: self._dial_done(address, t))
        # Shield: one caller giving up must not cancel the dial the others wait on.
        return await asyncio.shield(task)

    def _dial_done(self, address: str, task: asyncio.Task[_Conn]) -> None:
        """Forget the dial, and collect its failure: when every caller has timed out (a peer
        behind a cut), no one awaits it, and asyncio would report "Task exception was never
        retrieved" with a traceback."""
        if self._dialing.get(address) is task:
            del self._dialing[address]
        if not task.cancelled() and (e := task.exception()) is not None:
            log.debug("dial %s: %s", address, e)

    def _source_address(self, host: str) -> tuple[str, int] | None:
        """Dial from the bind address when it is a specific one (multi-homed hosts, and
        several nodes on one machine told apart by their loopback address)."""
        if self._bind in ("0.0.0.0", "::", ""):
            return None
        if (":" in self._bind) != (":" in host):
            return None  # address families differ
        return (self._bind, 0)

    async def _dial(self, address: str) -> _Conn:
        host, port = split_address(address)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self._client_ctx,
                                        ssl_handshake_timeout=self._handshake_timeout,
                                        local_addr=self._source_address(host)),
                self._connect_timeout + self._handshake_timeout,
            )
        except TimeoutError:
            raise TransportError(f"connecting to {address} timed out") from None
        except (OSError, ssl.SSLError) as e:
            raise TransportError(f"cannot connect to {address}: {str(e) or repr(e)}") from e
        bound_unacked_time(writer.get_extra_info("socket"))  # partition routing
        name = node_name_of(writer.get_extra_info("peercert"))
        if name is None:
            writer.close()
            raise TransportError(f"{address} does not present a cluster node certificate")
        conn = _Conn(self, reader, writer, PeerIdentity(address, name),
                     max_frame=self._max_frame, stats=self._stats_for(address))
        conn.outbound = True  # streams: this side numbers its streams odd
        conn.write(FrameType.HELLO, Channel.MESH, 0, self.address.encode())
        old = self._out.get(address)
        self._out[address] = conn
        if old is not None:
            self._spawn(old.close())
        self._spawn(self._serve(conn, _Limits()), name=f"peer {address}")
        return conn

    def _drop(self, address: str) -> None:
        conn = self._out.pop(address, None)
        if conn is not None:
            self._spawn(conn.close())

    # -- inbound -------------------------------------------------------------------------------

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _addr = await loop.sock_accept(self._listener)
            except OSError as e:  # out of file descriptors, say: keep the node running
                log.warning("accepting a peer connection failed: %r", e)
                await asyncio.sleep(0.1)
                continue
            self._spawn(self._accept(sock), name="peer-accept-conn")

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        bound_unacked_time(sock)  # partition routing
        try:
            peer = sock.getpeername()
            remote = join_address(str(peer[0]), int(peer[1]))
        except OSError:
            sock.close()
            return
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # uvloop returns its SSL protocol here, so keep our own reference to ours.
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self._server_ctx,
                ssl_handshake_timeout=self._handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as e:
            self.refused += 1
            log.warning("refused peer connection from %s: TLS handshake failed: %s", remote,
                        str(e) or repr(e))
            sock.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        peercert = writer.get_extra_info("peercert")
        name = node_name_of(peercert)
        if peercert and name is None:
            self._refuse(writer, remote, "its certificate does not carry the node role "
                                         f"({NODE_ORG})")
            return
        if name is None:
            # No certificate: only the join exchange, on a short leash.
            conn = _Conn(self, reader, writer, PeerIdentity(remote, None),
                         max_frame=MAX_UNAUTH_FRAME, stats=PeerStats())
            self._inbound.add(conn)
            try:
                idle = min(self.idle_timeout or UNAUTH_IDLE, UNAUTH_IDLE)
                async with asyncio.timeout(UNAUTH_DEADLINE):
                    await self._serve(conn, _Limits(MAX_UNAUTH_REQUESTS,
                                                    frozenset({Channel.CONTROL}), idle, True))
            except TimeoutError:
                log.info("closing the join connection from %s: deadline passed", remote)
            finally:
                self._inbound.discard(conn)
                await conn.close()
            return
        conn = _Conn(self, reader, writer, PeerIdentity(remote, name),
                     max_frame=self._max_frame, stats=PeerStats())
        self._inbound.add(conn)
        try:
            try:
                hello_within = min(self._handshake_timeout,
                                   self.idle_timeout or self._handshake_timeout)
                async with asyncio.timeout(hello_within):
                    ftype, _ch, _rid, payload = await conn.read_frame()
            except (TimeoutError, asyncio.IncompleteReadError, FrameError, OSError) as e:
                self._refuse(writer, remote, f"node {name} sent no hello: {e!r}")
                return
            if ftype != FrameType.HELLO:
                self._refuse(writer, remote, f"node {name} sent {ftype.name} before hello")
                return
            if len(payload) > MAX_HELLO:
                self._refuse(writer, remote, f"node {name} sent a hello of {len(payload)} "
                                             f"bytes (at most {MAX_HELLO})")
                return
            advertised = payload.decode(errors="replace")
            conn.peer = PeerIdentity(advertised, name)
            conn.stats = self._stats_for(advertised)
            conn.stats.bytes_received += _HEADER.size + len(payload)
            conn.stats.frames_received += 1
            await self._serve(conn, _Limits(idle=self.idle_timeout))
        finally:
            self._inbound.discard(conn)
            await conn.close()

    def _refuse(self, writer: asyncio.StreamWriter, remote: str, why: str) -> None:
        self.refused += 1
        log.warning("refused peer connection from %s: %s", remote, why)
        writer.close()

    async def _serve(self, conn: _Conn, limits: _Limits) -> None:
        """Read frames until the connection ends; answer requests in their own tasks."""
        served = 0
        try:
            while True:
                ftype, channel, rid, payload = await conn.read_frame(limits.idle, limits.whole)
                if ftype == FrameType.RESPONSE or ftype == FrameType.ERROR:
                    fut = conn.pending.get(rid)
                    if fut is not None and not fut.done():
                        if ftype == FrameType.RESPONSE:
                            fut.set_result(payload)
                        else:
                            fut.set_exception(TransportError(
                                f"{conn.peer.address}: {payload.decode(errors='replace')}"))
                    continue
                if ftype == FrameType.HELLO:
                    raise FrameError("a second hello")
                # --- streams: in order and on the reading task, never one task per frame ---
                if channel == Channel.STREAM and conn.peer.name is not None \
                        and self._stream_sink is not None:
                    self._stream_sink(conn, rid, payload)
                    continue
                # --- end streams ---
                if channel not in limits.channels or (
                        conn.peer.name is None and ftype != FrameType.REQUEST):
                    raise FrameError(f"{ftype.name} on the {channel.name} channel is not "
                                     "allowed without a node certificate")
                served += 1
                if limits.max_requests is not None and served > limits.max_requests:
                    raise FrameError("too many requests without a node certificate")
                task = asyncio.create_task(self._dispatch(conn, ftype, channel, rid, payload))
                conn.tasks.add(task)
                task.add_done_callback(conn.tasks.discard)
        except FrameError as e:
            self.refused += 1
            log.warning("closing peer connection from %s (%s): %s", _remote(conn.writer),
                        conn.peer.name or "no certificate", e)
        except IdleTimeout as e:
            self.idle_closed += 1
            log.info("closing idle peer connection from %s (%s): %s", _remote(conn.writer),
                     conn.peer.name or "no certificate", e)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as e:
            if not conn.closed:
                log.debug("peer connection %s ended: %r", conn.peer.address, e)
        finally:
            if conn.owner is self and self._out.get(conn.peer.address) is conn:
                self._out.pop(conn.peer.address, None)
            await conn.close()

    async def _dispatch(self, conn: _Conn, ftype: FrameType, channel: Channel, rid: int,
                        payload: bytes) -> None:
        _current_peer.set(conn.peer)
        serving(conn.peer.name)
        try:
            if channel == Channel.CONTROL:
                if self._control is None:
                    raise TransportError("this node serves no control requests")
                answer: bytes | None = await self._control(conn.peer, payload)
            else:
                if self._handler is None:
                    raise TransportError("no mesh handler installed yet")
                answer = await self._handler(conn.peer.address, payload)
        except Exception as e:
            if ftype == FrameType.REQUEST:
                log.warning("handler failed for a request from %s: %r", conn.peer.address, e)
                with contextlib.suppress(TransportError, OSError):
                    conn.write(FrameType.ERROR, channel, rid, f"handler failed: {e}".encode())
            else:
                log.warning("handler failed for a message from %s: %r", conn.peer.address, e)
            return
        if ftype == FrameType.REQUEST:
            with contextlib.suppress(TransportError, OSError, ConnectionError):
                conn.write(FrameType.RESPONSE, channel, rid, answer or b"")
                await conn.writer.drain()

    # -- helpers -------------------------------------------------------------------------------

    def _stats_for(self, address: str) -> PeerStats:
        s = self._stats.get(address)
        if s is None:
            s = self._stats[address] = PeerStats()
        return s

    def _spawn(self, coro: Awaitable[None], name: str | None = None) -> None:
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _remote(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return join_address(str(peer[0]), int(peer[1]))
    return str(peer)


class JoinConnection:
    """A certificate-less client of a peer's control channel: the joining side's half.

    It does not verify the server's certificate during the handshake (it has no CA yet);
    the caller pins the CA from the join token and checks :meth:`peer_cert_der` before
    trusting anything the server says.
    """

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self._reader_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(cls, address: str, timeout: float) -> JoinConnection:
        host, port = split_address(address)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, ssl_handshake_timeout=timeout),
                timeout)
        except TimeoutError:
            raise TransportError(f"connecting to {address} timed out") from None
        except (OSError, ssl.SSLError) as e:
            raise TransportError(f"cannot connect to {address}: {e}") from e
        conn = _Conn(None, reader, writer, PeerIdentity(address, None), max_frame=MAX_FRAME,
                     stats=PeerStats())
        return cls(conn)

    def peer_cert_der(self) -> bytes:
        ssl_obj = self._conn.writer.get_extra_info("ssl_object")
        der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if not der:
            raise TransportError("the peer presented no certificate")
        return bytes(der)

    async def request(self, payload: bytes, timeout: float) -> bytes:
        return await self._conn.request(Channel.CONTROL, payload, timeout)

    async def _read_loop(self) -> None:
        try:
            while True:
                ftype, _ch, rid, payload = await self._conn.read_frame()
                fut = self._conn.pending.get(rid)
                if fut is None or fut.done():
                    continue
                if ftype == FrameType.RESPONSE:
                    fut.set_result(payload)
                elif ftype == FrameType.ERROR:
                    fut.set_exception(TransportError(payload.decode(errors="replace")))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, FrameError) as e:
            self._conn.fail_pending(f"{self._conn.peer.address} closed the connection: {e!r}")

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        await self._conn.close()
