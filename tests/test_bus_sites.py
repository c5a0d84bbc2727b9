"""Two edge sites and a hub site, each a nats-server configured by shoal.bus from Node
objects, linked by TLS leaf links that the edges open: the patterns of issue 14 and a
cut uplink. The uplink of edge site "farm-a" runs through a relay the test can cut."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig

from shoal.bus import nats_config, stream_objects
from tests.test_bus_harness import Bus, CuttableProxy, Peer, need_nats_server, write_tls

pytestmark = pytest.mark.slow


@dataclass
class Sites:
    bus: Bus
    hub: Peer
    farm_a: Peer
    farm_b: Peer
    uplink_a: CuttableProxy
    clients: list[Client]

    async def connect(self, peer: Peer) -> Client:
        nc = await nats.connect(peer.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        self.clients.append(nc)
        return nc


@pytest.fixture
async def sites(tmp_path: Path) -> AsyncIterator[Sites]:
    need_nats_server()
    bus = Bus(tmp_path)
    hub = bus.add("hub-1", "cloud", hub=True)
    farm_a = bus.add("farm-a-1", "farm-a")
    farm_b = bus.add("farm-b-1", "farm-b")
    uplink_a = CuttableProxy(hub.settings.leafnode_port)
    await uplink_a.start()
    s = Sites(bus, hub, farm_a, farm_b, uplink_a, [])
    try:
        hub_conf = bus.config(hub)
        # Edges learn the hub's leaf URL from it and would reconnect around the relay.
        hub_conf["leafnodes"]["advertise"] = f"127.0.0.1:{uplink_a.port}"
        await bus.start(hub, hub_conf)
        await bus.start(farm_a, bus.config(farm_a, leaf_via={"hub-1": uplink_a.port}))
        await bus.start(farm_b)
        yield s
    finally:
        for nc in s.clients:
            if not nc.is_closed:
                await nc.close()
        await uplink_a.close()
        await bus.stop()


async def linked(a: Client, b: Client, timeout: float = 15.0) -> None:
    """Wait until a message published at ``a`` reaches a subscriber at ``b``."""
    got = asyncio.Event()

    async def cb(msg: Any) -> None:
        got.set()

    sub = await b.subscribe("probe.link", cb=cb)
    await b.flush()
    deadline = time.monotonic() + timeout
    try:
        while not got.is_set():
            assert time.monotonic() < deadline, "the sites never linked"
            await a.publish("probe.link", b"")
            await a.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.wait(), 0.2)
    finally:
        await sub.unsubscribe()


async def test_one_publish_to_telemetry_reaches_every_subscriber_on_every_site(
        sites: Sites) -> None:
    hub = await sites.connect(sites.hub)
    a = await sites.connect(sites.farm_a)
    b = await sites.connect(sites.farm_b)
    await linked(a, b)
    received: dict[str, list[bytes]] = {"hub": [], "farm-a": [], "farm-b": []}
    for name, nc in (("hub", hub), ("farm-a", a), ("farm-b", b)):
        async def cb(msg: Any, name: str = name) -> None:
            received[name].append(msg.data)
        await nc.subscribe("telemetry.>", cb=cb)
        await nc.flush()
    await linked(a, hub)
    await linked(b, hub)
    await a.publish("telemetry.farm-a.temperature", b"21.5")
    await a.flush()
    deadline = time.monotonic() + 5
    while any(len(v) < 1 for v in received.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # and nothing arrives twice
    assert received == {"hub": [b"21.5"], "farm-a": [b"21.5"], "farm-b": [b"21.5"]}


async def test_anycast_is_answered_by_one_replica_preferring_the_local_site(
        sites: Sites) -> None:
    hub = await sites.connect(sites.hub)
    a = await sites.connect(sites.farm_a)
    b = await sites.connect(sites.farm_b)
    await linked(a, b)
    subs = {}
    for name, nc in (("hub", hub), ("farm-a", a)):
        async def answer(msg: Any, name: str = name) -> None:
            await msg.respond(name.encode())
        subs[name] = await nc.subscribe("svc.sensor-config", queue="replicas", cb=answer)
        await nc.flush()
    await linked(b, hub)
    await asyncio.sleep(0.3)
    # From farm-a, its own replica answers every time.
    answers = [(await a.request("svc.sensor-config", b"", timeout=2)).data for _ in range(20)]
    assert answers == [b"farm-a"] * 20
    # farm-b has no replica: another site answers, exactly one reply per request.
    from_b = [(await b.request("svc.sensor-config", b"", timeout=2)).data for _ in range(10)]
    assert set(from_b) <= {b"hub", b"farm-a"} and len(from_b) == 10
    # farm-a's replica goes: its requests reach the hub's.
    await subs["farm-a"].unsubscribe()
    await a.flush()
    deadline = time.monotonic() + 5
    while True:
        try:
            reply = (await a.request("svc.sensor-config", b"", timeout=1)).data
            if reply == b"hub":
                break
        except nats.errors.TimeoutError:
            pass
        assert time.monotonic() < deadline
    assert [(await a.request("svc.sensor-config", b"", timeout=2)).data
            for _ in range(5)] == [b"hub"] * 5


async def test_a_request_from_one_edge_is_answered_by_a_service_at_the_other(
        sites: Sites) -> None:
    a = await sites.connect(sites.farm_a)
    b = await sites.connect(sites.farm_b)

    async def answer(msg: Any) -> None:
        await msg.respond(b"valve " + msg.data + b" closed")

    await b.subscribe("cmd.farm-b.valve", cb=answer)
    await b.flush()
    await linked(a, b)
    reply = await a.request("cmd.farm-b.valve", b"7", timeout=3)
    assert reply.data == b"valve 7 closed"


async def test_a_leaf_link_needs_a_member_key_signed_by_the_cluster_ca(
        sites: Sites, tmp_path: Path) -> None:
    from shoal.mesh import pki

    hub = await sites.connect(sites.hub)
    # A server with a certificate from another CA, and one from the cluster's CA whose
    # key no Node announces (a peer that left): both dial the hub's leaf port.
    for name, ca in (("rogue", pki.create_ca("other")), ("left", sites.bus.ca)):
        peer = sites.bus.add(name, "farm-" + name, tls=write_tls(ca, name, tmp_path / name))
        conf = sites.bus.config(peer)
        conf["leafnodes"] = {"remotes": [{
            "urls": [f"tls://127.0.0.1:{sites.hub.settings.leafnode_port}"],
            "tls": conf["leafnodes"]["remotes"][0]["tls"]}], "reconnect": 1}
        await sites.bus.start(peer, conf)
        nc = await sites.connect(peer)
        got: list[bytes] = []

        async def cb(msg: Any, got: list[bytes] = got) -> None:
            got.append(msg.data)

        await hub.subscribe(f"{name}.>", cb=cb)
        await hub.flush()
        for _ in range(10):
            await nc.publish(f"{name}.x", b"let me in")
            await nc.flush()
            await asyncio.sleep(0.2)
        assert got == []
    assert "TLS" in sites.bus.log("hub-1") or "tls" in sites.bus.log("hub-1")


def stream_obj(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


async def test_messages_published_during_a_cut_reach_the_hub_once_in_order(
        sites: Sites) -> None:
    hub = await sites.connect(sites.hub)
    a = await sites.connect(sites.farm_a)
    await linked(a, hub)
    # The objects an operator would apply, turned into JetStream's configuration.
    edge_stream = stream_obj("sensors-farm-a", subjects=["sensors.farm-a.>"],
                             duplicateWindow="2m", placement={"site": "farm-a"})
    hub_stream = stream_obj("sensors-all", duplicateWindow="2m", placement={"site": "cloud"},
                            sources=[{"name": "sensors-farm-a", "domain": "farm-a"},
                                     {"name": "sensors-farm-b", "domain": "farm-b"}])
    await a.jsm().add_stream(StreamConfig.from_response(
        copy.deepcopy(stream_objects.stream_config(edge_stream, 1))))
    await hub.jsm().add_stream(StreamConfig.from_response(
        copy.deepcopy(stream_objects.stream_config(hub_stream, 1))))
    await hub.jsm().add_consumer("sensors-all", ConsumerConfig.from_response(
        stream_objects.consumer_config({"metadata": {"name": "aggregator"},
                                        "spec": {"streamName": "sensors-all"}})))
    js_a = a.jetstream()
    await js_a.publish("sensors.farm-a.t", b"before", headers={"Nats-Msg-Id": "before"})

    async def hub_count() -> int:
        return int((await hub.jsm().stream_info("sensors-all")).state.messages or 0)

    deadline = time.monotonic() + 15
    while await hub_count() < 1:
        assert time.monotonic() < deadline, "sourcing across the leaf link never started"
        await asyncio.sleep(0.1)

    sites.uplink_a.cut()
    # 2,000 here; 10,000 with real nodes in test_bus_cluster.py and in bench/bus.py.
    count = 2_000
    started = time.monotonic()
    for base in range(0, count, 500):
        acks = await asyncio.gather(*(
            js_a.publish("sensors.farm-a.t", b"%d" % i, headers={"Nats-Msg-Id": f"m{i}"})
            for i in range(base, base + 500)))
        assert all(ack.domain == "farm-a" for ack in acks)
    publish_s = time.monotonic() - started
    # A publisher retrying after a lost ack: stored once (Nats-Msg-Id, duplicateWindow).
    again = await js_a.publish("sensors.farm-a.t", b"17", headers={"Nats-Msg-Id": "m17"})
    assert again.duplicate
    assert (await a.jsm().stream_info("sensors-farm-a")).state.messages == count + 1
    await asyncio.sleep(1.0)
    assert await hub_count() == 1  # nothing crossed the cut

    sites.uplink_a.heal()
    healed = time.monotonic()
    deadline = healed + 60
    while await hub_count() < count + 1:
        assert time.monotonic() < deadline, f"only {await hub_count()} reached the hub"
        await asyncio.sleep(0.1)
    catch_up_s = time.monotonic() - healed

    sub = await hub.jetstream().pull_subscribe("sensors.>", durable="aggregator",
                                               stream="sensors-all")
    seen: list[bytes] = []
    while len(seen) < count + 1:
        for msg in await sub.fetch(1000, timeout=5):
            seen.append(msg.data)
            await msg.ack()
    assert seen[0] == b"before"
    assert seen[1:] == [b"%d" % i for i in range(count)]  # all, once, in order
    with pytest.raises((nats.errors.TimeoutError, TimeoutError)):  # nats-py raises either
        await sub.fetch(1, timeout=0.5)
    print(f"published {count} during the cut in {publish_s:.2f} s; "
          f"the hub held them all {catch_up_s:.2f} s after the heal")


def test_the_config_the_sites_run_is_what_shoal_renders(tmp_path: Path) -> None:
    bus = Bus(tmp_path)
    hub = bus.add("hub-1", "cloud", hub=True)
    edge = bus.add("farm-a-1", "farm-a")
    conf = bus.config(edge)
    assert conf["leafnodes"]["remotes"][0]["urls"] == [
        f"tls://127.0.0.1:{hub.settings.leafnode_port}"]
    assert bus.config(hub)["leafnodes"]["tls"]["pinned_certs"] == [
        nats_config.spki_sha256(edge.settings.tls.cert.read_bytes())]  # type: ignore[union-attr]


async def test_a_hub_site_of_two_peers_is_one_cluster_with_jetstream_replicated(
        tmp_path: Path) -> None:
    need_nats_server()
    bus = Bus(tmp_path)
    hubs = [bus.add("hub-1", "cloud", hub=True), bus.add("hub-2", "cloud")]
    edge = bus.add("farm-a-1", "farm-a")
    clients: list[Client] = []
    try:
        for p in (*hubs, edge):
            await bus.start(p)
        conf = bus.config(hubs[0])
        assert conf["cluster"]["routes"] == [f"nats-route://127.0.0.1:"
                                             f"{hubs[1].settings.cluster_port}"]
        assert len(conf["cluster"]["tls"]["pinned_certs"]) == 2
        assert len(bus.config(edge)["leafnodes"]["remotes"][0]["urls"]) == 2
        h1 = await nats.connect(hubs[0].url)
        h2 = await nats.connect(hubs[1].url)
        a = await nats.connect(edge.url)
        clients += [h1, h2, a]
        await linked(h1, h2)  # routed
        await linked(a, h2)  # leaf-linked to the hub cluster
        hub_stream = stream_obj("sensors-all", replicas=3, placement={"site": "cloud"},
                                sources=[{"name": "sensors-farm-a", "domain": "farm-a"}])
        config = stream_objects.stream_config(hub_stream, site_peers=2)
        assert config["num_replicas"] == 2
        deadline = time.monotonic() + 30
        while True:  # the site's JetStream meta group needs a leader first
            try:
                info = await h1.jsm().add_stream(StreamConfig.from_response(
                    copy.deepcopy(config)))
                break
            except Exception:
                assert time.monotonic() < deadline, "clustered JetStream never answered"
                await asyncio.sleep(0.5)
        assert info.cluster is not None and info.cluster.name == "cloud"
        await a.jsm().add_stream(StreamConfig.from_response(copy.deepcopy(
            stream_objects.stream_config(stream_obj("sensors-farm-a",
                                                    subjects=["sensors.farm-a.>"]), 1))))
        for i in range(100):
            await a.jetstream().publish("sensors.farm-a.t", b"%d" % i)
        deadline = time.monotonic() + 30
        while int((await h2.jsm().stream_info("sensors-all")).state.messages or 0) < 100:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        # A server with a CA-signed certificate whose key no Node announces cannot route in.
        intruder = bus.add("intruder", "cloud")
        iconf = bus.config(intruder, nodes=[p.node() for p in (*hubs, intruder)])
        await bus.start(intruder, iconf)
        ic = await nats.connect(intruder.url)
        clients.append(ic)
        got: list[bytes] = []

        async def cb(msg: Any) -> None:
            got.append(msg.data)

        await h1.subscribe("intrusion", cb=cb)
        await h1.flush()
        for _ in range(8):
            await ic.publish("intrusion", b"x")
            await ic.flush()
            await asyncio.sleep(0.25)
        assert got == []
    finally:
        for nc in clients:
            await nc.close()
        await bus.stop()
