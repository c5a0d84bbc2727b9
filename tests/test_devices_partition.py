"""A device's node cut off from its peers, in ``shoal.sim`` (virtual time, three peers).

The real replicas, object stores and mesh; the device is an in-memory driver. The node
that serves the device keeps driving it from its own replica while cut off, and after
the heal every peer holds the last reported values and the device gets what was asked
for on the other side.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from shoal.devices.mapper import DEVICES, DeviceWorker
from shoal.mesh import config as mesh_config
from shoal.sim.cluster import NAMESPACE, SimCluster, SimNode
from shoal.sim.loop import run as virtual_run

API = "devices.shoal.dev/v1beta1"


class FakePlc:
    """A device in memory: registers by property name, and when each write came."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.values = {"temperature": "20", "setpoint": "0", "fan": "0"}
        self.writes: list[tuple[float, str, str]] = []

    async def read(self, prop: str, config: dict[str, Any]) -> str | None:
        return self.values[prop]

    async def write(self, prop: str, config: dict[str, Any], value: str) -> None:
        self.values[prop] = value
        self.writes.append((self.loop.time(), prop, value))

    async def close(self) -> None:
        pass


def _device(node: str) -> dict[str, Any]:
    def prop(name: str) -> dict[str, Any]:
        return {"name": name, "collectCycle": 1000, "reportCycle": 2000,
                "visitors": {"configData": {"register": "HoldingRegister", "offset": 0}}}

    return {"apiVersion": API, "kind": "Device", "metadata": {"name": "plc"},
            "spec": {"deviceModelRef": {"name": "m"}, "nodeName": node,
                     "protocol": {"protocolName": "modbus", "configData": {}},
                     "properties": [prop("temperature"), prop("setpoint"), prop("fan")]}}


def _reported(node: SimNode) -> dict[str, str]:
    obj = node.replica.get(DEVICES, NAMESPACE, "plc") or {}
    return {t["propertyName"]: t.get("reported", {}).get("value")
            for t in (obj.get("status") or {}).get("twins", [])}


async def _set_desired(node: SimNode, prop: str, value: str) -> None:
    kind = node.store.registry.by_kind(API, "Device")
    assert kind is not None
    obj = copy.deepcopy(node.replica.get(DEVICES, NAMESPACE, "plc"))
    assert obj is not None
    for p in obj["spec"]["properties"]:
        if p["name"] == prop:
            p["desired"] = {"value": value}
    await node.store.update(kind, obj, NAMESPACE, "plc")


async def _scenario() -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    cluster = SimCluster(3, 7, mesh_config.sim(), loop)  # type: ignore[arg-type]
    await cluster.start()
    edge, hub, other = cluster.nodes.values()
    registry = cluster.registry
    model_kind, device_kind = (registry.by_kind(API, k) for k in ("DeviceModel", "Device"))
    assert model_kind is not None and device_kind is not None
    await hub.store.create(model_kind, {"apiVersion": API, "kind": "DeviceModel",
                                        "metadata": {"name": "m"}, "spec": {"properties": [
                                            {"name": "temperature", "type": "INT"},
                                            {"name": "setpoint", "type": "INT"},
                                            {"name": "fan", "type": "INT"}]}}, NAMESPACE)
    await hub.store.create(device_kind, _device(edge.name), NAMESPACE)
    plc = FakePlc(loop)
    worker = DeviceWorker(edge.store, NAMESPACE, "plc", plc, None, tick=0.05,
                          clock=edge.replica.wall.now)
    await asyncio.sleep(5.0)  # the Device reaches the edge's replica
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(5.0)
    before_cut = {n.name: _reported(n) for n in (edge, hub, other)}

    cluster.network.partition([[edge.address], [hub.address, other.address]])
    await asyncio.sleep(10.0)  # the mesh now holds the edge unreachable
    plc.values["temperature"] = "31"
    asked = loop.time()
    await _set_desired(edge, "setpoint", "25")  # written on the cut-off edge
    await _set_desired(hub, "fan", "1")  # and on the other side, on another property
    await asyncio.sleep(10.0)
    during = {"edge": _reported(edge), "hub": _reported(hub),
              "fan_written": [w for w in plc.writes if w[1] == "fan"]}

    cluster.network.heal()
    await asyncio.sleep(30.0)
    after = {n.name: _reported(n) for n in (edge, hub, other)}
    desired = {n.name: [p.get("desired", {}).get("value") for p in
                        (n.replica.get(DEVICES, NAMESPACE, "plc") or {})["spec"]["properties"]]
               for n in (edge, hub, other)}
    task.cancel()
    await cluster.stop()
    return {"before": before_cut, "during": during, "after": after, "desired": desired,
            "asked": asked, "writes": plc.writes, "fan": plc.values["fan"]}


def test_a_cut_off_node_drives_its_device_and_the_twin_converges_after_the_heal() -> None:
    r = virtual_run(_scenario())
    assert all(v == {"temperature": "20", "setpoint": "0", "fan": "0"}
               for v in r["before"].values()), r["before"]
    # The setpoint written on the cut-off node reached the device within a second.
    setpoint = [t for t, prop, value in r["writes"] if prop == "setpoint" and value == "25"]
    assert setpoint and setpoint[0] - r["asked"] < 1.0, r["writes"]
    # Readings went on into the edge's twin; the other side still had the old ones.
    assert r["during"]["edge"]["temperature"] == "31"
    assert r["during"]["hub"]["temperature"] == "20"
    assert r["during"]["fan_written"] == []  # asked for on the other side: not seen yet
    # After the heal: every peer holds the last reported values and both desired values,
    # and the device got the one asked for on the other side.
    want = {"temperature": "31", "setpoint": "25", "fan": "1"}
    assert all(v == want for v in r["after"].values()), r["after"]
    assert all(d == [None, "25", "1"] for d in r["desired"].values()), r["desired"]
    assert r["fan"] == "1"
