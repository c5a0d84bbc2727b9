"""The MQTT mapper's driver: the site's nats-server is the MQTT broker.

nats-server 2.9 speaks MQTT 3.1.1 and hands what a device publishes on topic ``a/b`` to
NATS subscribers of subject ``a.b``, so the mapper subscribes with the bus client it
already holds and needs no MQTT library. A property's ``topic`` is where the device
publishes it; the payload is the value (text, or JSON: a number, or an object whose
``value`` it is). A desired value is published to ``<topic>/set``, which a device that
takes commands subscribes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # nats-py is loaded by the bus client that a driver is given
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription

from shoal.devices.drivers import DeviceError


def subject_of(topic: str) -> str:
    """The NATS subject nats-server delivers an MQTT topic's messages on (``/`` to ``.``,
    MQTT's ``+`` and ``#`` wildcards to ``*`` and ``>``)."""
    tokens = topic.strip("/").split("/")
    return ".".join({"+": "*", "#": ">"}.get(t, t) for t in tokens)


def payload_value(payload: bytes) -> str:
    text = payload.decode(errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if isinstance(doc, dict) and "value" in doc:
        doc = doc["value"]
    return doc if isinstance(doc, str) else json.dumps(doc)


class MqttDriver:
    def __init__(self, bus: Client) -> None:
        self.bus = bus
        self.values: dict[str, str] = {}
        self._subs: dict[str, Subscription] = {}

    async def _subscribe(self, prop: str, topic: str) -> None:
        async def received(msg: Any) -> None:
            self.values[prop] = payload_value(msg.data)

        self._subs[prop] = await self.bus.subscribe(subject_of(topic), cb=received)

    async def read(self, prop: str, config: dict[str, Any]) -> str | None:
        topic = config.get("topic")
        if not isinstance(topic, str) or not topic:
            raise DeviceError(f"{prop}: no topic")
        if prop not in self._subs:
            try:
                await self._subscribe(prop, topic)
            except Exception as e:  # nats raises its own errors while it reconnects
                raise DeviceError(f"{prop}: cannot subscribe: {e}") from e
        return self.values.get(prop)

    async def write(self, prop: str, config: dict[str, Any], value: str) -> None:
        topic = config.get("topic")
        if not isinstance(topic, str) or not topic:
            raise DeviceError(f"{prop}: no topic")
        try:
            await self.bus.publish(subject_of(topic) + ".set", value.encode())
        except Exception as e:
            raise DeviceError(f"{prop}: {e}") from e

    async def close(self) -> None:
        for sub in self._subs.values():
            # A closed connection has no subscriptions left to end.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), 1.0)
        self._subs.clear()
