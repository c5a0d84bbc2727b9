"""WireGuard between sites: encrypted routes to the pods of nodes in other zones.

A *site* is a Node's ``topology.kubernetes.io/zone`` label (no label: the
default site). Inside a site, pods travel over VXLAN (``shoal.net.overlay``);
between sites, over WireGuard, in userspace (``wireguard-go``: this kernel has
no wireguard module) and configured with ``wg``.

- Keys: ``DATA_DIR/wireguard/private.key`` (0600), made once with ``wg genkey``.
  The public key is published as the Node annotation
  ``shoal.dev/wireguard-public-key``, so the other nodes learn it from their
  replicas: no extra exchange, and it works offline.
- The device is named after the node and its data dir (``wg-<8 hex>``): ``wg``
  finds a userspace device by a socket under ``/var/run/wireguard`` named after
  the interface, and that directory is the host's, whatever the network
  namespace. Two nodes on one host (the tests, the demo, two test runs at once)
  must not share a name: with the same name the second ``wireguard-go`` fails
  ("UAPI listen error: unix socket in use"), or worse, ``wg set`` reconfigures
  the other node's device. The name of a node's data dir is stable across its
  restarts, so a restarted node finds its device again. UDP port 51820.
- ``wireguard-go`` runs as a daemon, which outlives the node (it is meant to: the next
  start finds its device and peers). Its device name is recorded in
  ``DATA_DIR/wireguard/interface``; a start that will not run WireGuard (the process
  runtime, the host pod network, no ``wg``) or runs it under another name stops the
  ``wireguard-go`` of the recorded device (:func:`stop_left_behind`), and no other.
- Every node dials every other site's node at its InternalIP with a persistent
  keepalive of 25 s. A node behind NAT cannot be dialled, but it dials out; its
  peer learns the NAT's address from the authenticated handshake (WireGuard's
  roaming) and answers there, and the keepalive holds the NAT mapping open. The
  endpoint is therefore set only when a peer is first added, never re-asserted
  over a roamed one.
- Per remote node: one peer whose allowed-ips is its podCIDR, and one route
  ``<podCIDR> dev <device>``.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.net.overlay import internal_ip, node_pod_cidr, run_ip, zone
from shoal.node import host_processes
from shoal.node.subprocesses import communicate
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

PORT = 51820
KEEPALIVE = 25  # seconds: holds a NAT mapping open from the side that dials
KEY_ANNOTATION = "shoal.dev/wireguard-public-key"
DIR = "wireguard"  # under the data dir
INTERFACE_FILE = "interface"  # the device the last run's wireguard-go serves


def interface_name(node_name: str, data_dir: Path) -> str:
    """Unique per node and data dir on a host (its UAPI socket is host-wide), at most 15
    characters (IFNAMSIZ)."""
    ident = f"{node_name}\0{data_dir.resolve()}"
    return "wg-" + hashlib.sha256(ident.encode()).hexdigest()[:8]


def _daemon_of(device: str) -> list[int]:
    """The wireguard-go processes serving ``device`` (its daemon: ``wireguard-go DEV``)."""
    return host_processes.matching(
        lambda args: len(args) == 2 and os.path.basename(args[0]) == "wireguard-go"
        and args[1] == device)


async def stop_left_behind(node_name: str, data_dir: Path, keep: str | None) -> str | None:
    """Stop the wireguard-go an earlier run on ``data_dir`` left, unless it serves ``keep``
    (the device this run uses); the device it stopped, if any. The device is the one
    recorded in the data dir, or, from a run older than the record, the name this node
    would have had (when it has a WireGuard key, so it ran WireGuard)."""
    wg_dir = data_dir.resolve() / DIR
    record = wg_dir / INTERFACE_FILE
    try:
        device = record.read_text().strip()
    except OSError:
        device = interface_name(node_name, data_dir) if (wg_dir / "private.key").exists() \
            else ""
    if not device or device == keep:
        return None
    pids = _daemon_of(device)
    if pids:
        log.info("wireguard: stopping wireguard-go %s (%s) left by an earlier run",
                 ", ".join(map(str, pids)), device)
        await host_processes.terminate(pids)
    record.unlink(missing_ok=True)
    return device if pids else None


@dataclass(frozen=True)
class SitePeer:
    name: str
    public_key: str
    endpoint: str  # its InternalIP
    pod_cidr: str


def site_peers(nodes: list[dict[str, Any]], self_name: str) -> set[SitePeer]:
    """The nodes of other sites that published a key and have a podCIDR and an InternalIP."""
    me = next((n for n in nodes if (n.get("metadata") or {}).get("name") == self_name), None)
    my_zone = zone(me)
    out = set()
    for n in nodes:
        meta = n.get("metadata") or {}
        key = (meta.get("annotations") or {}).get(KEY_ANNOTATION)
        cidr, ip = node_pod_cidr(n), internal_ip(n)
        if meta.get("name") != self_name and zone(n) != my_zone and key and cidr and ip:
            out.add(SitePeer(str(meta["name"]), str(key), ip, cidr))
    return out


async def _wg(*args: str, stdin: bytes | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "wg", *args, stdin=asyncio.subprocess.PIPE if stdin is not None else
        asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await communicate(proc, stdin)
    if proc.returncode != 0:
        raise RuntimeError(f"wg {' '.join(args[:2])}: {err.decode(errors='replace').strip()}")
    return out.decode().strip()


class WireGuard:
    """Keeps this node's WireGuard device and peers equal to the other sites' Node objects."""

    def __init__(self, node_name: str, data_dir: Path, store: ObjectStore,
                 port: int = PORT) -> None:
        self.node_name = node_name
        self.dir = data_dir.resolve() / DIR
        self.store = store
        self.port = port
        self.device = interface_name(node_name, data_dir)
        self.public_key = ""
        self.peers: dict[str, SitePeer] = {}  # by public key
        self.started = False

    async def start(self) -> None:
        """Keys, the published public key, and the device."""
        self.dir.mkdir(parents=True, exist_ok=True)
        private = self.dir / "private.key"
        if not private.exists():
            key = await _wg("genkey")
            fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
        self.public_key = await _wg("pubkey", stdin=private.read_bytes())
        await self.publish()
        (self.dir / INTERFACE_FILE).write_text(self.device + "\n")  # before it can outlive us
        if await run_ip("link", "show", self.device) is not None:
            # It forks a daemon that keeps its output: a file, never a pipe we would wait on.
            with open(self.dir / "wireguard-go.log", "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    "wireguard-go", self.device, stdin=asyncio.subprocess.DEVNULL,
                    stdout=out, stderr=out)
                await communicate(proc)
                if proc.returncode != 0:
                    raise RuntimeError(f"wireguard-go {self.device} failed: see {out.name}")
            self.peers = {}
        await _wg("set", self.device, "private-key", str(private), "listen-port", str(self.port))
        if err := await run_ip("link", "set", self.device, "up"):
            raise RuntimeError(f"{self.device} up: {err}")
        self.started = True
        log.info("wireguard: %s on UDP %d, public key %s", self.device, self.port,
                 self.public_key)

    async def publish(self) -> None:
        """Our public key on our Node object (the only thing the other sites need)."""
        kind = self.store.registry.by_kind("v1", "Node")
        node = self.store.find(kind, None, self.node_name) if kind is not None else None
        if kind is None or node is None:
            return
        if ((node.get("metadata") or {}).get("annotations") or {}).get(
                KEY_ANNOTATION) == self.public_key:
            return
        new = copy.deepcopy(node)
        new["metadata"].setdefault("annotations", {})[KEY_ANNOTATION] = self.public_key
        try:
            await self.store.update(kind, new, None, self.node_name, check_rv=False)
        except StoreError as e:
            log.warning("wireguard: public key not published: %s", e)

    async def sync(self, nodes: list[dict[str, Any]]) -> None:
        if not self.started:
            return
        await self.publish()
        want = {p.public_key: p for p in site_peers(nodes, self.node_name)}
        for key, old in list(self.peers.items()):
            if key not in want or want[key].pod_cidr != old.pod_cidr:
                await run_ip("route", "del", old.pod_cidr, "dev", self.device)
            if key not in want:
                log.info("wireguard: node %s (%s) gone", old.name, old.pod_cidr)
                await _wg("set", self.device, "peer", key, "remove")
                del self.peers[key]
        for key, p in want.items():
            known = self.peers.get(key)
            if known is None:
                await _wg("set", self.device, "peer", key, "allowed-ips", p.pod_cidr,
                          "endpoint", f"{p.endpoint}:{self.port}",
                          "persistent-keepalive", str(KEEPALIVE))
                log.info("wireguard: pods of node %s (%s) via %s", p.name, p.pod_cidr,
                         p.endpoint)
            elif known.pod_cidr != p.pod_cidr:
                await _wg("set", self.device, "peer", key, "allowed-ips", p.pod_cidr)
            if err := await run_ip("route", "replace", p.pod_cidr, "dev", self.device):
                log.warning("wireguard: route to %s: %s", p.pod_cidr, err)
            self.peers[key] = p
