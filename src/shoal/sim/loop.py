"""A virtual-time asyncio event loop: the real async code runs unchanged, and never waits.

``asyncio``'s own loop computes how long it may sleep until the next timer and
asks its selector to wait that long. Here the "selector" waits for nothing: it
advances the virtual clock by that timeout and returns, and ``time()`` reads the
virtual clock. Timers then fire in order, exactly as they would in real time,
as fast as the CPU runs them. The loop refuses real I/O (sockets, readers,
executors, DNS), so nothing in a simulation can depend on the outside world.

``FreezableEventLoop`` also lets one simulated process stand still, as ``kill -STOP`` or a
paused VM does: every callback scheduled in a context whose ``PROCESS`` names it (its
tasks, their timers and wake-ups) is held from ``freeze`` to ``thaw`` and then runs, while
time goes on for everyone. Only scenarios that freeze use it: its gate costs a call per
callback.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import contextlib
import contextvars
import selectors
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

PROCESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("shoal_sim_process",
                                                                     default=None)
"""The simulated process (a peer's name) that the code running in a context belongs to: set
where a peer's tasks are started, and copied into every task and callback they make."""


@contextlib.contextmanager
def as_process(name: str) -> Iterator[None]:
    """Tasks made inside are peer ``name``'s process's (``FreezableEventLoop.freeze``)."""
    token = PROCESS.set(name)
    try:
        yield
    finally:
        PROCESS.reset(token)


EPOCH = 1_700_000_000.0
"""Wall-clock seconds at virtual time zero (a fixed date, so runs are reproducible)."""


class SimDeadlock(RuntimeError):
    """Nothing is ready and no timer is pending: the simulation can never progress."""


class RealIOForbidden(RuntimeError):
    """Code under simulation tried to use real I/O."""


class _VirtualSelector:
    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimDeadlock("no ready callbacks and no timers: the simulation is stuck")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class VirtualEventLoop(asyncio.base_events.BaseEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._clock_resolution = 1e-9
        self._selector = _VirtualSelector(self)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    # BaseEventLoop leaves these to the I/O-capable subclasses.
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RealIOForbidden("real I/O is not allowed inside the simulator")

    add_reader = add_writer = remove_reader = remove_writer = _refuse  # type: ignore[assignment]
    getaddrinfo = getnameinfo = _refuse  # type: ignore[assignment]
    sock_recv = sock_sendall = sock_connect = sock_accept = _refuse  # type: ignore[assignment]
    create_connection = create_server = create_datagram_endpoint = _refuse  # type: ignore[assignment]
    subprocess_exec = subprocess_shell = _refuse  # type: ignore[assignment]

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> NoReturn:  # type: ignore[override]
        self._refuse()


class _Gate:
    """A callback that runs unless its process is frozen; then it waits for the thaw."""

    __slots__ = ("callback", "context", "handle", "loop")

    def __init__(self, loop: FreezableEventLoop, callback: Callable[..., Any],
                 context: contextvars.Context) -> None:
        self.loop, self.callback, self.context = loop, callback, context
        self.handle: asyncio.Handle | None = None

    def __call__(self, *args: Any) -> None:
        if self.handle is not None and self.handle.cancelled():
            return  # cancelled while it waited for a thaw
        process = PROCESS.get()
        held = self.loop.held.get(process) if process is not None else None
        if held is not None:
            held.append((self, args))
            return
        self.callback(*args)


class FreezableEventLoop(VirtualEventLoop):
    """A virtual loop on which a simulated process can be frozen and thawed."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[str, list[tuple[_Gate, tuple[Any, ...]]]] = {}
        """Per frozen process, the callbacks that came due meanwhile, in order."""

    def call_soon(self, callback: Callable[..., Any], *args: Any,  # type: ignore[override]
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        ctx = context if context is not None else contextvars.copy_context()
        gate = _Gate(self, callback, ctx)
        gate.handle = super().call_soon(gate, *args, context=ctx)
        return gate.handle

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any,  # type: ignore[override]
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        ctx = context if context is not None else contextvars.copy_context()
        gate = _Gate(self, callback, ctx)
        handle = super().call_at(when, gate, *args, context=ctx)
        gate.handle = handle
        return handle

    def freeze(self, process: str) -> None:
        """From now on nothing of ``process`` runs."""
        self.held.setdefault(process, [])

    def thaw(self, process: str) -> None:
        """What came due while ``process`` was frozen runs now, in the order it came due."""
        for gate, args in self.held.pop(process, []):
            super().call_soon(gate, *args, context=gate.context)


class VirtualWallClock:
    """A ``WallClock`` for one simulated node: the virtual time plus a fixed skew."""

    def __init__(self, loop: VirtualEventLoop, skew: float = 0.0) -> None:
        self._loop = loop
        self.skew = skew

    def now(self) -> float:
        return EPOCH + self.skew + self._loop.time()


def run(main: Coroutine[Any, Any, T], freezable: bool = False) -> T:
    """Run a coroutine to completion on a fresh virtual loop (a ``FreezableEventLoop`` if
    ``freezable``), then cancel what it left."""
    loop = FreezableEventLoop() if freezable else VirtualEventLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
