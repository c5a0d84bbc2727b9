"""A user-space link emulator: a TCP proxy that delays, cuts and heals a link.

The kernel here has no ``tc netem``, so slow links are emulated above it. Each
connection to the listen address is forwarded to the target; every chunk is
held for ``delay`` (plus up to ``jitter``, never reordering the stream) in each
direction. ``cut()`` either resets every connection and refuses new ones
(``mode="reset"``, a link that is down) or silently holds all traffic
(``mode="blackhole"``, packets lost while TCP keeps retrying); ``heal()`` lets
traffic flow again, delivering what a blackhole held, as TCP retransmission would.

In asyncio code use :class:`LinkProxy`; from synchronous tests and benchmarks,
:class:`ThreadedLinkProxy` runs one in its own thread. From a shell::

    python -m tests.tools.linkproxy --listen 127.0.0.1:9443 --to 127.0.0.1:7443 --delay 10ms

(SIGUSR1 cuts, SIGUSR2 heals.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

CutMode = Literal["reset", "blackhole"]
T = TypeVar("T")


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_delay(text: str) -> float:
    """``10ms``, ``1.5s``, ``250us`` or plain seconds."""
    for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


@dataclass
class LinkStats:
    connections: int = 0
    bytes_forward: int = 0
    """Client to target."""
    bytes_backward: int = 0
    """Target to client."""
    refused: int = 0


@dataclass(eq=False)
class _Pipe:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    finished: int = 0


class LinkProxy:
    """One emulated link: ``listen`` → ``target``, symmetrical delay each way."""

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0), *,
                 delay: float = 0.0, jitter: float = 0.0, seed: int | None = None) -> None:
        self.target = target
        self._listen = listen
        self.delay = delay
        self.jitter = jitter
        self._rng = random.Random(seed)
        self.stats = LinkStats()
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._cut: CutMode | None = None
        self._healed = asyncio.Event()
        self._healed.set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def address_str(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self._listen)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def cut(self, mode: CutMode = "reset") -> None:
        """Take the link down: reset everything (``reset``) or hold all traffic (``blackhole``)."""
        self._cut = mode
        self._healed.clear()
        if mode == "reset":
            self._reset_all()

    def heal(self) -> None:
        self._cut = None
        self._healed.set()

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    def _reset_all(self) -> None:
        for pipe in list(self._pipes):
            self._close_pipe(pipe)

    def _close_pipe(self, pipe: _Pipe) -> None:
        self._pipes.discard(pipe)
        current = asyncio.current_task()
        for t in pipe.tasks:
            if t is not current:
                t.cancel()
        for w in pipe.writers:
            _abort(w)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut == "reset":
            self.stats.refused += 1
            _abort(writer)
            return
        if self._cut == "blackhole":
            # A SYN into a black hole gets no answer; the client side times out on its own.
            await self._healed.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            _abort(writer)
            return
        self.stats.connections += 1
        pipe = _Pipe(writers=[writer, up_writer])
        self._pipes.add(pipe)
        pipe.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pipe, forward=True)),
            asyncio.create_task(self._pump(up_reader, writer, pipe, forward=False)),
        ]

    def _hold(self) -> float:
        return self.delay + (self._rng.uniform(0, self.jitter) if self.jitter else 0.0)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pipe: _Pipe, *, forward: bool) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._healed.wait()
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                if forward:
                    self.stats.bytes_forward += len(data)
                else:
                    self.stats.bytes_backward += len(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        pipe.tasks.append(sender)
        last_due = 0.0
        try:
            while True:
                data = await reader.read(65536)
                # Jitter may not reorder a byte stream: never deliver before the previous chunk.
                last_due = max(last_due, loop.time() + self._hold())
                queue.put_nowait((last_due, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            self._close_pipe(pipe)
            return
        pipe.finished += 1  # a clean half-close; the pipe ends when both directions have
        if pipe.finished == 2:
            self._close_pipe(pipe)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


class ThreadedLinkProxy:
    """A :class:`LinkProxy` on its own event loop thread, for synchronous callers."""

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0), *,
                 delay: float = 0.0, jitter: float = 0.0, seed: int | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="linkproxy",
                                        daemon=True)
        self._thread.start()
        self.proxy = self._call_sync(self._make(target, listen, delay, jitter, seed))

    @staticmethod
    async def _make(target: tuple[str, int], listen: tuple[str, int], delay: float,
                    jitter: float, seed: int | None) -> LinkProxy:
        p = LinkProxy(target, listen, delay=delay, jitter=jitter, seed=seed)
        await p.start()
        return p

    def _call_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    @property
    def address_str(self) -> str:
        return self.proxy.address_str

    @property
    def stats(self) -> LinkStats:
        return self.proxy.stats

    def cut(self, mode: CutMode = "reset") -> None:
        self._loop.call_soon_threadsafe(self.proxy.cut, mode)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.heal)

    def set_delay(self, delay: float, jitter: float = 0.0) -> None:
        def apply() -> None:
            self.proxy.delay, self.proxy.jitter = delay, jitter
        self._loop.call_soon_threadsafe(apply)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> ThreadedLinkProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _main(args: argparse.Namespace) -> None:
    proxy = LinkProxy(parse_hostport(args.to), parse_hostport(args.listen),
                      delay=parse_delay(args.delay), jitter=parse_delay(args.jitter))
    await proxy.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    loop.add_signal_handler(signal.SIGUSR2, proxy.heal)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"linkproxy {proxy.address_str} -> {args.to}, delay {args.delay} each way "
          f"(jitter {args.jitter}); SIGUSR1 cuts, SIGUSR2 heals", flush=True)
    await stop.wait()
    await proxy.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.tools.linkproxy",
                                description="A TCP proxy that emulates a slow, cuttable link.")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept on")
    p.add_argument("--to", required=True, help="HOST:PORT to forward to")
    p.add_argument("--delay", default="0", help="added one-way delay, e.g. 10ms (each way)")
    p.add_argument("--jitter", default="0", help="extra random delay up to this, e.g. 2ms")
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
