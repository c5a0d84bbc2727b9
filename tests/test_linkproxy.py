"""The link emulation tools: the delaying proxy and network namespaces."""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator

import pytest

from tests.tools import netns
from tests.tools.linkproxy import LinkProxy, ThreadedLinkProxy, parse_delay


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield str(host), int(port)
    finally:
        server.close()


async def median_rtt(address: tuple[str, int], n: int = 30) -> float:
    reader, writer = await asyncio.open_connection(*address)
    samples = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(b"x" * 64)
            await writer.drain()
            await reader.readexactly(64)
            samples.append(time.perf_counter() - t0)
    finally:
        writer.close()
    return statistics.median(samples)


def test_delays_parse_with_units() -> None:
    assert parse_delay("10ms") == pytest.approx(0.010)
    assert parse_delay("250us") == pytest.approx(0.00025)
    assert parse_delay("1.5s") == 1.5
    assert parse_delay("0.2") == 0.2


async def test_the_proxy_adds_the_configured_delay_each_way(
        echo_server: tuple[str, int]) -> None:
    direct = await median_rtt(echo_server)
    proxy = LinkProxy(echo_server, delay=0.010)
    await proxy.start()
    try:
        delayed = await median_rtt(proxy.address)
    finally:
        await proxy.stop()
    added = delayed - direct
    print(f"\nlink proxy, 10 ms each way: direct RTT {direct * 1e3:.2f} ms, through the proxy "
          f"{delayed * 1e3:.2f} ms, added {added * 1e3:.2f} ms (ideal 20 ms)")
    assert 0.019 <= added <= 0.030
    assert proxy.stats.bytes_forward == proxy.stats.bytes_backward == 30 * 64


async def test_jitter_never_reorders_the_stream(echo_server: tuple[str, int]) -> None:
    proxy = LinkProxy(echo_server, delay=0.001, jitter=0.005, seed=7)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*proxy.address)
        sent = b"".join(b"%06d" % i for i in range(2000))
        for i in range(0, len(sent), 600):
            writer.write(sent[i:i + 600])
            await writer.drain()
            await asyncio.sleep(0)
        assert await asyncio.wait_for(reader.readexactly(len(sent)), 10) == sent
        writer.close()
    finally:
        await proxy.stop()


async def test_cut_resets_connections_and_refuses_new_ones_until_heal(
        echo_server: tuple[str, int]) -> None:
    proxy = LinkProxy(echo_server)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        proxy.cut()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # reset or EOF: it is gone
        r2, w2 = await asyncio.open_connection(*proxy.address)
        assert await asyncio.wait_for(r2.read(), 2) == b""
        assert proxy.stats.refused == 1
        proxy.heal()
        r3, w3 = await asyncio.open_connection(*proxy.address)
        w3.write(b"b")
        assert await asyncio.wait_for(r3.readexactly(1), 2) == b"b"
        for w in (writer, w2, w3):
            w.close()
    finally:
        await proxy.stop()


async def test_a_blackhole_holds_traffic_and_heal_delivers_it(
        echo_server: tuple[str, int]) -> None:
    proxy = LinkProxy(echo_server)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*proxy.address)
        proxy.cut("blackhole")
        writer.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)
        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
        writer.close()
    finally:
        await proxy.stop()


def test_the_threaded_proxy_serves_synchronous_callers() -> None:
    with (socket.create_server(("127.0.0.1", 0)) as server,
          ThreadedLinkProxy(server.getsockname()[:2], delay=0.005) as proxy):
        client = socket.create_connection(proxy.address, timeout=5)
        conn, _ = server.accept()
        t0 = time.perf_counter()
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        assert time.perf_counter() - t0 >= 0.005
        proxy.cut()
        time.sleep(0.1)
        assert client.recv(1) == b""
        proxy.heal()
        client.close()
        conn.close()


# -- network namespaces --------------------------------------------------------------------

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except OSError as e:
    print(e)
    sys.exit(1)
"""


def test_two_namespaces_reach_each_other_until_cut_and_again_after_heal() -> None:
    netns.require(need_iptables=True)
    with netns.NetnsLab() as lab:
        a, b = lab.add("a"), lab.add("b")
        listener = a.popen([sys.executable, "-c",
                            "import socket, time\n"
                            "s = socket.create_server(('0.0.0.0', 7000))\n"
                            "while True:\n"
                            "    s.accept()[0].close()\n"])

        def reachable() -> bool:
            r = b.run([sys.executable, "-c", _CONNECT, a.ip, "7000"], capture_output=True,
                      timeout=10)
            return r.returncode == 0

        deadline = time.monotonic() + 5
        while not reachable():
            assert listener.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        modes: tuple[netns.CutMode, ...] = ("link", "drop")
        for mode in modes:
            lab.cut(a, mode)
            assert not reachable(), mode
            lab.heal(a)
            assert reachable(), mode
    assert lab.namespaces == []
    out = netns.sh("ip", "netns", "list").stdout
    assert f"{lab.prefix}-a" not in out
