"""The node's built-in mappers: a worker per Device whose ``spec.nodeName`` is this node.

Modbus TCP devices get a pymodbus connection each; MQTT devices share the node's bus
connection (nats-server is the MQTT broker). The Devices are read from the local
replica, so the mappers keep running, and keep taking desired values written on this
site, while the node is cut off from its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shoal.devices.drivers import Driver
from shoal.devices.mapper import DEVICES, DeviceWorker
from shoal.devices.mqtt import MqttDriver
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

Key = tuple[str, str]


def _protocol(device: dict[str, Any]) -> dict[str, Any]:
    proto = (device.get("spec") or {}).get("protocol")
    return proto if isinstance(proto, dict) else {}


class DeviceMappers:
    def __init__(self, store: ObjectStore, node_name: str,
                 bus_url: Callable[[], str | None], poll: float = 0.2,
                 tick: float = 0.05) -> None:
        self.store = store
        self.node_name = node_name
        self.bus_url = bus_url
        self.poll = poll
        self.tick = tick
        self.workers: dict[Key, tuple[DeviceWorker, asyncio.Task[None], str]] = {}
        self._nc: Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="device-mappers")

    def _bus(self) -> Client | None:
        """The bus client once connected; until then None, the connection being made in
        the background (nats-py's first connect can retry for as long as the server is
        down, and Modbus devices must not wait for it)."""
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        url = self.bus_url()
        if url is not None and (self._connecting is None or self._connecting.done()):
            self._connecting = asyncio.create_task(self._connect(url), name="devices-bus")
        return None

    async def _connect(self, url: str) -> None:
        # nats-py (1.4 MB) only once a Device wants the bus
        from shoal.bus import import_nats

        import_nats()
        import nats

        try:
            self._nc = await nats.connect(
                url, name=f"shoal-devices-{self.node_name}", max_reconnect_attempts=-1,
                reconnect_time_wait=0.5, connect_timeout=2)
        except Exception as e:  # the server not up yet: tried again at a later pass
            log.info("devices: bus not reachable yet: %s", e)

    async def _publish(self, subject: str, payload: bytes) -> None:
        if self._nc is not None and self._nc.is_connected:
            await self._nc.publish(subject, payload)

    def _driver(self, device: dict[str, Any], bus: Client | None) -> Driver | None:
        proto = _protocol(device)
        config = proto.get("configData") or {}
        name = proto.get("protocolName")
        if name == "modbus":
            # pymodbus is loaded by the first Modbus device only (0.8 MB, 50 ms).
            from shoal.devices.modbus import ModbusDriver

            return ModbusDriver(str(config.get("ip", "127.0.0.1")),
                                int(config.get("port", 502)),
                                int(config.get("slaveID", config.get("deviceID", 1))))
        if name == "mqtt" and bus is not None:
            return MqttDriver(bus)
        return None

    def _changed(self, change: Change) -> bool:
        """Wake the worker of a Device that changed (a desired value to write now)."""
        if change.resource == DEVICES:
            served = self.workers.get((change.namespace, change.name))
            if served is not None:
                served[0].wake.set()
        return False  # nothing is queued: waking is all it takes

    async def _run(self) -> None:
        sub = self.store.replica.subscribe(self._changed)
        try:
            await self._sync_forever()
        finally:
            self.store.replica.feed.unsubscribe(sub)

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not end the mappers
                log.exception("devices: a pass failed")
            await asyncio.sleep(self.poll)

    async def sync(self) -> None:
        """Start a worker for each of this node's Devices, stop those of the others."""
        mine: dict[Key, dict[str, Any]] = {}
        for dev in self.store.replica.list(DEVICES):
            if (dev.get("spec") or {}).get("nodeName") == self.node_name:
                meta = dev.get("metadata") or {}
                mine[(meta.get("namespace", ""), meta.get("name", ""))] = dev
        for key, (_, task, proto) in list(self.workers.items()):
            current = mine.get(key)
            if current is None or task.done() or repr(_protocol(current)) != proto:
                await self._stop(key)
        if not mine:
            return
        bus = self._bus()
        for key, dev in mine.items():
            if key in self.workers:
                continue
            try:
                driver = self._driver(dev, bus)
            except (TypeError, ValueError) as e:  # a configData the schema lets through
                log.warning("devices: %s/%s: bad protocol configData: %s", *key, e)
                continue
            if driver is None:
                continue  # mqtt without a bus yet: at a later pass
            worker = DeviceWorker(self.store, key[0], key[1], driver,
                                  self._publish, tick=self.tick)
            task = asyncio.create_task(worker.run(), name=f"device-{key[0]}-{key[1]}")
            self.workers[key] = (worker, task, repr(_protocol(dev)))

    async def _stop(self, key: Key) -> None:
        _, task, _ = self.workers.pop(key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5.0)  # its driver's close is bounded too

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for key in list(self.workers):
            await self._stop(key)
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 2.0)
