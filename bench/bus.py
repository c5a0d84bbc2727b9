"""Bus figures (issue 14): Shoal's nats-server wiring against nats-server configured by hand.

Every server runs on loopback with the cluster's kind of certificates (one CA, a
certificate per server, ``verify: true`` on routes and leaf links), configured either by
``shoal.bus`` from Node objects (as every peer does) or by a configuration file written by
hand with the same TLS, started side by side in the same run:

- **within a site**: two peers of one site (routed, JetStream clustered); a publisher on
  one, the subscriber on the other. Messages/s of 128-byte publishes (the time until the
  subscriber holds them all), and request/reply round trips, p50/p99.
- **edge to hub**: an edge site's server dials the hub site's leaf port through a
  user-space link proxy adding 10 ms each way (``tests.tools.linkproxy``, as
  ``mesh_vs_etcd``: this kernel has no ``tc netem``). The same figures across the link.
- **heal to delivered**: an edge stream sourced by a hub stream (as ``spec.sources`` with a
  ``domain`` renders it); the uplink is cut (the proxy resets every connection and refuses
  new ones), 10,000 messages are published with acks at the edge, the uplink heals; the
  time until the hub stream holds all of them and until a pull consumer at the hub has
  received the last one (each once, in order), on a plain loopback link and on the 10 ms one.
- **memory**: the resident size of each nats-server (idle, after the runs), and what the
  bus adds to a ``shoal server`` process (the same node started with ``--bus`` and
  ``--no-bus``, idle).

The client is nats-py in this process: throughput is bound by Python on both sides of a
comparison, so the ratio (Shoal / hand, goal <= 1.1 on latency, >= 1/1.1 on messages/s)
says more than the absolute figure. Each throughput figure is the median of 5 rounds,
Shoal and hand alternating.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig

from bench.processes import ShoalMember, percentiles, wait_until
from shoal.bus import stream_objects
from shoal.bus.supervisor import NatsSupervisor, nats_server_path
from shoal.mesh import pki

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_bus_harness import Bus, Peer, wait_port  # noqa: E402
from tests.tools.linkproxy import LinkProxy  # noqa: E402

DELAY = 0.010
PAYLOAD = b"x" * 128
ROUNDS = 5


# -- servers --------------------------------------------------------------------------


def _tls_block(peer: Peer, verify: bool) -> str:
    tls = peer.settings.tls
    assert tls is not None
    return (f'tls {{ cert_file: "{tls.cert}", key_file: "{tls.key}", ca_file: "{tls.ca}"'
            f'{", verify: true" if verify else ""}, timeout: 3 }}')


def hand_conf(peer: Peer, *, routes: list[Peer] | None = None,
              leaf_listen_advertise: str | None = None, leaf_remote: str | None = None) -> str:
    """The configuration an operator would write for ``peer``: the same ports, TLS files
    and JetStream domain, nothing else (nats-server's defaults for pings and limits)."""
    s = peer.settings
    lines = [f"server_name: {peer.name}-hand", "host: 127.0.0.1", f"port: {s.client_port}",
             f'jetstream {{ store_dir: "{s.store_dir}-hand", domain: {peer.site} }}']
    if routes:
        urls = ", ".join(f'"nats-route://127.0.0.1:{r.settings.cluster_port}"' for r in routes)
        lines.append(f"cluster {{ name: {peer.site}, host: 127.0.0.1, port: {s.cluster_port},"
                     f" routes: [{urls}], {_tls_block(peer, True)} }}")
    if leaf_listen_advertise is not None:
        lines.append(f"leafnodes {{ host: 127.0.0.1, port: {s.leafnode_port}, advertise: "
                     f'"{leaf_listen_advertise}", {_tls_block(peer, True)} }}')
    if leaf_remote is not None:
        lines.append(f'leafnodes {{ reconnect: 1, remotes: [ {{ urls: ["tls://{leaf_remote}"],'
                     f" {_tls_block(peer, False)} }} ] }}")
    return "\n".join(lines) + "\n"


async def start_hand(root: Path, peer: Peer, text: str) -> NatsSupervisor:
    d = root / f"{peer.name}-hand"
    d.mkdir(parents=True, exist_ok=True)
    sup = NatsSupervisor(d / "nats-server.conf", d / "nats-server.pid", d / "nats-server.log")
    await sup.start(text)
    await wait_port(peer.settings.client_port)
    return sup


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# -- measurements ---------------------------------------------------------------------


async def linked(a: Client, b: Client, subject: str = "probe.link",
                 timeout: float = 30.0) -> None:
    """Until a publish at ``a`` reaches a subscriber at ``b`` (interest has propagated)."""
    got = asyncio.Event()

    async def cb(msg: Any) -> None:
        got.set()

    sub = await b.subscribe(subject, cb=cb)
    await b.flush()
    deadline = time.monotonic() + timeout
    try:
        while not got.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the servers never linked")
            await a.publish(subject, b"")
            await a.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.wait(), 0.2)
    finally:
        await sub.unsubscribe()


async def throughput(pub: Client, sub: Client, count: int) -> float:
    """Messages/s from the first publish at ``pub`` to the last one received at ``sub``."""
    received = 0
    done = asyncio.Event()

    async def cb(msg: Any) -> None:
        nonlocal received
        if msg.data == PAYLOAD:  # not a probe
            received += 1
            if received == count:
                done.set()

    s = await sub.subscribe("bench.t", cb=cb, pending_msgs_limit=count + 1,
                            pending_bytes_limit=64 * 1024 * 1024)
    await sub.flush()
    await linked(pub, sub, "bench.t")
    t0 = time.monotonic()
    for i in range(count):
        await pub.publish("bench.t", PAYLOAD)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # let the subscriber's reader run
    await pub.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.monotonic() - t0
    await s.unsubscribe()
    return count / elapsed


async def round_trips(req: Client, rep: Client, count: int) -> list[float]:
    async def answer(msg: Any) -> None:
        await msg.respond(msg.data)

    s = await rep.subscribe("bench.echo", cb=answer)
    await rep.flush()
    deadline = time.monotonic() + 30
    warm = 0
    while warm < 5:  # until the responder's interest has crossed, then warm the route
        try:
            await req.request("bench.echo", PAYLOAD, timeout=2)
            warm += 1
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        await req.request("bench.echo", PAYLOAD, timeout=5)
        samples.append(time.perf_counter() - t0)
    await s.unsubscribe()
    return samples


async def compare(pairs: dict[str, tuple[Client, Client]], messages: int,
                  trips: int) -> dict[str, Any]:
    """Throughput (median of ROUNDS, configurations alternating) and round trips for each
    (publisher/requester, subscriber/responder) pair, and Shoal's ratio to the hand one."""
    rates: dict[str, list[float]] = {k: [] for k in pairs}
    for _ in range(ROUNDS):
        for k, (a, b) in pairs.items():
            rates[k].append(await throughput(a, b, messages))
    out: dict[str, Any] = {}
    for k, (a, b) in pairs.items():
        lat = percentiles(await round_trips(a, b, trips))
        out[k] = {"messages_per_s": round(statistics.median(rates[k])),
                  "messages_per_s_rounds": [round(r) for r in rates[k]],
                  "request_reply": {key: round(v, 3) if isinstance(v, float) else v
                                    for key, v in lat.items()}}
    shoal, hand = out["shoal"], out["hand"]
    out["ratio"] = {
        "messages_per_s_hand_over_shoal": round(hand["messages_per_s"]
                                                / shoal["messages_per_s"], 3),
        "p50_shoal_over_hand": round(shoal["request_reply"]["p50_ms"]
                                     / hand["request_reply"]["p50_ms"], 3),
        "p99_shoal_over_hand": round(shoal["request_reply"]["p99_ms"]
                                     / hand["request_reply"]["p99_ms"], 3)}
    return out


async def within_site(root: Path, ca: pki.KeyPair, messages: int, trips: int
                      ) -> dict[str, Any]:
    bus = Bus(root / "site", ca)
    a, b = bus.add("plant-1", "plant"), bus.add("plant-2", "plant")
    hand_bus = Bus(root / "site-hand", ca)
    ha = hand_bus.add("plant-1", "plant", tls=a.settings.tls)
    hb = hand_bus.add("plant-2", "plant", tls=b.settings.tls)
    sups: list[NatsSupervisor] = []
    clients: list[Client] = []
    try:
        sups += [await bus.start(a), await bus.start(b)]
        sups += [await start_hand(root, ha, hand_conf(ha, routes=[hb])),
                 await start_hand(root, hb, hand_conf(hb, routes=[ha]))]
        for p in (a, b, ha, hb):
            clients.append(await nats.connect(p.url))
        ca_, cb_, ha_, hb_ = clients
        result = await compare({"shoal": (ca_, cb_), "hand": (ha_, hb_)}, messages, trips)
        result["rss_mb_after"] = {"shoal": [rss_mb(s.pid) for s in sups[:2]],
                                  "hand": [rss_mb(s.pid) for s in sups[2:]]}
        return result
    finally:
        for nc in clients:
            await nc.close()
        for s in sups:
            await s.stop()


class Link:
    """An edge and a hub, each configured by Shoal or by hand, the edge's leaf link through
    a delaying proxy."""

    def __init__(self, root: Path, ca: pki.KeyPair, delay: float, hand: bool) -> None:
        self.root, self.delay, self.hand = root, delay, hand
        self.bus = Bus(root / ("link-hand" if hand else "link"), ca)
        self.hub = self.bus.add("hub-1", "cloud", hub=True)
        self.edge = self.bus.add("farm-a-1", "farm-a")
        self.proxy = LinkProxy(("127.0.0.1", self.hub.settings.leafnode_port), delay=delay)
        self.sups: list[NatsSupervisor] = []
        self.clients: list[Client] = []

    async def start(self) -> tuple[Client, Client]:
        """Start both; the (edge, hub) clients."""
        await self.proxy.start()
        via = self.proxy.address_str
        if self.hand:
            self.sups = [
                await start_hand(self.root, self.hub, hand_conf(self.hub,
                                                                leaf_listen_advertise=via)),
                await start_hand(self.root, self.edge, hand_conf(self.edge, leaf_remote=via))]
        else:
            hub_conf = self.bus.config(self.hub)
            # The edge learns the hub's leaf URLs from it and would go round the proxy.
            hub_conf["leafnodes"]["advertise"] = via
            self.sups = [await self.bus.start(self.hub, hub_conf),
                         await self.bus.start(self.edge, self.bus.config(
                             self.edge, leaf_via={"hub-1": self.proxy.address[1]}))]
        edge = await nats.connect(self.edge.url, max_reconnect_attempts=-1,
                                  reconnect_time_wait=0.2)
        hub = await nats.connect(self.hub.url, max_reconnect_attempts=-1,
                                 reconnect_time_wait=0.2)
        self.clients = [edge, hub]
        await linked(edge, hub)
        return edge, hub

    async def stop(self) -> None:
        for nc in self.clients:
            with contextlib.suppress(Exception):
                await nc.close()
        await self.proxy.stop()
        for s in self.sups:
            await s.stop()


async def edge_to_hub(root: Path, ca: pki.KeyPair, messages: int, trips: int
                      ) -> dict[str, Any]:
    links = [Link(root, ca, DELAY, hand=False), Link(root, ca, DELAY, hand=True)]
    try:
        shoal = await links[0].start()
        hand = await links[1].start()
        result = await compare({"shoal": shoal, "hand": hand}, messages, trips)
        result["added_delay_each_way_ms"] = DELAY * 1000
        result["rss_mb_after"] = {"shoal": [rss_mb(s.pid) for s in links[0].sups],
                                  "hand": [rss_mb(s.pid) for s in links[1].sups]}
        return result
    finally:
        for link in links:
            await link.stop()


async def heal_to_delivered(root: Path, ca: pki.KeyPair, delay: float, count: int
                            ) -> dict[str, Any]:
    link = Link(root / f"heal-{int(delay * 1000)}ms", ca, delay, hand=False)
    try:
        edge, hub = await link.start()
        edge_obj = {"metadata": {"name": "sensors-farm-a"},
                    "spec": {"subjects": ["sensors.farm-a.>"], "duplicateWindow": "2m"}}
        hub_obj = {"metadata": {"name": "sensors"},
                   "spec": {"duplicateWindow": "2m",
                            "sources": [{"name": "sensors-farm-a", "domain": "farm-a"}]}}
        await edge.jsm().add_stream(StreamConfig.from_response(
            stream_objects.stream_config(edge_obj, 1)))
        await hub.jsm().add_stream(StreamConfig.from_response(
            stream_objects.stream_config(hub_obj, 1)))
        await hub.jsm().add_consumer("sensors", ConsumerConfig.from_response(
            stream_objects.consumer_config({"metadata": {"name": "aggregator"},
                                            "spec": {"streamName": "sensors"}})))
        js = edge.jetstream()
        await js.publish("sensors.farm-a.t", b"-1", headers={"Nats-Msg-Id": "first"})

        async def hub_holds() -> int:
            return int((await hub.jsm().stream_info("sensors")).state.messages or 0)

        deadline = time.monotonic() + 30
        while await hub_holds() < 1:  # sourcing across the link has started
            if time.monotonic() > deadline:
                raise TimeoutError("the hub never sourced the edge stream")
            await asyncio.sleep(0.05)
        sub = await hub.jetstream().pull_subscribe("sensors.>", durable="aggregator",
                                                   stream="sensors")
        first = await sub.fetch(1, timeout=5)
        await first[0].ack()

        link.proxy.cut("reset")
        t0 = time.monotonic()
        for base in range(0, count, 500):
            acks = await asyncio.gather(*(
                js.publish("sensors.farm-a.t", b"%d" % i, headers={"Nats-Msg-Id": f"m{i}"})
                for i in range(base, min(base + 500, count))))
            assert all(a.domain == "farm-a" for a in acks)
        publish_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        held_during_cut = await hub_holds() - 1

        link.proxy.heal()
        healed = time.monotonic()
        await linked(edge, hub, "probe.heal", timeout=60)
        relinked_s = time.monotonic() - healed
        seen: list[int] = []
        first_at = stored_at = None
        while len(seen) < count:
            if stored_at is None:
                held = await hub_holds()
                if first_at is None and held > 1:
                    first_at = time.monotonic() - healed
                if held >= count + 1:
                    stored_at = time.monotonic() - healed
            with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                for m in await sub.fetch(1000, timeout=0.2):
                    seen.append(int(m.data))
                    await m.ack()
            if time.monotonic() - healed > 120:
                raise TimeoutError(f"{len(seen)} of {count} delivered after the heal")
        delivered_s = time.monotonic() - healed
        return {"messages": count, "added_delay_each_way_ms": delay * 1000,
                "acked_publishes_per_s_at_edge": round(count / publish_s),
                "crossed_during_cut": held_during_cut,
                "heal_to_leaf_link_back_s": round(relinked_s, 2),
                "heal_to_first_stored_at_hub_s": round(first_at or 0.0, 2),
                "heal_to_all_stored_at_hub_s": round(stored_at or delivered_s, 2),
                "heal_to_last_delivered_at_hub_s": round(delivered_s, 2),
                "once_and_in_order": seen == list(range(count)),
                "rss_mb_after": {"hub": rss_mb(link.sups[0].pid),
                                 "edge": rss_mb(link.sups[1].pid)}}
    finally:
        await link.stop()


def _streams_served(m: ShoalMember) -> Callable[[], bool]:
    return lambda: m.request("GET", "/apis/jetstream.nats.io/v1beta2/streams")[0] == 200


def node_memory(work: Path) -> dict[str, Any]:
    """A ``shoal server`` idle with its bus and without; the nats-server's RSS beside it."""
    out: dict[str, Any] = {}
    for flag, label in (("--no-bus", "without_bus"), ("--bus", "with_bus")):
        m = ShoalMember(f"mem-{label.replace('_', '-')}", work)
        try:
            m.start(flag)
            if flag == "--bus":
                pid_file = m.data / "bus" / "nats-server.pid"
                wait_until(pid_file.exists, 30, "nats-server to start")
                wait_until(_streams_served(m), 30, "the Stream CRD")
            time.sleep(5.0)  # settle
            assert m.proc is not None
            out[f"shoal_rss_mb_{label}"] = rss_mb(m.proc.pid)
            if flag == "--bus":
                out["nats_server_rss_mb"] = rss_mb(int(pid_file.read_text()))
        finally:
            m.stop()
    out["shoal_side_mb"] = round(out["shoal_rss_mb_with_bus"] - out["shoal_rss_mb_without_bus"],
                                 1)
    out["bus_per_node_mb"] = round(out["shoal_side_mb"] + out["nats_server_rss_mb"], 1)
    return out


async def _run(work: Path, quick: bool) -> dict[str, Any]:
    ca = pki.create_ca("bench-bus-ca")
    messages = 10_000 if quick else 50_000
    result: dict[str, Any] = {"payload_bytes": len(PAYLOAD), "rounds": ROUNDS}
    result["within_site"] = await within_site(work, ca, messages, 300 if quick else 2000)
    result["edge_to_hub_10ms"] = await edge_to_hub(work, ca, messages // 2,
                                                   100 if quick else 300)
    result["heal_loopback"] = await heal_to_delivered(work, ca, 0.0, 10_000)
    result["heal_10ms"] = await heal_to_delivered(work, ca, DELAY, 10_000)
    return result


def run(quick: bool = False) -> dict[str, Any]:
    if nats_server_path() is None:
        return {"error": "nats-server is not installed (scripts/bootstrap-debian.sh)"}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-bus-") as tmp:
        work = Path(tmp)
        result = asyncio.run(_run(work, quick))
        result["memory"] = node_memory(work / "nodes")
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=2))
