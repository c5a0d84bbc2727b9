"""Simulated devices for trying the mappers without hardware (examples/devices.yaml).

``python -m shoal.devices.simulator`` runs, until stopped:

- a **thermostat PLC** on Modbus TCP (pymodbus's server, unit 1): holding register 2 is
  the setpoint, input register 0 the temperature in half degrees, which moves half a
  degree towards the setpoint every ``--every`` seconds (the four tables share one block
  of registers, as pymodbus's simulator lays them out);
- a **humidity sensor** on MQTT 3.1.1 (QoS 0, hand-written packets: no MQTT library),
  publishing a percentage to ``--topic`` on the node's MQTT listener every ``--every``
  seconds, reconnecting while the listener is not up.

Each write to a register is printed as a JSON line with the wall-clock time it arrived
(``{"event": "write", "address": 2, "values": [23], "t": ...}``), so a test or a bench
can time a ``kubectl patch`` to the register.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

SETPOINT, TEMPERATURE = 2, 0
"""Register offsets (as in examples/devices.yaml)."""


def _say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


class Thermostat:
    """pymodbus's simulated device with a setpoint and a temperature that follows it."""

    def __init__(self, setpoint: int = 20, temperature: float = 18.0) -> None:
        self.registers: list[int] = []
        values = [0] * 32
        values[SETPOINT], values[TEMPERATURE] = setpoint, round(temperature * 2)
        self.device = SimDevice(id=1, simdata=[SimData(0, values=values,
                                                       datatype=DataType.REGISTERS)],
                                action=self._accessed)

    async def _accessed(self, function_code: int, start: int, address: int, count: int,
                        registers: list[int], values: Any) -> None:
        self.registers = registers  # the server's own list
        if values is not None:  # a write request, before it is applied
            _say(event="write", address=address, values=list(values), t=time.time())

    def drift(self) -> None:
        """The temperature moves half a degree towards the setpoint."""
        if not self.registers:
            return
        want, now = self.registers[SETPOINT] * 2, self.registers[TEMPERATURE]
        self.registers[TEMPERATURE] = now + (want > now) - (want < now)


def _remaining(n: int) -> bytes:
    """MQTT's variable-length 'remaining length'."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


async def mqtt_connect(host: str, port: int,
                       client_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An MQTT 3.1.1 session (clean session, 60 s keep-alive), once the broker accepts it."""
    reader, writer = await asyncio.open_connection(host, port)
    body = _utf8("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + _utf8(client_id)
    writer.write(bytes([0x10]) + _remaining(len(body)) + body)
    connack = await asyncio.wait_for(reader.readexactly(4), 10)
    if connack != b"\x20\x02\x00\x00":
        writer.close()
        raise ConnectionError(f"MQTT CONNECT refused: {connack!r}")
    return reader, writer


def mqtt_publish_packet(topic: str, payload: bytes) -> bytes:
    body = _utf8(topic) + payload
    return bytes([0x30]) + _remaining(len(body)) + body


async def humidity_sensor(host: str, port: int, topic: str, every: float) -> None:
    n = 0
    while True:
        try:
            _, writer = await mqtt_connect(host, port, f"humidity-{time.time_ns()}")
        except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.5)  # the node's listener not up yet
            continue
        _say(event="mqtt-connected", broker=f"{host}:{port}", topic=topic)
        try:
            while True:
                n += 1
                writer.write(mqtt_publish_packet(topic, b"%d" % (55 + n % 5)))
                await writer.drain()
                if n % 2 == 0:  # a PINGREQ now and then: a closed session shows up here
                    writer.write(b"\xc0\x00")
                await asyncio.sleep(every)
        except (OSError, ConnectionError):
            _say(event="mqtt-lost")
        finally:
            writer.close()


async def run(args: argparse.Namespace) -> None:
    plc = Thermostat()
    server = ModbusTcpServer(plc.device, address=(args.modbus_host, args.modbus_port))
    tasks = [asyncio.create_task(server.serve_forever())]
    _say(event="modbus-listening", address=f"{args.modbus_host}:{args.modbus_port}")
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        tasks.append(asyncio.create_task(
            humidity_sensor(host or "127.0.0.1", int(port), args.topic, args.every)))
    try:
        while True:
            await asyncio.sleep(args.every)
            plc.drift()
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await server.shutdown()  # type: ignore[no-untyped-call]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m shoal.devices.simulator",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--modbus-host", default="127.0.0.1")
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--mqtt", default="127.0.0.1:1883",
                   help="the node's MQTT listener, host:port ('' for no sensor)")
    p.add_argument("--topic", default="farm/humidity")
    p.add_argument("--every", type=float, default=1.0, help="seconds between readings")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
