"""Device figures (issue 15): readings through the MQTT mapper, desired to register.

Through a real ``shoal server`` on loopback (process runtime, an MQTT listener):

- **readings/s to a subscriber pod**: N MQTT sensors (one raw MQTT 3.1.1 connection each,
  in this process) publish every 10 ms to the node's MQTT listener; the node's mapper
  collects each at ``collectCycle`` and publishes the reading on
  ``devices.<ns>.<device>.<property>``; a pod (the host's python3, subscribed through
  ``NATS_URL``) counts what it gets, and its own counts over 10 s give the rate. The mapper
  samples (as KubeEdge's mappers do), so the ceiling is devices x 1/collectCycle.
- **kubectl patch to register**: ``shoal.devices.simulator``'s PLC prints the wall-clock
  time of every write it gets; from the start of ``kubectl patch`` (a new process, as a
  user runs it) to the write of the holding register, p50/p99 over 100 patches.

In process (no HTTP, no kubectl), the same two figures without the API in the way: the real
ObjectStore (SQLite, fsync per commit), a real nats-server with MQTT, pymodbus's device and
``shoal.devices.DeviceMappers`` (``in_process``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nats
import psutil
import yaml
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from shoal.bus.supervisor import nats_server_path
from shoal.devices.mapper import DEVICES
from shoal.devices.service import DeviceMappers
from shoal.devices.simulator import mqtt_connect, mqtt_publish_packet
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

API = "devices.shoal.dev/v1beta1"
NODE = "bench-1"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "devices.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _mqtt_sensor(port: int, topic: str, stop: asyncio.Event, every: float) -> None:
    _, writer = await mqtt_connect("127.0.0.1", port, topic)
    i = 0
    while not stop.is_set():
        writer.write(mqtt_publish_packet(topic, str(i % 100).encode()))
        await writer.drain()
        i += 1
        await asyncio.sleep(every)
    writer.close()


async def _store(work: Path) -> tuple[ObjectStore, Replica]:
    replica = Replica(work / "replica", "p1")
    store = ObjectStore(replica, KindRegistry())
    ns = store.registry.by_kind("v1", "Namespace")
    assert ns is not None
    await store.create(ns, {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "default"}})
    return store, replica


def _kind(store: ObjectStore, name: str) -> Any:
    k = store.registry.by_kind(API, name)
    assert k is not None
    return k


async def _mqtt_readings(store: ObjectStore, nats_url: str, mqtt_port: int, devices: int,
                         collect_ms: int, seconds: float) -> dict[str, Any]:
    await store.create(_kind(store, "DeviceModel"), {
        "apiVersion": API, "kind": "DeviceModel", "metadata": {"name": "probe"},
        "spec": {"properties": [{"name": "level", "type": "INT"}]}}, "default")
    for i in range(devices):
        await store.create(_kind(store, "Device"), {
            "apiVersion": API, "kind": "Device", "metadata": {"name": f"s{i}"},
            "spec": {"deviceModelRef": {"name": "probe"}, "nodeName": NODE,
                     "protocol": {"protocolName": "mqtt"},
                     "properties": [{"name": "level", "collectCycle": collect_ms,
                                     "reportCycle": 10000,
                                     "visitors": {"configData": {"topic": f"bench/s{i}"}}}]}},
            "default")
    count = 0
    consumer = await nats.connect(nats_url)

    async def got(msg: Any) -> None:
        nonlocal count
        count += 1

    await consumer.subscribe("devices.default.>", cb=got)
    mappers = DeviceMappers(store, NODE, lambda: nats_url)
    mappers.start()
    stop = asyncio.Event()
    sensors = [asyncio.create_task(_mqtt_sensor(mqtt_port, f"bench/s{i}", stop, 0.01))
               for i in range(devices)]
    await asyncio.sleep(3.0)  # every worker started and subscribed
    start_count, t0 = count, time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    got_count, elapsed = count - start_count, time.monotonic() - t0
    stop.set()
    await asyncio.gather(*sensors, return_exceptions=True)
    await mappers.stop()
    await consumer.close()
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    ceiling = devices * 1000 / collect_ms
    return {"devices": devices, "collect_cycle_ms": collect_ms,
            "readings_per_s": round(got_count / elapsed, 1),
            "ceiling_per_s": ceiling,
            "cpu_share_of_one_core": round(cpu / elapsed, 2),
            "note": "bench process CPU: mapper, store, sensors and subscriber together"}


async def _patch_to_register(store: ObjectStore, patches: int) -> dict[str, Any]:
    registers: list[int] = []

    async def seen(fc: int, start: int, address: int, count: int, regs: list[int],
                   values: Any) -> None:
        nonlocal registers
        registers = regs

    port = _free_port()
    server = ModbusTcpServer(SimDevice(id=1, simdata=[SimData(0, count=8, values=0,
                                                              datatype=DataType.REGISTERS)],
                                       action=seen), address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.3)
    await store.create(_kind(store, "DeviceModel"), {
        "apiVersion": API, "kind": "DeviceModel", "metadata": {"name": "valve"},
        "spec": {"properties": [{"name": "setpoint", "type": "INT"}]}}, "default")
    await store.create(_kind(store, "Device"), {
        "apiVersion": API, "kind": "Device", "metadata": {"name": "plc"},
        "spec": {"deviceModelRef": {"name": "valve"}, "nodeName": NODE,
                 "protocol": {"protocolName": "modbus",
                              "configData": {"ip": "127.0.0.1", "port": port}},
                 "properties": [{"name": "setpoint", "collectCycle": 1000,
                                 "reportCycle": 10000,
                                 "visitors": {"configData": {"register": "HoldingRegister",
                                                             "offset": 1}}}]}}, "default")
    mappers = DeviceMappers(store, NODE, lambda: None)
    mappers.start()
    await asyncio.sleep(1.0)
    kind = _kind(store, "Device")
    latencies: list[float] = []
    commits: list[float] = []
    for i in range(patches):
        value = 100 + i
        obj = copy.deepcopy(store.replica.get(DEVICES, "default", "plc"))
        assert obj is not None
        obj["spec"]["properties"][0]["desired"] = {"value": str(value)}
        asked = time.monotonic()
        await store.update(kind, obj, "default", "plc")
        acked = time.monotonic()
        commits.append((acked - asked) * 1000)
        while not (len(registers) > 1 and registers[1] == value):
            await asyncio.sleep(0.001)
            if time.monotonic() - acked > 5:
                raise RuntimeError(f"register never got {value}")
        latencies.append((time.monotonic() - asked) * 1000)
    await mappers.stop()
    await server.shutdown()  # type: ignore[no-untyped-call]
    serving.cancel()
    latencies.sort()
    return {"patches": patches, "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
            "max_ms": round(latencies[-1], 1),
            "commit_p50_ms": round(statistics.median(commits), 1),
            "from": "the store's update of desired called (what the API does for a "
                    "kubectl patch) to the holding register written; the update returns "
                    "once the commit is durable, and the change wakes the device's worker"}


# --- through a real `shoal server`: a subscriber pod, kubectl patch ----------------------

BIN = Path(sys.executable).parent

# The subscriber pod (process runtime, the host's python3): counts what its node's bus
# delivers on devices.>, and prints the count with the time twice a second.
COUNTER = r"""
import os, socket, time
from urllib.parse import urlparse
url = urlparse(os.environ["NATS_URL"])
while True:
    try:
        s = socket.create_connection((url.hostname, url.port or 4222), timeout=5)
        break
    except OSError:
        time.sleep(0.2)
s.sendall(b"CONNECT {}\r\nSUB devices.> 1\r\nPING\r\n")
s.settimeout(None)
f = s.makefile("rb")
n, last = 0, 0.0
while line := f.readline():
    if line.startswith(b"PING"):
        s.sendall(b"PONG\r\n")
    elif line.startswith(b"PONG"):
        print("subscribed", flush=True)
    elif line.startswith(b"MSG"):
        f.read(int(line.split()[-1]) + 2)
        n += 1
        now = time.time()
        if now - last >= 0.5:
            print("count", n, now, flush=True)
            last = now
"""


class Server:
    """One ``shoal server`` on loopback with the process runtime and an MQTT listener."""

    def __init__(self, work: Path) -> None:
        self.work, self.port, self.mqtt_port = work, _free_port(), _free_port()
        self.data = work / "data"
        self.kubeconfig = work / "kubeconfig"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"https://127.0.0.1:{self.port}"
        log = open(self.work / "shoal.log", "wb")  # noqa: SIM115 - kept for the process's life
        self.proc = subprocess.Popen(
            [str(BIN / "shoal"), "server", "--name", NODE, "--data-dir", str(self.data),
             "--api-port", str(self.port), "--peer-port", "0", "--log-level", "warning",
             "--runtime", "process", "--pod-network", "host", "--proxy-mode", "none",
             "--ingress-http-port", "0", "--ingress-https-port", "0",
             "--bus-mqtt-port", str(self.mqtt_port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not (self.data / "pki" / "ca.key").exists() or self.kubectl(
                "get", "--raw", "/readyz", check=False).returncode != 0:
            if self.kubeconfig.exists() is False and (self.data / "pki" / "ca.key").exists():
                subprocess.run([str(BIN / "shoal"), "kubeconfig", "--data-dir", str(self.data),
                                "--server", url, "--output", str(self.kubeconfig)],
                               check=True, capture_output=True)
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("shoal server did not start: "
                                   + (self.work / "shoal.log").read_text()[-2000:])
            time.sleep(0.2)

    def kubectl(self, *args: str, check: bool = True,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if not self.kubeconfig.exists():
            return subprocess.CompletedProcess(args, 1, "", "no kubeconfig yet")
        return subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig),
                               *args], input=stdin, capture_output=True, text=True,
                              check=check)

    def cpu_seconds(self) -> float:
        """CPU time of the server process (mappers, store, API, node agent)."""
        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def _last_count(server: Server) -> tuple[int, float] | None:
    out = server.kubectl("logs", "readings-counter", "--tail=5", check=False).stdout
    counts = [line.split() for line in out.splitlines() if line.startswith("count ")]
    return (int(counts[-1][1]), float(counts[-1][2])) if counts else None


async def _readings_to_pod(server: Server, devices: int, collect_ms: int,
                           seconds: float) -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "readings-counter"},
           "spec": {"containers": [{"name": "counter", "image": "python:3-slim",
                                    "command": ["python3", "-c", COUNTER]}]}}
    server.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    await asyncio.to_thread(_until, lambda: "subscribed" in server.kubectl(
        "logs", "readings-counter", check=False).stdout, 60, "the subscriber pod")
    items: list[dict[str, Any]] = [{
        "apiVersion": API, "kind": "DeviceModel", "metadata": {"name": "probe"},
        "spec": {"properties": [{"name": "level", "type": "INT"}]}}]
    items += [{"apiVersion": API, "kind": "Device", "metadata": {"name": f"s{i}"},
               "spec": {"deviceModelRef": {"name": "probe"}, "nodeName": NODE,
                        "protocol": {"protocolName": "mqtt"},
                        "properties": [{"name": "level", "collectCycle": collect_ms,
                                        "reportCycle": 10000,
                                        "visitors": {"configData": {"topic": f"bench/s{i}"}}}]}}
              for i in range(devices)]
    server.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": items}))
    stop = asyncio.Event()
    sensors = [asyncio.create_task(_mqtt_sensor(server.mqtt_port, f"bench/s{i}", stop, 0.01))
               for i in range(devices)]
    await asyncio.sleep(4.0)  # every worker started and subscribed
    first = await asyncio.to_thread(_until, lambda: _last_count(server), 30, "readings")
    cpu0 = server.cpu_seconds()
    await asyncio.sleep(seconds)
    cpu1 = server.cpu_seconds()
    last = await asyncio.to_thread(_last_count, server)
    assert last is not None
    stop.set()
    await asyncio.gather(*sensors, return_exceptions=True)
    server.kubectl("delete", "devices", "--all", "--wait=false")
    elapsed = last[1] - first[1]
    return {"devices": devices, "collect_cycle_ms": collect_ms,
            "readings_per_s_at_the_pod": round((last[0] - first[0]) / elapsed, 1),
            "ceiling_per_s": devices * 1000 / collect_ms,
            "window_s": round(elapsed, 1),
            "server_cpu_share_of_one_core": round((cpu1 - cpu0) / seconds, 2),
            "path": "MQTT sensors -> the node's nats-server (MQTT) -> the mapper in shoal "
                    "server -> devices.<ns>.<dev>.<prop> on the bus -> a pod subscribed "
                    "through NATS_URL (process runtime), counting"}


def _patches_to_register(server: Server, patches: int) -> dict[str, Any]:
    modbus_port = _free_port()
    sim = subprocess.Popen([str(BIN / "python"), "-m", "shoal.devices.simulator",
                            "--modbus-port", str(modbus_port), "--mqtt", ""],
                           stdout=subprocess.PIPE, text=True)
    writes: list[tuple[int, float]] = []

    def read() -> None:
        assert sim.stdout is not None
        for line in sim.stdout:
            event = json.loads(line)
            if event["event"] == "write" and event["address"] == 2:
                writes.append((int(event["values"][0]), float(event["t"])))

    threading.Thread(target=read, daemon=True).start()

    def written(value: int, after: float) -> float | None:
        return next((t for v, t in list(writes) if v == value and t >= after), None)

    try:
        example = [d for d in yaml.safe_load_all(EXAMPLE.read_text())
                   if d and d["kind"] in ("DeviceModel", "Device")
                   and d["metadata"]["name"].startswith("thermostat")]
        for d in example:
            if d["kind"] == "Device":
                d["spec"]["nodeName"] = NODE
                d["spec"]["protocol"]["configData"]["port"] = modbus_port
        started = time.time()
        server.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(example))
        _until(lambda: written(20, started), 30, "the example's setpoint")
        from_invoked, from_returned, kubectl_ms = [], [], []
        for i in range(patches):
            value = 21 + i % 9  # within the model's 5..30, never the one before
            body = json.dumps({"spec": {"properties": [
                {"name": "setpoint", "desired": {"value": str(value)}}]}})
            invoked = time.time()
            server.kubectl("patch", "device", "thermostat", "-p", body)
            returned = time.time()
            at = _until(lambda v=value, t=invoked: written(v, t), 10, f"{value} written")
            from_invoked.append((at - invoked) * 1000)
            from_returned.append((at - returned) * 1000)
            kubectl_ms.append((returned - invoked) * 1000)
    finally:
        sim.terminate()
        sim.wait(5)

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 1)

    return {"patches": patches,
            "p50_ms": pct(from_invoked, 0.5), "p99_ms": pct(from_invoked, 0.99),
            "max_ms": round(max(from_invoked), 1),
            "kubectl_patch_p50_ms": pct(kubectl_ms, 0.5),
            "after_kubectl_returned_p50_ms": pct(from_returned, 0.5),
            "after_kubectl_returned_p99_ms": pct(from_returned, 0.99),
            "from": "kubectl patch started (a new kubectl process, as a user runs it) to the "
                    "write request at the simulated PLC (shoal.devices.simulator, wall clock "
                    "on the same host); after_kubectl_returned is negative when the register "
                    "was written before kubectl exited"}


def _through_a_server(work: Path, quick: bool) -> dict[str, Any]:
    work.mkdir()
    server = Server(work)
    try:
        server.start()
        _until(lambda: server.kubectl("get", "devices", check=False).returncode == 0, 30,
               "the Device kind served")
        readings = asyncio.run(_readings_to_pod(server, devices=20 if quick else 100,
                                                collect_ms=100,
                                                seconds=3.0 if quick else 10.0))
        patch = _patches_to_register(server, 20 if quick else 100)
    finally:
        server.stop()
    return {"mqtt_readings_to_a_pod": readings, "kubectl_patch_to_register": patch}


async def _run(work: Path, quick: bool) -> dict[str, Any]:
    binary = nats_server_path()
    assert binary is not None
    port, mqtt_port = _free_port(), _free_port()
    conf = {"server_name": NODE, "host": "127.0.0.1", "port": port,
            "jetstream": {"store_dir": str(work / "js")},
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port}}
    (work / "nats.json").write_text(json.dumps(conf))
    proc = subprocess.Popen([binary, "-c", str(work / "nats.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", mqtt_port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        store, replica = await _store(work / "a")
        try:
            readings = await _mqtt_readings(store, f"nats://127.0.0.1:{port}", mqtt_port,
                                            devices=20 if quick else 100, collect_ms=100,
                                            seconds=3.0 if quick else 10.0)
        finally:
            replica.close()
        store, replica = await _store(work / "b")
        try:
            patch = await _patch_to_register(store, 20 if quick else 100)
        finally:
            replica.close()
    finally:
        proc.terminate()
        proc.wait(5)
    return {"mqtt_readings": readings, "desired_to_register": patch}


def run(quick: bool = False) -> dict[str, Any]:
    if nats_server_path() is None:
        return {"error": "nats-server is not installed (scripts/bootstrap-debian.sh)"}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-devices-") as tmp:
        figures = _through_a_server(Path(tmp) / "server", quick)
        figures["in_process"] = asyncio.run(_run(Path(tmp), quick))
        return figures


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
