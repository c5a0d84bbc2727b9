"""How peers talk: a small interface, implemented by TLS sockets and by the simulator.

Payloads are opaque bytes (the mesh encodes its messages itself). A request
gets exactly one response or raises :class:`TransportError`; ``send`` is
fire-and-forget. Addresses are ``host:port`` strings.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[str, bytes], Awaitable[bytes | None]]
"""Called with (the sender's address, the payload). Its return value answers a request;
for a one-way ``send`` it is ignored. :func:`sender_name` gives the sender's name as the
transport authenticated it."""

_sender: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shoal_mesh_sender", default=None
)


def sender_name() -> str | None:
    """The authenticated name of the peer whose message is being handled (inside a
    ``Handler``): the certificate's CN over TLS, the sending node in the simulator. None
    where the transport authenticates nobody."""
    return _sender.get()


def serving(name: str | None) -> None:
    """Called by a transport in the task that runs the handler, before it runs it."""
    _sender.set(name)


class TransportError(Exception):
    """The peer could not be reached, did not answer in time, or answered garbage."""


class Transport(Protocol):
    @property
    def address(self) -> str:
        """The address peers reach this node at."""
        ...

    def set_handler(self, handler: Handler) -> None:
        """Install the function that serves incoming messages."""
        ...

    async def request(self, address: str, payload: bytes, timeout: float) -> bytes:
        """Send a payload and wait for the answer."""
        ...

    async def send(self, address: str, payload: bytes) -> None:
        """Send a payload with no answer; delivery is best effort."""
        ...

    async def close(self) -> None:
        ...
