"""Roles and sites: which peers exchange state with which.

Every member carries tags in the membership protocol: ``role`` (``full``, ``super`` or
``weak``) and ``site``. A *weak* peer (``--sync-via super``) exchanges state only with
the super-peers of its site; super-peers exchange with each other, with the full peers
and with the weak peers of their site; full peers exchange with each other and with the
super-peers. So a weak peer's traffic does not grow with the cluster, and a weak peer
with two super-peers keeps syncing when one dies (memberlist's LAN/WAN pools and
Cassandra's one replica per remote datacenter are the models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Protocol, TypeVar

ROLE_TAG = "role"
SITE_TAG = "site"
REGION_TAG = "region"
CAPS_TAG = "caps"
"""What a peer's mesh understands beyond the first protocol (one letter each), so a newer
peer sends an older one only what it decodes. Announced by super-peers only: they are who
receives what needs it."""
CHECKED_DELTAS = "d"
"""A push of deltas without an answer, each kept where it checks out to its digest
(``messages.Push.deltas``): a node's own Lease renewals to its region's super-peers."""


def takes(tags: Mapping[str, str], cap: str) -> bool:
    return cap in tags.get(CAPS_TAG, "")


class Role(StrEnum):
    FULL = "full"
    SUPER = "super"
    WEAK = "weak"


class Tagged(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tags(self) -> Mapping[str, str]: ...


def role_in(tags: Mapping[str, str]) -> Role:
    """The role a member's tags announce (full when none)."""
    role = tags.get(ROLE_TAG)
    if role is None:
        return Role.FULL
    try:
        return Role(role)
    except ValueError:
        return Role.FULL  # an unknown role from a newer peer: treat it as an ordinary peer


def role_of(member: Tagged) -> Role:
    return role_in(member.tags)


def site_of(member: Tagged) -> str:
    return member.tags.get(SITE_TAG, "")


def region_of(member: Tagged) -> str:
    """The member's region (``--region``): a group of sites whose super-peers stand for
    each other in tombstone collection's coverage (``mesh.tombstones``). Empty: none."""
    return member.tags.get(REGION_TAG, "")


def default_region(site: str) -> str:
    """The region a site belongs to when none is given: what precedes the site's last
    ``/`` (site ``eu/paris-1`` is in region ``eu``), else none."""
    return site.rsplit("/", 1)[0] if "/" in site else ""


def may_sync(a: Tagged, b: Tagged) -> bool:
    """Whether ``a`` and ``b`` exchange state directly (symmetric)."""
    ra, rb = role_of(a), role_of(b)
    if ra == Role.WEAK and rb == Role.WEAK:
        return False
    if Role.WEAK in (ra, rb):
        weak, other = (a, b) if ra == Role.WEAK else (b, a)
        return role_of(other) == Role.SUPER and site_of(other) == site_of(weak)
    return True


def holds_lease(holder: Tagged, node: str, node_tags: Mapping[str, str] | None) -> bool:
    """Whether ``holder`` holds the node Lease (``kube-node-lease``) of ``node``, whose tags
    are ``node_tags`` (None: not a member known here). Every node holds its own, and a full
    peer every one; a weak peer no other; a super-peer a weak node's of its site, a
    super-peer's of its region (every super-peer's when that one announces no region),
    and a full peer's or an unknown node's, as full peers do (docs/semantics.md, "Node
    Leases"). So a node's renewals stay near it, and a super-peer's traffic does not grow
    with the number of nodes elsewhere (issue 10)."""
    if holder.name == node:
        return True
    role = role_of(holder)
    if role != Role.SUPER:
        return role == Role.FULL
    if node_tags is None:
        return True
    other = role_in(node_tags)
    if other == Role.WEAK:
        return node_tags.get(SITE_TAG, "") == site_of(holder)
    if other == Role.SUPER:
        region = node_tags.get(REGION_TAG, "")
        return not region or region == region_of(holder)
    return True


T = TypeVar("T", bound=Tagged)


def sync_peers(me: Tagged, peers: Iterable[T]) -> list[T]:
    """The peers among ``peers`` that ``me`` exchanges state with.

    A weak peer exchanges state with the super-peers of its site and nobody else: while
    none of them is live it syncs with no one (it keeps serving what it holds, and
    resumes through them when one is back). It used to fall back to every super-peer,
    then to every full peer, which let peers elsewhere pull a weak peer directly
    (issue 10)."""
    return [p for p in peers if p.name != me.name and may_sync(me, p)]


def same_region(me: Tagged, relays: Iterable[T]) -> list[T]:
    """Of a full or super-peer's relays, those of its own region, when some are of
    another (empty otherwise, and on a weak peer). Coverage rows of a region's peers are
    relayed only within it (``mesh.tombstones``), so its peers' pull graph must be
    strongly connected on its own."""
    if role_of(me) == Role.WEAK:
        return []
    relays = list(relays)
    mine = region_of(me)
    ours = [p for p in relays if region_of(p) == mine]
    return ours if len(ours) < len(relays) else []


def relays(me: Tagged, sync: Iterable[T]) -> list[T]:
    """Of ``me``'s sync peers, those it pushes to and pulls from every round: for a full or
    super-peer the other full and super-peers (the backbone, memberlist's WAN pool),
    since the weak peers of its site pull from it; for a weak peer all of them. A write
    then crosses the backbone by push in a few hops, and reaches every weak peer at its
    next pull."""
    sync = list(sync)
    if role_of(me) == Role.WEAK:
        return sync
    backbone = [p for p in sync if role_of(p) != Role.WEAK]
    return backbone or sync


class _MeshPeer(Protocol):
    @property
    def membership(self) -> _Versioned: ...

    def members(self) -> Iterable[Tagged]: ...


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


class WeakNames:
    """The names of a peer's weak members (``control.ownership.weak_peers``): every
    controller asks for each object, so they are kept until the member list changes."""

    def __init__(self) -> None:
        self._version = -1
        self._names: list[str] = []

    def of(self, peer: _MeshPeer | None) -> list[str]:
        if peer is None:
            return []
        version = peer.membership.version
        if version != self._version:
            self._version = version
            self._names = [m.name for m in peer.members() if role_of(m) == Role.WEAK]
        return self._names


class LeaseHolders:
    """Whether a peer holds a node's Lease (``holds_lease``), by the tags of a peer's
    members (``control.ownership.lease_actors``), kept until the member list changes."""

    def __init__(self) -> None:
        self._version = -1
        self._tags: dict[str, Mapping[str, str]] = {}

    def holds(self, peer: _MeshPeer | None, holder: str, node: str) -> bool:
        if peer is None:
            return True
        version = peer.membership.version
        if version != self._version:
            self._version = version
            self._tags = {m.name: m.tags for m in peer.members()}
        tags = self._tags.get(holder)
        return holds_lease(_Named(holder, tags if tags is not None else {}), node,
                           self._tags.get(node))


class _Named:
    __slots__ = ("name", "tags")

    def __init__(self, name: str, tags: Mapping[str, str]) -> None:
        self.name, self.tags = name, tags
