"""The node's DNS server: cluster names from the local index, other names from the host's resolvers.

UDP and TCP on one address, with dnslib for the wire format. A cluster name is
answered from :class:`~shoal.net.dns_records.DnsIndex` alone, so a node cut off
from its peers answers exactly as before; SERVFAIL comes only from forwarding,
when every upstream resolver fails or times out.

A query is parsed once; the packed reply is cached per (name as asked, type,
class, recursion-desired) until the index's generation moves, so a repeated
query costs a parse, a dict lookup and a copy with the query's id. A packet
that does not parse is dropped and logged (at most once every 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from dnslib import (
    AAAA,
    CNAME,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    A,
    DNSHeader,
    DNSRecord,
)

from shoal.net.dns_records import TTL, DnsIndex, NameRecords

log = logging.getLogger(__name__)

Upstream = tuple[str, int]

UPSTREAM_TIMEOUT = 2.0
"""Seconds to wait for one upstream resolver before trying the next."""
TCP_IDLE_TIMEOUT = 10.0
CACHE_LIMIT = 20_000
"""Packed replies kept; the cache is emptied when full (random names must not grow it)."""
PLAIN_UDP_SIZE = 512


def read_upstreams(path: Path = Path("/etc/resolv.conf")) -> list[Upstream]:
    """The host's resolvers: the ``nameserver`` lines of its resolv.conf."""
    out: list[Upstream] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        log.warning("cannot read %s (%s): names outside the cluster will get SERVFAIL", path, e)
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append((parts[1], 53))
    return out


class DnsServer:
    def __init__(self, index: DnsIndex, upstreams: list[Upstream],
                 upstream_timeout: float = UPSTREAM_TIMEOUT) -> None:
        self.index = index
        self.upstreams = upstreams
        self.upstream_timeout = upstream_timeout
        self._cache: dict[tuple[str, int, int, int], bytes] = {}
        self._cache_generation = -1
        self._external: set[tuple[str, int, int, int]] = set()
        """Cached keys whose answer also needs an upstream (ExternalName targets)."""
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._malformed = 0
        self._malformed_logged_at = 0.0
        self.queries = 0
        self.forwarded = 0

    # -- listening -------------------------------------------------------------

    async def start(self, host: str, port: int, freebind: bool = False) -> int:
        """Listen on UDP and TCP ``host:port`` (0: a free port); returns the port.

        ``freebind`` binds an address the host does not have yet (the pod bridge's
        gateway before the first pod creates the bridge): packets arrive once it does.
        """
        loop = asyncio.get_running_loop()
        # A free UDP port may be taken on TCP: with port 0, try other ports.
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            udp = _bound_socket(host, port, socket.SOCK_DGRAM, freebind)
            try:
                tcp = _bound_socket(host, int(udp.getsockname()[1]), socket.SOCK_STREAM,
                                    freebind)
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue
            port = int(udp.getsockname()[1])
            break
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        self._udp = transport
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp, backlog=128)
        return port

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
        for t in list(self._tasks):
            t.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                data = await reader.readexactly(struct.unpack("!H", head)[0])
                reply = await self.answer(data, tcp=True, peer=writer.get_extra_info("peername"))
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    # -- answering -------------------------------------------------------------

    async def answer(self, data: bytes, tcp: bool, peer: object = None) -> bytes | None:
        """The reply to one query packet, or None to drop it."""
        request, local = self.answer_locally(data, tcp, peer)
        if local is not None or request is None:
            return local
        return await self.answer_remotely(request, data, tcp)

    def answer_locally(self, data: bytes, tcp: bool,
                       peer: object = None) -> tuple[DNSRecord | None, bytes | None]:
        """(request, reply) from the index alone; (request, None) when the answer needs an
        upstream resolver (:meth:`answer_remotely`); (None, None) to drop the packet."""
        try:
            request = DNSRecord.parse(data)
        except Exception as e:  # dnslib raises several types on garbage; none may stop us
            self._log_malformed(peer, e)
            return None, None
        self.queries += 1
        if request.header.qr or not request.questions:
            self._log_malformed(peer, "not a query")
            return None, None
        q = request.q
        asked = str(q.qname)
        name = asked.rstrip(".").lower()
        if request.header.opcode != 0:
            reply = request.reply()
            reply.header.rcode = RCODE.NOTIMP
            return request, reply.pack()
        if not self.index.in_zone(name):
            return request, None
        if self._cache_generation != self.index.generation or len(self._cache) > CACHE_LIMIT:
            self._cache.clear()
            self._external.clear()
            self._cache_generation = self.index.generation
        key = (asked, q.qtype, q.qclass, request.header.rd)
        packed = self._cache.get(key)
        if packed is None:
            packed = self._build(request, name, q.qtype).pack()
            self._cache[key] = packed
            if self._external_target(name, q.qtype) is not None:
                self._external.add(key)
        if self._external and key in self._external:
            return request, None
        return request, self._fit(request, packed, tcp)

    def _fit(self, request: DNSRecord, packed: bytes, tcp: bool) -> bytes:
        """The packed reply with the request's id, or a truncated one if UDP cannot carry it."""
        if not tcp and len(packed) > _udp_limit(request):
            return bytes(_truncated(request).pack())
        return struct.pack("!H", request.header.id) + packed[2:]

    def _external_target(self, name: str, qtype: int) -> str | None:
        """The target of an ExternalName CNAME that an upstream must resolve, if any."""
        if qtype in (QTYPE.CNAME, QTYPE.SRV):
            return None
        records = self.index.lookup(name)
        target = records.cname if records is not None else None
        return target if target is not None and not self.index.in_zone(target) else None

    async def answer_remotely(self, request: DNSRecord, data: bytes, tcp: bool) -> bytes:
        """Forward a name outside the cluster; for an ExternalName Service, resolve its target
        upstream and answer with the CNAME followed by the target's records (as CoreDNS does:
        stub resolvers do not chase a CNAME themselves)."""
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        if not self.index.in_zone(name):
            return await self._forward(request, data, tcp)
        reply = self._build(request, name, q.qtype)
        target = self._external_target(name, q.qtype)
        if target is not None:
            question = DNSRecord.question(target, QTYPE[q.qtype])
            found = DNSRecord.parse(await self._forward(question, question.pack(), tcp))
            reply.header.rcode = found.header.rcode
            for rr in found.rr:
                reply.add_answer(rr)
        return self._fit(request, reply.pack(), tcp)

    def _build(self, request: DNSRecord, name: str, qtype: int) -> DNSRecord:
        reply = request.reply()
        records = self.index.lookup(name)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            self._add_answers(reply, request.q.qname, records, qtype)
        if not reply.rr:
            reply.add_auth(self._soa())
        return reply

    def _add_answers(self, reply: DNSRecord, qname: object, records: NameRecords,
                     qtype: int) -> None:
        if records.cname is not None:
            reply.add_answer(RR(qname, QTYPE.CNAME, ttl=TTL, rdata=CNAME(records.cname + ".")))
            target = records.cname
            if qtype != QTYPE.CNAME and self.index.in_zone(target):
                found = self.index.lookup(target)
                if found is not None and found.cname is None:
                    self._add_answers(reply, target + ".", found, qtype)
            return
        if qtype in (QTYPE.A, QTYPE.ANY):
            for ip in records.a:
                reply.add_answer(RR(qname, QTYPE.A, ttl=TTL, rdata=A(ip)))
        if qtype in (QTYPE.AAAA, QTYPE.ANY):
            for ip in records.aaaa:
                reply.add_answer(RR(qname, QTYPE.AAAA, ttl=TTL, rdata=AAAA(ip)))
        if qtype in (QTYPE.SRV, QTYPE.ANY):
            targets: dict[str, None] = {}
            for s in records.srv:
                reply.add_answer(RR(qname, QTYPE.SRV, ttl=TTL,
                                    rdata=SRV(s.priority, s.weight, s.port, s.target + ".")))
                targets[s.target] = None
            for t in targets:  # the targets' addresses, so clients need no second query
                found = self.index.lookup(t)
                for ip in found.a if found is not None else ():
                    reply.add_ar(RR(t + ".", QTYPE.A, ttl=TTL, rdata=A(ip)))
                for ip in found.aaaa if found is not None else ():
                    reply.add_ar(RR(t + ".", QTYPE.AAAA, ttl=TTL, rdata=AAAA(ip)))

    def _soa(self) -> RR:
        zone = self.index.domain + "."
        return RR(zone, QTYPE.SOA, ttl=TTL,
                  rdata=SOA(f"ns.dns.{zone}", f"hostmaster.{zone}",
                            (self.index.generation % 2**32, 7200, 1800, 86400, TTL)))

    # -- forwarding ------------------------------------------------------------

    async def _forward(self, request: DNSRecord, data: bytes, tcp: bool) -> bytes:
        """The first upstream's reply, passed through as it came; SERVFAIL if none answers."""
        self.forwarded += 1
        for upstream in self.upstreams:
            try:
                ask = _ask_tcp if tcp else _ask_udp
                reply = await asyncio.wait_for(ask(upstream, data), self.upstream_timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("upstream %s:%d failed for %s: %s", *upstream, request.q.qname, e)
                continue
            if reply[:2] == data[:2]:
                return reply
        failed = request.reply()
        failed.header.rcode = RCODE.SERVFAIL
        return bytes(failed.pack())

    def _log_malformed(self, peer: object, why: object) -> None:
        self._malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged_at >= 10.0:
            log.warning("dropped a malformed DNS packet from %s (%s); %d dropped so far",
                        peer, why, self._malformed)
            self._malformed_logged_at = now


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux's value, missing before Python 3.12


def _bound_socket(host: str, port: int, kind: socket.SocketKind, freebind: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if freebind:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)  # IPv6 sockets honour it too
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _udp_limit(request: DNSRecord) -> int:
    """The reply size the client accepts over UDP: 512, or its EDNS buffer size."""
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(PLAIN_UDP_SIZE, int(rr.rclass))
    return PLAIN_UDP_SIZE


def _truncated(request: DNSRecord) -> DNSRecord:
    """A reply with only the question and TC set: the client retries over TCP."""
    header = DNSHeader(id=request.header.id, bitmap=request.header.bitmap, qr=1, aa=1, ra=1, tc=1)
    return DNSRecord(header, q=request.q)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request, reply = self.server.answer_locally(data, False, addr)
        if reply is not None:
            assert self.transport is not None
            self.transport.sendto(reply, addr)
        elif request is not None:
            self.server._spawn(self._answer_remotely(request, data, addr))

    async def _answer_remotely(self, request: DNSRecord, data: bytes,
                               addr: tuple[str, int]) -> None:
        reply = await self.server.answer_remotely(request, data, False)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _ask_udp(upstream: Upstream, data: bytes) -> bytes:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        _OneReply, remote_addr=upstream)
    try:
        transport.sendto(data)
        return await protocol.reply
    finally:
        transport.close()


async def _ask_tcp(upstream: Upstream, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()
