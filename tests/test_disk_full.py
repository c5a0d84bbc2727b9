"""A full disk, on a small tmpfs: writes get a 507 Status naming the node and its disk,
reads and watches keep working, nothing acknowledged is lost, writes work again once
space is freed, the Node reports DiskPressure, and a peer's push is refused, not fatal.

Mounting a tmpfs needs root; under CI=true the test fails rather than skips without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shoal.api.authentication import Credentials
from shoal.api.server import ApiServer
from shoal.authz.scopes import CLUSTER
from shoal.mesh import config as mesh_config
from shoal.mesh.messages import DocRecord, Push, decode, encode
from shoal.mesh.peer import MeshPeer
from shoal.model.kinds import KindRegistry
from shoal.node.node_status import NodeStatusReporter
from shoal.sim.network import SimNetwork
from shoal.store.objects import InsufficientStorage, ObjectStore
from shoal.store.persistence import Persistence
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

# The API keeps state on requests under string keys; aiohttp warns, the warning is noise.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
REG = KindRegistry()
NODE = "pi-full"
TOKEN = "disk-full-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CMS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the tmpfs with a file."""
    st = os.statvfs(mount)
    filler = mount / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def configmap(name: str, size: int = 16_000) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": name}, "data": {"blob": "x" * size}})


@pytest.fixture
async def node(tmpfs: Path) -> AsyncIterator[tuple[ObjectStore, TestClient[Any, Any]]]:
    replica = Replica(tmpfs / "data", NODE)
    store = ObjectStore(replica, REG)
    ns = REG.by_kind("v1", "Namespace")
    assert ns is not None
    await store.create(ns, {"metadata": {"name": "default"}})
    api = ApiServer(store, REG, Credentials({TOKEN: "admin"}))
    client: TestClient[Any, Any] = TestClient(TestServer(api.app()))
    await client.start_server()
    try:
        yield store, client
    finally:
        await client.close()
        replica.close()


async def test_a_full_disk_refuses_writes_with_a_507_and_keeps_what_it_acknowledged(
    tmpfs: Path, node: tuple[ObjectStore, TestClient[Any, Any]],
) -> None:
    store, client = node
    watch = await client.get(f"{CMS}?watch=true&resourceVersion={store.replica.revision}",
                             headers=AUTH)
    assert watch.status == 200
    filler = fill(tmpfs, 300_000)
    acknowledged: list[str] = []
    refused: dict[str, Any] | None = None
    for i in range(200):
        r = await client.post(CMS, data=configmap(f"cm-{i}"), headers=AUTH)
        if r.status == 201:
            acknowledged.append(f"cm-{i}")
            continue
        refused = await r.json()
        assert r.status == 507, refused
        break
    assert refused is not None, "the disk never filled"
    assert acknowledged, "nothing fitted before the disk filled"
    assert refused["kind"] == "Status" and refused["reason"] == "InsufficientStorage"
    assert NODE in refused["message"] and str(tmpfs / "data") in refused["message"]
    # The refused write is not readable, and reads and lists keep working.
    failed = f"cm-{len(acknowledged)}"
    assert (await client.get(f"{CMS}/{failed}", headers=AUTH)).status == 404
    listed = await (await client.get(CMS, headers=AUTH)).json()
    assert sorted(o["metadata"]["name"] for o in listed["items"]) == sorted(acknowledged)
    # Other writes are refused the same way (an update, a delete), never a 500.
    r = await client.delete(f"{CMS}/{acknowledged[0]}", headers=AUTH)
    assert r.status == 507
    # Space freed: writes work again, and the watch opened before hears of them.
    filler.unlink()
    r = await client.post(CMS, data=configmap("after", 10), headers=AUTH)
    assert r.status == 201, await r.text()
    seen: list[str] = []
    while "after" not in seen:
        line = await asyncio.wait_for(watch.content.readline(), 5)
        seen.append(orjson.loads(line)["object"]["metadata"]["name"])
    assert failed not in seen and seen[:len(acknowledged)] == acknowledged
    watch.close()
    # Nothing acknowledged was lost: the disk holds exactly what memory holds.
    memory = {name: store.replica.get("configmaps", "default", name)
              for name in [*acknowledged, "after"]}
    store.replica.close()
    again = Replica(tmpfs / "data", NODE)
    try:
        for name, value in memory.items():
            assert again.get("configmaps", "default", name) == value
        assert again.get("configmaps", "default", failed) is None
    finally:
        again.close()


async def test_the_node_reports_disk_pressure_while_its_disk_is_nearly_full(
    tmpfs: Path, node: tuple[ObjectStore, TestClient[Any, Any]],
) -> None:
    store, _ = node
    reporter = NodeStatusReporter(store, NODE, "10.0.0.9")
    await reporter.register()
    node_k = REG.by_kind("v1", "Node")
    assert node_k is not None

    def disk_pressure() -> dict[str, Any]:
        conds = store.get(node_k, None, NODE)["status"]["conditions"]
        return next(c for c in conds if c["type"] == "DiskPressure")

    assert disk_pressure()["status"] == "False"
    filler = fill(tmpfs, 400_000)  # under 10% of 6 MiB free, still room to write
    await reporter.heartbeat()
    c = disk_pressure()
    assert c["status"] == "True" and c["reason"] == "KubeletHasDiskPressure"
    assert str(tmpfs / "data") in c["message"]
    filler.unlink()
    await reporter.heartbeat()
    assert disk_pressure()["status"] == "False"


async def test_a_disk_full_to_the_last_byte_still_takes_the_nodes_lease_and_disk_pressure(
    tmpfs: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the reserve the node's own status could not be written either: its API said
    # DiskPressure False and Ready True from before, and its Lease stopped (a real node).
    monkeypatch.setattr(Persistence, "reserve_bytes", 512 * 1024)
    replica = Replica(tmpfs / "data", NODE)
    try:
        store = ObjectStore(replica, REG)
        ns, cm, lease_k, node_k = (REG.by_kind(*k) for k in (
            ("v1", "Namespace"), ("v1", "ConfigMap"), ("coordination.k8s.io/v1", "Lease"),
            ("v1", "Node")))
        assert ns and cm and lease_k and node_k
        await store.create(ns, {"metadata": {"name": "default"}})
        reporter = NodeStatusReporter(store, NODE, "10.0.0.9")
        await reporter.register()
        await reporter.heartbeat()
        persistence = replica.persistence
        assert isinstance(persistence, Persistence)
        reserve = tmpfs / "data" / "disk-reserve"
        assert reserve.stat().st_size == 512 * 1024
        filler = fill(tmpfs, 0)  # to the last byte
        refused: Exception | None = None
        for i in range(100):
            try:
                await store.create(cm, orjson.loads(configmap(f"cm-{i}")), "default")
            except InsufficientStorage as e:
                refused = e
                break
        assert refused is not None and persistence.on_reserve
        assert not reserve.exists()
        # The node's own Lease and status are written, with DiskPressure; nothing else is.
        await reporter.heartbeat()
        conds = store.get(node_k, None, NODE)["status"]["conditions"]
        assert next(c for c in conds if c["type"] == "DiskPressure")["status"] == "True"
        assert replica.durable_revision == replica.revision
        with pytest.raises(InsufficientStorage):
            await store.create(cm, {"metadata": {"name": "small"}}, "default")
        with pytest.raises(InsufficientStorage):  # another node's Lease (from a peer, say)
            await store.create(lease_k, {"metadata": {"name": "pi-other"}, "spec": {}},
                               "kube-node-lease")
        # Space back: the reserve is made again, and writes work.
        filler.unlink()
        await store.create(cm, {"metadata": {"name": "after"}}, "default")
        assert not persistence.on_reserve and reserve.stat().st_size == 512 * 1024
    finally:
        replica.close()
    again = Replica(tmpfs / "data", NODE)
    try:
        conds = again.get("nodes", "", NODE)["status"]["conditions"]  # type: ignore[index]
        assert next(c for c in conds if c["type"] == "DiskPressure")["status"] == "True"
        assert again.get("configmaps", "default", "small") is None
        assert again.get("configmaps", "default", "after") is not None
    finally:
        again.close()


async def test_a_peer_pushing_to_a_full_node_is_refused_and_logged_not_a_crash(
    tmpfs: Path, node: tuple[ObjectStore, TestClient[Any, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, client = node
    net = SimNetwork(random.Random(1))
    full = MeshPeer(NODE, net.transport(f"{NODE}:1"), store.replica, mesh_config.sim(),
                    random.Random(1))
    writer = Replica(None, "pi-2")
    payload = orjson.loads(configmap("from-peer", 10))
    cm, ns = REG.by_kind("v1", "ConfigMap"), REG.by_kind("v1", "Namespace")
    assert cm is not None and ns is not None
    await ObjectStore(writer, REG).create(ns, {"metadata": {"name": "default"}})
    await ObjectStore(writer, REG).create(cm, payload, "default")
    entry = writer.entry("configmaps", "default", "from-peer")
    assert entry is not None and entry.doc_bytes is not None
    push = Push(0, (DocRecord("configmaps", "default", "from-peer", entry.doc_bytes),), CLUSTER)
    pushed = decode(encode(push))
    filler = fill(tmpfs, 200_000)
    with contextlib.suppress(AssertionError):
        for i in range(200):  # fill what is left until a commit fails
            r = await client.post(CMS, data=configmap(f"cm-{i}"), headers=AUTH)
            assert r.status == 201
    assert store.replica.persistence.full() is not None
    with caplog.at_level(logging.WARNING):
        await full.anti_entropy.handle("pi-2:1", pushed, "pi-2")
    assert full.anti_entropy.docs_unstored == 1
    assert store.replica.get("configmaps", "default", "from-peer") is None
    assert any("refused documents from pi-2" in r.getMessage() for r in caplog.records)
    filler.unlink()
    await full.anti_entropy.handle("pi-2:1", pushed, "pi-2")
    for _ in range(100):
        if store.replica.durable_revision == store.replica.revision:
            break
        await asyncio.sleep(0.02)
    assert store.replica.get("configmaps", "default", "from-peer") is not None
