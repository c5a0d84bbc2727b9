"""The simulated network: transports that deliver through seeded delay, loss and partitions.

Every message takes ``delay_min`` plus an exponential tail of mean ``delay_mean``
(so messages overtake each other: reordering), is lost with probability
``drop`` and delivered twice with probability ``duplicate``. ``partition``
splits the nodes into groups that cannot reach each other and ``clog`` cuts one
pair, as FoundationDB's ``clogPair`` and TigerBeetle's packet simulator do; ``cut_off``
takes down every link of one node (a frozen process's), apart from those, so that
bringing it back leaves the scenario's cuts in place. A message is checked against them
when it arrives, so a cut also loses what is in flight. Bytes and messages are counted per node, and every delivery is folded
into a trace hash that two runs of one seed must agree on.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shoal.mesh.transport import Handler, TransportError, serving
from shoal.sim.loop import PROCESS, FreezableEventLoop

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LinkFaults:
    delay_min: float = 0.001
    """Seconds every message takes at least."""
    delay_mean: float = 0.004
    """Mean of the exponential delay added on top (reordering comes from it)."""
    drop: float = 0.0
    """Probability that a message is lost."""
    duplicate: float = 0.0
    """Probability that a message is delivered twice."""


class SimNetwork:
    def __init__(self, rng: random.Random, faults: LinkFaults | None = None) -> None:
        self.rng = rng
        self.faults = faults or LinkFaults()
        self._nodes: dict[str, SimTransport] = {}
        self._group: dict[str, int] = {}
        self._clogged: set[tuple[str, str]] = set()
        self._cut_off: set[str] = set()
        self.bytes_sent: Counter[str] = Counter()
        self.bytes_received: Counter[str] = Counter()
        self.messages_sent: Counter[str] = Counter()
        self.messages_received: Counter[str] = Counter()
        self.dropped = 0
        self.handler_errors = 0
        self._trace = hashlib.sha256()
        self.deliveries = 0
        self.observers: list[Callable[[str, str, bytes], None]] = []
        """Called with (source, destination, payload) for every message sent, lost or not
        (``bench/scale.py`` sorts a super-peer's bytes by message kind and partner)."""

    # -- nodes and faults ----------------------------------------------------------

    def transport(self, address: str, name: str | None = None) -> SimTransport:
        """Attach a node (again, after a restart) and return its transport. Its handler
        is told ``name`` (default: the address's host part) as the sender's identity, as
        a certificate's CN would."""
        t = SimTransport(self, address, name or address.rsplit(":", 1)[0])
        self._nodes[address] = t
        return t

    def detach(self, t: SimTransport) -> None:
        if self._nodes.get(t.address) is t:
            del self._nodes[t.address]

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the network: nodes in different groups (or in none) cannot talk."""
        self._group = {}
        for i, g in enumerate(groups):
            for a in g:
                self._group[a] = i

    def heal(self) -> None:
        """Remove every partition and clog (a node ``cut_off`` stays cut off)."""
        self._group = {}
        self._clogged.clear()

    def clog(self, a: str, b: str) -> None:
        self._clogged.add((a, b))
        self._clogged.add((b, a))

    def unclog(self, a: str, b: str) -> None:
        self._clogged.discard((a, b))
        self._clogged.discard((b, a))

    def cut_off(self, address: str) -> None:
        """Take down every link of ``address`` until ``reconnect``; ``heal`` leaves it down
        (a frozen process stays unreachable whatever the network does)."""
        self._cut_off.add(address)

    def reconnect(self, address: str) -> None:
        """Bring back the links ``cut_off`` took down; partitions and clogs stay."""
        self._cut_off.discard(address)

    def reachable(self, src: str, dst: str) -> bool:
        if (src, dst) in self._clogged:
            return False
        if src != dst and (src in self._cut_off or dst in self._cut_off):
            return False
        if self._group:
            return self._group.get(src, -1) == self._group.get(dst, -2) or src == dst
        return True

    def reset_counters(self) -> None:
        for c in (self.bytes_sent, self.bytes_received, self.messages_sent, self.messages_received):
            c.clear()

    @property
    def trace_hash(self) -> str:
        return self._trace.hexdigest()

    def note(self, event: str) -> None:
        """Fold an event of the run (a write, a fault) into the trace."""
        loop = asyncio.get_running_loop()
        self._trace.update(f"{loop.time():.9f} {event}\n".encode())

    # -- delivery -----------------------------------------------------------------

    def transmit(self, src: str, dst: str, payload: bytes,
                 reply: asyncio.Future[bytes] | None, is_reply: bool = False) -> None:
        self.bytes_sent[src] += len(payload)
        self.messages_sent[src] += 1
        for observe in self.observers:
            observe(src, dst, payload)
        f = self.faults
        if f.drop and self.rng.random() < f.drop:
            self.dropped += 1
            return
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            delay = f.delay_min + (self.rng.expovariate(1.0 / f.delay_mean) if f.delay_mean else 0.0)
            loop.call_later(delay, self._arrive, src, dst, payload, reply, is_reply)

    def _arrive(self, src: str, dst: str, payload: bytes,
                reply: asyncio.Future[bytes] | None, is_reply: bool) -> None:
        node = self._nodes.get(dst)
        if node is None or not self.reachable(src, dst):
            self.dropped += 1
            return
        self.bytes_received[dst] += len(payload)
        self.messages_received[dst] += 1
        self.deliveries += 1
        self._trace.update(
            f"{asyncio.get_running_loop().time():.9f} {src} {dst} {len(payload)}\n".encode()
        )
        if is_reply:
            assert reply is not None
            if not reply.done():
                reply.set_result(payload)
            return
        sender = self._nodes.get(src)
        name = sender.name if sender is not None else src.rsplit(":", 1)[0]
        # Served by the receiver's process, not the sender's (``loop.FreezableEventLoop``).
        context = None
        if isinstance(asyncio.get_running_loop(), FreezableEventLoop):
            context = contextvars.copy_context()
            context.run(PROCESS.set, node.name)
        asyncio.get_running_loop().create_task(node.serve(src, payload, reply, name),
                                               context=context)


class SimTransport:
    """One node's end of the simulated network; implements ``shoal.mesh.transport.Transport``."""

    def __init__(self, network: SimNetwork, address: str, name: str = "") -> None:
        self._net = network
        self._address = address
        self.name = name or address.rsplit(":", 1)[0]
        self._handler: Handler | None = None
        self.closed = False

    @property
    def address(self) -> str:
        return self._address

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    async def request(self, address: str, payload: bytes, timeout: float) -> bytes:
        if self.closed:
            raise TransportError("transport closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        self._net.transmit(self._address, address, payload, fut)
        timer = loop.call_later(timeout, _time_out, fut, address)
        try:
            return await fut
        finally:
            timer.cancel()

    async def send(self, address: str, payload: bytes) -> None:
        if not self.closed:
            self._net.transmit(self._address, address, payload, None)

    async def close(self) -> None:
        self.closed = True
        self._net.detach(self)

    async def serve(self, src: str, payload: bytes, reply: asyncio.Future[bytes] | None,
                    sender: str | None = None) -> None:
        if self._handler is None:
            return
        serving(sender or src.rsplit(":", 1)[0])  # this task's context only
        try:
            answer = await self._handler(src, payload)
        except Exception:
            # A real transport would log and close the stream; the sender just times out.
            self._net.handler_errors += 1
            log.exception("handler failed at %s", self._address)
            return
        if reply is not None and answer is not None and not self.closed:
            self._net.transmit(self._address, src, answer, reply, is_reply=True)


def _time_out(fut: asyncio.Future[bytes], address: str) -> None:
    if not fut.done():
        fut.set_exception(TransportError(f"no answer from {address}"))
