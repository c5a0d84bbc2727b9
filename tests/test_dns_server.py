"""The DNS server on loopback, queried with dnspython: cluster names, forwarding, TCP, bad packets."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from shoal.net.cluster_dns import forwards_to_itself
from shoal.net.dns_records import PODS, SERVICES, SLICES, DnsIndex
from shoal.net.dns_server import DnsServer, read_upstreams

ZONE = "cluster.local"


class FakeUpstream(asyncio.DatagramProtocol):
    """Stands in for the host's resolver: every A query gets 192.0.2.1."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.asked: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.answer(data), addr)

    def answer(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        self.asked.append(str(request.q.qname))
        reply = request.reply(aa=0)
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.1")))
        return bytes(reply.pack())

    async def serve_tcp(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        reply = self.answer(await reader.readexactly(size))
        writer.write(len(reply).to_bytes(2, "big") + reply)
        await writer.drain()
        writer.close()


def apply(index: DnsIndex, resource: str, obj: dict[str, Any]) -> None:
    index.apply(resource, obj["metadata"]["namespace"], obj["metadata"]["name"], obj)


def cluster_index() -> DnsIndex:
    index = DnsIndex(ZONE)
    apply(index, SERVICES, {"metadata": {"name": "web", "namespace": "shop"}, "spec": {
        "clusterIP": "10.96.4.4", "clusterIPs": ["10.96.4.4"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    apply(index, SERVICES, {"metadata": {"name": "db", "namespace": "shop"}, "spec": {
        "clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})
    apply(index, SLICES, {
        "metadata": {"name": "db-x", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "endpoints": [{"addresses": [f"10.42.0.{i}"], "conditions": {"ready": True}}
                      for i in range(2, 62)],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]})
    apply(index, SERVICES, {"metadata": {"name": "ext", "namespace": "shop"}, "spec": {
        "type": "ExternalName", "externalName": "db.example.org"}})
    apply(index, PODS, {"metadata": {"name": "p", "namespace": "shop"},
                        "status": {"podIP": "10.42.1.9"}})
    return index


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[FakeUpstream, int]]:
    # A free UDP port may be taken on TCP by another test's server: try another.
    for attempt in range(20):
        transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            FakeUpstream, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(protocol.serve_tcp, "127.0.0.1", port)
            break
        except OSError:
            transport.close()
            if attempt == 19:
                raise
    yield protocol, port
    tcp.close()
    transport.close()


@pytest.fixture
async def server(upstream: tuple[FakeUpstream, int]) -> AsyncIterator[tuple[DnsServer, int]]:
    s = DnsServer(cluster_index(), [("127.0.0.1", upstream[1])], upstream_timeout=0.5)
    port = await s.start("127.0.0.1", 0)
    yield s, port
    await s.close()


async def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset
                  if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA))


async def test_a_service_name_gets_its_cluster_ip_with_a_5s_ttl(
        server: tuple[DnsServer, int]) -> None:
    reply = await ask(server[1], f"web.shop.svc.{ZONE}")
    assert reply.rcode() == dns.rcode.NOERROR
    assert addresses(reply) == ["10.96.4.4"]
    assert reply.answer[0].ttl == 5
    assert reply.flags & dns.flags.AA


async def test_a_named_port_gets_an_srv_record_to_the_service_name(
        server: tuple[DnsServer, int]) -> None:
    reply = await ask(server[1], f"_http._tcp.web.shop.svc.{ZONE}", "SRV")
    srv = [rd for rrset in reply.answer for rd in rrset]
    assert [(s.port, s.target.to_text()) for s in srv] == [(80, f"web.shop.svc.{ZONE}.")]
    assert [rd.to_text() for rrset in reply.additional for rd in rrset] == ["10.96.4.4"]


async def test_a_headless_service_over_tcp_returns_every_ready_pod(
        server: tuple[DnsServer, int]) -> None:
    reply = await ask(server[1], f"db.shop.svc.{ZONE}", tcp=True)
    assert addresses(reply) == sorted(f"10.42.0.{i}" for i in range(2, 62))


async def test_an_answer_too_large_for_udp_is_truncated_so_the_client_retries_over_tcp(
        server: tuple[DnsServer, int]) -> None:
    reply = await ask(server[1], f"db.shop.svc.{ZONE}")
    assert reply.flags & dns.flags.TC
    assert reply.answer == []
    q = dns.message.make_query(f"db.shop.svc.{ZONE}", "A")
    full, used_tcp = await dns.asyncquery.udp_with_fallback(q, "127.0.0.1", port=server[1],
                                                            timeout=3)
    assert used_tcp and len(addresses(full)) == 60


async def test_a_pod_name_gets_the_pods_address(server: tuple[DnsServer, int]) -> None:
    reply = await ask(server[1], f"10-42-1-9.shop.pod.{ZONE}")
    assert addresses(reply) == ["10.42.1.9"]


async def test_an_unknown_cluster_name_is_nxdomain_with_the_zones_soa(
        server: tuple[DnsServer, int], upstream: tuple[FakeUpstream, int]) -> None:
    reply = await ask(server[1], f"nope.shop.svc.{ZONE}")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]
    assert reply.authority[0].name.to_text() == f"{ZONE}."
    assert upstream[0].asked == []


async def test_aaaa_for_an_ipv4_only_service_is_an_empty_noerror(
        server: tuple[DnsServer, int]) -> None:
    reply = await ask(server[1], f"web.shop.svc.{ZONE}", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]


async def test_an_external_name_service_is_a_cname(server: tuple[DnsServer, int]) -> None:
    reply = await ask(server[1], f"ext.shop.svc.{ZONE}", "CNAME")
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["db.example.org."]


async def test_an_external_name_service_is_followed_to_its_targets_address_upstream(
        server: tuple[DnsServer, int], upstream: tuple[FakeUpstream, int]) -> None:
    for tcp in (False, True):
        reply = await ask(server[1], f"ext.shop.svc.{ZONE}", tcp=tcp)
        assert [(rrset.name.to_text(), rrset.rdtype) for rrset in reply.answer] == [
            (f"ext.shop.svc.{ZONE}.", dns.rdatatype.CNAME),
            ("db.example.org.", dns.rdatatype.A)]
        assert addresses(reply) == ["192.0.2.1"]
    assert upstream[0].asked == ["db.example.org."] * 2


async def test_other_names_are_forwarded_to_the_host_resolver(
        server: tuple[DnsServer, int], upstream: tuple[FakeUpstream, int]) -> None:
    for tcp in (False, True):
        reply = await ask(server[1], "www.example.org", tcp=tcp)
        assert addresses(reply) == ["192.0.2.1"]
    assert upstream[0].asked == ["www.example.org."] * 2


async def test_a_failing_upstream_gets_servfail_but_cluster_names_still_answer() -> None:
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    dead.bind(("127.0.0.1", 0))
    s = DnsServer(cluster_index(), [("127.0.0.1", dead.getsockname()[1])], upstream_timeout=0.2)
    port = await s.start("127.0.0.1", 0)
    try:
        assert (await ask(port, "www.example.org")).rcode() == dns.rcode.SERVFAIL
        assert addresses(await ask(port, f"web.shop.svc.{ZONE}")) == ["10.96.4.4"]
    finally:
        await s.close()
        dead.close()


async def test_a_malformed_packet_is_dropped_and_logged_and_the_server_keeps_answering(
        server: tuple[DnsServer, int], caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"\x12\x34\x01\x00\x00\x01garbage", ("127.0.0.1", server[1]))
        with caplog.at_level(logging.WARNING, logger="shoal.net.dns_server"):
            reply = await ask(server[1], f"web.shop.svc.{ZONE}")
        raw.settimeout(0.2)
        with pytest.raises(TimeoutError):
            raw.recv(512)
    assert addresses(reply) == ["10.96.4.4"]
    assert "malformed DNS packet" in caplog.text


async def test_an_answer_changes_as_soon_as_the_index_does(server: tuple[DnsServer, int]) -> None:
    assert addresses(await ask(server[1], f"web.shop.svc.{ZONE}")) == ["10.96.4.4"]
    server[0].index.apply(SERVICES, "shop", "web", None)
    assert (await ask(server[1], f"web.shop.svc.{ZONE}")).rcode() == dns.rcode.NXDOMAIN


def test_upstreams_are_the_hosts_nameservers(tmp_path: Any) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 10.0.0.2\nsearch lan\nnameserver fe80::1%eth0\n")
    assert read_upstreams(conf) == [("10.0.0.2", 53), ("fe80::1%eth0", 53)]


@pytest.mark.parametrize(("upstream", "listener", "loops"), [
    (("10.42.0.1", 53), ("10.42.0.1", 53), True),
    (("127.0.0.53", 53), ("0.0.0.0", 53), True),
    (("127.0.0.53", 53), ("10.42.0.1", 53), False),
    (("127.0.0.53", 53), ("0.0.0.0", 5353), False),
    (("10.0.0.2", 53), ("0.0.0.0", 53), False),
], ids=["our own gateway address", "loopback while we listen on every address",
        "loopback while we listen on the gateway only", "the same address on another port",
        "another host"])
def test_an_upstream_that_is_this_server_is_never_forwarded_to(
        upstream: tuple[str, int], listener: tuple[str, int], loops: bool) -> None:
    assert forwards_to_itself(upstream, listener) is loops
