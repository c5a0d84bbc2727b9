"""Which bus peers form a site's NATS cluster and where leaf links go, from Node objects.

A node's site is its ``topology.kubernetes.io/zone`` label (``default`` without one); a
site is a *hub* when one of its nodes carries ``shoal.dev/hub=true``, so the operator
decides both with ``kubectl label``. Each node announces its bus endpoints in
annotations on its own Node (:data:`CLUSTER_ANNOTATION` and the others), written by the
node when its bus starts. The rest is a pure function of those objects:

- the peers of one site route to each other (a NATS cluster named after the site);
- the peers of a hub site listen for leaf connections;
- the peers of every other site open a leaf connection to the hub site's peers (the edge
  dials out, so the hub needs no route back to the edge);
- a site of one peer has no cluster at all and runs JetStream standalone: nats-server 2.9
  refuses clustered JetStream without routes. A site of two or more runs it clustered (a
  Raft meta group per site), so a pair needs both peers up to create or change streams
  (docs/dataplane.md says to run one peer or three and more where that matters).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ZONE_LABEL = "topology.kubernetes.io/zone"
HUB_LABEL = "shoal.dev/hub"
DEFAULT_SITE = "default"
CLIENT_ANNOTATION = "bus.shoal.dev/client"
CLUSTER_ANNOTATION = "bus.shoal.dev/cluster"
LEAF_ANNOTATION = "bus.shoal.dev/leafnodes"
PIN_ANNOTATION = "bus.shoal.dev/spki-sha256"
CLUSTERED_JETSTREAM_MIN_PEERS = 2

_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")


def site_name(zone: str | None) -> str:
    """The site (also the JetStream domain and the NATS cluster name) for a zone label:
    characters NATS refuses in a domain become ``_``."""
    if not zone:
        return DEFAULT_SITE
    return _NOT_NAME.sub("_", zone)


@dataclass(frozen=True)
class BusPeer:
    """One node's bus, as its Node object describes it."""

    name: str
    site: str
    hub: bool
    client: str = ""
    """host:port for clients (pods)."""
    cluster: str = ""
    """host:port of its route listener."""
    leafnodes: str = ""
    """host:port of its leaf listener (hub peers only)."""
    pin: str = ""
    """SHA-256 of its certificate's public key (hex): routes and leaf links accept only
    the current members' keys, so a peer that left is refused even with a certificate
    the CA signed that has not expired yet."""


def peer_of_node(node: Mapping[str, Any]) -> BusPeer | None:
    """The bus peer a Node announces, or None when its bus is not running (no annotation)."""
    meta = node.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    cluster = annotations.get(CLUSTER_ANNOTATION)
    if not isinstance(cluster, str) or not cluster:
        return None
    labels = meta.get("labels") or {}
    return BusPeer(
        name=str(meta.get("name", "")),
        site=site_name(labels.get(ZONE_LABEL)),
        hub=labels.get(HUB_LABEL) == "true",
        client=str(annotations.get(CLIENT_ANNOTATION) or ""),
        cluster=cluster,
        leafnodes=str(annotations.get(LEAF_ANNOTATION) or ""),
        pin=str(annotations.get(PIN_ANNOTATION) or ""),
    )


@dataclass(frozen=True)
class SiteTopology:
    """What one peer's nats-server must be told."""

    name: str
    site: str
    hub_site: str | None
    """The site every other site links to (None: no node is labelled hub)."""
    site_peers: tuple[str, ...]
    """The bus peers of this site, this one included, by name."""
    routes: tuple[str, ...] = ()
    """host:port of the other peers of this site."""
    listen_leafnodes: bool = False
    leaf_remotes: tuple[str, ...] = ()
    """host:port of the hub site's leaf listeners (empty on the hub site)."""
    jetstream_clustered: bool = False
    route_pins: tuple[str, ...] | None = None
    """The keys accepted on routes (this site's peers); None: no pinning, as when a peer
    announces no key."""
    leaf_pins: tuple[str, ...] | None = None
    """The keys accepted on a hub's leaf listener (the other sites' peers)."""
    peers_by_site: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_hub(self) -> bool:
        return self.hub_site == self.site


def hub_site(peers: Iterable[BusPeer]) -> str | None:
    """The hub site: the site of the nodes labelled hub (the first by name if labels name
    several sites, which the bus does not support: docs/dataplane.md)."""
    sites = sorted({p.site for p in peers if p.hub})
    return sites[0] if sites else None


def topology(me: BusPeer, nodes: Iterable[Mapping[str, Any]],
             gone: Collection[str] = ()) -> SiteTopology:
    """``me``'s view of the bus from the Node objects, leaving out the nodes in ``gone``
    (members that left the mesh). ``me`` counts even before its Node shows the bus."""
    peers = {me.name: me}
    for node in nodes:
        p = peer_of_node(node)
        if p is not None and p.name != me.name and p.name not in gone:
            peers[p.name] = p
    hub = hub_site(peers.values())
    by_site: dict[str, list[BusPeer]] = {}
    for p in sorted(peers.values(), key=lambda p: p.name):
        by_site.setdefault(p.site, []).append(p)
    mine = by_site[me.site]
    clustered = len(mine) >= CLUSTERED_JETSTREAM_MIN_PEERS
    others = [p for p in peers.values() if p.site != me.site]
    remotes: tuple[str, ...] = ()
    if hub is not None and hub != me.site:
        remotes = tuple(p.leafnodes for p in by_site[hub] if p.leafnodes)
    return SiteTopology(
        name=me.name,
        site=me.site,
        hub_site=hub,
        site_peers=tuple(p.name for p in mine),
        routes=tuple(p.cluster for p in mine if p.name != me.name and p.cluster),
        listen_leafnodes=hub == me.site,
        leaf_remotes=remotes,
        jetstream_clustered=clustered,
        route_pins=_pins(mine),
        leaf_pins=_pins(others) if hub == me.site else None,
        peers_by_site={s: tuple(p.name for p in ps) for s, ps in by_site.items()},
    )


def _pins(peers: Iterable[BusPeer]) -> tuple[str, ...] | None:
    peers = list(peers)
    if any(not p.pin for p in peers):
        return None
    return tuple(sorted({p.pin for p in peers}))
