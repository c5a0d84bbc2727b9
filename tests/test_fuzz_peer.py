"""Fuzzing the peer port: garbage against a real mutual-TLS listener and its mesh.

An authenticated peer (a node certificate the cluster CA signed) sends thousands of
hostile mesh messages (random bytes, random JSON, message-shaped lists, valid messages
with a document mutated); then a corpus of frame-level garbage arrives on raw
connections with and without a certificate. The node stays up and answers a ping, what
it holds in memory is what its disk holds, the object stored before is unchanged, and a
well-formed push afterwards still merges and reaches a watcher.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import random
import sqlite3
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.authz.scopes import CLUSTER
from shoal.mesh import config as mesh_config
from shoal.mesh import pki
from shoal.mesh.messages import DocRecord, Ping, Push, encode
from shoal.mesh.peer import MeshPeer
from shoal.mesh.tls_transport import NODE_ORG, Channel, FrameType, TlsIdentity, TlsTransport
from shoal.mesh.transport import TransportError
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.change_feed import Subscription
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()


def _kind(api_version: str, kind: str) -> Kind:
    found = REG.by_kind(api_version, kind)
    assert found is not None
    return found


NS, CM = _kind("v1", "Namespace"), _kind("v1", "ConfigMap")
EXAMPLES = 1200
IDLE = 0.3
HEADER = struct.Struct("!BBQI")


def write_identity(dir: Path, ca: pki.KeyPair, name: str) -> TlsIdentity:
    dir.mkdir(parents=True, exist_ok=True)
    leaf = pki.issue(ca, name, organizations=(NODE_ORG,), ips=("127.0.0.1",), server=True,
                     client=True)
    (dir / f"{name}.crt").write_bytes(leaf.cert_pem)
    (dir / f"{name}.key").write_bytes(leaf.key_pem)
    (dir / "ca.crt").write_bytes(ca.cert_pem)
    return TlsIdentity(dir / f"{name}.crt", dir / f"{name}.key", dir / "ca.crt")


@dataclass
class Cluster:
    loop: asyncio.AbstractEventLoop
    victim: MeshPeer
    store: ObjectStore
    attacker: TlsTransport
    attacker_id: TlsIdentity
    keep: dict[str, Any]
    keep_doc: list[Any]
    watch: Subscription
    data_dir: Path
    sent: int = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


async def _quiet(address: str, payload: bytes) -> bytes | None:
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = Path(tmp_path_factory.mktemp("fuzz-peer"))
    loop = asyncio.new_event_loop()
    ca = pki.create_ca()

    async def setup() -> Cluster:
        transport = TlsTransport(write_identity(tmp / "v", ca, "victim"), idle_timeout=IDLE)
        await transport.start()
        replica = Replica(tmp / "data", "victim")
        store = ObjectStore(replica, REG)
        for ns in ("default",):
            await store.create(NS, {"metadata": {"name": ns}})
        keep = await store.create(CM,
                                  {"metadata": {"name": "keep"}, "data": {"k": "v"}}, "default")
        victim = MeshPeer("victim", transport, replica, mesh_config.sim(), random.Random(1))
        await victim.start()
        attacker_id = write_identity(tmp / "x", ca, "node-x")
        attacker = TlsTransport(attacker_id)
        await attacker.start()
        attacker.set_handler(_quiet)
        entry = replica.entry("configmaps", "default", "keep")
        assert entry is not None and entry.doc_bytes is not None
        return Cluster(loop, victim, store, attacker, attacker_id, keep,
                       orjson.loads(entry.doc_bytes), replica.subscribe(lambda c: True),
                       tmp / "data")

    c = loop.run_until_complete(setup())
    yield c

    async def teardown() -> None:
        await c.attacker.close()
        await c.victim.stop()
        await c.victim.transport.close()  # type: ignore[attr-defined]

    loop.run_until_complete(teardown())
    c.store.replica.close()
    loop.close()


# -- what a peer may send ----------------------------------------------------------------

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=20)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one place replaced by random JSON, or nested deeply."""
    value = copy.deepcopy(value)
    node = value
    for _ in range(draw(st.integers(0, 6))):
        if isinstance(node, list) and node:
            i = draw(st.integers(0, len(node) - 1))
            if draw(st.integers(0, 3)) == 0 or not isinstance(node[i], list | dict):
                if draw(st.booleans()):
                    node[i] = draw(JSON)
                else:
                    deep: Any = 1
                    for _ in range(draw(st.integers(30, 300))):
                        deep = [deep]
                    node[i] = deep
                return value
            node = node[i]
        elif isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if draw(st.booleans()):
                node[key] = draw(JSON)
                return value
            node = node[key]
        else:
            break
    return value


@st.composite
def payloads(draw: st.DrawFn, keep_doc: list[Any]) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=120))
    if kind == 1:
        return dumps(draw(JSON))
    if kind == 2:  # message-shaped: a tag and random fields
        return dumps([draw(st.integers(-1, 13)), *draw(st.lists(JSON, max_size=4))])
    name = draw(st.sampled_from(["fz-a", "fz-b", "keep"]))
    doc = _mutate(draw, keep_doc)
    if name == "keep" and doc == keep_doc:
        doc = [doc]  # never the stored document itself, nor a valid newer one
    if kind == 3:
        return dumps([7, draw(st.integers(-2, 5)), [["configmaps", "default", name, doc]],
                      draw(st.sampled_from(["", CLUSTER, "scope-x", 7]))])
    if kind == 4:  # a pull with random cursors
        return dumps([8, draw(st.integers(-5, 2**64)), [[draw(st.sampled_from(["", "x", 1])),
                                                          draw(JSON), draw(JSON)]]])
    return dumps(_mutate(draw, [9, [["", 5, 0, [["configmaps", "default", name, doc]],
                                      [], 0, []]]]))


def test_hostile_mesh_messages_from_a_node_never_crash_the_peer(cluster: Cluster) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        payload = data.draw(payloads(cluster.keep_doc), "payload")

        async def send() -> None:
            with_answer = cluster.sent % 10 == 0
            cluster.sent += 1
            if with_answer:
                try:
                    await cluster.attacker.request(cluster.victim.address, payload, 5)
                except TransportError as e:  # a refusal, not a hang
                    assert "no answer" not in str(e), e
            else:
                await cluster.attacker.send(cluster.victim.address, payload)

        cluster.run(send())

    fuzz()
    cluster.run(still_consistent(cluster))
    assert cluster.sent >= EXAMPLES


def _frame(ftype: int, channel: int, payload: bytes, length: int | None = None,
           rid: int = 1) -> bytes:
    return HEADER.pack(ftype, channel, rid, len(payload) if length is None else length) + payload


HELLO = _frame(FrameType.HELLO, Channel.MESH, b"127.0.0.1:1")
FRAMES: list[tuple[bool, bytes]] = [
    # (with a node certificate, what is sent after the handshake)
    (False, b"\x00" * 64),
    (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    (False, _frame(FrameType.REQUEST, Channel.CONTROL, b"x" * 10, length=1000)),
    (False, _frame(FrameType.REQUEST, Channel.CONTROL, b"", length=2**31)),
    (False, _frame(FrameType.REQUEST, Channel.MESH, encode(Ping("victim", ())))),
    (False, _frame(FrameType.HELLO, Channel.MESH, b"me")),
    (False, _frame(99, 99, b"")),
    (False, b"".join(_frame(FrameType.REQUEST, Channel.CONTROL, b"{}", rid=i)
                     for i in range(20))),
    (True, b""),
    (True, _frame(FrameType.REQUEST, Channel.MESH, b"x")),  # before the hello
    (True, HELLO + HELLO),
    # A hello names the peer's stats for the node's life: 16 MiB ones would pile up.
    (True, _frame(FrameType.HELLO, Channel.MESH, b"1" * 100_000)),
    (True, HELLO + _frame(FrameType.ONEWAY, Channel.MESH, b"", length=64 * 1024 * 1024)),
    (True, HELLO + _frame(FrameType.ONEWAY, Channel.MESH, b"x" * 100, length=5000)),
    (True, HELLO + _frame(7, 0, b"")),
    (True, HELLO + _frame(FrameType.RESPONSE, Channel.MESH, b"answer", rid=424242)),
    (True, HELLO + _frame(FrameType.ERROR, Channel.MESH, b"boom", rid=0)),
    (True, HELLO + _frame(FrameType.ONEWAY, Channel.STREAM, b"\x00\x01garbage", rid=77)),
    (True, HELLO + _frame(FrameType.REQUEST, Channel.CONTROL, b"\xff" * 50)),
    (True, HELLO + _frame(FrameType.REQUEST, Channel.MESH, b"[7, 0, [[1, 2, 3, 4]]]")),
    (True, HELLO + bytes(range(256)) * 4),
]


async def _raw(cluster: Cluster, certified: bool, data: bytes) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if certified:
        ctx.load_cert_chain(cluster.attacker_id.cert, cluster.attacker_id.key)
    host, port = cluster.victim.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    writer.write(data)
    async with asyncio.timeout(10):  # the node closes it: at the latest its idle timeout
        while await reader.read(65536):
            pass
    writer.close()


def test_a_corpus_of_frame_level_garbage_closes_the_connection_not_the_node(
    cluster: Cluster,
) -> None:
    async def run() -> None:
        await asyncio.gather(*(_raw(cluster, certified, data) for certified, data in FRAMES))

    cluster.run(run())
    cluster.run(still_consistent(cluster))
    transport = cluster.victim.transport
    assert isinstance(transport, TlsTransport)
    assert transport.refused + transport.idle_closed >= len(FRAMES) // 2
    assert max(map(len, transport.stats())) < 1000


SENTINELS = itertools.count()


async def still_consistent(cluster: Cluster) -> None:
    """The peer answers a ping, its commits have settled, memory holds what its disk
    holds, the object stored before is unchanged, and a well-formed push still merges
    and reaches a watcher."""
    replica = cluster.store.replica
    answer = await cluster.attacker.request(cluster.victim.address,
                                            encode(Ping("victim", ())), 5)
    assert answer  # an Ack
    for _ in range(200):  # let in-flight commits settle
        if replica.durable_revision == replica.revision:
            break
        await asyncio.sleep(0.01)
    assert replica.durable_revision == replica.revision
    assert replica.get("configmaps", "default", "keep") == cluster.keep
    # What memory holds is what the disk holds (Secrets are sealed on disk: skipped).
    with sqlite3.connect(cluster.data_dir / "state.db") as db:
        disk = {(r, ns, n): (rv, doc) for r, ns, n, rv, doc in db.execute(
            "SELECT resource, namespace, name, rv, doc FROM objects") if r != "secrets"}
    memory = {key: (e.rv, e.doc_bytes) for key, e in replica.all_entries()
              if key[0] != "secrets"}
    assert memory == disk
    # A well-formed push still merges, and the watcher hears of it.
    writer = Replica(None, "node-x")
    ws = ObjectStore(writer, REG)
    await ws.create(NS, {"metadata": {"name": "default"}})
    name = f"sentinel-{next(SENTINELS)}"
    await ws.create(CM, {"metadata": {"name": name}}, "default")
    entry = writer.entry("configmaps", "default", name)
    assert entry is not None and entry.doc_bytes is not None
    await cluster.attacker.send(cluster.victim.address, encode(Push(0, (DocRecord(
        "configmaps", "default", name, entry.doc_bytes),), CLUSTER)))
    async with asyncio.timeout(5):
        while True:
            change = await cluster.watch.queue.get()
            if change is not None and change.name == name:
                break
