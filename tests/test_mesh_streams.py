"""Streams over the peer transport: both directions of one connection, flow control, loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal.mesh import pki
from shoal.mesh.streams import WINDOW, Stream, StreamMux, StreamReset
from shoal.mesh.tls_transport import TlsTransport
from shoal.mesh.transport import TransportError
from tests.test_tls_transport import echo, write_identity


@pytest.fixture
async def nat_pair(tmp_path: Path) -> AsyncIterator[tuple[TlsTransport, TlsTransport]]:
    """``edge`` advertises an address nothing listens on: only it can open connections."""
    ca = pki.create_ca()
    hub = TlsTransport(write_identity(tmp_path / "hub", ca, "hub"))
    edge = TlsTransport(write_identity(tmp_path / "edge", ca, "edge"),
                        advertise_address="127.0.0.1:1")
    await hub.start()
    await edge.start()
    hub.set_handler(echo)
    edge.set_handler(echo)
    try:
        yield hub, edge
    finally:
        await hub.close()
        await edge.close()


async def echo_acceptor(stream: Stream) -> None:
    await stream.send(repr(sorted(stream.header.items())).encode() + f"|{stream.peer}".encode())
    while (msg := await stream.recv()) is not None:
        await stream.send(msg)


async def test_the_hub_opens_streams_and_requests_over_the_connection_the_edge_opened(
        nat_pair: tuple[TlsTransport, TlsTransport]) -> None:
    hub, edge = nat_pair
    hub_mux, edge_mux = StreamMux(hub), StreamMux(edge)
    edge_mux.set_acceptor(echo_acceptor)
    with pytest.raises(TransportError):  # not dialable, and no connection yet
        await hub_mux.open("edge", "127.0.0.1:1", {}, 2)
    assert await edge.request(hub.address, b"hi", 5)  # the edge dials out
    # A plain request back over the edge's connection, to the address it advertised.
    assert await hub.request("127.0.0.1:1", b"back", 5) == f"hub@{hub.address}:back".encode()
    s = await hub_mux.open("edge", "127.0.0.1:1", {"op": "x"}, 2)
    assert await s.recv() == b"[('op', 'x')]|hub"
    for i in range(50):
        await s.send(b"m%d" % i)
    assert [await s.recv() for _ in range(50)] == [b"m%d" % i for i in range(50)]
    await s.end()
    assert await s.recv() is None


async def test_a_slow_reader_holds_the_sender_to_a_window_and_the_mesh_keeps_flowing(
        nat_pair: tuple[TlsTransport, TlsTransport]) -> None:
    hub, edge = nat_pair
    hub_mux, edge_mux = StreamMux(hub), StreamMux(edge)
    sent = 0
    done = asyncio.Event()

    async def firehose(stream: Stream) -> None:
        nonlocal sent
        chunk = b"x" * 65536
        while sent < 8 * WINDOW:
            await stream.send(chunk)
            sent += len(chunk)
        done.set()

    edge_mux.set_acceptor(firehose)
    await edge.request(hub.address, b"hi", 5)
    s = await hub_mux.open("edge", None, {}, 2)
    await asyncio.sleep(0.3)
    assert sent <= WINDOW + 65536  # blocked on credit, not buffered without bound
    assert await hub.request("127.0.0.1:1", b"ping", 2)  # the connection is not stalled
    got = 0
    while got < 8 * WINDOW:
        msg = await s.recv()
        assert msg is not None
        got += len(msg)
    await asyncio.wait_for(done.wait(), 5)


async def test_losing_the_connection_resets_its_streams(
        nat_pair: tuple[TlsTransport, TlsTransport]) -> None:
    hub, edge = nat_pair
    hub_mux, edge_mux = StreamMux(hub), StreamMux(edge)
    edge_mux.set_acceptor(echo_acceptor)
    await edge.request(hub.address, b"hi", 5)
    s = await hub_mux.open("edge", None, {}, 2)
    assert await s.recv()
    await edge.close()
    with pytest.raises(StreamReset):
        await asyncio.wait_for(s.recv(), 5)
