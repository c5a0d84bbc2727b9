"""What a node is started with: one frozen settings object per concern.

``shoal server`` builds a :class:`NodeSettings` once, from its flags, ``SHOAL_*``
variables and the config file (``shoal.cli.config_file``), and ``ShoalNode`` hands
each part of the node the object of its concern: the API server its
:class:`ApiSettings`, the mesh a ``MeshConfig`` from :class:`MeshSettings` (with its
``lan``/``wan`` preset), the controllers :class:`ControllerSettings`, the node agent
:class:`AgentSettings`. Nothing is changed after construction.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.mesh import config as mesh_config

log = logging.getLogger("shoal")

WILDCARDS = ("0.0.0.0", "::", "")
MESH_PRESETS: dict[str, Callable[[], mesh_config.MeshConfig]] = {
    "default": mesh_config.default, "lan": mesh_config.lan, "wan": mesh_config.wan,
}


@dataclass(frozen=True)
class ApiSettings:
    bind: str = "127.0.0.1"
    port: int = 6443
    advertise: str | None = None
    """The address clients and peers use; None: --bind (127.0.0.1 for a wildcard bind)."""
    bookmark_interval: float = 60.0
    summary_interval: float = 60.0
    idle_timeout: float | None = None
    """Seconds a connection may wait for a request (or its headers and body take); 0: no
    limit; None: the API server's default (60 s)."""
    tls_handshake_timeout: float | None = None
    """Seconds a connection's TLS handshake may take; None: the idle timeout, at most 60 s."""
    health_port: int | None = None
    """/livez, /readyz and /healthz over plain HTTP on --bind, answered by a thread
    (``shoal.api.health.HealthServer``); None: off; 0: a free port."""

    @property
    def address(self) -> str:
        if self.advertise:
            return self.advertise
        return "127.0.0.1" if self.bind in WILDCARDS else self.bind


@dataclass(frozen=True)
class MeshSettings:
    peer_port: int | None = None
    """None: 7443, or a free port if 7443 is taken; 0: always a free port."""
    peer_advertise: str | None = None
    """host:port peers dial to reach this node, when that is not --advertise:--peer-port."""
    join: str | None = None
    join_token: str | None = None
    join_give_up: float | None = None
    """Seconds after which a first join whose seed does not answer fails; None: never."""
    role: str = "full"
    """full, super (--super-peer) or weak (--sync-via super)."""
    site: str | None = None
    """--site; None: the Node's topology.kubernetes.io/zone label, else no site."""
    region: str | None = None
    """--region; None: derived from the site (``mesh.topology.default_region``)."""
    idle_timeout: float | None = None
    """Seconds an inbound peer connection may stay silent with nothing in flight; 0: no
    limit; None: the transport's default (60 s)."""
    tls_handshake_timeout: float | None = None
    """Seconds a peer connection's TLS handshake (and a node's hello) may take; None: the
    transport's default (10 s)."""
    preset: str = "default"
    """The mesh's timers: default (an edge LAN), lan (fast, reliable) or wan (long round trips)."""

    def mesh_config(self, site: str) -> mesh_config.MeshConfig:
        base = MESH_PRESETS[self.preset]()
        return mesh_config.for_role(dataclasses.replace(base, role=self.role, site=site,
                                                        region=self.region))


@dataclass(frozen=True)
class ControllerSettings:
    node_monitor_grace: float = 40.0
    """Seconds without a Lease renewal before a node is unreachable (NotReady)."""
    pod_eviction_timeout: float = 300.0
    """Seconds a node may be unreachable before its pods are replaced elsewhere."""


@dataclass(frozen=True)
class AgentSettings:
    runtime: str = "auto"
    """auto, process or runc (shoal.node.agent.make_runtime)."""
    heartbeat_interval: float = 10.0
    status_report_every: float | None = None
    """Seconds between Node status writes when nothing changed; None: only on a change."""
    allow_root_pods: bool = False
    pods_dir: Path | None = None
    """Process pods' working dirs and volumes; None: /var/lib/shoal-pods/<node marker>."""
    container_log_max_size: int = 10 * 1024 * 1024
    container_log_max_files: int = 5


@dataclass(frozen=True)
class NetworkSettings:
    cluster_cidr: str = "10.42.0.0/16"
    """The pod address range; each node gets a /24 of it (shoal.control.node_ipam)."""
    pod_network: str = "auto"
    """auto, cni or host (shoal.net.node_pod_network.choose_mode)."""
    dns_port: int = 53
    """Where cluster DNS answers on --bind when there is no pod network; 0 turns it off."""
    cluster_domain: str = "cluster.local"
    proxy_mode: str = "auto"
    """auto, nftables or none (shoal.net.service_proxy.proxy_enabled)."""
    ingress_http_port: int | None = None
    """haproxy's HTTP port for Ingresses; None: 80 as root, else off (shoal.net.ingress)."""
    ingress_https_port: int | None = None
    """haproxy's TLS port for Ingresses; None: 443 as root, else off."""


@dataclass(frozen=True)
class BusSettings:
    enabled: bool | None = None
    """Run this node's nats-server; None: when nats-server is installed."""
    port: int | None = None
    cluster_port: int | None = None
    leafnode_port: int | None = None
    mqtt_port: int | None = None  # devices' MQTT listener (issue 15)


@dataclass(frozen=True)
class NodeSettings:
    name: str
    data_dir: Path
    api: ApiSettings = field(default_factory=ApiSettings)
    mesh: MeshSettings = field(default_factory=MeshSettings)
    controllers: ControllerSettings = field(default_factory=ControllerSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    bus: BusSettings = field(default_factory=BusSettings)


def default_route_address(family: int = socket.AF_INET) -> str | None:
    """The source address the kernel picks for the default route (the interface peers on
    other hosts most likely reach), or None without one. Connecting a UDP socket sends
    nothing; it only asks the routing table."""
    probe = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if address in WILDCARDS else address


class NoAdvertiseAddress(Exception):
    """--bind is a wildcard, --advertise is missing and no default route says which."""


def advertise_for(bind: str, advertise: str | None) -> str | None:
    """--advertise, or for a wildcard --bind the default route's address (logged)."""
    if advertise or bind not in WILDCARDS:
        return advertise
    found = default_route_address(socket.AF_INET6 if bind == "::" else socket.AF_INET)
    if found is None:
        raise NoAdvertiseAddress(
            f"--bind {bind} needs --advertise ADDRESS: this host has no default route to "
            "pick the address peers and clients should use")
    log.info("--bind %s with no --advertise: advertising %s, the address of the default "
             "route's interface (pass --advertise to choose another)", bind, found)
    return found
