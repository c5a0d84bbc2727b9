"""Two edge sites and a hub site, each a real `shoal server` in its own network namespace:
the bus wires itself from the replicated Nodes (the edges dial the hub they learn of), the
Streams of examples/sensors.yaml applied once at one edge are made at the sites they name,
a request from one edge is answered at the other, a queue group answers once per request
from the local site's replica when there is one (anycast), a publish reaches a subscriber
on every site (multicast), clients speaking garbage to an edge's bus disturb nobody else,
messages published at the edges while their uplinks are cut (iptables) reach the hub's
stream after the heal: each once and in order, also those an edge acknowledged before it
was killed with -9 during the cut; then the example application's aggregator pod at the
hub drains that backlog and gets both edges' readings.

One lab for the module: the three nodes start once (about 15 s of its CI time)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.query
import nats
import pytest
import yaml

from tests.conftest import ROOT, VENV_BIN, ShoalProcess, free_port
from tests.test_bus_harness import need_nats_server
from tests.tools import netns

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "sensors.yaml"


def example(*kinds: str) -> str:
    """The documents of the example application (docs/dataplane.md) of these kinds."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] in kinds]
    return yaml.safe_dump_all(docs)

# Run inside an edge's namespace (reachable while it is cut off): publish with acks, 500 in
# flight, waiting for the node's bus to answer first (it may just have been restarted).
PUBLISH = """
import asyncio, sys, time, nats
async def main(site, first, count):
    deadline = time.monotonic() + 60
    while True:
        try:
            nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=1,
                                    allow_reconnect=False)
            js = nc.jetstream()
            await js.publish(f"probe.{site}", b"")  # no stream: a quick 503 once up
        except nats.js.errors.NoStreamResponseError:
            break
        except Exception:
            assert time.monotonic() < deadline, "the bus never came up"
            await asyncio.sleep(0.2)
    while True:
        try:
            await js.stream_info(f"sensors-{site}")
            break
        except Exception:
            assert time.monotonic() < deadline, "the stream never came back"
            await asyncio.sleep(0.2)
    acked = 0
    for base in range(first, first + count, 500):
        acks = await asyncio.gather(*(
            js.publish(f"sensors.{site}.t", b"%d" % i, headers={"Nats-Msg-Id": f"{site}-{i}"})
            for i in range(base, min(base + 500, first + count))))
        assert all(a.domain == site for a in acks), acks
        acked += len(acks)
    await nc.close()
    print(acked)
asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""

# Which bus answers at an address, from inside a node's namespace.
SERVER_NAME = """
import asyncio, sys, nats
async def main(url):
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    print(nc._server_info.get("server_name", ""))
    await nc.close()
asyncio.run(main(sys.argv[1]))
"""

# The node's API answering inside its namespace (the test's own check needs the network).
READY = """
import ssl, sys, time, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=1) as r:
            if r.status == 200:
                break
    except OSError:
        assert time.monotonic() < deadline
        time.sleep(0.1)
"""


class NamespacedNode(ShoalProcess):
    """A node whose readiness is checked from inside its namespace, so it can be restarted
    while its uplink is cut."""

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.netns is not None and self.proc is not None
        r = self.netns.run([str(VENV_BIN / "python"), "-c", READY,
                            f"https://127.0.0.1:{self.port}/readyz", str(timeout)],
                           capture_output=True, text=True, timeout=timeout + 10)
        if r.returncode != 0 or self.proc.poll() is not None:
            raise RuntimeError(f"shoal did not become ready: {self.log_path.read_text()[-3000:]}")


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@dataclass
class Sites:
    lab: netns.NetnsLab
    hub: NamespacedNode
    edges: dict[str, NamespacedNode]
    args: dict[str, list[str]]

    def ns(self, node: ShoalProcess) -> netns.Namespace:
        assert node.netns is not None
        return node.netns  # type: ignore[no-any-return]

    def url(self, node: ShoalProcess) -> str:
        return f"nats://{node.host}:4222"

    def publish(self, site: str, first: int, count: int) -> subprocess.Popen[str]:
        return self.ns(self.edges[site]).popen(
            [str(VENV_BIN / "python"), "-c", PUBLISH, site, str(first), str(count)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def leaf_closed(self, site: str) -> int:
        log = self.edges[site].data_dir / "bus" / "nats-server.log"
        return log.read_text(errors="replace").count("Leafnode connection closed")


def acked(proc: subprocess.Popen[str]) -> int:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return int(out.strip())


async def stream_exists(url: str, stream: str) -> bool:
    nc = await nats.connect(url)
    try:
        await nc.jsm().stream_info(stream)
        return True
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await nc.close()


def stream_status(node: ShoalProcess, stream: str) -> dict[str, Any]:
    r = node.kubectl("get", "stream", stream, "-o", "json", check=False)
    return (json.loads(r.stdout).get("status") or {}) if r.returncode == 0 else {}


def table(node: ShoalProcess) -> dict[str, dict[str, str]]:
    """``kubectl get streams -o wide`` by row name and column (headers may hold a space)."""
    lines = node.kubectl("get", "streams", "-o", "wide").stdout.splitlines()
    heads = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    ends = [start for start, _ in heads[1:]] + [None]
    return {row.split()[0]: {h: row[a:b].strip() for (a, h), b in zip(heads, ends, strict=True)}
            for row in lines[1:]}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    netns.require(need_iptables=True)
    need_nats_server()
    tmp = tmp_path_factory.mktemp("bus-sites")
    with netns.NetnsLab() as lab:
        nodes = {}
        for name in ("hub-1", "farm-a-1", "farm-b-1"):
            ns = lab.add(name.removesuffix("-1"))
            # As on a real node, a default route (else no connection to a ClusterIP leaves).
            netns.sh("ip", "netns", "exec", ns.name, "ip", "route", "add", "default", "via",
                     lab.gateway)
            # Stream status every second rather than every 10, to keep the module short.
            nodes[name] = NamespacedNode(name, tmp / name, free_port(), tmp / f"{name}.log",
                                         netns=ns, host=ns.ip,
                                         env={"SHOAL_BUS_STATUS_INTERVAL": "1"})
        hub = nodes["hub-1"]
        s = Sites(lab, hub, {"farm-a": nodes["farm-a-1"], "farm-b": nodes["farm-b-1"]}, {})
        try:
            hub.start(["--peer-port", "7443", "--site", "cloud"])
            hub.kubectl("label", "node", "hub-1", "shoal.dev/hub=true")
            token = subprocess.run([str(VENV_BIN / "shoal"), "token", "create", "--uses", "2",
                                    "--data-dir", str(hub.data_dir)], check=True,
                                   capture_output=True, text=True).stdout.strip()
            for site in s.edges:
                s.args[site] = ["--peer-port", "7443", "--site", site, "--join",
                                f"{hub.host}:7443", "--token", token]
            with ThreadPoolExecutor(2) as pool:  # both edges join at once
                for done in [pool.submit(edge.start, s.args[site])
                             for site, edge in s.edges.items()]:
                    done.result()
            # Declared once, at one edge; the other sites learn of them by replication.
            farm_a = s.edges["farm-a"]
            wait_until(lambda: farm_a.kubectl("get", "streams", check=False).returncode == 0,
                       30, "the Stream kind served: " + farm_a.kubectl(
                           "get", "streams", check=False).stderr)
            farm_a.kubectl("apply", "-f", "-", input=example("Stream"))
            for node, stream in ((s.edges["farm-a"], "sensors-farm-a"),
                                 (s.edges["farm-b"], "sensors-farm-b"), (hub, "sensors")):
                wait_until(lambda n=node, st=stream: asyncio.run(
                    stream_exists(s.url(n), st)), 60, f"{stream} made at its site")
            yield s
        finally:
            for node in nodes.values():
                node.stop()


def test_each_edge_dials_the_hub_it_learned_of_by_replication(sites: Sites) -> None:
    for site, edge in sites.edges.items():
        conf = json.loads((edge.data_dir / "bus" / "nats-server.json").read_text())
        assert conf["jetstream"]["domain"] == site
        assert conf["leafnodes"]["remotes"][0]["urls"] == [f"tls://{sites.hub.host}:7422"]
        assert "port" not in conf["leafnodes"]  # an edge listens for no leaf links
    hub_conf = json.loads((sites.hub.data_dir / "bus" / "nats-server.json").read_text())
    assert len(hub_conf["leafnodes"]["tls"]["pinned_certs"]) == 2  # the two edges' keys


def test_a_request_from_one_edge_is_answered_by_a_service_at_the_other(sites: Sites) -> None:
    async def scenario() -> None:
        a = await nats.connect(sites.url(sites.edges["farm-a"]))
        b = await nats.connect(sites.url(sites.edges["farm-b"]))
        try:
            async def answer(msg: Any) -> None:
                await msg.respond(b"valve " + msg.data + b" closed at farm-b")

            await b.subscribe("cmd.farm-b.valve", cb=answer)
            await b.flush()
            deadline = time.monotonic() + 20
            while True:  # until farm-b's interest has crossed both leaf links
                try:
                    reply = await a.request("cmd.farm-b.valve", b"7", timeout=1)
                    break
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    assert time.monotonic() < deadline, "no answer across the sites"
                    await asyncio.sleep(0.2)
            assert reply.data == b"valve 7 closed at farm-b"
            replies = [(await a.request("cmd.farm-b.valve", b"%d" % i, timeout=2)).data
                       for i in range(20)]
            assert replies == [b"valve %d closed at farm-b" % i for i in range(20)]
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_pod_reaches_its_own_nodes_bus_through_the_nats_service(sites: Sites) -> None:
    def cluster_ip() -> str:
        r = sites.hub.kubectl("get", "service", "nats", "-n", "kube-system", "-o",
                              "jsonpath={.spec.clusterIP}", check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    wait_until(cluster_ip, 30, "the nats Service")
    url = f"nats://{cluster_ip()}:4222"

    def resolved(node: ShoalProcess) -> list[str]:  # by the node's cluster DNS
        name = "nats.kube-system.svc.cluster.local"
        reply = dns.query.udp(dns.message.make_query(name, "A"), node.host, port=53, timeout=2)
        return [rd.to_text() for rrset in reply.answer for rd in rrset]

    wait_until(lambda: resolved(sites.edges["farm-b"]) == [cluster_ip()], 30, "the DNS name")

    def answers(node: ShoalProcess) -> str:
        r = sites.ns(node).run([str(VENV_BIN / "python"), "-c", SERVER_NAME, url],
                               capture_output=True, text=True, timeout=15)
        return str(r.stdout).strip()

    # A host-network pod's connection to the ClusterIP goes to its own node's server
    # (internalTrafficPolicy: Local), so to its own site.
    for node in (sites.hub, *sites.edges.values()):
        wait_until(lambda n=node: answers(n) == n.name, 30, f"{node.name}'s bus by name")


async def until_answered(nc: Any, subject: str, want: set[bytes], timeout: float) -> None:
    """Until a request is answered by one of ``want`` (interest takes a moment to cross
    the leaf links)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await nc.request(subject, b"", timeout=1)).data in want:
                return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            pass
        assert time.monotonic() < deadline, f"no answer from {want} on {subject}"
        await asyncio.sleep(0.1)


def test_anycast_is_answered_by_one_replica_preferring_the_local_site(sites: Sites) -> None:
    async def scenario() -> None:
        hub = await nats.connect(sites.url(sites.hub))
        a = await nats.connect(sites.url(sites.edges["farm-a"]))
        b = await nats.connect(sites.url(sites.edges["farm-b"]))
        answered = {"cloud": 0, "farm-a": 0}
        try:
            subs = {}
            for site, nc in (("cloud", hub), ("farm-a", a)):
                async def answer(msg: Any, site: str = site) -> None:
                    answered[site] += 1
                    await msg.respond(site.encode())
                subs[site] = await nc.subscribe("svc.sensor-config", queue="replicas", cb=answer)
                await nc.flush()
            await until_answered(b, "svc.sensor-config", {b"cloud", b"farm-a"}, 20)
            await until_answered(a, "svc.sensor-config", {b"farm-a"}, 20)
            before = dict(answered)
            # From farm-a, its own replica answers every time.
            assert [(await a.request("svc.sensor-config", b"", timeout=2)).data
                    for _ in range(20)] == [b"farm-a"] * 20
            # farm-b has none: another site's replica answers, one per request.
            from_b = [(await b.request("svc.sensor-config", b"", timeout=2)).data
                      for _ in range(10)]
            assert set(from_b) <= {b"cloud", b"farm-a"}
            await asyncio.sleep(0.3)  # a second answer to any request would be counted by now
            assert sum(answered.values()) - sum(before.values()) == 30
            # farm-a's replica goes: its requests cross its uplink to the hub's.
            await subs["farm-a"].unsubscribe()
            await a.flush()
            await until_answered(a, "svc.sensor-config", {b"cloud"}, 20)
            assert [(await a.request("svc.sensor-config", b"", timeout=2)).data
                    for _ in range(5)] == [b"cloud"] * 5
        finally:
            for nc in (hub, a, b):
                await nc.close()

    asyncio.run(scenario())


async def subscribed_everywhere(sites: Sites, subject: str) -> tuple[Any, dict[str, Any],
                                                                     dict[str, list[bytes]]]:
    """A publisher at farm-a, a ``subject`` subscriber on each site's node, and what each got,
    once a probe published at farm-a has reached all three."""
    pub = await nats.connect(sites.url(sites.edges["farm-a"]))
    nodes = {"cloud": sites.hub, **sites.edges}
    subs = {site: await nats.connect(sites.url(node)) for site, node in nodes.items()}
    got: dict[str, list[bytes]] = {site: [] for site in nodes}
    for site, nc in subs.items():
        async def cb(msg: Any, site: str = site) -> None:
            got[site].append(msg.data)
        await nc.subscribe(subject, cb=cb)
        await nc.flush()
    deadline = time.monotonic() + 20
    while not all(b"probe" in g for g in got.values()):  # interest crosses the leaf links
        assert time.monotonic() < deadline, f"the probe reached only {got}"
        await pub.publish(subject.replace(">", "probe"), b"probe")
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.3)
    for g in got.values():
        g.clear()
    return pub, subs, got


async def received(got: dict[str, list[bytes]], want: list[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(len(g) < len(want) for g in got.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # and nothing arrives twice


def test_one_publish_to_telemetry_reaches_a_subscriber_on_every_site(sites: Sites) -> None:
    async def scenario() -> None:
        pub, subs, got = await subscribed_everywhere(sites, "telemetry.>")
        try:
            for i in range(5):
                await pub.publish("telemetry.farm-a.temperature", b"21.%d" % i)
            await pub.flush()
            want = [b"21.%d" % i for i in range(5)]
            await received(got, want, 10)
            assert got == {"cloud": want, "farm-a": want, "farm-b": want}
        finally:
            for nc in (pub, *subs.values()):
                await nc.close()

    asyncio.run(scenario())


GARBAGE = [
    b"\x00\xffGARBAGE not a verb\r\n",
    b'CONNECT {"verbose":false}\r\nPUB junk.x 2000000\r\n',  # over the payload limit
    b"PUB telemetry.x 4\r\ntoo long for four\r\n",  # a payload that lies about its size
    b"CONNECT {not json\r\n",
]


def test_a_client_publishing_garbage_to_its_node_does_not_disturb_other_clients(
        sites: Sites) -> None:
    """Pods at farm-a speak garbage to their node's bus while a sensor there publishes to
    every site: each bad client loses its own connection, every reading still arrives."""
    edge = sites.edges["farm-a"]

    async def bad_client(frame: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(edge.host, 4222)
        try:
            await reader.readline()  # INFO
            writer.write(frame)
            await writer.drain()
            answer = b""
            while chunk := await asyncio.wait_for(reader.read(4096), 5):
                answer += chunk  # until the server closes the connection
            return answer
        finally:
            writer.close()

    async def scenario() -> None:
        pub, subs, got = await subscribed_everywhere(sites, "telemetry.>")
        try:
            async def readings() -> None:
                for i in range(200):
                    await pub.publish("telemetry.farm-a.t", b"%d" % i)
                    if i % 20 == 0:
                        await asyncio.sleep(0.01)  # spread over the bad clients' frames
                await pub.flush()

            answers, _ = await asyncio.gather(
                asyncio.gather(*(bad_client(f) for f in GARBAGE)), readings())
            # Each bad client was closed by the server (bad_client reads until then).
            assert b"-ERR 'Unknown Protocol Operation'" in answers[0], answers
            assert b"-ERR 'Maximum Payload Violation'" in answers[1], answers
            want = [b"%d" % i for i in range(200)]
            await received(got, want, 10)
            assert got == {"cloud": want, "farm-a": want, "farm-b": want}
            assert pub.is_connected and all(nc.is_connected for nc in subs.values())
        finally:
            for nc in (pub, *subs.values()):
                await nc.close()

    asyncio.run(scenario())


async def drain_hub(url: str, expected: int, timeout: float) -> dict[str, list[int]]:
    """Every message of the hub's stream, by the site it came from, as a consumer gets it."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while int((await nc.jsm().stream_info("sensors")).state.messages or 0) < expected:
            assert time.monotonic() < deadline, "the hub never held them all"
            await asyncio.sleep(0.2)
        sub = await js.pull_subscribe("sensors.>", durable="check", stream="sensors")
        seen: dict[str, list[int]] = {"farm-a": [], "farm-b": []}
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=1)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                return seen
            for m in msgs:
                seen[m.subject.split(".")[1]].append(int(m.data))
                await m.ack()
    finally:
        await nc.close()


def test_edges_cut_off_store_and_the_hub_gets_every_acked_message_once_in_order(
        sites: Sites) -> None:
    """farm-a: 10,000 messages during the cut. farm-b: 1,000, then its node is killed -9
    (its nats-server dies with it), started again while still cut off, and 1,000 more."""
    a, b = sites.edges["farm-a"], sites.edges["farm-b"]
    assert acked(sites.publish("farm-a", 0, 10)) == 10
    assert acked(sites.publish("farm-b", 0, 10)) == 10
    # The hub says how far it got; each edge then reports how far the hub lags behind it.
    wait_until(lambda: all(stream_status(e, f"sensors-{site}").get("hubLag") == 0 and
                           stream_status(e, f"sensors-{site}").get("messages") == 10
                           for site, e in sites.edges.items()), 30, "hub lag 0 at the edges")
    closed = {site: sites.leaf_closed(site) for site in sites.edges}
    for edge in (a, b):
        sites.lab.cut(sites.ns(edge), "drop")  # the uplinks go: iptables drops everything
    publishing_a = sites.publish("farm-a", 10, 10_000)
    assert acked(sites.publish("farm-b", 10, 1000)) == 1000
    os.killpg(b.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    b.proc.wait()  # type: ignore[union-attr]
    b.start(sites.args["farm-b"])  # cut off still: --join is not needed again
    assert acked(sites.publish("farm-b", 1010, 1000)) == 1000
    assert acked(publishing_a) == 10_000
    # Cut off, farm-a knows the hub holds none of them yet: kubectl there says so.
    wait_until(lambda: stream_status(a, "sensors-farm-a").get("hubLag") == 10_000, 30,
               "farm-a to report a hub lag of 10,000")
    row = table(a)["sensors-farm-a"]
    assert (row["MESSAGES"], row["HUB LAG"], row["HELD"]) == ("10010", "10000", "farm-a=10010")
    # Until each edge gives its leaf link up (missed pings), so the heal is a reconnection.
    wait_until(lambda: sites.leaf_closed("farm-a") > closed["farm-a"], 30, "farm-a's link down")
    for edge in (a, b):
        sites.lab.heal(sites.ns(edge))
    healed = time.monotonic()
    seen = asyncio.run(drain_hub(sites.url(sites.hub), 10_010 + 2010, 90))
    print(f"the hub held all {10_010 + 2010} {time.monotonic() - healed:.1f} s after the heal")
    assert seen["farm-a"] == list(range(10_010))  # all, once, in order
    assert seen["farm-b"] == list(range(2010))  # nothing acknowledged before the kill lost
    wait_until(lambda: stream_status(sites.hub, "sensors").get("messages") == 12_020, 30,
               "kubectl at the hub to report 12,020")
    wait_until(lambda: stream_status(a, "sensors-farm-a").get("hubLag") == 0, 30,
               "farm-a's hub lag back to 0")
    assert table(sites.hub)["sensors"]["LAG"] == "0"




def test_the_example_application_aggregates_both_edges_readings_at_the_hub(
        sites: Sites) -> None:
    """examples/sensors.yaml whole: a sensor pod per edge site, the aggregator at the hub,
    which also works through the 12,020 messages the test above left in the hub's stream."""
    sites.edges["farm-b"].kubectl("apply", "-f", str(EXAMPLE))
    backlog = 12_020

    def aggregated() -> tuple[int, dict[str, int]]:
        r = sites.hub.kubectl("logs", "deploy/aggregator", check=False)
        lines = r.stdout.splitlines() if r.returncode == 0 else []
        readings = [json.loads(line.split(" ", 1)[1]) for line in lines if '"site"' in line]
        by_site = {s: sum(1 for x in readings if x["site"] == s) for s in sites.edges}
        return len(lines), by_site

    started = time.monotonic()
    def done() -> bool:
        seen, by_site = aggregated()
        return seen > backlog and all(by_site.values())

    wait_until(done, 60, "the aggregator to drain the backlog and get both sites' readings")
    seen, by_site = aggregated()
    print(f"aggregator: {seen} messages ({by_site}) {time.monotonic() - started:.1f} s after the "
          "apply")
    for site, edge in sites.edges.items():
        assert "stored" in edge.kubectl("logs", f"deploy/sensor-{site}", "--tail=1").stdout
