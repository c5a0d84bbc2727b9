"""Stream and Consumer objects: their kinds, their validation, and JetStream made from them."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from shoal.bus import crds, stream_objects, streams
from shoal.bus.nats_config import BusSettings
from shoal.bus.node_bus import NodeBus
from shoal.bus.site_topology import ZONE_LABEL
from shoal.control.crd_establishing import crd_observer
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import Invalid, ObjectStore
from shoal.store.replica import Replica
from tests.test_bus_harness import Bus, need_nats_server, write_tls


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    replica = Replica(tmp_path / "replica", "p1")
    registry = KindRegistry()
    s = ObjectStore(replica, registry)
    s.observers.append(lambda kind, old, new: crd_observer(kind, old, new, registry))
    s.admission.append(crds.admit_stream)
    s.update_admission.append(crds.StreamUpdates(registry))
    ns_kind = registry.by_kind("v1", "Namespace")
    assert ns_kind is not None
    await s.create(ns_kind, {"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": "default"}})
    yield s
    replica.close()


def kind(store: ObjectStore, k: str) -> Kind:
    found = store.registry.by_kind(stream_objects.API_VERSION, k)
    assert found is not None
    return found


def stream(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": stream_objects.API_VERSION, "kind": "Stream",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def test_durations_read_as_nack_writes_them() -> None:
    assert stream_objects.parse_duration("1h30m") == 5400
    assert stream_objects.parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        stream_objects.parse_duration("1 day")


def test_a_hub_stream_sources_edge_streams_through_their_domains() -> None:
    obj = stream("all", sources=[{"name": "sensors", "domain": "farm-a"},
                                 {"name": "sensors", "domain": "farm-b",
                                  "filterSubject": "sensors.>"}],
                 duplicateWindow="2m", maxAge="24h", replicas=3)
    conf = stream_objects.stream_config(obj, site_peers=1)
    assert conf["sources"] == [
        {"name": "sensors", "external": {"api": "$JS.farm-a.API"}},
        {"name": "sensors", "filter_subject": "sensors.>",
         "external": {"api": "$JS.farm-b.API"}}]
    assert conf["duplicate_window"] == 120 * 10**9 and conf["max_age"] == 86400 * 10**9
    assert conf["num_replicas"] == 1  # a site of one cannot hold three copies
    assert stream_objects.stream_config(obj, site_peers=5)["num_replicas"] == 3


def test_a_stream_belongs_to_its_placement_site_or_to_every_site() -> None:
    placed = stream("s", placement={"site": "farm-a"})
    assert stream_objects.belongs_to(placed, "farm-a")
    assert not stream_objects.belongs_to(placed, "cloud")
    assert stream_objects.belongs_to(stream("s"), "cloud")


async def test_the_kinds_are_installed_once_and_served(store: ObjectStore) -> None:
    assert await crds.ensure_crds(store)
    assert await crds.ensure_crds(store)  # nothing to do the second time
    crd_kind = store.registry.by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd_kind is not None
    names = {c["metadata"]["name"] for c in store.list(crd_kind)}
    assert names == {"streams.jetstream.nats.io", "consumers.jetstream.nats.io"}
    k = kind(store, "Stream")
    assert k.namespaced and k.resource == stream_objects.STREAMS


async def test_a_stream_with_an_invalid_subject_or_conflicting_limits_is_refused(
        store: ObjectStore) -> None:
    await crds.ensure_crds(store)
    k = kind(store, "Stream")
    for bad in (stream("a", subjects=["telemetry.>.x"]), stream("b", subjects=["a b"]),
                stream("c", subjects=["x..y"]), stream("d", storage="tape"),
                stream("e", maxMsgs=-5), stream("f", maxAge="1 day")):
        with pytest.raises(Invalid) as e:
            await store.create(k, bad)
        assert "spec." in str(e.value)
    for bad in (stream("g", mirror={"name": "x"}, subjects=["x.>"]),
                stream("h", maxBytes=100, maxMsgSize=1000),
                stream("i", maxAge="1m", duplicateWindow="2m")):
        with pytest.raises(Invalid) as e:
            await store.create(k, bad)
        assert e.value.causes and e.value.causes[0].field.startswith("spec.")
    ok = await store.create(k, stream("ok", subjects=["telemetry.>", "cmd.*.set"]))
    assert ok["spec"]["subjects"] == ["telemetry.>", "cmd.*.set"]


async def test_an_update_to_an_invalid_subject_or_conflicting_limits_is_refused_too(
        store: ObjectStore) -> None:
    await crds.ensure_crds(store)
    k = kind(store, "Stream")
    await store.create(k, stream("s", subjects=["telemetry.>"], maxBytes=100, maxAge="1h"))
    for change in ({"subjects": ["telemetry.>.x"]}, {"maxMsgSize": 1000},
                   {"duplicateWindow": "2h"}, {"mirror": {"name": "x"}}):
        current = copy.deepcopy(store.get(k, "default", "s"))
        current["spec"].update(change)
        with pytest.raises(Invalid) as e:
            await store.update(k, current, "default", "s")
        assert e.value.causes and e.value.causes[0].field.startswith("spec."), change
    assert store.get(k, "default", "s")["spec"] == {"subjects": ["telemetry.>"],
                                                   "maxBytes": 100, "maxAge": "1h"}
    current = copy.deepcopy(store.get(k, "default", "s"))
    current["spec"]["maxMsgSize"] = 50
    assert (await store.update(k, current, "default", "s"))["spec"]["maxMsgSize"] == 50


@pytest.mark.slow
async def test_streams_and_consumers_are_made_updated_and_deleted_from_objects(
        store: ObjectStore, tmp_path: Path) -> None:
    binary = need_nats_server()
    await crds.ensure_crds(store)
    node_kind = store.registry.by_kind("v1", "Node")
    assert node_kind is not None
    await store.create(node_kind, {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "p1", "labels": {ZONE_LABEL: "farm-a"}}})
    tls = write_tls(Bus(tmp_path).ca, "p1", tmp_path / "pki")
    bus = NodeBus(store, BusSettings("p1", tmp_path / "bus" / "js", client_port=0,
                                     cluster_port=0, leafnode_port=0, tls=tls),
                  tmp_path / "bus", binary=binary)
    await bus.start()
    rec = streams.StreamReconciler(store, bus.url, "p1", lambda: bus.topology,
                                   tmp_path / "bus" / "managed.json", poll=0.05,
                                   status_interval=0.1)
    task = asyncio.create_task(rec.run())
    nc = await nats.connect(bus.url)
    try:
        sk, ck = kind(store, "Stream"), kind(store, "Consumer")
        await store.create(sk, stream("sensors", subjects=["sensors.>"], maxMsgs=1000,
                                      placement={"site": "farm-a"}))
        await store.create(sk, stream("elsewhere", subjects=["else.>"],
                                      placement={"site": "cloud"}))
        # Unplaced, but its stream lives at another site: not created here.
        await store.create(ck, {"apiVersion": stream_objects.API_VERSION, "kind": "Consumer",
                                "metadata": {"name": "remote", "namespace": "default"},
                                "spec": {"streamName": "elsewhere"}})
        await store.create(ck, {"apiVersion": stream_objects.API_VERSION, "kind": "Consumer",
                                "metadata": {"name": "agg", "namespace": "default"},
                                "spec": {"streamName": "sensors", "ackPolicy": "explicit",
                                         "filterSubject": "sensors.>"}})
        jsm = nc.jsm()

        async def eventually(check: Any, timeout: float = 10.0) -> Any:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                try:
                    result = await check()
                    if result:
                        return result
                except Exception:
                    pass
                assert asyncio.get_running_loop().time() < deadline, "timed out"
                await asyncio.sleep(0.05)

        async def sensors_max_msgs() -> int:
            return int((await jsm.stream_info("sensors")).config.max_msgs or 0)

        assert await eventually(sensors_max_msgs) == 1000
        async def agg_filter() -> str | None:
            return (await jsm.consumer_info("sensors", "agg")).config.filter_subject

        assert await eventually(agg_filter) == "sensors.>"
        names = [s.config.name for s in await jsm.streams_info()]
        assert "elsewhere" not in names  # placed at another site
        remote = store.replica.get(stream_objects.CONSUMERS, "default", "remote") or {}
        assert "status" not in remote  # nobody here reports on it
        # An application's own stream is never touched.
        await jsm.add_stream(name="app-own", subjects=["own.>"])
        js = nc.jetstream()
        for i in range(5):
            await js.publish("sensors.t", b"%d" % i)

        async def status_messages() -> int:
            obj = store.replica.get(stream_objects.STREAMS, "default", "sensors") or {}
            return int((obj.get("status") or {}).get("messages", 0)) == 5
        await eventually(status_messages)
        obj = store.replica.get(stream_objects.STREAMS, "default", "sensors")
        assert obj is not None
        assert obj["status"]["sites"]["farm-a"]["lastSeq"] == 5
        assert obj["status"]["conditions"][0]["status"] == "True"

        current = copy.deepcopy(store.get(sk, "default", "sensors"))
        current["spec"]["maxMsgs"] = 3
        await store.update(sk, current, "default", "sensors")

        async def trimmed() -> bool:
            return (await jsm.stream_info("sensors")).state.messages == 3
        await eventually(trimmed)

        current = copy.deepcopy(store.get(sk, "default", "sensors"))
        current["spec"]["storage"] = "memory"  # JetStream cannot change it
        await store.update(sk, current, "default", "sensors")

        async def refused() -> bool:
            o = store.replica.get(stream_objects.STREAMS, "default", "sensors") or {}
            cond = ((o.get("status") or {}).get("conditions") or [{}])[0]
            return cond.get("status") == "False" and "refused" in cond.get("message", "")
        await eventually(refused)

        await store.delete(ck, "default", "agg")
        await store.delete(sk, "default", "sensors")

        async def gone() -> bool:
            names = [s.config.name for s in await jsm.streams_info()]
            return "sensors" not in names
        await eventually(gone)
        assert [s.config.name for s in await jsm.streams_info()] == ["app-own"]
    finally:
        await nc.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rec.close()
        await bus.stop()


async def test_the_hub_lag_of_an_edge_stream_grows_with_what_it_stores_while_cut_off(
        store: ObjectStore, tmp_path: Path) -> None:
    await crds.ensure_crds(store)
    k = kind(store, "Stream")
    edge = await store.create(k, stream("sensors-farm-a", subjects=["sensors.farm-a.>"],
                                        placement={"site": "farm-a"}))
    hub = await store.create(k, stream("sensors", placement={"site": "cloud"}, sources=[
        {"name": "sensors-farm-a", "domain": "farm-a"}]))
    rec = streams.StreamReconciler(store, "nats://127.0.0.1:1", "edge-1", lambda: None,
                                   tmp_path / "managed.json")
    # Nothing reported by the hub yet: unknown, no column.
    assert rec._hub_lag(edge, "farm-a", {"firstSeq": 1, "lastSeq": 40}) is None
    hub = copy.deepcopy(hub)
    hub["status"] = {"sites": {"cloud": {"messages": 30, "lastSeq": 30, "sources": {
        "sensors-farm-a@farm-a": {"lag": 0, "copiedSeq": 30}}}}}
    await store.update(k, hub, "default", "sensors", "status")
    # The edge stored 10 more since the hub last said how far it got.
    assert rec._hub_lag(edge, "farm-a", {"firstSeq": 1, "lastSeq": 40}) == 10
    # Messages the edge dropped by its limits are not waited for.
    assert rec._hub_lag(edge, "farm-a", {"firstSeq": 36, "lastSeq": 40}) == 5
    assert rec._hub_lag(edge, "farm-a", {"firstSeq": 1, "lastSeq": 30}) == 0
    assert streams.source_header({"Nats-Stream-Source": "sensors-farm-a:OcCCb2lW 42"}) == (
        "sensors-farm-a", 42)
    assert streams.source_header({}) == ("", 0)
