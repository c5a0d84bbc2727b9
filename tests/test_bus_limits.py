"""Limits and bad input on one site's bus: a full stream refuses rather than grows, a
consumer that stops reading is cut off without stopping the others, and a client that
speaks garbage loses only its own connection."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import APIError

from shoal.bus import stream_objects
from tests.test_bus_harness import Bus, Peer, need_nats_server

pytestmark = pytest.mark.slow


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Peer]:
    need_nats_server()
    bus = Bus(tmp_path)
    peer = bus.add("edge-1", "farm-a")
    # As Shoal renders it: 8 MiB buffered per client before it is a slow consumer, and a
    # stuck client's full socket holds up delivery to the others for at most 2 s.
    await bus.start(peer, bus.config(peer))
    try:
        yield peer
    finally:
        await bus.stop()


async def test_a_stream_at_its_byte_limit_with_discard_new_refuses_the_next_message(
        site: Peer) -> None:
    nc = await nats.connect(site.url)
    try:
        obj = {"metadata": {"name": "capped"},
               "spec": {"subjects": ["capped.>"], "maxBytes": 64 * 1024, "discard": "new"}}
        await nc.jsm().add_stream(StreamConfig.from_response(
            copy.deepcopy(stream_objects.stream_config(obj, 1))))
        js = nc.jetstream()
        stored = 0
        with pytest.raises(APIError) as refused:
            for _ in range(1000):
                await js.publish("capped.x", b"r" * 1000)
                stored += 1
        assert "maximum bytes" in str(refused.value).lower()
        info = await nc.jsm().stream_info("capped")
        assert 0 < stored < 100 and info.state.bytes <= 64 * 1024
    finally:
        await nc.close()


async def test_a_consumer_that_stops_reading_is_cut_off_and_the_others_keep_receiving(
        site: Peer) -> None:
    errors: list[Exception] = []

    async def on_error(e: Exception) -> None:
        errors.append(e)

    stalled = await nats.connect(site.url, error_cb=on_error, allow_reconnect=False,
                                 pending_size=64 * 1024 * 1024)
    healthy = await nats.connect(site.url)
    publisher = await nats.connect(site.url)
    try:
        # A socket nobody reads: the client stops its reading task, the server's buffer fills.
        await stalled.subscribe("flood")
        await stalled.flush()
        stalled._reading_task.cancel()  # type: ignore[union-attr]
        received = 0

        async def count(msg: Any) -> None:
            nonlocal received
            received += 1

        await healthy.subscribe("flood", cb=count)
        await healthy.flush()
        payload = b"x" * 8192
        for _ in range(3000):  # 24 MiB, past the stalled client's 8 MiB
            await publisher.publish("flood", payload)
        await publisher.flush()
        deadline = asyncio.get_running_loop().time() + 30  # generous: the machine may be loaded
        while received < 3000:
            assert asyncio.get_running_loop().time() < deadline, f"only {received} arrived"
            await asyncio.sleep(0.05)
        log = (Path(site.settings.store_dir).parent / "nats-server.log").read_text()
        assert "Slow Consumer" in log
    finally:
        for nc in (healthy, publisher):
            await nc.close()
        if not stalled.is_closed:
            await stalled.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_a_consumer_that_never_acks_leaves_memory_bounded_by_the_stream_object(
        site: Peer) -> None:
    nc = await nats.connect(site.url)
    try:
        obj = {"metadata": {"name": "readings"},
               "spec": {"subjects": ["readings.>"], "storage": "memory",
                        "maxBytes": 1024 * 1024, "discard": "old"}}
        await nc.jsm().add_stream(StreamConfig.from_response(
            copy.deepcopy(stream_objects.stream_config(obj, 1))))
        consumer = {"metadata": {"name": "slow"},
                    "spec": {"streamName": "readings", "ackPolicy": "explicit",
                             "maxAckPending": 10}}
        await nc.jsm().add_consumer("readings", ConsumerConfig.from_response(
            stream_objects.consumer_config(consumer)))
        js = nc.jetstream()
        sub = await js.pull_subscribe("readings.>", durable="slow", stream="readings")
        assert site.supervisor is not None and site.supervisor.pid is not None
        before = rss_kb(site.supervisor.pid)
        payload = b"r" * 4096
        for base in range(0, 10_000, 500):  # 40 MiB through a stream of 1 MiB
            await asyncio.gather(*(js.publish("readings.t", payload)
                                   for _ in range(base, base + 500)))
        first = await sub.fetch(10, timeout=2)  # taken, never acked
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await sub.fetch(1, timeout=0.5)  # maxAckPending: no more until those are acked
        info = await nc.jsm().stream_info("readings")
        assert info.state.bytes <= 1024 * 1024 and info.state.last_seq == 10_000
        grown_mb = (rss_kb(site.supervisor.pid) - before) / 1024
        assert grown_mb < 24, f"nats-server grew by {grown_mb:.0f} MB"
        assert len(first) == 10
    finally:
        await nc.close()


async def test_a_client_speaking_garbage_loses_only_its_own_connection(site: Peer) -> None:
    good = await nats.connect(site.url)
    try:
        got: list[bytes] = []

        async def cb(msg: Any) -> None:
            got.append(msg.data)

        await good.subscribe("readings", cb=cb)
        await good.flush()
        reader, writer = await asyncio.open_connection("127.0.0.1", site.settings.client_port)
        await reader.readline()  # INFO
        writer.write(b"\x00\xffGARBAGE not a verb\r\nPUB readings 999999999999\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
        assert b"-ERR" in answer
        assert await asyncio.wait_for(reader.read(4096), 5) == b""  # closed by the server
        writer.close()
        await good.publish("readings", b"still here")
        await good.flush()
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got == [b"still here"]
    finally:
        await good.close()
