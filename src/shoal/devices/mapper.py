"""One Device served by its node's mapper: collect, publish, drive, report.

Every ``collectCycle`` the worker reads each property and publishes the reading on the
site's bus (``devices.<namespace>.<device>.<property>``); every ``reportCycle`` it writes
the twin into the Device's status. It watches its own replica for a new desired value
and writes it to the device at once (its mappers wake it on every change of the Device), so a ``kubectl patch`` on the node's site reaches
the device whether or not the site is cut off from the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from shoal.devices.drivers import DeviceError, Driver, ValueRefused
from shoal.devices.twin import PropertySpec, Twin, desired_problem, not_in_model, properties
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

DEVICES = "devices.devices.shoal.dev"
MODELS = "devicemodels.devices.shoal.dev"
GROUP_VERSION = "devices.shoal.dev/v1beta1"
RETRY_WRITE_S = 1.0

Publish = Callable[[str, bytes], Awaitable[None]]


def _token(text: str) -> str:
    """A NATS subject token: no dots, wildcards or spaces."""
    return "".join("_" if c in ".*> \t" else c for c in text) or "_"


def subject(namespace: str, device: str, prop: str) -> str:
    return f"devices.{_token(namespace)}.{_token(device)}.{_token(prop)}"


class DeviceWorker:
    def __init__(self, store: ObjectStore, namespace: str, name: str, driver: Driver,
                 publish: Publish | None, tick: float = 0.05,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.namespace = namespace
        self.name = name
        self.driver = driver
        self.publish = publish
        self.tick = tick
        self.clock = clock
        self.twin = Twin()
        self.written: dict[str, str] = {}
        """property -> the desired value last written to the device"""
        self.refused: dict[str, tuple[str, str]] = {}
        """property -> (what was refused: the desired value and where it goes, why): not
        tried again until the user changes either"""
        self._write_after: dict[str, float] = {}
        self._next_collect: dict[str, float] = {}
        self._next_report = 0.0
        self.readings = 0
        self.status_writes = 0
        self.wake = asyncio.Event()
        """Set when the Device changes in the replica: a new desired value is written at
        once rather than at the next tick."""

    def _objects(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        device = self.store.replica.get(DEVICES, self.namespace, self.name)
        if device is None:
            return None, None
        ref = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name")
        model = self.store.replica.get(MODELS, self.namespace, ref) if isinstance(ref, str) \
            else None
        return device, model

    async def run(self) -> None:
        try:
            while True:
                device, model = self._objects()
                if device is None:
                    return
                await self.step(device, model)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick):
                        await self.wake.wait()
                self.wake.clear()
        finally:
            await self.driver.close()

    async def step(self, device: dict[str, Any], model: dict[str, Any] | None) -> None:
        now = self.clock()
        props = properties(device, model)
        problems: list[str] = []
        if model is None:
            ref = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name")
            problems.append(f"DeviceModel {ref!r} not found")
        else:
            unknown = not_in_model(device, model)
            if unknown:
                name = (model.get("metadata") or {}).get("name")
                problems += [f"property {n!r} is not in DeviceModel {name!r}" for n in unknown]
                props = [p for p in props if p.name not in unknown]
            problems += await self._drive(props, now)
            problems += await self._collect(props, now)
        self.twin.message = "; ".join(problems)
        if model is None:
            self.twin.state = "unknown"
        if now >= self._next_report:
            await self._report(device, props)
            cycles = [p.report_s for p in props] or [10.0]
            self._next_report = now + min(cycles)

    async def _drive(self, props: list[PropertySpec], now: float) -> list[str]:
        problems = []
        for p in props:
            if p.desired is None or self.written.get(p.name) == p.desired:
                continue
            problem = desired_problem(p)
            if problem is not None:
                problems.append(problem)
                continue
            attempt = f"{p.desired} {sorted(p.config.items())!r}"
            if p.name in self.refused and self.refused[p.name][0] == attempt:
                problems.append(self.refused[p.name][1])
                continue
            if now < self._write_after.get(p.name, 0.0):
                problems.append(f"{p.name}: writing {p.desired} failed, retrying")
                continue
            try:
                await self.driver.write(p.name, p.config, p.desired)
            except ValueRefused as e:  # the value, not the device: it stays online
                why = f"{p.name}: desired {p.desired} not written: {e}"
                self.refused[p.name] = (attempt, why)
                problems.append(why)
                continue
            except (DeviceError, TypeError, ValueError) as e:  # a bad configData too
                self._offline(f"writing {p.desired}: {e}")
                self._write_after[p.name] = now + RETRY_WRITE_S
                problems.append(f"{p.name}: writing {p.desired} failed: {e}")
                continue
            self.written[p.name] = p.desired
            self.twin.observed_desired[p.name] = (p.desired, now)
            self._next_report = 0.0  # show the applied value at once
            log.info("devices: %s/%s %s set to %s", self.namespace, self.name, p.name,
                     p.desired)
        return problems

    def _offline(self, why: str) -> None:
        if self.twin.state != "offline":
            log.warning("devices: %s/%s offline: %s", self.namespace, self.name, why)
        self.twin.state = "offline"

    async def _collect(self, props: list[PropertySpec], now: float) -> list[str]:
        problems = []
        for p in props:
            due = self._next_collect.get(p.name, 0.0)
            if now < due:
                continue
            # From when it was due, not from now: the tick's lateness does not add up.
            self._next_collect[p.name] = max(due + p.collect_s, now)
            try:
                value = await self.driver.read(p.name, p.config)
            except (DeviceError, TypeError, ValueError) as e:  # a bad configData too
                self._offline(str(e))
                problems.append(str(e))
                continue
            self.twin.state, self.twin.last_online = "online", now
            if value is None:
                continue
            self.readings += 1
            self.twin.reported[p.name] = (value, now)
            if self.publish is not None:
                payload = orjson.dumps({"value": value, "timestamp": int(now * 1000)})
                try:
                    await self.publish(subject(self.namespace, self.name, p.name), payload)
                except Exception as e:  # the bus restarting: the twin still gets the value
                    log.debug("devices: publishing failed: %s", e)
        return problems

    async def _report(self, device: dict[str, Any], props: list[PropertySpec]) -> None:
        old = device.get("status") or {}
        status = self.twin.status(props, old)
        if status == old:
            return
        new = copy.deepcopy(device)
        new["status"] = status
        kind = self.store.registry.by_kind(GROUP_VERSION, "Device")
        assert kind is not None
        try:
            await self.store.update(kind, new, self.namespace, self.name,
                                    subresource="status", check_rv=False)
            self.status_writes += 1
        except StoreError as e:
            log.warning("devices: cannot write the twin of %s/%s: %s", self.namespace,
                        self.name, e)
