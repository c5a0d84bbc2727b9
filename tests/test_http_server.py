"""Shoal's own HTTP/1.1 server (shoal.api.http_protocol) on raw sockets: framing,
keep-alive, limits, slow clients, streaming and bad input (a 4xx Status, never a crash)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from shoal.api import http_messages as web
from shoal.api import http_protocol
from shoal.api.http_protocol import AppRunner, TCPSite

IDLE = 0.3
SLACK = 1.5


def build_app() -> web.Application:
    app = web.Application(client_max_size=1024)

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.json_response({
            "method": request.method, "path": request.path, "info": request.match_info,
            "query": [[k, v] for k, v in request.query.items()], "body": body.decode(),
            "ctype": request.content_type})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            for i in range(3):
                await resp.write(f"line {i}\n".encode())
            if "forever" in request.query:
                await asyncio.sleep(30)
        except asyncio.CancelledError:
            app[CANCELLED] = True
            raise
        await resp.write_eof()
        return resp

    async def fail(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug in a handler")

    app.router.add_route("*", "/echo/{name}", echo)
    app.router.add_get("/stream", stream)
    app.router.add_get("/fail", fail)
    return app


CANCELLED = web.AppKey("cancelled", bool)


@pytest.fixture
async def server() -> AsyncIterator[tuple[web.Application, int]]:
    app = build_app()
    runner = AppRunner(app, keepalive_timeout=IDLE, shutdown_timeout=1.0)
    await runner.setup()
    await TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield app, runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def exchange(port: int, data: bytes, limit: float = 5.0) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                got += chunk
    finally:
        writer.close()
    return got


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of Content-Length or chunked responses."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, raw = raw[:n], raw[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, raw = raw.partition(b"\r\n")
                size = int(size_line, 16)
                body, raw = body + raw[:size], raw[size + 2:]
                if not size:
                    break
        else:
            body, raw = raw, b""
        out.append((status, headers, body))
    return out


async def test_keep_alive_serves_pipelined_requests_in_order_with_their_bodies(
    server: tuple[web.Application, int],
) -> None:
    _, port = server
    got = await exchange(port, (
        b"GET /echo/a%20b?x=1&x=2&y=a+b HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /echo/c HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: 5\r\n\r\nhello"
        b"PUT /echo/d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n"
        b"HEAD /echo/e HTTP/1.1\r\nConnection: close\r\n\r\n"))
    (s1, _, b1), (s2, _, b2), (s3, _, b3), (s4, h4, b4) = responses(got)
    first, second, third = orjson.loads(b1), orjson.loads(b2), orjson.loads(b3)
    assert s1 == 200 and first["path"] == "/echo/a b" and first["info"] == {"name": "a b"}
    assert first["query"] == [["x", "1"], ["x", "2"], ["y", "a b"]]
    assert s2 == 200 and second["body"] == "hello" and second["ctype"] == "application/json"
    assert s3 == 200 and third["body"] == "abcde" and third["method"] == "PUT"
    assert s4 == 200 and b4 == b"" and int(h4["content-length"]) > 0
    assert h4["connection"] == "close"


async def test_connections_reading_at_once_each_get_their_own_bytes() -> None:
    """Every connection reads into the server's one read buffer: two clients whose bodies,
    larger than that buffer, arrive interleaved piece by piece each get their own back."""
    app = web.Application(client_max_size=1 << 20)

    async def size_and_digest(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.json_response({"n": len(body), "set": sorted(set(body.decode()))})

    app.router.add_post("/b", size_and_digest)
    runner = AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    size = 3 * http_protocol.READ_BUFFER + 123
    try:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        streams = [b"POST /b HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                   % size + c * size for c in (b"x", b"y")]
        for at in range(0, len(streams[0]), 10_000):
            for (_, writer), data in zip(conns, streams, strict=True):
                writer.write(data[at:at + 10_000])
                await writer.drain()
            await asyncio.sleep(0)
        answers = []
        for reader, writer in conns:
            async with asyncio.timeout(5):
                answers.append(responses(await reader.read())[0])
            writer.close()
    finally:
        await runner.cleanup()
    assert [(status, orjson.loads(body)) for status, _, body in answers] == [
        (200, {"n": size, "set": ["x"]}), (200, {"n": size, "set": ["y"]})]


@pytest.mark.parametrize(("request_bytes", "code"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"G\x00T / HTTP/1.1\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n folded: value\r\n\r\n", 400),
    (b"POST /echo/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /echo/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"POST /echo/x HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 300 + b"\r\n", 431),
])
async def test_a_malformed_request_gets_a_status_and_the_connection_closes(
    server: tuple[web.Application, int], request_bytes: bytes, code: int,
) -> None:
    _, port = server
    got = await exchange(port, request_bytes)
    [(status, headers, body)] = responses(got)
    assert status == code and headers["connection"] == "close"
    assert orjson.loads(body)["kind"] == "Status" and orjson.loads(body)["code"] == code


async def test_a_bad_chunk_mid_body_is_a_400_from_the_handler(
    server: tuple[web.Application, int],
) -> None:
    _, port = server
    got = await exchange(port, b"POST /echo/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"zz\r\nabc\r\n")
    [(status, _, _)] = responses(got)
    assert status == 400


async def test_a_body_past_the_limit_is_413_and_a_handler_error_is_500_and_routes_404(
    server: tuple[web.Application, int],
) -> None:
    _, port = server
    big = b"x" * 2000
    got = await exchange(port, b"POST /echo/x HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
                               b"GET /fail HTTP/1.1\r\n\r\nGET /nowhere HTTP/1.1\r\n\r\n"
                               b"POST /stream HTTP/1.1\r\nConnection: close\r\n\r\n"
                         % (len(big), big))
    assert [s for s, _, _ in responses(got)] == [413, 500, 404, 405]


async def test_idle_and_slowloris_connections_are_closed_after_the_idle_timeout(
    server: tuple[web.Application, int],
) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(b"GET /echo/x HTTP/1.1\r\n")
    closed = False
    while not closed and time.monotonic() - start < IDLE + SLACK + 1:
        writer.write(b"X")  # one header byte every 50 ms: never a whole head
        try:
            async with asyncio.timeout(0.05):
                closed = await reader.read(1) == b""
        except TimeoutError:
            pass
    assert closed and IDLE * 0.8 <= time.monotonic() - start <= IDLE + SLACK
    writer.close()


async def test_a_streamed_response_is_chunked_and_a_gone_client_cancels_its_handler(
    server: tuple[web.Application, int],
) -> None:
    app, port = server
    got = await exchange(port, b"GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n")
    [(status, headers, body)] = responses(got)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"line 0\nline 1\nline 2\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream?forever HTTP/1.1\r\n\r\n")
    await reader.readuntil(b"line 2\n")
    writer.close()
    for _ in range(100):
        if CANCELLED in app:
            break
        await asyncio.sleep(0.02)
    assert app.get(CANCELLED) is True


def test_a_node_with_the_native_server_does_not_import_aiohttp() -> None:
    """aiohttp (~10 MB of RSS) is loaded only by what needs an HTTP client (image pulls)."""
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_HTTP_SERVER"}
    out = subprocess.run(
        [sys.executable, "-c", "import sys, shoal.cli.node, shoal.cli.main; "
                               "print(sorted(m for m in sys.modules if m.startswith('aiohttp')))"],
        env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_response_head_lists_status_headers_in_order_and_the_date(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web.time, "time", lambda: 1_796_000_000.5)

    class Get:
        method = "GET"

    resp = web.Response(body=b'{"a":1}', content_type="application/json",
                        headers={"Warning": '299 - "é ☃"'})
    resp.headers.add("Warning", "second")
    closing = web.Response(status=418, reason="Teapot")
    date = b"Mon, 30 Nov 2026 00:53:20 GMT"
    assert web.http_date() == date
    assert resp.serialize(Get(), True) == (  # type: ignore[arg-type]
        b'HTTP/1.1 200 OK\r\nWarning: 299 - "\xe9 ?"\r\nContent-Type: application/json\r\n'
        b"Warning: second\r\nContent-Length: 7\r\nDate: " + date + b'\r\n\r\n{"a":1}')
    assert closing.serialize(Get(), False) == (  # type: ignore[arg-type]
        b"HTTP/1.1 418 Teapot\r\nContent-Length: 0\r\nConnection: close\r\nDate: " + date
        + b"\r\n\r\n")


async def test_a_repeated_header_block_frames_each_body_and_a_new_one_is_parsed(
    server: tuple[web.Application, int],
) -> None:
    """A connection reuses its last request's parsed headers when the next sends the same
    block: each request still gets its own body and a changed block its own headers."""
    _, port = server
    plain = b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n"
    as_json = b"Content-Type: application/json\r\nContent-Length: 3\r\n\r\n"
    got = await exchange(port, (
        b"POST /echo/a HTTP/1.1\r\n" + plain + b"hi"
        + b"POST /echo/b HTTP/1.1\r\n" + plain + b"yo"
        + b"POST /echo/c HTTP/1.1\r\n" + as_json + b"abc"
        + b"POST /echo/d HTTP/1.1\r\n" + plain + b"ok"
        + b"GET /echo/e HTTP/1.1\r\nContent-Type text/plain\r\n\r\n"))
    answers = responses(got)
    bodies = [orjson.loads(b) for _, _, b in answers[:4]]
    assert [(b["body"], b["ctype"]) for b in bodies] == [
        ("hi", "text/plain"), ("yo", "text/plain"), ("abc", "application/json"),
        ("ok", "text/plain")]
    assert answers[4][0] == 400 and b"malformed header" in answers[4][2]
