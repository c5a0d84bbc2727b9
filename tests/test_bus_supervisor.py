"""A node's bus with real nats-server processes: announced, supervised, reloaded, stopped."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import pytest

from shoal.bus import site_topology
from shoal.bus.nats_config import BusSettings
from shoal.bus.node_bus import NodeBus
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.test_bus_harness import Bus, free_port, need_nats_server, wait_port, write_tls

pytestmark = pytest.mark.slow


def node_object(name: str, zone: str, annotations: dict[str, str] | None = None
                ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {site_topology.ZONE_LABEL: zone},
                         "annotations": annotations or {}}}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    replica = Replica(tmp_path / "replica", "p1")
    s = ObjectStore(replica, KindRegistry())
    yield s
    replica.close()


def node_kind(store: ObjectStore) -> Any:
    kind = store.registry.by_kind("v1", "Node")
    assert kind is not None
    return kind


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def make_bus(store: ObjectStore, tmp_path: Path, name: str = "p1") -> NodeBus:
    tls = write_tls(Bus(tmp_path).ca, name, tmp_path / name / "pki")
    settings = BusSettings(name=name, store_dir=tmp_path / name / "bus" / "js",
                           client_port=0, cluster_port=0, leafnode_port=0, tls=tls)
    return NodeBus(store, settings, tmp_path / name / "bus", poll=0.1,
                   binary=need_nats_server())


async def test_the_node_announces_its_bus_and_jetstream_runs_in_its_sites_domain(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(node_kind(store), node_object("p1", "farm-a"))
    bus = make_bus(store, tmp_path)
    await bus.start()
    try:
        annotations = store.replica.get("nodes", "", "p1")["metadata"]["annotations"]  # type: ignore[index]
        assert annotations[site_topology.CLIENT_ANNOTATION] == (
            f"127.0.0.1:{bus.settings.client_port}")
        await wait_port(bus.settings.client_port)
        nc = await nats.connect(bus.url)
        info = await nc.jsm().account_info()
        assert info.domain == "farm-a"
        await nc.close()
    finally:
        await bus.stop()


async def test_a_killed_nats_server_comes_back_and_clients_reconnect(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(node_kind(store), node_object("p1", "farm-a"))
    bus = make_bus(store, tmp_path)
    await bus.start()
    try:
        await wait_port(bus.settings.client_port)
        reconnected = asyncio.Event()

        async def on_reconnect() -> None:
            reconnected.set()

        nc = await nats.connect(bus.url, reconnected_cb=on_reconnect, reconnect_time_wait=0.1)
        first = bus.supervisor.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await asyncio.wait_for(reconnected.wait(), 10)
        assert bus.supervisor.pid not in (None, first)
        assert bus.supervisor.restarts == 1
        assert (await nc.request("$JS.API.INFO", b"", timeout=5)).data
        await nc.close()
    finally:
        await bus.stop()


async def test_stopping_the_bus_leaves_no_nats_server_behind(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(node_kind(store), node_object("p1", "farm-a"))
    bus = make_bus(store, tmp_path)
    await bus.start()
    pid = bus.supervisor.pid
    assert pid is not None and alive(pid)
    await bus.stop()
    assert not alive(pid)
    assert not (tmp_path / "p1" / "bus" / "nats-server.pid").exists()


async def test_a_nats_server_left_by_an_earlier_run_is_killed_at_start(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(node_kind(store), node_object("p1", "farm-a"))
    earlier = make_bus(store, tmp_path)
    await earlier.start()
    stale = earlier.supervisor.pid
    assert stale is not None
    # The earlier run dies without stopping its server (its watcher goes, the process stays).
    assert earlier.supervisor._task is not None and earlier._task is not None
    earlier.supervisor._task.cancel()
    earlier._task.cancel()
    later = make_bus(store, tmp_path)
    await later.start()
    try:
        await wait_for(lambda: not alive(stale))
        assert later.supervisor.pid not in (None, stale)
    finally:
        await later.stop()


async def test_a_new_peer_in_the_site_is_a_reload_that_keeps_client_connections(
        store: ObjectStore, tmp_path: Path) -> None:
    need_nats_server()
    p2 = Bus(tmp_path / "harness").add("p2", "farm-a")  # its Node only: no server runs
    await store.create(node_kind(store), node_object("p1", "farm-a"))
    await store.create(node_kind(store),
                       node_object("p2", "farm-a", p2.node()["metadata"]["annotations"]))
    bus = make_bus(store, tmp_path)
    await bus.start()
    try:
        await wait_port(bus.settings.client_port)
        assert bus.topology is not None and bus.topology.jetstream_clustered
        nc = await nats.connect(bus.url)
        pid = bus.supervisor.pid
        p3 = {site_topology.CLUSTER_ANNOTATION: f"127.0.0.1:{free_port()}",
              site_topology.CLIENT_ANNOTATION: "127.0.0.1:1"}
        await store.create(node_kind(store), node_object("p3", "farm-a", p3))
        await wait_for(lambda: bus.reloads == 1)
        conf = (tmp_path / "p1" / "bus" / "nats-server.json").read_text()
        assert p3[site_topology.CLUSTER_ANNOTATION] in conf
        log_file = tmp_path / "p1" / "bus" / "nats-server.log"
        await wait_for(lambda: "Reloaded server configuration" in log_file.read_text())
        assert bus.supervisor.pid == pid and bus.restarts == 0
        await nc.flush(timeout=2)
        assert nc.is_connected and nc.stats["reconnects"] == 0
        await nc.close()
    finally:
        await bus.stop()


async def test_a_renewed_certificate_is_reloaded_without_a_restart(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(node_kind(store), node_object("p1", "farm-a"))
    bus = make_bus(store, tmp_path)
    await bus.start()
    try:
        await wait_port(bus.settings.client_port)
        pid = bus.supervisor.pid
        tls = bus.settings.tls
        assert tls is not None
        # A renewal writes new files under the same names (and keeps the key: same pin).
        tls.cert.write_bytes(tls.cert.read_bytes())
        await wait_for(lambda: bus.reloads == 1)
        assert bus.supervisor.pid == pid and bus.restarts == 0
    finally:
        await bus.stop()


async def test_a_default_port_taken_by_another_node_moves_to_a_free_one(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(node_kind(store), node_object("p1", "farm-a"))
    first = make_bus(store, tmp_path)
    await first.start()
    try:
        # The first holds the port before the second starts: else either may lose the race
        # and move (CI, under load on two workers, saw the first move and the second stay).
        await wait_port(first.settings.client_port)
        # A second node on this host chose the same default port, and its replica does not
        # hold the first's Node yet (with it, the port is moved before the start: below).
        own_replica = Replica(tmp_path / "replica-p2", "p2")
        second = make_bus(ObjectStore(own_replica, KindRegistry()), tmp_path, name="p2")
        second.settings = replace(second.settings, client_port=first.settings.client_port)
        second.movable_ports = frozenset({"client_port"})
        moved: list[str] = []
        second.on_moved = moved.append
        second.poll = 0.05
        await second.start()
        try:
            await wait_for(lambda: bool(moved), timeout=30)  # the supervisor backs off
            assert second.settings.client_port != first.settings.client_port
            assert moved == [second.url]
            await wait_port(second.settings.client_port)
            nc = await nats.connect(second.url)
            assert nc.connected_server_version.major >= 2
            await nc.close()
        finally:
            await second.stop()
            own_replica.close()
    finally:
        await first.stop()


async def test_a_default_port_another_node_on_this_host_announces_is_left_to_it(
        store: ObjectStore, tmp_path: Path) -> None:
    """Even while that node does not listen on it (a peer alone in its site has no route
    listener): taking it would fail once that node is clustered."""
    theirs = {"client": free_port(), "cluster": free_port(), "leafnodes": free_port()}
    await store.create(node_kind(store), node_object("p1", "farm-a", {
        site_topology.CLIENT_ANNOTATION: f"127.0.0.1:{theirs['client']}",
        site_topology.CLUSTER_ANNOTATION: f"127.0.0.1:{theirs['cluster']}",
        site_topology.LEAF_ANNOTATION: f"127.0.0.1:{theirs['leafnodes']}"}))
    await store.create(node_kind(store), node_object("p2", "farm-a"))
    second = make_bus(store, tmp_path, name="p2")
    # It chose the defaults the other node had chosen, which nothing listens on now.
    second.settings = replace(second.settings, client_port=theirs["client"],
                              cluster_port=theirs["cluster"],
                              leafnode_port=theirs["leafnodes"])
    second.movable_ports = frozenset({"client_port", "cluster_port", "leafnode_port"})
    moved: list[str] = []
    second.on_moved = moved.append
    await second.start()
    try:
        ports = {second.settings.client_port, second.settings.cluster_port,
                 second.settings.leafnode_port}
        assert not ports & set(theirs.values())
        assert moved == [second.url]
        await wait_port(second.settings.cluster_port)
        await asyncio.sleep(0.5)  # five polls: a restart would show
        log_text = (tmp_path / "p2" / "bus" / "nats-server.log").read_text()
        assert log_text.count("Starting nats-server") == 1
        assert second.supervisor.restarts == 0 and second.restarts == 0
    finally:
        await second.stop()
