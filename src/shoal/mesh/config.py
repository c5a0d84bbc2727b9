"""The mesh's tunables, with their defaults in one place.

``default()`` is tuned for an edge site on a LAN; ``lan()``, ``wan()`` and
``sim()`` derive from it with ``dataclasses.replace`` (as memberlist derives its
WAN and local configs from ``DefaultLANConfig``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from shoal.mesh.topology import (
    CAPS_TAG,
    CHECKED_DELTAS,
    REGION_TAG,
    ROLE_TAG,
    SITE_TAG,
    Role,
    default_region,
)


@dataclass(frozen=True, slots=True)
class MeshConfig:
    role: str = Role.FULL.value
    """This peer's role (``topology.Role``): ``full``, ``super`` (``--super-peer``) or
    ``weak`` (``--sync-via super``). Carried in the membership protocol as the ``role`` tag."""

    site: str = ""
    """This peer's site (``--site``), the ``site`` tag: a weak peer syncs through the
    super-peers of its site."""

    region: str | None = None
    """This peer's region (``--region``), the ``region`` tag: sites whose super-peers
    coverage treats as one (``mesh.tombstones``). None: derived from the site
    (``topology.default_region``)."""

    tags: tuple[tuple[str, str], ...] = ()
    """Any other tags this peer announces to the members (sorted key, value pairs)."""

    probe_interval: float = 2.0
    """Seconds between two failure-detector probes of this node (one random member each).

    Scaled by the local health (awareness): an unhealthy node probes less often.
    Idle traffic is about one ping and one ack per node per interval."""

    probe_timeout: float = 0.8
    """Seconds to wait for the direct ack before asking others (indirect probe).

    Scaled by the local health: timeout × (awareness score + 1). Should be above the
    99th percentile round-trip time."""

    indirect_checks: int = 3
    """How many other members are asked to ping a target that missed its direct ack (ping-req)."""

    suspicion_mult: int = 4
    """Suspicion timeout multiplier. A suspect is declared dead after at least
    ``suspicion_mult × log10(max(N, 1)) × probe_interval`` seconds (N: known members, the
    memberlist formula). The timeout starts at ``suspicion_max_timeout_mult`` times that and
    shrinks as independent members confirm the suspicion (Lifeguard); it expects
    ``suspicion_mult - 2`` confirmations."""

    suspicion_max_timeout_mult: int = 6
    """The upper bound of the suspicion timeout, as a multiple of its lower bound."""

    retransmit_mult: int = 4
    """Each membership update is piggybacked ``retransmit_mult × ceil(log10(N + 1))`` times."""

    gossip_interval: float = 0.2
    """Seconds between gossip rounds. A round sends pending membership updates (only if
    there are any: an idle cluster sends nothing) to ``gossip_nodes`` random members."""

    gossip_nodes: int = 3
    """Fanout of a gossip round."""

    max_piggyback: int = 8
    """At most this many membership updates ride on one ping, ack or gossip message."""

    awareness_max_multiplier: int = 8
    """Local health score range: timeouts and the probe interval are multiplied by
    score + 1, with the score in ``[0, awareness_max_multiplier - 1]``."""

    push_pull_interval: float = 30.0
    """Seconds between full membership-state exchanges with one random live member (repairs
    what gossip missed). Scaled by ``ceil(log2(N / 32))`` above 32 members, as in memberlist."""

    reconnect_interval: float = 10.0
    """Seconds between attempts to exchange membership state with one random dead member, so
    the two sides of a healed partition find each other again (Serf's reconnect). Members
    dead for less than ``reconnect_fast_for`` are tried every ``probe_interval`` instead."""

    reconnect_fast_for: float = 300.0
    """Seconds after a member is declared dead during which the reconnect attempts (one
    random dead member each) come every ``probe_interval`` instead of every
    ``reconnect_interval``: a partition that heals within minutes is noticed in a couple
    of seconds, at the cost of one failed connection attempt per probe interval while
    it lasts."""

    routing_unreachable_after: float = 5.0
    """Seconds a member may stay suspect before this node stops routing Service traffic to
    it (``Membership.routable``). About two probe intervals: longer than a live member
    takes to refute a suspicion, far shorter than the suspicion timeout, which an isolated
    node's Lifeguard stretches and nobody confirms. Dead or left members are unroutable
    at once."""

    dead_reclaim_time: float = 3600.0
    """Seconds after which a dead or left member is forgotten."""

    request_timeout: float = 2.0
    """Seconds to wait for the answer to a join, ping-req, pull or state exchange."""

    push_fanout: int = 3
    """Eager replication: a local write is pushed to this many random live peers at once."""

    push_max_hops: int = 10
    """A peer that a push changed forwards it to ``push_fanout`` others, at most this many hops
    from the writer; pull anti-entropy repairs whatever the epidemic missed."""

    pull_interval: float = 2.0
    """Seconds between anti-entropy rounds. Each round asks ``pull_fanout`` random live peers
    for everything they changed after the cursor held for them. An idle round is one small
    request ("what changed since N?") and one small answer ("nothing, I am at N")."""

    pull_fanout: int = 1
    """How many partners each anti-entropy round pulls from (in turn)."""

    pull_partners: int = 8
    """How many stable partners a peer pulls from (``ring.py``: its ring successor and
    fingers half, a quarter, ... of the ring away). A cursor is kept per partner, so few
    partners keep every pull a delta; news crosses N peers in about log2(N) pull hops."""

    pull_batch: int = 200
    """At most this many documents in one pull answer; the puller pages with its cursor."""

    gc_interval: float = 60.0
    """Seconds between two tombstone-collection rounds (``tombstones.py``); 0 turns
    collection off. A round is local work only: it sends nothing."""

    coverage_publish_interval: float = 30.0
    """Seconds between two publications of this peer's coverage vector (what tombstone
    collection waits on). Each publication travels to every peer, with one entry per
    peer: O(N) numbers to each of N peers. Publishing at most this often bounds that
    traffic after a burst of writes; collection is correspondingly that much later.
    Nothing is published while ``gc_interval`` is 0."""

    gc_min_age: float = 3600.0
    """Seconds a deletion must be old (by its stamp, against this node's wall clock)
    before its tombstone may be collected, even once every member has pulled it: it
    outlasts pushes still in flight and clock skew."""

    fence_ttl: float = 7 * 24 * 3600.0
    """Seconds a collected tombstone's fence (its name and delete stamp) is kept. A peer
    that comes back after being forgotten (``dead_reclaim_time``) but within this time
    is told of the deletion and cannot resurrect the object; one away longer must be
    wiped before it rejoins."""

    def member_tags(self) -> dict[str, str]:
        """The tags this peer announces. A full peer with no site announces none, so its
        membership messages are the same bytes as before tags existed."""
        out = dict(self.tags)
        if self.role != Role.FULL:
            out[ROLE_TAG] = str(self.role)
        if self.site:
            out[SITE_TAG] = self.site
        region = default_region(self.site) if self.region is None else self.region
        if region and self.role != Role.WEAK:  # only full and super-peers read it
            out[REGION_TAG] = region
        if self.role == Role.SUPER:
            out[CAPS_TAG] = CHECKED_DELTAS
        return out

    def retransmit_limit(self, members: int) -> int:
        """How many times one membership update is piggybacked in a cluster of ``members``."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(members + 1)))

    def suspicion_bounds(self, members: int) -> tuple[float, float]:
        """(min, max) seconds before a suspect is declared dead."""
        scale = max(1.0, math.log10(max(1, members)))
        low = self.suspicion_mult * scale * self.probe_interval
        return low, low * self.suspicion_max_timeout_mult

    def push_pull_period(self, members: int) -> float:
        """The push-pull interval, stretched for large clusters."""
        if members <= 32:
            return self.push_pull_interval
        return self.push_pull_interval * math.ceil(math.log2(members / 32) + 1)


_DEFAULT = MeshConfig()


def default() -> MeshConfig:
    """Edge sites: a LAN with a few to a few hundred peers, slow radios allowed."""
    return _DEFAULT


def lan() -> MeshConfig:
    """A fast, reliable LAN: quicker detection, at more idle traffic."""
    return dataclasses.replace(_DEFAULT, probe_interval=1.0, probe_timeout=0.5, pull_interval=1.0)


def wan() -> MeshConfig:
    """Links with long, variable round trips: slower timers, more patience, wider gossip."""
    return dataclasses.replace(
        _DEFAULT,
        probe_interval=5.0,
        probe_timeout=3.0,
        suspicion_mult=6,
        gossip_interval=0.5,
        gossip_nodes=4,
        push_pull_interval=60.0,
        reconnect_interval=30.0,
        request_timeout=10.0,
        pull_interval=10.0,
    )


def for_role(base: MeshConfig) -> MeshConfig:
    """``base`` as this peer's role runs it. A weak peer (a device on a slow or metered
    link) pulls from its super-peers half as often (about 0.13 kbit/s idle instead of 0.24,
    at one more pull interval before a write reaches it) and probes them a quarter as
    often: its pulls and pushes prove them alive most of the time, and once its idle pulls
    backed off further its probes filled the gap (a real weak peer's pings and acks 0.045 ->
    0.063 kbit/s; 8 s: 0.015). Nobody waits on its probes: its super-peers probe it at the
    usual rate, and it changes its pull source on unanswered pulls, not on them."""
    if base.role != "weak":
        return base
    return dataclasses.replace(base, probe_interval=4 * base.probe_interval,
                               pull_interval=2 * base.pull_interval)


def sim() -> MeshConfig:
    """The simulator: the default timers, with state exchanges frequent enough that a short
    run sees them."""
    return dataclasses.replace(_DEFAULT, push_pull_interval=15.0, reconnect_interval=5.0)
