"""The Modbus TCP mapper's driver, through pymodbus.

A property is ``limit`` registers (default 1) at ``offset`` in one of the four Modbus
tables; its value is the first register times ``scale`` (default 1), or a coil's or
discrete input's ``true``/``false``. Only holding registers and coils can be written.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from shoal.devices.drivers import DeviceError, ValueRefused

WRITABLE = ("HoldingRegister", "CoilRegister")


def _scale(config: dict[str, Any]) -> float:
    scale = config.get("scale", 1)
    return float(scale) if isinstance(scale, int | float) and scale else 1.0


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def register_value(raw: int, config: dict[str, Any]) -> str:
    return _number(raw * _scale(config))


def raw_value(value: str, config: dict[str, Any]) -> int:
    """The register to write for a twin value (rounded; a register holds 0..65535)."""
    try:
        raw = round(float(value) / _scale(config))
    except ValueError as e:
        raise ValueRefused(f"{value!r} is not a number") from e
    if not 0 <= raw <= 0xFFFF:
        raise ValueRefused(f"{value!r} does not fit a 16-bit register (0..65535 after scale)")
    return raw


def _truth(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "on"):
        return True
    if value.strip().lower() in ("0", "false", "off"):
        return False
    raise ValueRefused(f"{value!r} is not a boolean")


class ModbusDriver:
    def __init__(self, host: str, port: int = 502, device_id: int = 1,
                 timeout: float = 1.0) -> None:
        self.device_id = device_id
        self.client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=0,
                                           reconnect_delay=0)
        self._lock = asyncio.Lock()  # one request at a time on the connection

    async def _connected(self) -> None:
        if not self.client.connected and not await self.client.connect():
            raise DeviceError("cannot connect")

    async def read(self, prop: str, config: dict[str, Any]) -> str | None:
        register = config.get("register")
        offset = int(config.get("offset", 0))
        count = max(1, int(config.get("limit", 1) or 1))
        async with self._lock:
            try:
                await self._connected()
                c, dev = self.client, self.device_id
                if register == "HoldingRegister":
                    rr = await c.read_holding_registers(offset, count=count, device_id=dev)
                elif register == "InputRegister":
                    rr = await c.read_input_registers(offset, count=count, device_id=dev)
                elif register == "CoilRegister":
                    rr = await c.read_coils(offset, count=1, device_id=dev)
                elif register == "DiscreteInputRegister":
                    rr = await c.read_discrete_inputs(offset, count=1, device_id=dev)
                else:
                    raise DeviceError(f"unknown register {register!r}")
            except (TimeoutError, ModbusException, OSError) as e:
                raise DeviceError(f"{prop}: {e}") from e
        if rr.isError():
            raise DeviceError(f"{prop}: {rr}")
        if register in ("CoilRegister", "DiscreteInputRegister"):
            return "true" if rr.bits[0] else "false"
        return register_value(rr.registers[0], config)

    async def write(self, prop: str, config: dict[str, Any], value: str) -> None:
        register = config.get("register")
        if register not in WRITABLE:
            raise ValueRefused(f"a {register} cannot be written")
        offset = int(config.get("offset", 0))
        # Checked before connecting: a bad value says nothing about the device.
        checked: bool | int = _truth(value) if register == "CoilRegister" \
            else raw_value(value, config)
        async with self._lock:
            try:
                await self._connected()
                if isinstance(checked, bool):
                    rr = await self.client.write_coil(offset, checked,
                                                      device_id=self.device_id)
                else:
                    rr = await self.client.write_register(offset, checked,
                                                          device_id=self.device_id)
            except (TimeoutError, ModbusException, OSError) as e:
                raise DeviceError(f"{prop}: {e}") from e
        if rr.isError():
            raise DeviceError(f"{prop}: {rr}")

    async def close(self) -> None:
        self.client.close()
