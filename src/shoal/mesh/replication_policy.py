"""The replication policy: what this peer may send to whom, what it accepts, whom it pulls.

One place decides, from this peer's own replica (its ``ScopeMap``) and its membership
(with the members' role and site tags), so push, pull, relay and coverage all follow
the same rules:

- an object is in one scope (``shoal.authz.scopes``); a peer holds the cluster scope
  and every scope it is a member of, and is sent a scope's documents only if it is a
  member as the sender's map says;
- a document is merged only if the sender placed it in the scope the receiver places
  it in, the receiver holds that scope, the sender is a member of it, and every
  register the merge would change passes the *writer rule* (:meth:`accept`);
- pushes go to live members of the scope that the topology lets this peer sync with,
  pulls to stable partners among those, with at least one member (a writer, if one is
  live) of every scope this peer holds. A weak peer pushes to and pulls from its site's
  live super-peers only, in every scope; no other peer picks a weak peer as a partner
  or target but those super-peers (``topology.may_sync``).

*How a relayed write proves its writer.* A register's writer id is not signed, so it
proves nothing by itself. The rule is that only writers of a scope relay: what a writer
sends is accepted (it is trusted to relay what it accepted, under the writers of the
time); a change sent by a peer that is not a writer is accepted only if that peer
wrote it itself, and only where the Node authorizer would let that node write (its
Node, its Lease, the status of its pods, Events). A non-writer therefore cannot forge
a change in another peer's name. A change that a non-writer relays is refused *for
now* (``Refusal.transient``): the receiver gets it from a writer, and a pull cursor
stops before it so that it is asked again.

*A site's super-peers vouch for its weak peers.* A weak peer exchanges state only with
its site's super-peers, so what it wrote reaches the scope's writers through them even
when they are not writers: a super-peer that is a member of the scope is trusted to
relay what a weak peer of its site wrote, judged as if that weak peer had sent it
(accepted if it is a writer, else where the Node authorizer lets it write:
``vouches``). And a weak peer merges whatever its site's super-peers send it, as from a
writer (it depends on them for everything anyway). Role and site are the membership
tags each peer announces; docs/semantics.md says what that trusts.

*A sender that is not a member.* The sender's map may be newer than ours (it was just
made a member, and the Scope edit has not reached us yet), so its documents are first
deferred (a pull asks again, a push is dropped unanswered). That is bounded: once this
peer has deferred a sender's documents of a scope for ``NON_MEMBER_GRACE`` seconds under
the same map, they are refused for good, logged (rate-limited) and the sender told why,
as a member that is not a writer is. A change of the map starts the grace again.

*Revoked changes.* A change a former writer stamped after its recorded removal is refused
from anyone, writers included (``revoked_rule``; ``shoal.mesh.revocation`` takes such
changes out of what a member merged before it learnt of the removal).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from shoal.authz.scopes import CLUSTER, ScopeIndex, ScopeMap, Windows, revoked_at, shown
from shoal.crdt.document import Document, Node
from shoal.mesh import ring, topology
from shoal.mesh.messages import State
from shoal.mesh.revocation import Revoked

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
NON_MEMBER_GRACE = 60.0
"""Seconds a non-member's documents of a scope are deferred (our map may be the stale one)
before they are refused (``ReplicationPolicy.accept``): several pull rounds, in which the
Scope edit that made it a member reaches this peer if there is one."""
LEASE_DIRECT_MAX = 32
"""A super-peer with at most this many holders of its Lease pushes each renewal to each
of them itself (``ReplicationPolicy.from_its_node``); with more, by the push epidemic."""
LEASES = "leases.coordination.k8s.io"
EVENTS = frozenset({"events", "events.events.k8s.io"})
_NO_TAGS: Mapping[str, str] = MappingProxyType({})


class Peer(Protocol):
    """A member as the policy sees it (``shoal.mesh.membership.Member``)."""

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> State: ...


class MemberSource(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    def live(self) -> Sequence[Any]: ...

    @property
    def members(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    transient: bool
    """The maps disagree, or the change came through a peer that may not relay it: it may
    be accepted later or from someone else, so a pull asks for it again."""


@dataclass(frozen=True, slots=True)
class _Tagged:
    name: str
    tags: Mapping[str, str]


def tags_of(member: Any) -> Mapping[str, str]:
    tags = getattr(member, "tags", None)
    return tags if isinstance(tags, Mapping) else _NO_TAGS


def _tagged(member: Any) -> _Tagged:
    return _Tagged(member.name, tags_of(member))


M = TypeVar("M")


def _now() -> float:
    """The event loop's clock (virtual in the simulator, so runs replay), else monotonic."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class DenialLog:
    """Refusals logged at warning, at most ``burst`` per ``window`` seconds (the API's
    denial log does the same): a hostile peer retrying cannot flood the log."""

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self.window_start = float("-inf")
        self.logged = 0
        self.suppressed = 0

    def __call__(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.window_start >= self.window:
            if self.suppressed:
                log.warning("%d more refused documents in the last %.0fs were not logged",
                            self.suppressed, now - self.window_start)
            self.window_start, self.logged, self.suppressed = now, 0, 0
        if self.logged >= self.burst:
            self.suppressed += 1
            return
        self.logged += 1
        log.warning(fmt, *args)


def changed_registers(local: Node | None, remote: Node, path: tuple[str, ...] = ()
                      ) -> Iterator[tuple[tuple[str, ...], str, int]]:
    """(path, writer, stamp) of every register that merging ``remote`` into ``local``
    would change (every register of ``remote`` where ``local`` has none)."""
    if local is None or (remote[0], remote[1]) > (local[0], local[1]):
        yield path, remote[1], remote[0]
    children = remote[3]
    if children:
        local_children = (local[3] or {}) if local is not None else {}
        for k, child in children.items():
            yield from changed_registers(local_children.get(k), child, (*path, k))


def node_may_write(node: str, resource: str, namespace: str, name: str,
                   path: tuple[str, ...], bound_to: str | None, deleting: bool) -> bool:
    """Whether the Node authorizer (with NodeRestriction) would let ``node`` make this
    change: its own Node and Lease, Events, and the status of pods bound to it (or their
    deletion)."""
    if resource == "nodes":
        return name == node
    if resource == LEASES:
        return namespace == NODE_LEASE_NAMESPACE and name == node
    if resource in EVENTS:
        return True
    if resource == "pods" and bound_to == node:
        return (len(path) > 0 and path[0] == "status") or (path == () and deleting)
    return False


def _bound_node(value: Mapping[str, Any] | None) -> str | None:
    spec = (value or {}).get("spec")
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    return node if isinstance(node, str) else None


def revoked_rule(after: Windows, resource: str, namespace: str, name: str,
                 value: Mapping[str, Any] | None, deleted: bool) -> Revoked:
    """Which registers of one object are revoked (``shoal.mesh.revocation``): written by a
    former writer stamped in one of its revoked windows (``after``: peer -> windows, from
    ``ScopeMap.revoked_after``: after its recorded removal, and before it became a writer
    again if it did), unless the Node rule lets that node write them anyway."""
    bound = _bound_node(value)

    def revoked(path: tuple[str, ...], writer: str, stamp: int) -> bool:
        return (revoked_at(after, writer, stamp)
                and not node_may_write(writer, resource, namespace, name, path, bound,
                                       deleted and path == ()))

    return revoked


class ReplicationPolicy:
    def __init__(self, me: str, index: ScopeIndex, membership: MemberSource,
                 pull_partners: int) -> None:
        self.me = me
        self.index = index
        self.membership = membership
        self.pull_partner_count = pull_partners
        self._partners: list[Any] = []
        self._partners_key: tuple[int, int] = (-1, -1)
        self._map_serial = 0
        self._last_map: ScopeMap | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._sync: list[Any] = []
        self._sync_version = -1
        self._relays: list[Any] = []
        self._relays_of: list[Any] | None = None
        self._weak: list[Any] = []
        self._stranded: dict[str, str] = {}
        self._targets: dict[str, list[Any]] = {}
        self._targets_key: tuple[int, int] = (-1, -1)
        self._non_members: dict[tuple[str, str], float] = {}
        """(scope, sender) -> when a document of the scope from that non-member was first
        deferred, under the map of ``_non_members_serial``."""
        self._non_members_serial = -1
        self._direct_counts: tuple[int, dict[str, int]] = (0, {})
        """Full peers, and super-peers per region, among the members (``pushes_lease_itself``)."""
        self._direct_version = -1

    # -- scopes --------------------------------------------------------------------

    def map(self) -> ScopeMap:
        m = self.index.current()
        if m is not self._last_map:
            # A selector's map is rebuilt at every Node heartbeat: count only real changes.
            fingerprint = m.fingerprint()
            if fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                self._map_serial += 1
            self._last_map = m
        return m

    @property
    def serial(self) -> int:
        """Changes when the scope map places or admits anything differently."""
        self.map()
        return self._map_serial

    def scope_of(self, resource: str, namespace: str) -> str:
        return self.map().scope_of(resource, namespace)

    def held(self) -> frozenset[str]:
        """The scopes this peer holds, the cluster scope included."""
        return self.map().scopes_of(self.me)

    def holds(self, scope: str) -> bool:
        return self.map().is_member(scope, self.me)

    def may_send(self, scope: str, peer: str) -> bool:
        """Whether ``peer`` may be sent documents of ``scope`` (it is a member, by my map)."""
        return self.map().is_member(scope, peer)

    def is_writer(self, scope: str, peer: str) -> bool:
        return self.map().is_writer(scope, peer)

    def relays(self, scope: str) -> bool:
        """Whether this peer forwards what it merged of ``scope``: only writers relay."""
        return self.map().is_writer(scope, self.me)

    def scopes_for(self, partner: str) -> list[str]:
        """The scopes to ask ``partner`` for: those I hold that it is a member of, and,
        unless I am a writer of the scope, is a writer of (a non-writer relays nothing I
        could accept but its own changes, which writers relay to me); and every scope
        both hold when one of us is a weak peer and the other a super-peer of its site
        (the super-peer collects what the weak peer wrote, the weak peer takes all)."""
        m = self.map()
        linked = self._site_link(partner)
        return sorted(s for s in m.scopes_of(self.me) if m.is_member(s, partner)
                      and (linked or m.is_writer(s, partner) or m.is_writer(s, self.me)))

    # -- roles and sites -------------------------------------------------------------

    def _tags(self, name: str) -> Mapping[str, str]:
        member = self.membership.members.get(name)
        return tags_of(member) if member is not None else _NO_TAGS

    def takes_checked_deltas(self, name: str) -> bool:
        """Whether ``name`` decodes a push of deltas without an answer (its ``caps`` tag):
        a peer from before them drops such a push whole as malformed."""
        return topology.takes(self._tags(name), topology.CHECKED_DELTAS)

    def is_weak(self, name: str | None = None) -> bool:
        return topology.role_in(self._tags(name or self.me)) == topology.Role.WEAK

    def may_sync(self, name: str) -> bool:
        """Whether this peer may exchange state with ``name`` directly (by the role and
        site tags both announce: a weak peer only with its site's super-peers)."""
        return topology.may_sync(self._me(), _Tagged(name, self._tags(name)))

    def _site_link(self, name: str) -> bool:
        """Whether one of this peer and ``name`` is weak and the other a super-peer of
        its site."""
        return ((self.is_weak() or self.is_weak(name)) and self.may_sync(name))

    def withheld(self, peer: str, resource: str, namespace: str, name: str) -> bool:
        """Whether ``peer`` is never sent this object, whatever scope it is in: a node's
        Lease (``kube-node-lease``) that ``peer`` does not hold (``topology.holds_lease``:
        a weak peer holds its own only, a super-peer those of its site's weak nodes and
        its region's super-peers, a full peer every one). Only the peers that hold a
        node's Lease judge that node (``shoal.control.node_lifecycle``); every renewal of
        every node would otherwise reach every super-peer (issue 10; docs/semantics.md,
        "Node Leases"). Also what this peer drops when it is sent one (``peer`` itself)."""
        if resource != LEASES or namespace != NODE_LEASE_NAMESPACE or name == peer:
            return False
        node = self.membership.members.get(name)
        return not topology.holds_lease(_Tagged(peer, self._tags(peer)), name,
                                        tags_of(node) if node is not None else None)

    def from_its_node(self, peer: str, resource: str, namespace: str, name: str) -> bool:
        """Whether ``peer`` gets this object from its node only, not from this peer: the
        Lease (``kube-node-lease``) of node ``name`` (not this peer), which that node
        pushes to ``peer`` itself. A weak node pushes each renewal to each of its site's
        live super-peers; a super-peer its own to each of its holders it exchanges state
        with (its region's super-peers and the full peers), when they are at most
        ``LEASE_DIRECT_MAX`` (``pushes_lease_itself``). Each of them pulls the node (a weak
        one in turn, at once when a push shows one was missed: ``AntiEntropy.handle``), so
        they neither forward it to each other nor answer each other's pulls with it (their
        cursors pass over it, as over a Lease ``withheld``): each renewal reaches each
        holder once. Before, a weak node's site-mates forwarded each renewal to each other,
        and a super-peer's spread by the push epidemic, about 4 copies to each holder
        (issue 10, 114 and 44 of a super-peer's 191 kbit/s at 1,000 peers;
        docs/scale-model.md)."""
        if (resource != LEASES or namespace != NODE_LEASE_NAMESPACE or name == peer
                or name == self.me):
            return False
        node = self._tags(name)
        other = self._tags(peer)
        role = topology.role_in(node)
        if role == topology.Role.WEAK:
            return (topology.role_in(other) == topology.Role.SUPER
                    and node.get(topology.SITE_TAG, "") == other.get(topology.SITE_TAG, ""))
        return (role == topology.Role.SUPER and topology.role_in(other) != topology.Role.WEAK
                and self.pushes_lease_itself(name)
                and topology.holds_lease(_Tagged(peer, other), name, node))

    def pushes_lease_itself(self, node: str | None = None) -> bool:
        """Whether super-peer ``node`` (this peer by default) pushes its Lease to each of
        its holders itself (``from_its_node``): at most ``LEASE_DIRECT_MAX`` of them are
        members here (its region's super-peers and the full peers; without regions every
        super-peer, which the push epidemic reaches instead). Counted per member list."""
        node = node or self.me
        if self._direct_version != self.membership.version:
            full = 0
            regions: dict[str, int] = {}
            for m in self.membership.members.values():
                tags = tags_of(m)
                role = topology.role_in(tags)
                if role == topology.Role.FULL:
                    full += 1
                elif role == topology.Role.SUPER:
                    region = tags.get(topology.REGION_TAG, "")
                    regions[region] = regions.get(region, 0) + 1
            self._direct_counts = (full, regions)
            self._direct_version = self.membership.version
        tags = self._tags(node)
        if topology.role_in(tags) != topology.Role.SUPER:
            return False
        full, regions = self._direct_counts
        region = tags.get(topology.REGION_TAG, "")
        # Its holders (``topology.holds_lease``): the full peers and its region's super-peers,
        # every super-peer when it announces no region; itself left out.
        supers = regions.get(region, 0) if region else sum(regions.values())
        return full + supers - 1 <= LEASE_DIRECT_MAX

    def holds_every_lease(self, peer: str | None = None) -> bool:
        """Whether ``peer`` (this one by default) holds every node's Lease: a full peer."""
        return topology.role_in(self._tags(peer or self.me)) == topology.Role.FULL

    def vouches(self, sender: str, writer: str) -> bool:
        """Whether ``sender`` relays what ``writer`` wrote as if ``writer`` sent it: it is a
        super-peer of the site of ``writer``, a weak peer."""
        w, s = self._tags(writer), self._tags(sender)
        return (topology.role_in(w) == topology.Role.WEAK
                and topology.role_in(s) == topology.Role.SUPER
                and w.get(topology.SITE_TAG, "") == s.get(topology.SITE_TAG, ""))

    def stranded(self, scope: str) -> str | None:
        """Why this weak peer cannot sync ``scope`` through anyone: no member of it is a
        super-peer of its site (by the tags of the members it knows, live or not).
        None when it can, or when this peer is not weak. It then holds the scope, serves
        it and takes writes to it if it is a writer, but exchanges it with no one until
        an operator makes one of its site's super-peers a member."""
        if not self.is_weak():
            return None
        m = self.map()
        site = self._tags(self.me).get(topology.SITE_TAG, "")
        for name, member in self.membership.members.items():
            tags = tags_of(member)
            if (name != self.me and topology.role_in(tags) == topology.Role.SUPER
                    and tags.get(topology.SITE_TAG, "") == site and m.is_member(scope, name)):
                return None
        return (f"no super-peer of site {site!r} is a member of scope {scope!r}: a weak "
                f"peer syncs only through its site's super-peers")

    # -- accepting -------------------------------------------------------------------

    def accept(self, resource: str, namespace: str, name: str, remote: Document,
               held: Callable[[], tuple[Document | None, Mapping[str, Any] | None]],
               scope_tag: str, sender: str) -> Refusal | None:
        """None to merge ``remote`` (sent by ``sender``, placed in ``scope_tag`` by it), or
        why not. ``held`` gives this replica's document and value of the object (asked
        only when the writer rule needs them)."""
        m = self.map()
        scope = m.scope_of(resource, namespace)
        if scope != scope_tag:
            return Refusal(f"in scope {scope!r} here, not {scope_tag!r}", True)
        if not m.is_member(scope, self.me):
            return Refusal(f"this peer is not a member of scope {scope!r}", True)
        if not m.is_member(scope, sender) and sender not in m.former_writers(scope):
            # A former writer that left the scope hands off what it wrote as a writer
            # (and only that passes the writer rule below).
            return Refusal(f"{sender} is not a member of scope {scope!r}",
                           self._defer_non_member(scope, sender))
        sender_writes = m.is_writer(scope, sender)
        if not sender_writes and self.is_weak() and self.may_sync(sender):
            # A weak peer takes what its site's super-peers send as from a writer.
            sender_writes = True
        if sender_writes:
            # Writers are trusted to relay what they accepted, whoever wrote it: judging
            # each register again by the writers of *now* would refuse, on some members
            # only, what a writer removed since then wrote while it was one. Except a
            # change stamped after its writer's recorded removal: revoked, held nowhere
            # once every member knows (the sender takes it out when it learns).
            return self._revoked_change(scope, resource, namespace, name, remote, held,
                                        sender)
        local, local_value = held()
        registers = list(changed_registers(local.root if local is not None else None,
                                           remote.root))
        if remote.cleared > (local.cleared if local is not None else 0):
            # Raising the cleared stamp hides fields: the root's writer answers for it.
            registers.append(((), remote.root[1], max(remote.root[0], remote.cleared)))
        bound: str | bool | None = False
        windows = m.revoked_after(scope)
        for path, writer, stamp in registers:
            if m.was_writer(scope, writer, stamp):
                # Written by a writer removed since, while it was one (the Scope records
                # until when): the remaining writers may not have merged it, so it may
                # come from a member that is not a writer, or from that peer itself.
                continue
            if writer != sender and not self.vouches(sender, writer):
                return Refusal(f"{sender} relayed a change by {writer} and is not a "
                               f"writer of scope {scope!r}", True)
            if (writer != sender and m.is_writer(scope, writer)
                    and not revoked_at(windows, writer, stamp)):
                # A weak writer's change, relayed by a super-peer of its site; one it made
                # in a revoked window (made a writer again since) is judged as a
                # non-writer's, as when a writer relays it.
                continue
            if bound is False:
                bound = _bound_node(local_value) or _bound_node(remote.value())
            deleting = path == () and remote.deleted
            if not node_may_write(writer, resource, namespace, name, path,
                                  bound if isinstance(bound, str) else None, deleting):
                where = "/".join(path) or "the object"
                return Refusal(f"{writer} is not a writer of scope {scope!r} and may not "
                               f"write {where}", False)
        return None

    def _defer_non_member(self, scope: str, sender: str) -> bool:
        """Whether a document of ``scope`` from ``sender``, not a member by our map, is
        still only deferred: for ``NON_MEMBER_GRACE`` seconds from the first one under
        this map (ours may be the stale one), refused after that."""
        if self.serial != self._non_members_serial:
            self._non_members_serial, self._non_members = self.serial, {}
        now = _now()
        first = self._non_members.setdefault((scope, sender), now)
        return now - first < NON_MEMBER_GRACE

    def _revoked_change(self, scope: str, resource: str, namespace: str, name: str,
                        remote: Document,
                        held: Callable[[], tuple[Document | None, Mapping[str, Any] | None]],
                        sender: str) -> Refusal | None:
        after = self.map().revoked_after(scope)
        if not after:
            return None
        local, local_value = held()
        rule = revoked_rule(after, resource, namespace, name,
                            local_value or remote.value(), remote.deleted)
        for path, writer, stamp in changed_registers(local.root if local is not None else None,
                                                     remote.root):
            if rule(path, writer, stamp):
                return Refusal(f"{sender} relayed a change by {writer} stamped after its "
                               f"removal as a writer of scope {scope!r}", True)
        return None

    def revoked(self, resource: str, namespace: str, name: str,
                value: Mapping[str, Any] | None, deleted: bool) -> Revoked | None:
        """Which registers of this object held here are revoked; None when its scope
        revokes nothing (no former writer that is not a writer again)."""
        m = self.map()
        scope = m.scope_of(resource, namespace)
        after = m.revoked_after(scope) if scope != CLUSTER else {}
        if not after:
            return None
        return revoked_rule(after, resource, namespace, name, value, deleted)

    # -- whom to talk to -------------------------------------------------------------

    def _me(self) -> _Tagged:
        me = self.membership.members.get(self.me)
        return _Tagged(self.me, tags_of(me) if me is not None else _NO_TAGS)

    def sync_peers(self) -> list[Any]:
        """The live peers this one exchanges state with directly (``topology``); a cached
        list, recomputed when membership changes."""
        if self._sync_version != self.membership.version:
            live = list(self.membership.live())
            by_name = {m.name: m for m in live}
            self._sync = [by_name[t.name]
                          for t in topology.sync_peers(self._me(), map(_tagged, live))]
            self._sync_version = self.membership.version
        return self._sync

    def relay_peers(self) -> list[Any]:
        """Of the sync peers, those pushed to and pulled from every round
        (``topology.relays``: a super-peer's weak peers pull from it instead)."""
        sync = self.sync_peers()
        if self._relays_of is not sync:  # recomputed with the sync peers
            self._relays, self._relays_of = topology.relays(self._me(), sync), sync
        return self._relays

    def push_targets(self, scope: str) -> list[Any]:
        """Live members of ``scope`` to push its documents to: of those the topology lets me
        sync with, my relays, else any (a super-peer's own weak peers). Never a weak peer
        of another site, nor anyone but its site's super-peers from a weak peer: a weak
        member is reached through them, or not at all (``stranded``). Cached."""
        m = self.map()
        if scope == CLUSTER:
            return self.relay_peers()  # super-peers: weak peers pull (topology.relays)
        key = (self.membership.version, self._map_serial)
        if key != self._targets_key:
            self._targets, self._targets_key = {}, key
        targets = self._targets.get(scope)
        if targets is None:
            targets = [p for p in self.relay_peers() if m.is_member(scope, p.name)]
            if not targets:
                targets = [p for p in self.sync_peers() if m.is_member(scope, p.name)]
            self._targets[scope] = targets
        return targets

    def pull_partners(self) -> list[Any]:
        """Stable partners: the ring's among the peers I sync with (which carry the cluster
        scope), plus, for every other scope I hold, the partners that keep the scope's own
        pull graph strongly connected (``scope_partners``)."""
        m = self.map()
        key = (self.membership.version, self._map_serial)
        if key == self._partners_key:
            return self._partners
        peers = {p.name: p for p in self.sync_peers()}
        relays = {p.name for p in self.relay_peers()}
        names = ring.partners(self.me, relays, self.pull_partner_count)
        ours = topology.same_region(self._me(), map(_tagged, self.relay_peers()))
        if ours:
            # With regions, the ring successor among our region's peers too, in place of
            # the last finger (the global successor stays first): coverage rows of a
            # region's peers travel only within it (mesh.tombstones).
            [successor] = ring.partners(self.me, (t.name for t in ours), 1)
            if successor not in names:
                names = [*names[:max(1, self.pull_partner_count - 1)], successor]
        chosen = [peers[n] for n in names]
        live = {p.name: p for p in self.membership.live()}
        for scope in sorted(m.scopes_of(self.me) - {CLUSTER}):
            for name in self.scope_partners(scope, live):
                if name not in names:
                    names.append(name)
                    chosen.append(live[name])
        # A super-peer also pulls one of its weak peers each round, in turn
        # (``weak_pulls``): otherwise most weak peers are never pulled, their rows never
        # reach the backbone and no tombstone of the cluster scope is collected.
        self._weak = [peers[n] for n in sorted((n for n in peers if n not in relays),
                                               key=ring.position)]
        self._note_stranded(m)
        self._partners, self._partners_key = chosen, key
        return chosen

    def _note_stranded(self, m: ScopeMap) -> None:
        """Log each scope this weak peer cannot sync through anyone, once when it becomes
        so, and once when it no longer is."""
        now = {}
        for scope in sorted(m.scopes_of(self.me)):
            reason = self.stranded(scope)
            if reason is not None:
                now[scope] = reason
                if scope not in self._stranded:
                    log.warning("%s: %s; it holds the scope and serves it, but neither "
                                "sends nor receives its changes until one is made a member",
                                self.me, reason)
        for scope in set(self._stranded) - set(now):
            log.info("%s: scope %r syncs through a super-peer of its site again",
                     self.me, shown(scope))
        self._stranded = now

    def weak_pulls(self) -> list[Any]:
        """The weak peers a super-peer pulls, one per round in this order, on top of its
        partners (empty for a weak or role-less peer). Valid after ``pull_partners``."""
        return self._weak

    def scope_partners(self, scope: str, live: Mapping[str, Any]) -> list[str]:
        """Whom to pull ``scope`` from so that its pull graph is strongly connected (data
        and coverage rows reach every member) although non-writers pull only from writers:
        the writers form a ring, each pulling from the next live one; a non-writer pulls
        from the next live writer after it; a writer also pulls from every non-writer
        whose nearest live writer before it on the ring is this writer. Weak members are
        left out of that graph: a weak peer pulls from its site's super-peers that are
        members, and they pull it in turn (``weak_pulls``)."""
        m = self.map()
        if self.is_weak():
            # Only through my site's live super-peers, writers or not (``vouches``).
            return [p.name for p in self.sync_peers() if m.is_member(scope, p.name)]
        # Weak members are in no one's ring: their site's super-peers pull them in turn
        # (``weak_pulls``, every scope both hold) and relay what they wrote.
        members = [n for n in (m.members(scope) or ())
                   if n == self.me or (n in live and not self.is_weak(n))]
        writers = [n for n in members if m.is_writer(scope, n)]
        others = [w for w in writers if w != self.me]
        out = ring.partners(self.me, others, 1)
        if self.me not in writers:
            return out
        writer_positions = sorted((ring.position(w), w) for w in writers)
        for name in members:
            if name in writers:
                continue
            pos = ring.position(name)
            # The writer just before ``name`` on the ring (wrapping around).
            before = [w for p, w in writer_positions if p < pos]
            nearest = before[-1] if before else writer_positions[-1][1]
            if nearest == self.me and name not in out:
                out.append(name)
        return out

    def required_for(self, scope: str, members: Iterable[M]) -> list[M]:
        """Of ``members``, those whose coverage a collection in ``scope`` waits for."""
        m = self.map()
        return [x for x in members if m.is_member(scope, getattr(x, "name", ""))]
