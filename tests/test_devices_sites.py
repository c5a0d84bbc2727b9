"""Devices on real nodes, real kubectl: a farm site (farm-1, in a network namespace) serves a
simulated Modbus thermostat and MQTT humidity sensor (``shoal.devices.simulator``, run in
the farm's namespace), and a hub site (hub-1) runs the consumer pod of
examples/devices.yaml, which subscribes to the readings through its own node's bus
(NATS_URL). Then the farm is cut off (iptables drops its uplink): a setpoint patched on
the farm reaches the register, readings keep flowing there, and after the heal the hub
shows the farm's last reported values.

One lab for the module: two nodes start once."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, VENV_BIN, ShoalProcess, free_port
from tests.test_bus_harness import need_nats_server
from tests.tools import netns

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "devices.yaml"
MODBUS_PORT = 5020  # the example's; each namespace has its own ports

# Inside the farm's namespace: readings on the farm's own bus for a second, by subject.
LOCAL_READINGS = """
import asyncio, collections, json, nats
async def main():
    nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2)
    got = collections.Counter()
    async def seen(msg):
        got[msg.subject] += 1
    await nc.subscribe("devices.>", cb=seen)
    await asyncio.sleep(1.0)
    await nc.close()
    print(json.dumps(got))
asyncio.run(main())
"""


@dataclass
class Simulator:
    """``python -m shoal.devices.simulator`` in the farm's namespace; its register writes."""

    proc: subprocess.Popen[str]
    writes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["event"] == "write":
                self.writes.append(event)

    def written(self, value: int, after: float) -> float | None:
        """When ``value`` was written to the setpoint register after ``after`` (epoch s)."""
        for w in list(self.writes):
            if w["address"] == 2 and w["values"] == [value] and w["t"] >= after:
                return float(w["t"])
        return None


@dataclass
class Lab:
    lab: netns.NetnsLab
    hub: ShoalProcess
    farm: ShoalProcess
    sim: Simulator


def wait_until(check: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


def example() -> str:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for d in docs:
        if d["kind"] == "Device":
            d["spec"]["nodeName"] = "farm-1"  # the example names make demo's farm, edge-3
    return yaml.safe_dump_all(docs)


def twins(node: ShoalProcess, device: str) -> dict[str, dict[str, Any]]:
    r = node.kubectl("get", "device", device, "-o", "json", check=False)
    if r.returncode != 0:
        return {}
    status = json.loads(r.stdout).get("status") or {}
    return {t["propertyName"]: t for t in status.get("twins") or []}


def reported(node: ShoalProcess, device: str, prop: str) -> tuple[str, int] | None:
    twin = twins(node, device).get(prop) or {}
    r = twin.get("reported") or {}
    if "value" not in r:
        return None
    return str(r["value"]), int((r.get("metadata") or {}).get("timestamp", 0))


def patch_setpoint(node: ShoalProcess, value: int) -> float:
    """kubectl patch (its default strategic merge), and the wall-clock time it returned."""
    node.kubectl("patch", "device", "thermostat", "-p", json.dumps(
        {"spec": {"properties": [{"name": "setpoint", "desired": {"value": str(value)}}]}}))
    return time.time()


def readings_at_hub(hub: ShoalProcess) -> dict[str, int]:
    r = hub.kubectl("logs", "deploy/device-readings", check=False)
    counts: dict[str, int] = {}
    for line in r.stdout.splitlines() if r.returncode == 0 else []:
        if line.startswith("devices."):
            subject = line.split(" ", 1)[0]
            counts[subject] = counts.get(subject, 0) + 1
    return counts


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    netns.require(need_iptables=True)
    need_nats_server()
    tmp = tmp_path_factory.mktemp("device-sites")
    with netns.NetnsLab() as lab:
        nodes = {}
        for name, site in (("hub-1", "cloud"), ("farm-1", "farm")):
            ns = lab.add(site)
            nodes[site] = ShoalProcess(name, tmp / name, free_port(), tmp / f"{name}.log",
                                       netns=ns, host=ns.ip)
        hub, farm = nodes["cloud"], nodes["farm"]
        try:
            hub.start(["--peer-port", "7443", "--site", "cloud"])
            hub.kubectl("label", "node", "hub-1", "shoal.dev/hub=true")
            made = subprocess.run([str(VENV_BIN / "shoal"), "token", "create", "--data-dir",
                                   str(hub.data_dir)], capture_output=True, text=True)
            assert made.returncode == 0, made.stderr
            token = made.stdout.strip()
            proc = farm.netns.popen(
                [str(VENV_BIN / "python"), "-m", "shoal.devices.simulator",
                 "--modbus-port", str(MODBUS_PORT), "--mqtt", "127.0.0.1:1883",
                 "--every", "0.2"], stdout=subprocess.PIPE, text=True)
            sim = Simulator(proc)
            farm.start(["--peer-port", "7443", "--site", "farm", "--join",
                        f"{hub.host}:7443", "--token", token, "--bus-mqtt-port", "1883"])
            yield Lab(lab, hub, farm, sim)
        finally:
            for node in (farm, hub):
                node.stop()


def test_a_pod_at_the_hub_gets_the_farms_readings_and_kubectl_drives_the_register(
        lab: Lab) -> None:
    hub, farm = lab.hub, lab.farm
    wait_until(lambda: hub.kubectl("get", "devices", check=False).returncode == 0, 30,
               "the Device kind served")
    applied = time.time()
    hub.kubectl("apply", "-f", "-", input=example())
    # The example's desired setpoint, 20, is written to the register by the farm's mapper.
    wait_until(lambda: lab.sim.written(20, applied), 30, "the example's setpoint written")

    # Both twins, reported on the farm, in kubectl at the hub.
    def table() -> str:
        out = str(hub.kubectl("get", "devices", "-o", "wide").stdout)
        return out if "humidity=5" in out and "temperature=" in out else ""

    rows = {r.split()[0]: r.split() for r in wait_until(table, 30, "both twins").splitlines()}
    print("\n" + table())
    assert rows["NAME"] == ["NAME", "MODEL", "NODE", "PROTOCOL", "STATE", "TWINS", "AGE"]
    assert rows["humidity"][1:5] == ["humidity-model", "farm-1", "mqtt", "online"]
    assert rows["thermostat"][1:5] == ["thermostat-model", "farm-1", "modbus", "online"]
    assert "setpoint=20" in rows["thermostat"][5]

    # The consumer pod at the hub gets both devices' readings from the farm's bus.
    counts = wait_until(lambda: (c := readings_at_hub(hub)) and len(c) == 3 and c, 30,
                        "readings at the hub's pod")
    assert set(counts) == {"devices.default.humidity.humidity",
                           "devices.default.thermostat.setpoint",
                           "devices.default.thermostat.temperature"}
    pod = json.loads(hub.kubectl("get", "pods", "-l", "app=device-readings", "-o",
                                 "json").stdout)["items"][0]
    assert pod["spec"]["nodeName"] == "hub-1"

    # A setpoint patched at the hub reaches the farm's register.
    acked = patch_setpoint(hub, 23)
    written = wait_until(lambda: lab.sim.written(23, acked - 1), 5, "23 in the register",
                         every=0.01)
    print(f"kubectl patch at the hub returned -> farm's register written: "
          f"{(written - acked) * 1000:+.0f} ms")

    # Bad input: a desired value out of the model's range is not written and the status
    # says why; an unknown protocol is a 422 naming the field. The nodes go on serving.
    patch_setpoint(hub, 99)
    wait_until(lambda: "maximum" in str(json.loads(hub.kubectl(
        "get", "device", "thermostat", "-o", "json").stdout)["status"].get("message", "")),
        20, "the out-of-range message")
    assert lab.sim.written(99, 0) is None
    bad = {"apiVersion": "devices.shoal.dev/v1beta1", "kind": "Device",
           "metadata": {"name": "zigbee"},
           "spec": {"deviceModelRef": {"name": "humidity-model"}, "nodeName": "farm-1",
                    "protocol": {"protocolName": "zigbee"}}}
    r = hub.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert r.returncode != 0
    assert 'spec.protocol.protocolName: Unsupported value: "zigbee"' in r.stderr
    acked = patch_setpoint(hub, 21)
    wait_until(lambda: lab.sim.written(21, acked - 1), 5, "21 in the register", every=0.01)
    stored = json.loads(hub.kubectl("get", "device", "thermostat", "-o", "json").stdout)
    assert [p["name"] for p in stored["spec"]["properties"]] == ["setpoint", "temperature"]
    assert "deviceModelRef" in hub.kubectl("explain", "device.spec").stdout
    conf = json.loads((farm.data_dir / "bus" / "nats-server.json").read_text())
    assert conf["mqtt"]["port"] == 1883  # --bus-mqtt-port


def test_a_cut_off_farm_drives_and_reads_its_devices_and_the_hub_catches_up(
        lab: Lab) -> None:
    hub, farm = lab.hub, lab.farm
    wait_until(lambda: reported(hub, "thermostat", "setpoint") is not None, 30,
               "the twin at the hub")
    lab.lab.cut(farm.netns, "drop")
    try:
        cut = time.time()
        # The setpoint patched on the cut-off farm (kubectl inside its namespace) is written.
        acked = patch_setpoint(farm, 26)
        written = wait_until(lambda: lab.sim.written(26, acked - 1), 5,
                             "26 in the register while cut off", every=0.01)
        print(f"\ncut off: kubectl patch on the farm returned -> register written: "
              f"{(written - acked) * 1000:+.0f} ms")
        # Readings keep flowing on the farm's own bus, and into its twin.
        local = json.loads(farm.netns.run([str(VENV_BIN / "python"), "-c", LOCAL_READINGS],
                                          capture_output=True, text=True, check=True,
                                          timeout=30).stdout)
        print(f"cut off: readings on the farm's bus in 1 s: {local}")
        assert local.get("devices.default.humidity.humidity", 0) >= 1
        assert local.get("devices.default.thermostat.temperature", 0) >= 1
        wait_until(lambda: (r := reported(farm, "thermostat", "setpoint")) and r[0] == "26",
                   10, "the farm's twin to report 26")
        # The hub, cut off from the farm, still holds the values from before.
        assert (reported(hub, "thermostat", "setpoint") or ("", 0))[0] != "26"

        def reported_while_cut() -> dict[str, tuple[str, int] | None] | None:
            got = {p: reported(farm, d, p) for d, p in (("thermostat", "temperature"),
                                                         ("humidity", "humidity"))}
            return got if all(v and v[1] / 1000 > cut for v in got.values()) else None

        # Both devices' twins take readings on the farm while it is cut off.
        last = wait_until(reported_while_cut, 10, "readings reported on the farm while cut")
    finally:
        lab.lab.heal(farm.netns)
    healed = time.monotonic()

    # After the heal the hub holds the farm's reports: the new setpoint, and readings at
    # least as recent as the last the farm reported while cut off.
    def caught_up() -> bool:
        if (reported(hub, "thermostat", "setpoint") or ("", 0))[0] != "26":
            return False
        return all((got := reported(hub, d, p)) is not None and got[1] >= want[1]
                   for (d, p), want in zip((("thermostat", "temperature"),
                                            ("humidity", "humidity")), last.values(),
                                           strict=True) if want is not None)

    wait_until(caught_up, 30, "the hub to show the farm's last reports")
    print(f"after the heal: the hub shows the farm's last reports in "
          f"{time.monotonic() - healed:.1f} s")
    assert twins(hub, "thermostat")["setpoint"]["observedDesired"]["value"] == "26"
