"""Membership and failure detection: SWIM with Lifeguard, as memberlist does it.

Every ``probe_interval`` a node pings the next member of a shuffled round-robin
list. With no ack within ``probe_timeout`` it asks ``indirect_checks`` others to
ping the target (ping-req); with no ack at all it *suspects* the target and
gossips that. A suspect that hears of the suspicion refutes it by bumping its
incarnation; otherwise the suspicion timer (``suspicion.py``) declares it dead.
Facts about members travel piggybacked on pings and acks and in gossip rounds
(``broadcast.py``), and a periodic full-state exchange with one peer (push-pull)
repairs what gossip missed. Facts are ordered by incarnation: for one
incarnation, dead beats suspect beats alive.

Roles (``topology``): full and super-peers run SWIM among themselves and know every
member. A weak peer keeps only the super-peers of its site (others only while its site
has none alive), probes, gossips and push-pulls only with them, and is probed only by
them; whatever is sent to it carries only the facts it keeps. Its super-peers relay
its own alive, suspect and dead facts to everyone else. So a weak peer's traffic and
memory do not grow with the cluster, and with two super-peers it keeps a live one when
one dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from shoal.mesh.awareness import Awareness
from shoal.mesh.broadcast import BroadcastQueue
from shoal.mesh.config import MeshConfig
from shoal.mesh.messages import (
    Ack,
    Digest,
    Gossip,
    Join,
    Message,
    MessageError,
    Nack,
    Ping,
    PingReq,
    State,
    StateSync,
    Update,
    decode,
    encode,
)
from shoal.mesh.suspicion import Suspicion
from shoal.mesh.topology import ROLE_TAG, Role, role_in, role_of, site_of
from shoal.mesh.transport import Transport, TransportError

log = logging.getLogger(__name__)


NO_TAGS: Mapping[str, str] = MappingProxyType({})

HEARD_FRESH = 25.0
"""Seconds: a super-peer does not probe a weak peer of its site while its pushes, pulls or
pings arrive this often (``Membership._heard_lately``); a weak peer leaves out its probe of
a super-peer whose pull answers or pings came within two of its probe intervals."""

_interned: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}


def frozen_tags(tags: Mapping[str, str] | Iterable[tuple[str, str]]) -> Mapping[str, str]:
    """A read-only tag mapping, one shared object per distinct set of tags: thousands of
    members mostly carry the same few (role, site) combinations."""
    pairs = tuple(sorted(tags.items() if isinstance(tags, Mapping) else tags))
    if not pairs:
        return NO_TAGS
    found = _interned.get(pairs)
    if found is None:
        if len(_interned) > 4096:  # tags are few in practice; never let a peer grow this
            _interned.clear()
        found = _interned[pairs] = MappingProxyType(dict(pairs))
    return found


@dataclass(slots=True)
class Member:
    name: str
    address: str
    incarnation: int
    state: State
    since: float
    """Loop time of the last state change."""
    tags: Mapping[str, str] = field(default_factory=lambda: NO_TAGS)
    """Role, site and any other tags the member announced (``topology``); they change
    only with its incarnation, as in Serf."""

    def update(self, source: str = "") -> Update:
        pairs = tuple(sorted(self.tags.items())) if self.tags else ()
        return Update(self.state, self.name, self.address, self.incarnation, source, pairs)


class MembershipHooks(Protocol):
    """What the layers above hear about members (Serf's event delegate)."""

    def on_join(self, member: Member) -> None:
        """A member became alive: new, or back from dead or left."""

    def on_leave(self, member: Member) -> None:
        """A member was declared dead or left."""

    def on_update(self, member: Member) -> None:
        """A member's incarnation, address or suspicion changed."""


class NoHooks:
    def on_join(self, member: Member) -> None:
        pass

    def on_leave(self, member: Member) -> None:
        pass

    def on_update(self, member: Member) -> None:
        pass


class Membership:
    def __init__(
        self,
        name: str,
        transport: Transport,
        config: MeshConfig,
        rng: random.Random,
        hooks: MembershipHooks | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.config = config
        self.rng = rng
        self.hooks: MembershipHooks = hooks or NoHooks()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(lambda: config.retransmit_limit(len(self.members)))
        self.members: dict[str, Member] = {
            name: Member(name, transport.address, 0, State.ALIVE, 0.0,
                         frozen_tags(config.member_tags()))
        }
        self._suspicions: dict[str, Suspicion] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.left = False
        self.version = 0
        """Bumped whenever a member is added, removed or changes state (for caches)."""
        self._others: dict[tuple[State, ...], list[Member]] = {}
        self._others_version = -1
        self.probes = 0
        self.failed_probes = 0
        # Gossip rounds that sent facts, and the messages they took (for /metrics).
        self.gossip_rounds = 0
        self.gossip_messages = 0
        self._role = role_in(self.me.tags)
        self._site = site_of(self.me)
        self._roles_seen = self._role != Role.FULL
        """Whether any member announced a role: until then every rule below is a no-op."""
        self._by_address: dict[str, str] = {}
        """Address to member name, for answering a sender with what concerns it."""
        self._topology_version = -1
        self._super_sites: dict[str, list[Member]] = {}
        """The live (alive or suspect) super-peers by site, this one included."""
        self._contact_cache: dict[tuple[State, ...], list[Member]] = {}
        self._heard: dict[str, float] = {}
        """Loop time of the last message from each member (``heard``)."""

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        # Looked up on use, so a Membership can be built before the loop runs.
        return asyncio.get_running_loop()

    # -- views -------------------------------------------------------------------

    @property
    def me(self) -> Member:
        return self.members[self.name]

    @property
    def incarnation(self) -> int:
        return self.me.incarnation

    def others(self, states: Iterable[State] = (State.ALIVE,)) -> list[Member]:
        """Other members in the given states (a cached list: do not change it)."""
        key = tuple(states)
        if self._others_version != self.version:
            self._others.clear()
            self._others_version = self.version
        cached = self._others.get(key)
        if cached is None:
            wanted = set(key)
            cached = [m for n, m in self.members.items() if n != self.name and m.state in wanted]
            self._others[key] = cached
        return cached

    def live(self) -> list[Member]:
        return self.others((State.ALIVE,))

    def routable(self, name: str) -> bool:
        """Whether traffic may still be sent to ``name`` (Service endpoints on it).

        False once the member is dead or left, or has been suspect here for
        ``routing_unreachable_after`` seconds. That needs nobody's confirmation, so a
        node cut off from everyone (whose suspicions nobody confirms and whose own
        Lifeguard timers stretch) stops routing to the others as soon as the healthy
        side does; a live member refutes a suspicion well within that time, so it is
        not flapped out of routing. An unknown member counts as routable."""
        m = self.members.get(name)
        if m is None or m.state == State.ALIVE:
            return True
        if m.state == State.SUSPECT:
            return self._loop.time() - m.since < self.config.routing_unreachable_after
        return False

    def snapshot(self) -> tuple[Update, ...]:
        return tuple(m.update() for m in self.members.values())

    def digest(self) -> str:
        """A short hash of every member's (name, incarnation, state)."""
        return _digest(self.members.values())

    # -- roles (topology.py) ---------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    def _topology(self) -> dict[str, list[Member]]:
        """The live super-peers by site (recomputed when the member list changes)."""
        if self._topology_version != self.version:
            self._topology_version = self.version
            self._contact_cache.clear()
            sites: dict[str, list[Member]] = {}
            if self._roles_seen:
                for m in self.members.values():
                    if m.state in (State.ALIVE, State.SUSPECT) and role_of(m) == Role.SUPER:
                        sites.setdefault(site_of(m), []).append(m)
            self._super_sites = sites
        return self._super_sites

    def contacts(self, m: Member) -> bool:
        """Whether this peer probes, gossips and exchanges member lists with ``m``.

        A weak member is contacted only by the super-peers of its site; while its site
        has no live super-peer, by every super-peer, and while there is none at all, by
        the full peers. That is membership only: a weak peer exchanges state with its
        site's super-peers alone (``topology.sync_peers``)."""
        if not self._roles_seen or self._role == Role.WEAK:
            return True
        return self._probes(self._role, self._site, m)

    def stood_for(self, m: Member) -> bool:
        """Whether ``m`` is a weak peer whose site has a live super-peer: those super-peers
        stand for it, so no peer elsewhere needs its coverage (``mesh.tombstones``)."""
        return (self._roles_seen and role_of(m) == Role.WEAK
                and site_of(m) in self._topology())

    def _probes(self, role: Role, site: str, m: Member) -> bool:
        """Whether a non-weak peer of ``role`` at ``site`` contacts ``m``."""
        if role_of(m) != Role.WEAK:
            return True
        sites = self._topology()
        if site_of(m) in sites:
            return role == Role.SUPER and site == site_of(m)
        return role == Role.SUPER or not sites

    def _contactable(self, states: tuple[State, ...], weak: bool = True) -> list[Member]:
        """``others(states)`` that this peer contacts; without ``weak``, no weak ones
        (gossip and push-pull: a weak peer hears news on the pings it exchanges)."""
        others = self.others(states)
        if not self._roles_seen:
            return others
        self._topology()
        key = (*states, State.LEFT) if weak else states  # LEFT: a tag for the weak variant
        cached = self._contact_cache.get(key)
        if cached is None:
            cached = [m for m in others if self.contacts(m)
                      and (weak or role_of(m) != Role.WEAK)]
            self._contact_cache[key] = cached
        return cached

    def _keeps(self, tags: Mapping[str, str]) -> bool:
        """Whether a member with these tags belongs in this peer's list: always, but on a
        weak peer only its site's super-peers, and stand-ins while it has none alive."""
        if self._role != Role.WEAK:
            if not self._roles_seen and ROLE_TAG in tags:
                self._roles_seen = True
            return True
        role = role_in(tags)
        if role == Role.WEAK:
            return False
        if role == Role.SUPER and tags.get("site", "") == self._site:
            return True
        sites = self._topology()
        if self._site in sites:
            return False
        return role == Role.SUPER or not sites

    def _prune(self) -> None:
        """A weak peer forgets the stand-ins it kept once its site has a live super-peer."""
        if self._role != Role.WEAK:
            return
        drop = [n for n, m in self.members.items() if n != self.name and not self._keeps(m.tags)]
        for n in drop:
            self._clear_suspicion(n)
            m = self.members.pop(n)
            if self._by_address.get(m.address) == n:
                del self._by_address[m.address]
        if drop:
            self.version += 1

    def _concerns(self, weak: Member, name: str) -> bool:
        """Whether facts about ``name`` are for the weak peer ``weak`` (what it keeps)."""
        if name == weak.name:
            return True
        m = self.members.get(name)
        if m is None:
            return False
        role = role_of(m)
        if role == Role.WEAK:
            return False
        sites = self._topology()
        site = site_of(weak)
        if role == Role.SUPER:
            return site_of(m) == site or site not in sites
        return not sites

    def _is_weak_peer(self, m: Member | None) -> bool:
        return (m is not None and self._roles_seen and self._role != Role.WEAK
                and role_of(m) == Role.WEAK)

    def _view_for(self, peer: Member | None) -> list[Member]:
        """The members to show ``peer``: all of them, but to a weak peer only what it keeps."""
        if not self._is_weak_peer(peer):
            return list(self.members.values())
        assert peer is not None
        sites = self._topology()
        site = site_of(peer)
        if site in sites:
            shown = list(sites[site])
        elif sites:
            shown = [m for ms in sites.values() for m in ms]
        else:
            shown = [m for m in self.members.values()
                     if m.state in (State.ALIVE, State.SUSPECT) and role_of(m) == Role.FULL]
        if peer.name not in {m.name for m in shown}:
            shown.append(peer)
        return shown

    def _sender(self, address: str) -> Member | None:
        name = self._by_address.get(address)
        m = self.members.get(name) if name is not None else None
        return m if m is not None and m.address == address else None

    def _piggyback_for(self, peer: Member | None) -> tuple[Update, ...]:
        """Updates to piggyback on a message to ``peer``: to a weak peer, only those about
        the members it keeps."""
        if not self._is_weak_peer(peer):
            return self._piggyback()
        assert peer is not None
        return self.broadcasts.take(self.config.max_piggyback,
                                    lambda u: self._concerns(peer, u.name))

    def _ping_updates(self, target: Member | None) -> tuple[Update, ...]:
        updates = self._piggyback_for(target)
        if self._is_weak_peer(target):
            # Tells a weak peer who probes it: a stand-in super-peer (its own are dead)
            # becomes one of the members it keeps.
            updates = (*updates, self.me.update())
        return updates

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for coro in (self._probe_loop(), self._gossip_loop(), self._push_pull_loop(),
                     self._reconnect_loop()):
            self._tasks.append(self._loop.create_task(coro))

    async def stop(self) -> None:
        for s in self._suspicions.values():
            s.cancel()
        self._suspicions.clear()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def join(self, seeds: Iterable[str]) -> int:
        """Exchange full member lists with each seed address; returns how many answered."""
        joined = 0
        for address in seeds:
            if address == self.transport.address:
                continue
            reply = await self._request(address, Join(self.me.update()), self.config.request_timeout)
            if isinstance(reply, StateSync):
                self.merge_state(reply.members)
                joined += 1
        return joined

    def add_known(self, members: Iterable[tuple[str, str] | tuple[str, str, Mapping[str, str]]],
                  ) -> None:
        """Record (name, address[, tags]) as alive without gossiping them: a peer restoring
        the member list it persisted, or a simulation that starts with a formed cluster."""
        now = self._loop.time()
        for known in members:
            name, address = known[0], known[1]
            tags = frozen_tags(known[2]) if len(known) > 2 else NO_TAGS  # type: ignore[misc]
            if name != self.name and name not in self.members and self._keeps(tags):
                m = self.members[name] = Member(name, address, 0, State.ALIVE, now, tags)
                self._by_address[address] = name
                self._joined(m)
        self._prune()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Announce new tags: they ride on a new incarnation, so every member takes them
        (an older incarnation's tags never overwrite newer ones)."""
        me = self.me
        new = frozen_tags(tags)
        if new == me.tags or self.left:
            return
        me.tags = new
        me.incarnation += 1
        self.version += 1
        self._role, self._site = role_of(me), site_of(me)
        self._roles_seen = self._roles_seen or self._role != Role.FULL
        self.broadcasts.queue(me.update())

    async def leave(self) -> None:
        """Tell the others this node leaves on purpose (not a failure)."""
        self.left = True
        me = self.me
        me.incarnation += 1
        me.state = State.LEFT
        self.broadcasts.queue(me.update(self.name))
        await self._gossip_round()

    # -- incoming ------------------------------------------------------------------

    async def handle(self, msg: Message, sender: str = "") -> Message | None:
        """Serve a membership message from the peer at address ``sender``; returns the
        answer for a request."""
        match msg:
            case Ping():
                self.apply_all(msg.updates)
                if msg.target != self.name:
                    return Nack()  # the address now belongs to someone else
                peer = self._sender(sender)
                if peer is not None:
                    self._heard[peer.name] = self._loop.time()
                ack = (*self._piggyback_for(peer), *self._dead_at(sender))
                if peer is not None and peer.state == State.SUSPECT:
                    # It pings us while we suspect it (we were cut off, and the suspicion's
                    # gossip never reached it): told so, it refutes now, not when our
                    # slowed probes (Lifeguard) come round to it.
                    ack = (*ack, peer.update(self.name))
                if any(u.name == self.name and u.state != State.ALIVE
                       and u.incarnation < self.incarnation for u in msg.updates):
                    # The prober still suspects an incarnation we refuted already (it missed
                    # the gossip): our current one, in the ack, settles it at once.
                    ack = (*ack, self.me.update())
                return Ack(ack)
            case PingReq():
                self.apply_all(msg.updates)
                # Leave the requester time to hear our nack before its own timeout.
                timeout = 0.8 * (self.config.probe_interval - self.config.probe_timeout)
                target = self.members.get(msg.target)
                ping = Ping(msg.target, self._ping_updates(target))
                reply = await self._request(msg.address, ping, timeout)
                if isinstance(reply, Ack):
                    self.apply_all(reply.updates)
                    return Ack()
                return Nack()
            case Gossip():
                self.apply_all(msg.updates)
                return None
            case Join():
                self.apply(msg.member)
                joiner = self.members.get(msg.member.name)
                return StateSync(_updates(self._view_for(joiner)))
            case Digest():
                # Agreeing views need no exchange; otherwise send ours and the asker
                # follows with its own.
                view = self._view_for(self._sender(sender))
                if msg.digest == _digest(view):
                    return StateSync(())
                return StateSync(_updates(view))
            case StateSync():
                # Take theirs first, so our answer already carries any refutation.
                self.merge_state(msg.members)
                return StateSync(_updates(self._view_for(self._sender(sender))))
        return None

    def apply_all(self, updates: Iterable[Update]) -> None:
        for u in updates:
            self.apply(u)

    def merge_state(self, members: Iterable[Update]) -> None:
        """Take another member's full view (join, push-pull, reconnect).

        As memberlist's mergeRemoteState, a death in it is taken as a suspicion: a node
        back from a partition still holds the other side dead at the incarnations they
        had, and a member that is alive then refutes instead of being taken for dead
        (and out of routing) by everyone who syncs with that node."""
        for u in members:
            if u.state == State.DEAD and u.name != self.name:
                u = dataclasses.replace(u, state=State.SUSPECT)
            self.apply(u)
        self._prune()

    def apply(self, u: Update) -> None:
        if u.state == State.ALIVE:
            self._on_alive(u)
        elif u.state == State.SUSPECT:
            self._on_suspect(u)
        else:
            self._on_dead(u)

    def _joined(self, m: Member) -> None:
        self.version += 1
        self.hooks.on_join(m)

    def _updated(self, m: Member) -> None:
        self.version += 1
        self.hooks.on_update(m)

    def _left(self, m: Member) -> None:
        self.version += 1
        self.hooks.on_leave(m)

    def _dead_at(self, address: str) -> tuple[Update, ...]:
        """What we hold about the dead members at ``address``: a peer that pings us while
        we hold it dead is back from a partition, and hearing it is dead makes it refute
        at once (its next gossip re-admits it) instead of at our next reconnect."""
        if not address:
            return ()
        return tuple(m.update(self.name) for m in self.others((State.DEAD,))
                     if m.address == address)

    def _refute(self, incarnation: int) -> None:
        if self.left:
            return
        me = self.me
        if incarnation >= me.incarnation:
            me.incarnation = incarnation + 1
            self.awareness.apply(1)  # being suspected hints that our own links are bad
            self.broadcasts.queue(me.update())

    def _on_alive(self, u: Update) -> None:
        if u.name == self.name:
            # A fact about a previous life of ours (before a restart): move past it.
            if u.incarnation > self.me.incarnation or (
                u.incarnation == self.me.incarnation and u.address != self.me.address
            ):
                self._refute(u.incarnation)
            return
        m = self.members.get(u.name)
        now = self._loop.time()
        if m is None:
            tags = frozen_tags(u.tags)
            if not self._keeps(tags):
                return  # a weak peer does not carry members it never talks to
            m = self.members[u.name] = Member(u.name, u.address, u.incarnation, State.ALIVE, now,
                                              tags)
            self._by_address[u.address] = u.name
            self.broadcasts.queue(m.update())
            self._joined(m)
            return
        if u.incarnation < m.incarnation or (u.incarnation == m.incarnation and (
                m.tags or not u.tags)):
            return
        if u.incarnation == m.incarnation:
            # A member restored without its tags (from disk, or preformed) learns them
            # from a fact of the same incarnation: filling in is not a change.
            m.tags = frozen_tags(u.tags)
            self._keeps(m.tags)  # notes a role on a full peer
            self._updated(m)
            return
        was = m.state
        m.incarnation, m.address = u.incarnation, u.address
        self._by_address[u.address] = u.name
        if u.tags or m.tags:
            m.tags = frozen_tags(u.tags)
            self._keeps(m.tags)  # notes a role on a full peer
        self._clear_suspicion(m.name)
        self.broadcasts.queue(u)
        if was != State.ALIVE:
            m.state, m.since = State.ALIVE, now
        if was in (State.DEAD, State.LEFT):
            self._joined(m)
        else:
            self._updated(m)

    def _on_suspect(self, u: Update) -> None:
        if u.name == self.name:
            self._refute(u.incarnation)
            return
        m = self.members.get(u.name)
        if m is None or u.incarnation < m.incarnation or m.state in (State.DEAD, State.LEFT):
            return
        if m.state == State.SUSPECT and u.incarnation == m.incarnation:
            s = self._suspicions.get(m.name)
            if s is not None and s.confirm(u.source):
                self.broadcasts.queue(u)
            return
        m.incarnation, m.state, m.since = u.incarnation, State.SUSPECT, self._loop.time()
        self._start_suspicion(m, u.source)
        self.broadcasts.queue(u)
        self._updated(m)

    def _on_dead(self, u: Update) -> None:
        if u.name == self.name:
            if not self.left:
                self._refute(u.incarnation)
            return
        m = self.members.get(u.name)
        if m is None or u.incarnation < m.incarnation or m.state in (State.DEAD, State.LEFT):
            return
        self._clear_suspicion(m.name)
        m.incarnation, m.since = u.incarnation, self._loop.time()
        m.state = State.LEFT if u.state == State.LEFT else State.DEAD
        self.broadcasts.queue(u)
        self._left(m)

    # -- suspicion -------------------------------------------------------------------

    def _start_suspicion(self, m: Member, source: str) -> None:
        self._clear_suspicion(m.name)
        n = len(self.members)
        k = min(self.config.suspicion_mult - 2, max(0, n - 2))
        low, high = self.config.suspicion_bounds(n)
        name, inc = m.name, m.incarnation

        def expire() -> None:
            self._suspicions.pop(name, None)
            cur = self.members.get(name)
            if cur is not None and cur.state == State.SUSPECT and cur.incarnation == inc:
                log.info("%s: declaring %s dead", self.name, name)
                self._on_dead(Update(State.DEAD, name, cur.address, inc, self.name))

        self._suspicions[m.name] = Suspicion(source, k, low, high, expire)

    def _clear_suspicion(self, name: str) -> None:
        s = self._suspicions.pop(name, None)
        if s is not None:
            s.cancel()

    # -- outgoing --------------------------------------------------------------------

    def _piggyback(self) -> tuple[Update, ...]:
        return self.broadcasts.take(self.config.max_piggyback)

    async def _request(self, address: str, msg: Message, timeout: float) -> Message | None:
        try:
            return decode(await self.transport.request(address, encode(msg), timeout))
        except (TransportError, MessageError):
            return None

    def _next_probe_target(self) -> Member | None:
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                m = self.members.get(self._probe_order[self._probe_index])
                self._probe_index += 1
                if m is not None and m.state in (State.ALIVE, State.SUSPECT) and self.contacts(m):
                    return m
            self._reshuffle()
        return None

    def _reshuffle(self) -> None:
        now = self._loop.time()
        for n, m in list(self.members.items()):
            if m.state in (State.DEAD, State.LEFT) and now - m.since > self.config.dead_reclaim_time:
                del self.members[n]
                if self._by_address.get(m.address) == n:
                    del self._by_address[m.address]
                self.version += 1
        self._prune()
        self._probe_order = [n for n, m in self.members.items()
                             if n != self.name and self.contacts(m)]
        self.rng.shuffle(self._probe_order)
        self._probe_index = 0

    async def _probe_loop(self) -> None:
        # Stagger the first probe so that peers started together do not probe in lockstep.
        await asyncio.sleep(self.rng.uniform(0, self.config.probe_interval))
        while True:
            start = self._loop.time()
            target = self._next_probe_target()
            if target is not None and not self._heard_lately(target):
                await self.probe(target)
            period = self.awareness.scale(self.config.probe_interval)
            await asyncio.sleep(max(0.0, start + period - self._loop.time()))

    def heard(self, name: str) -> None:
        """A message from member ``name`` arrived (a push, a pull, a pull's answer)."""
        if name in self.members:
            self._heard[name] = self._loop.time()

    def unheard(self, name: str) -> None:
        """A request to ``name`` failed: probe it at its next turn."""
        self._heard.pop(name, None)

    def _heard_lately(self, m: Member) -> bool:
        """Whether this turn's probe of ``m`` can be left out: between a weak peer and a
        super-peer of its site, while the other side's own traffic (a weak peer's pushes
        and pulls, a super-peer's pull answers) came within ``HEARD_FRESH`` seconds and no
        membership update waits to reach it (a suspicion it must refute rides on the
        probe). Idle, that traffic is a weak peer's Lease renewals, so a dead weak peer is
        still probed, suspected and declared dead, at most ``HEARD_FRESH`` seconds later."""
        if m.state != State.ALIVE or not self._roles_seen:
            return False
        fresh = HEARD_FRESH
        if self._role == Role.WEAK:
            if role_of(m) != Role.SUPER or len(self.broadcasts):
                return False
            # It learns of its super-peers' deaths mostly by its own probes (their gossip
            # of it seldom reaches it): a probe left out at most every other turn.
            fresh = 2 * self.config.probe_interval
        elif not self._is_weak_peer(m) or any(self._concerns(m, n)
                                               for n in self.broadcasts.names()):
            return False
        return self._loop.time() - self._heard.get(m.name, float("-inf")) < fresh

    async def probe(self, m: Member) -> bool:
        """Ping ``m``, directly and then through others; suspect it if nobody reaches it."""
        self.probes += 1
        cfg = self.config
        updates = self._ping_updates(m)
        if m.state == State.SUSPECT:
            # As memberlist: tell a suspect that it is, so that it refutes in its ack. The
            # gossip of the suspicion may have been spent while it was out of reach.
            updates = (*updates, m.update(self.name))
        reply = await self._request(
            m.address, Ping(m.name, updates), self.awareness.scale(cfg.probe_timeout)
        )
        if isinstance(reply, Ack):
            self.apply_all(reply.updates)
            self.awareness.apply(-1)
            return True
        helpers = [h for h in self._contactable((State.ALIVE,), weak=False) if h.name != m.name
                   and (not self._is_weak_peer(m) or self._probes(role_of(h), site_of(h), m))]
        helpers = self.rng.sample(helpers, min(cfg.indirect_checks, len(helpers)))
        acked = False
        if helpers:
            timeout = self.awareness.scale(cfg.probe_interval - cfg.probe_timeout)
            replies = await asyncio.gather(*(
                self._request(h.address, PingReq(m.name, m.address, self._piggyback()), timeout)
                for h in helpers
            ))
            acked = any(isinstance(r, Ack) for r in replies)
            nacks = sum(1 for r in replies if isinstance(r, Nack))
            # Lifeguard: helpers that did not even nack point at our own connectivity.
            missed = len(helpers) - nacks - sum(1 for r in replies if isinstance(r, Ack))
            self.awareness.apply(1 if missed > 0 else (-1 if acked else 0))
        if acked:
            return True
        self.failed_probes += 1
        cur = self.members.get(m.name)
        # For a member someone else already suspects, our failure is an independent
        # confirmation that shortens the suspicion (Lifeguard).
        if cur is not None and cur.state in (State.ALIVE, State.SUSPECT) and (
            cur.incarnation == m.incarnation
        ):
            self._on_suspect(Update(State.SUSPECT, m.name, m.address, m.incarnation, self.name))
        return False

    async def _gossip_round(self) -> None:
        if not len(self.broadcasts):
            return
        targets = self._contactable((State.ALIVE, State.SUSPECT), weak=False)
        targets = self.rng.sample(targets, min(self.config.gossip_nodes, len(targets)))
        if targets:
            self.gossip_rounds += 1
        for t in targets:
            updates = self._piggyback()
            if not updates:
                break
            self.gossip_messages += 1
            with contextlib.suppress(TransportError):
                await self.transport.send(t.address, encode(Gossip(updates)))

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.gossip_interval)
            await self._gossip_round()

    async def sync_with(self, address: str) -> bool:
        """A membership-state exchange with one peer (push-pull), digest first."""
        timeout = self.config.request_timeout
        view = self._view_for(self._sender(address))
        reply = await self._request(address, Digest(_digest(view)), timeout)
        if not isinstance(reply, StateSync):
            return False
        if not reply.members:
            return True
        self.merge_state(reply.members)
        view = self._view_for(self._sender(address))
        reply = await self._request(address, StateSync(_updates(view)), timeout)
        if isinstance(reply, StateSync):
            self.merge_state(reply.members)
            return True
        return False

    async def _push_pull_loop(self) -> None:
        while True:
            period = self.config.push_pull_period(len(self.members))
            await asyncio.sleep(period * self.rng.uniform(0.5, 1.5))
            live = self._contactable((State.ALIVE,), weak=False)
            if live:
                await self.sync_with(self.rng.choice(live).address)

    async def _reconnect_loop(self) -> None:
        # Ticks every probe interval, so that a member that has just died is tried soon;
        # the others are tried every reconnect interval.
        cfg = self.config
        next_any = self._loop.time() + cfg.reconnect_interval * self.rng.uniform(0.5, 1.5)
        while True:
            await asyncio.sleep(cfg.probe_interval * self.rng.uniform(0.5, 1.5))
            dead = self._recently_dead()
            if not dead and self._loop.time() >= next_any:
                next_any = self._loop.time() + cfg.reconnect_interval * self.rng.uniform(0.5, 1.5)
                dead = self._contactable((State.DEAD,))
            if dead:
                await self.sync_with(self.rng.choice(dead).address)

    def _recently_dead(self) -> list[Member]:
        """Members declared dead less than ``reconnect_fast_for`` seconds ago: the other
        side of a partition that may heal soon, tried every probe interval."""
        now = self._loop.time()
        return [m for m in self._contactable((State.DEAD,))
                if now - m.since < self.config.reconnect_fast_for]


def _digest(members: Iterable[Member]) -> str:
    """A short hash of the members' (name, incarnation, state), in name order."""
    h = hashlib.blake2b(digest_size=8)
    for m in sorted(members, key=lambda m: m.name):
        h.update(f"{m.name} {m.incarnation} {int(m.state)}\n".encode())
    return h.hexdigest()


def _updates(members: Iterable[Member]) -> tuple[Update, ...]:
    return tuple(m.update() for m in members)
