"""A mesh peer: membership and replication of one replica over one transport.

``MeshPeer`` owns no clock and no randomness of its own: timers run on the
running loop (``loop.time()``, ``asyncio.sleep``) and choices come from the
``random.Random`` it is given, so ``shoal.sim`` runs it on virtual time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

from shoal.mesh import config as mesh_config
from shoal.mesh.anti_entropy import AntiEntropy
from shoal.mesh.config import MeshConfig
from shoal.mesh.membership import Member, Membership, MembershipHooks
from shoal.mesh.messages import (
    Digest,
    Gossip,
    Join,
    MessageError,
    Ping,
    PingReq,
    Pull,
    Push,
    Refused,
    StateSync,
    decode,
    encode,
)
from shoal.mesh.transport import Transport, sender_name
from shoal.store.replica import Replica

log = logging.getLogger(__name__)


class MeshPeer:
    def __init__(
        self,
        name: str,
        transport: Transport,
        replica: Replica,
        config: MeshConfig | None = None,
        rng: random.Random | None = None,
        hooks: MembershipHooks | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.replica = replica
        self.config = config or mesh_config.default()
        self.rng = rng or random.Random()
        self.membership = Membership(name, transport, self.config, self.rng, hooks)
        self.anti_entropy = AntiEntropy(
            replica, transport, self.config, self.rng, self.membership
        )
        self.garbage = 0
        """Payloads dropped because they were not valid messages."""
        self.running = False

    @property
    def address(self) -> str:
        return self.transport.address

    async def start(self) -> None:
        """Serve messages and start probing, gossiping, pushing and pulling."""
        self.transport.set_handler(self._handle)
        self.membership.start()
        self.anti_entropy.start()
        self.running = True

    async def stop(self, leave: bool = False) -> None:
        """Stop every task; with ``leave``, tell the others first (a graceful exit)."""
        if leave and self.running:
            await self.membership.leave()
        self.running = False
        await self.anti_entropy.stop()
        await self.membership.stop()
        await self.transport.close()

    async def join(self, seeds: Iterable[str]) -> int:
        """Join through any of the seed addresses; returns how many answered."""
        return await self.membership.join(seeds)

    def restore_members(self, members: Iterable[tuple[str, str]]) -> None:
        """Take back the (name, address) pairs persisted before a restart, so the peer
        rejoins without seeds (and even when every seed is down)."""
        self.membership.add_known(members)

    def members(self) -> list[Member]:
        """Every member this peer knows, itself included, in any state."""
        return list(self.membership.members.values())

    def live_peers(self) -> list[Member]:
        """The other members believed alive."""
        return list(self.membership.live())

    def routable(self, name: str) -> bool:
        """Whether Service traffic may still go to ``name`` (``Membership.routable``)."""
        return self.membership.routable(name)

    def _sender_name(self, address: str) -> str:
        """Who sent the message being handled: the name the transport authenticated, or,
        for a transport that authenticates nobody, the member at that address."""
        name = sender_name()
        if name is not None:
            return name
        for m in self.membership.members.values():
            if m.address == address:
                return m.name
        return address

    async def _handle(self, sender: str, payload: bytes) -> bytes | None:
        if not self.running:
            return None
        try:
            msg = decode(payload)
        except MessageError as e:
            self.garbage += 1
            log.warning("%s: dropping garbage from %s: %s", self.name, sender, e)
            return None
        match msg:
            case Ping() | PingReq() | Gossip() | Join() | StateSync() | Digest():
                reply = await self.membership.handle(msg, sender)
            case Push() | Pull() | Refused():
                name = self._sender_name(sender)
                self.membership.heard(name)
                reply = await self.anti_entropy.handle(sender, msg, name)
            case _:
                reply = None  # an answer that arrived as a one-way message
        return None if reply is None else encode(reply)
