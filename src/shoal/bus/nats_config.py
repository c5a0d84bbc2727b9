"""The nats-server configuration of one peer, rendered from its settings and its site.

The file is JSON, which nats-server's configuration parser reads as it reads its own
format, so nothing here has to quote or escape. Routes and leaf links use the cluster's
certificates with ``verify: true``: a server that presents no certificate signed by the
cluster CA cannot route or link to a Shoal bus. Which parts a reload can change and which
need a restart is :func:`restart_key`'s business.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.bus.site_topology import SiteTopology
from shoal.store.system_crypto import load_pem_certificate

DEFAULT_CLIENT_PORT = 4222
DEFAULT_CLUSTER_PORT = 6222
DEFAULT_LEAFNODE_PORT = 7422
DEFAULT_MQTT_PORT = 1883  # devices (issue 15)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class BusSettings:
    """How this peer's nats-server listens; the topology says whom it talks to."""

    name: str
    store_dir: Path
    """JetStream's files (under the node's data dir)."""
    bind: str = "127.0.0.1"
    advertise: str = "127.0.0.1"
    client_port: int = DEFAULT_CLIENT_PORT
    cluster_port: int = DEFAULT_CLUSTER_PORT
    leafnode_port: int = DEFAULT_LEAFNODE_PORT
    tls: TlsFiles | None = None
    """None only in tests of the rendering: a real node always has its certificates."""
    ping_interval: int = 2
    """Seconds between pings on every connection (nats-server's default is two minutes):
    a cut uplink is noticed after ping_interval * ping_max, and the edge starts storing
    for later instead of writing into a dead socket."""
    ping_max: int = 3
    max_pending: int = 8 * 1024 * 1024
    """Bytes the server buffers for one client before it closes it as a slow consumer
    (nats-server's default is 64 MB: a few stuck clients could take a small node's memory)."""
    write_deadline: str = "2s"
    """How long a write to a client whose socket is full may hold up delivery to others
    before that client is closed (nats-server's default is 10 s)."""
    max_memory_store: int | None = None
    """Bytes JetStream may keep in memory-backed streams on this node (None:
    nats-server's default, 75% of the machine's memory); :func:`memory_store_limit`."""
    mqtt_port: int | None = None
    """The MQTT 3.1.1 listener for devices (None: none); nats-server hands what a device
    publishes on topic ``a/b`` to subject ``a.b`` (issue 15, shoal.devices)."""

    def endpoint(self, port: int) -> str:
        host = f"[{self.advertise}]" if ":" in self.advertise else self.advertise
        return f"{host}:{port}"


def memory_store_limit(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """A quarter of the machine's memory for memory-backed streams, leaving the rest to
    pods (None when /proc/meminfo cannot be read)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 // 4
    except (OSError, ValueError, IndexError):
        pass
    return None


def spki_sha256(cert_pem: bytes) -> str:
    """The hex SHA-256 of a certificate's DER SubjectPublicKeyInfo (nats-server's
    ``pinned_certs``); Shoal keeps a node's key through renewals, so it stays put."""
    return hashlib.sha256(load_pem_certificate(cert_pem).spki_der).hexdigest()


def _tls(settings: BusSettings, verify: bool,
         pins: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    if settings.tls is None:
        return None
    block: dict[str, Any] = {"cert_file": str(settings.tls.cert),
                             "key_file": str(settings.tls.key),
                             "ca_file": str(settings.tls.ca), "timeout": 3}
    if verify:
        block["verify"] = True
    if pins is not None:
        block["pinned_certs"] = list(pins)
    return block


def render(settings: BusSettings, topo: SiteTopology) -> dict[str, Any]:
    """The configuration as a mapping (:func:`config_text` writes it)."""
    conf: dict[str, Any] = {
        "server_name": settings.name,
        "host": settings.bind,
        "port": settings.client_port,
        "ping_interval": f"{settings.ping_interval}s",
        "ping_max": settings.ping_max,
        "max_pending": settings.max_pending,
        "write_deadline": settings.write_deadline,
        "jetstream": {"store_dir": str(settings.store_dir), "domain": topo.site},
    }
    if settings.max_memory_store is not None:
        conf["jetstream"]["max_memory_store"] = settings.max_memory_store
    if settings.mqtt_port is not None:  # devices (issue 15)
        conf["mqtt"] = {"host": settings.bind, "port": settings.mqtt_port}
        if len(topo.site_peers) >= 3:
            # MQTT sessions live in JetStream streams, which nats-server 2.9 made R2 in a
            # site of three: one peer down, and no MQTT device could connect in the site.
            conf["mqtt"]["stream_replicas"] = 3
    if topo.jetstream_clustered:
        cluster: dict[str, Any] = {
            "name": topo.site,
            "host": settings.bind,
            "port": settings.cluster_port,
            "advertise": settings.endpoint(settings.cluster_port),
            "routes": [f"nats-route://{r}" for r in topo.routes],
        }
        tls = _tls(settings, verify=True, pins=topo.route_pins)
        if tls is not None:
            cluster["tls"] = tls
        conf["cluster"] = cluster
    leafnodes: dict[str, Any] = {}
    if topo.listen_leafnodes:
        leafnodes.update(host=settings.bind, port=settings.leafnode_port,
                         advertise=settings.endpoint(settings.leafnode_port))
        tls = _tls(settings, verify=True, pins=topo.leaf_pins)
        if tls is not None:
            leafnodes["tls"] = tls
    if topo.leaf_remotes:
        scheme = "tls" if settings.tls is not None else "nats-leaf"
        remote: dict[str, Any] = {"urls": [f"{scheme}://{r}" for r in topo.leaf_remotes]}
        tls = _tls(settings, verify=False)
        if tls is not None:
            remote["tls"] = tls
        leafnodes["remotes"] = [remote]
        leafnodes["reconnect"] = 1  # seconds between tries to reach the hub (2.9 takes an int)
    if leafnodes:
        conf["leafnodes"] = leafnodes
    return conf


def config_text(conf: dict[str, Any]) -> str:
    return json.dumps(conf, indent=2, sort_keys=True) + "\n"


def restart_key(conf: dict[str, Any]) -> str:
    """What a reload cannot change in nats-server 2.9: everything but the cluster's routes
    and the keys pinned on them (the leaf listener's pins, the leaf remotes and adding or
    removing the cluster need a restart). Two configurations with the same key differ only
    in what SIGHUP applies."""
    stripped = json.loads(json.dumps(conf))
    cluster = stripped.get("cluster")
    if isinstance(cluster, dict):
        cluster.pop("routes", None)
        if isinstance(cluster.get("tls"), dict):
            cluster["tls"].pop("pinned_certs", None)
    return json.dumps(stripped, sort_keys=True)
