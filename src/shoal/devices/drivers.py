"""What a mapper needs from a protocol: read a property, write one, close.

A :class:`Driver` serves one Device; the property's ``visitors.configData`` says where
on the device the property lives. Values are strings, as in the twin.
"""

from __future__ import annotations

from typing import Any, Protocol


class DeviceError(Exception):
    """The device could not be reached or refused the request (the device is offline)."""


class ValueRefused(Exception):
    """A desired value this property cannot take (not a number, too large for its
    register): refused before anything is sent, so the device stays online."""


class Driver(Protocol):
    async def read(self, prop: str, config: dict[str, Any]) -> str | None:
        """The property's current value (None: no value yet, as an MQTT sensor that has
        not published since the mapper subscribed)."""
        ...

    async def write(self, prop: str, config: dict[str, Any], value: str) -> None: ...

    async def close(self) -> None: ...
