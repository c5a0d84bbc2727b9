"""Who acts on an object: rendezvous hashing over the live peers, with no leader.

Every peer computes the same preferred actor for an object from the same view
of the live peers, so with a healthy mesh each decision is made once. A peer
acts on an object when it is the preferred actor, or when the preferred actor
is not among the peers it can reach: under a partition each side decides for
itself, and the merge plus a deterministic trim reconcile afterwards.

A peer whose node Lease ran out (``LeaseAges``: ``grace`` seconds since its last renewal by
this peer's clock, as the node lifecycle judge counts) is left out too, while another
candidate's Lease is fresh: across a partition membership holds the far peers alive until it
has probed and suspected them, and meanwhile the objects they would act for had no actor
on this side.

Objects of a scope (:mod:`shoal.authz.scopes`) are acted for only by the scope's
*writers*: the rendezvous is over its live writers, and a peer that is not one never
acts (its writes would be refused by the scope's members). With no Scope objects
everything is in the cluster scope and every live peer takes part, as before.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from shoal.authz.scopes import CLUSTER, EMPTY, ScopeMap
from shoal.control.pod_state import parse_time
from shoal.store.objects import ObjectStore


class PeerView(Protocol):
    """This node's view of the cluster's peers."""

    @property
    def name(self) -> str: ...

    def live(self) -> list[str]:
        """Names of the peers this node currently believes alive, itself included."""
        ...


class SinglePeer:
    """A node alone: it acts on everything."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def live(self) -> list[str]:
        return [self._name]


def _weight(key: str, peer: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{peer}\x00{key}".encode(), digest_size=8).digest(),
                          "big")


def preferred_actor(key: str, peers: Iterable[str]) -> str | None:
    """The peer with the highest rendezvous weight for ``key`` (None if there are none)."""
    best: tuple[int, str] | None = None
    for p in peers:
        w = (_weight(key, p), p)
        if best is None or w > best:
            best = w
    return None if best is None else best[1]


def actors(view: PeerView, scope: str = CLUSTER, scopes: ScopeMap = EMPTY,
           exclude: str | None = None) -> list[str]:
    """The live peers that may act for objects of ``scope``, this node included if it may.

    Cluster scope: every live peer. A scope: its live writers (none if this node is not
    one of them, since then it does not act whoever else is reachable). ``exclude`` leaves
    one peer out (a node never judges itself). Weak peers are left out while a peer that
    is not weak may act (``_without_weak``), then the peers whose node Lease ran out
    while one whose Lease is fresh may (``_without_lapsed``)."""
    live = [p for p in view.live() if p != exclude]
    if view.name not in live and view.name != exclude:
        live.append(view.name)
    if scope == CLUSTER:
        return _without_lapsed(view, _without_weak(view, live, None))
    writers = scopes.writers(scope) or frozenset()
    if view.name not in writers:
        return []
    return _without_lapsed(view, _without_weak(view, [p for p in live if p in writers],
                                               writers))


def _without_lapsed(view: PeerView, candidates: list[str]) -> list[str]:
    """``candidates`` less the peers whose node Lease ran out (``lapsed_peers``), unless
    that leaves none: every peer that holds the Leases then decides alike."""
    lapsed = lapsed_peers(view)
    fresh = [p for p in candidates if p not in lapsed] if lapsed else candidates
    return fresh or candidates


def _without_weak(view: PeerView, candidates: list[str],
                  writers: frozenset[str] | None) -> list[str]:
    """A weak peer's member list is its site's super-peers, so a rendezvous over what it
    sees would pick it for objects that a peer seeing the whole cluster also picks: two
    actors with a healthy mesh. So weak peers act only where no other peer may: everyone
    leaves them out while a peer that is not weak is a candidate, and a weak peer that
    sees one (the cluster is reachable through it) defers, unless every writer of the
    scope is weak as far as it knows. Cut off from its super-peers, it acts for what it
    holds, as any peer under a partition does."""
    weak = weak_peers(view)
    if not weak:
        return candidates
    if view.name in weak:
        if any(p not in weak for p in view.live() if p != view.name) and (
                writers is None or any(w not in weak for w in writers)):
            return []
        return candidates
    strong = [p for p in candidates if p not in weak]
    return strong or candidates


def weak_peers(view: PeerView) -> frozenset[str]:
    """The peers ``view`` knows to be weak (``--sync-via super``), from its optional
    ``weak()``: they hold no Lease but their own (docs/semantics.md, "Node Leases"), so
    they judge no node by its Lease and are no actor for what is decided from the
    Leases. A view that knows no roles (``SinglePeer``, a test's) names none."""
    weak = getattr(view, "weak", None)
    return frozenset(weak()) if callable(weak) else frozenset()


def lapsed_peers(view: PeerView) -> frozenset[str]:
    """The live peers whose node Lease ran out, from ``view``'s optional ``lapsed()``
    (``LeaseAges``); none on a weak peer, which holds no Lease but its own, and none for a
    view that knows no Leases (``SinglePeer``, a test's)."""
    lapsed = getattr(view, "lapsed", None)
    if not callable(lapsed) or view.name in weak_peers(view):
        return frozenset()
    return frozenset(lapsed())


def resumed_at(view: PeerView) -> float:
    """When (wall seconds) this peer last resumed from standing still, from ``view``'s optional
    ``resumed()`` (``loop_stalls.LoopStalls``): the Lease judges count from then as from a
    start. -inf for a view that does not know (``SinglePeer``, a test's)."""
    resumed = getattr(view, "resumed", None)
    return float(resumed()) if callable(resumed) else -math.inf


KUBELET_LEASE_SECONDS = 40
"""The kubelet's ``nodeLeaseDurationSeconds``, four renewals of 10 s: the pace a grace
period (``--node-monitor-grace-period``) is set for."""


def lease_grace(lease: dict[str, Any] | None, grace: float) -> float:
    """How long a node's renewal holds: ``grace``, times how much longer than the kubelet's
    40 s the node's Lease declares (``leaseDurationSeconds``). A node that renews less
    often (a weak peer: every 30 s, a 120 s Lease) is judged over as many of its renewals
    as the others are, and a shorter grace stays shorter for it too."""
    duration = ((lease or {}).get("spec") or {}).get("leaseDurationSeconds")
    if isinstance(duration, int) and not isinstance(duration, bool) \
            and duration > KUBELET_LEASE_SECONDS:
        return grace * duration / KUBELET_LEASE_SECONDS
    return grace


class LeaseAges:
    """Which peers' node Lease ran out, for a view's ``lapsed()``: ``grace`` seconds (the node
    lifecycle judge's, ``--node-monitor-grace-period``) since its last renewal by this
    peer's clock, and since the peer has been live here without a break. A peer whose Lease
    this replica does not hold (one joining, or none written) is not judged; a peer that has
    just come back into the live list (a heal, a restart of either) gets ``grace`` to bring
    its renewals, as a node this peer has just started to know does, and so does every peer
    once this one resumes from standing still (``resumed``: ``LoopStalls.check``). Leases
    are re-read when one changed, so asking for each object costs a few lookups per live
    peer."""

    def __init__(self, store: ObjectStore, grace: float,
                 resumed: Callable[[], float] | None = None) -> None:
        from shoal.control.node_lifecycle import LEASE_NAMESPACE

        self.store, self.grace, self._namespace = store, grace, LEASE_NAMESPACE
        kind = store.registry.by_kind("coordination.k8s.io/v1", "Lease")
        assert kind is not None
        self._kind = kind
        self._revision = -1
        self._renewed: dict[str, tuple[float, float]] = {}
        """Each node's last renewal and how long it holds (``lease_grace``)."""
        self._live_since: dict[str, float] = {}
        self._live: list[str] = []
        self._resumed = resumed

    def lapsed(self, live: list[str]) -> frozenset[str]:
        """Of ``live`` (the view's live list, this peer included), those whose Lease ran out."""
        replica = self.store.replica
        now = replica.wall.now()
        if live != self._live:
            self._live_since = {p: self._live_since.get(p, now) for p in live}
            self._live = list(live)
        revision = replica.resource_revision(self._kind.resource)
        if revision != self._revision:
            self._revision = revision
            self._renewed = {}
            for lease in self.store.list(self._kind, self._namespace):
                renew = parse_time((lease.get("spec") or {}).get("renewTime"))
                if renew is not None:
                    self._renewed[lease["metadata"]["name"]] = (
                        renew, lease_grace(lease, self.grace))
        resumed = self._resumed() if self._resumed is not None else -math.inf
        out = set()
        for p in live:
            renewed = self._renewed.get(p)
            if renewed is not None and \
                    now - max(renewed[0], self._live_since[p], resumed) >= renewed[1]:
                out.add(p)
        return frozenset(out)


def lease_actors(view: PeerView, scope: str = CLUSTER, scopes: ScopeMap = EMPTY,
                 exclude: str | None = None, lease: str | None = None) -> list[str]:
    """``actors``, less the weak peers (none if this node is weak) and, given ``lease`` (a
    node's name), less the peers that do not hold that node's Lease by ``view``'s optional
    ``holds_lease(peer, node)`` (``mesh.topology.holds_lease``: a super-peer holds its
    site's and region's only): none if this node does not hold it, since it would find no
    Lease and must not judge."""
    weak = weak_peers(view)
    if view.name in weak:
        return []
    out = [p for p in actors(view, scope, scopes, exclude) if p not in weak]
    holds = getattr(view, "holds_lease", None)
    if lease is None or not callable(holds):
        return out
    if not holds(view.name, lease):
        return []
    return [p for p in out if holds(p, lease)]


def should_act(view: PeerView, key: str, scope: str = CLUSTER,
               scopes: ScopeMap = EMPTY) -> bool:
    """Whether this node should act on ``key`` (an object of ``scope``) now."""
    return preferred_actor(key, actors(view, scope, scopes)) == view.name


def scope_of(scopes: ScopeMap, resource: str, obj: Mapping[str, Any]) -> str:
    """The scope of a stored object of ``resource``."""
    ns = (obj.get("metadata") or {}).get("namespace")
    return scopes.scope_of(resource, ns if isinstance(ns, str) else "")
