"""The virtual-time loop and the simulated network."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from shoal.mesh.transport import TransportError
from shoal.sim.loop import EPOCH, RealIOForbidden, SimDeadlock, VirtualEventLoop, VirtualWallClock
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults, SimNetwork


def test_an_hour_of_virtual_sleep_takes_no_real_time_and_timers_fire_in_order() -> None:
    fired: list[tuple[float, str]] = []

    async def main() -> float:
        loop = asyncio.get_running_loop()
        loop.call_later(2.0, lambda: fired.append((loop.time(), "b")))
        loop.call_later(1.0, lambda: fired.append((loop.time(), "a")))
        await asyncio.sleep(3600)
        return loop.time()

    start = time.perf_counter()
    assert virtual_run(main()) == pytest.approx(3600)
    assert time.perf_counter() - start < 1.0
    assert [n for _, n in fired] == ["a", "b"]
    assert fired[0][0] == pytest.approx(1.0)


def test_the_virtual_wall_clock_follows_virtual_time_with_its_skew() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        clock = VirtualWallClock(loop, skew=0.5)
        a = clock.now()
        await asyncio.sleep(10)
        return a, clock.now()

    a, b = virtual_run(main())
    assert a == EPOCH + 0.5 and b == pytest.approx(EPOCH + 10.5)


def test_real_io_is_refused() -> None:
    async def main() -> None:
        await asyncio.open_connection("127.0.0.1", 80)

    with pytest.raises(RealIOForbidden):
        virtual_run(main())


def test_waiting_on_nothing_is_reported_as_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimDeadlock):
        virtual_run(main())


async def echo(sender: str, payload: bytes) -> bytes:
    return payload


def test_requests_are_answered_and_counted_per_node() -> None:
    async def main() -> SimNetwork:
        net = SimNetwork(random.Random(1))
        a, b = net.transport("a"), net.transport("b")
        b.set_handler(echo)
        assert await a.request("b", b"hello", 1.0) == b"hello"
        return net

    net = virtual_run(main())
    assert net.bytes_sent["a"] == 5 and net.bytes_sent["b"] == 5
    assert net.messages_received["b"] == 1


def test_partitions_and_clogs_cut_links_until_healed() -> None:
    async def main() -> None:
        net = SimNetwork(random.Random(2))
        a, b, c = net.transport("a"), net.transport("b"), net.transport("c")
        for t in (a, b, c):
            t.set_handler(echo)
        net.partition([["a"], ["b", "c"]])
        with pytest.raises(TransportError):
            await a.request("b", b"x", 0.5)
        assert await b.request("c", b"x", 0.5) == b"x"
        net.heal()
        net.clog("b", "c")
        assert await a.request("b", b"x", 0.5) == b"x"
        with pytest.raises(TransportError):
            await c.request("b", b"x", 0.5)
        net.unclog("b", "c")
        assert await c.request("b", b"x", 0.5) == b"x"

    virtual_run(main())


def test_loss_duplication_and_reordering_follow_the_seed() -> None:
    async def main(seed: int) -> list[int]:
        net = SimNetwork(random.Random(seed), LinkFaults(drop=0.2, duplicate=0.2, delay_mean=0.05))
        a, b = net.transport("a"), net.transport("b")
        got: list[int] = []

        async def record(sender: str, payload: bytes) -> None:
            got.append(int(payload))

        b.set_handler(record)
        for i in range(100):
            await a.send("b", str(i).encode())
        await asyncio.sleep(5)
        return got

    first = virtual_run(main(7))
    assert first == virtual_run(main(7))
    assert len(set(first)) < 100  # some lost
    assert len(first) > len(set(first))  # some twice
    assert first != sorted(first)  # some overtaken
