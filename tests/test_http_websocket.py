"""WebSocket on Shoal's own HTTP server (shoal.api.websocket), driven by aiohttp's client
(an independent implementation) and by raw frames for what a client must not send."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from shoal.api import http_messages as web
from shoal.api.http_protocol import AppRunner, TCPSite
from shoal.api.websocket import WebSocketResponse, WSMsgType, accept_key, frame


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
                               max_msg_size=1024, timeout=1.0)
        await ws.prepare(request)
        await ws.send_str(f"protocol {ws.ws_protocol}")
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
            elif msg.type == WSMsgType.TEXT:
                if msg.data == "bye":
                    await ws.close(code=1000, message=b"done")
                    break
                await ws.send_str(msg.data.upper())
        return ws

    app.router.add_get("/ws", echo)
    runner = AppRunner(app, keepalive_timeout=5.0, shutdown_timeout=1.0)
    await runner.setup()
    await TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_websocket_picks_the_clients_first_known_subprotocol_and_echoes_messages(
    port: int,
) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(
            f"http://127.0.0.1:{port}/ws", protocols=("x.unknown", "v4.channel.k8s.io"),
            autoping=False) as ws:
        assert ws.protocol == "v4.channel.k8s.io"
        assert (await ws.receive_str()) == "protocol v4.channel.k8s.io"
        big = os.urandom(1000)  # past 125 bytes: a 16-bit length
        await ws.send_bytes(big)
        assert await ws.receive_bytes() == big[::-1]
        await ws.send_str("hello")
        assert await ws.receive_str() == "HELLO"
        await ws.ping(b"p")
        assert (await ws.receive()).type == aiohttp.WSMsgType.PONG
        await ws.send_str("bye")
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1000


async def test_a_message_past_max_msg_size_closes_with_1009(port: int) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(
            f"http://127.0.0.1:{port}/ws", protocols=("v5.channel.k8s.io",)) as ws:
        await ws.receive_str()
        await ws.send_bytes(b"x" * 2000)
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def _handshake(port: int, extra: bytes = b"") -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter, bytes]:
    key = base64.b64encode(os.urandom(16))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
                 + extra + b"\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head if accept_key(key.decode()).encode() in head else b""


async def test_an_unmasked_client_frame_is_a_protocol_error_1002(port: int) -> None:
    reader, writer, head = await _handshake(port)
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(frame(0x2, b"not masked"))
    got = await asyncio.wait_for(reader.read(), 5)
    close = got[got.index(b"\x88"):]  # after the greeting text frame
    assert struct.unpack("!H", close[2:4])[0] == 1002
    writer.close()


async def test_a_bad_handshake_is_a_400_status() -> None:
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = WebSocketResponse()
        await ws.prepare(request)
        return ws

    app.router.add_get("/ws", handler)
    runner = AppRunner(app, keepalive_timeout=5.0)
    await runner.setup()
    await TCPSite(runner, "127.0.0.1", 0).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        await runner.cleanup()
