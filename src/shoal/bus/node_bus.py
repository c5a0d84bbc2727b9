"""One node's bus: announces its endpoints on its Node, keeps its nats-server configured.

At start the node writes its bus endpoints into annotations on its own Node object
(:mod:`shoal.bus.site_topology`), so every peer learns them through the replica, and
starts nats-server on the configuration its replica implies. A port that was only a
default and that another node on this host announces is moved first: a peer alone in
its site has no route listener yet, so its cluster port looks free to a second peer,
which took it and then lost it when the first became clustered (a restart that failed
twice, then a move). Then, every ``poll``
seconds, it renders the configuration again when the Nodes, the members that left or the
certificate files changed; a new configuration that differs only in what nats-server 2.9
reloads (the cluster's routes, the certificates) is a reload, anything else a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import socket
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from shoal.bus import nats_config, site_topology
from shoal.bus.nats_config import BusSettings
from shoal.bus.site_topology import BusPeer, SiteTopology
from shoal.bus.supervisor import NatsSupervisor
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

NODES = "nodes"
_TAKEN = re.compile(r":(\d+): bind: address already in use")


def free_port(host: str) -> int:
    """A port the kernel says is free on ``host`` now (for ports given as 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def resolve_ports(settings: BusSettings) -> BusSettings:
    """``settings`` with every port given as 0 replaced by a free one."""
    return replace(settings,
                   client_port=settings.client_port or free_port(settings.bind),
                   cluster_port=settings.cluster_port or free_port(settings.bind),
                   leafnode_port=settings.leafnode_port or free_port(settings.bind))


class NodeBus:
    def __init__(self, store: ObjectStore, settings: BusSettings, data_dir: Path,
                 gone: Callable[[], Collection[str]] = lambda: (), poll: float = 1.0,
                 binary: str | None = None, movable_ports: Collection[str] = (),
                 on_moved: Callable[[str], None] | None = None) -> None:
        """``data_dir``: the bus's own directory (config, pid file, log, JetStream);
        ``gone``: the members that left the mesh, whose Nodes are not routed to;
        ``movable_ports``: the ports (``client_port``, ``cluster_port``,
        ``leafnode_port``) that were defaults and may move to free ones when nats-server
        finds one taken (``on_moved`` is told the new client URL)."""
        self.store = store
        self.settings = resolve_ports(settings)
        self.dir = data_dir
        self.gone = gone
        self.poll = poll
        self.supervisor = NatsSupervisor(data_dir / "nats-server.json",
                                         data_dir / "nats-server.pid",
                                         data_dir / "nats-server.log", binary=binary)
        self.topology: SiteTopology | None = None
        self._applied: dict[str, Any] | None = None
        self._seen: tuple[Any, ...] = ()
        self._applied_stamps: tuple[int, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0
        self.restarts = 0
        # A port given as 0 was any free port: it may move too when it is taken before
        # nats-server binds it (another process took it between the pick and the bind).
        self.movable_ports = frozenset(movable_ports) | {
            f for f in ("client_port", "cluster_port", "leafnode_port")
            if getattr(settings, f) == 0}
        self.on_moved = on_moved
        self._checked_restarts = 0
        self._moved_at = -1

    @property
    def url(self) -> str:
        """Where this node's pods reach the bus."""
        return f"nats://{self.settings.endpoint(self.settings.client_port)}"

    def _me(self) -> BusPeer:
        node = self.store.replica.get(NODES, "", self.settings.name) or {
            "metadata": {"name": self.settings.name}}
        announced = copy.deepcopy(node)
        announced.setdefault("metadata", {})["annotations"] = {
            **(node.get("metadata", {}).get("annotations") or {}), **self._annotations()}
        peer = site_topology.peer_of_node(announced)
        assert peer is not None
        return peer

    def _annotations(self) -> dict[str, str]:
        s = self.settings
        out = {site_topology.CLIENT_ANNOTATION: s.endpoint(s.client_port),
               site_topology.CLUSTER_ANNOTATION: s.endpoint(s.cluster_port),
               site_topology.LEAF_ANNOTATION: s.endpoint(s.leafnode_port)}
        if s.tls is not None and s.tls.cert.exists():
            out[site_topology.PIN_ANNOTATION] = nats_config.spki_sha256(s.tls.cert.read_bytes())
        return out

    async def announce(self) -> bool:
        """Write this bus's endpoints on this node's Node (True once they are there)."""
        kind = self.store.registry.by_kind("v1", "Node")
        assert kind is not None
        node = self.store.find(kind, None, self.settings.name)
        if node is None:
            return False
        annotations = node.get("metadata", {}).get("annotations") or {}
        want = self._annotations()
        if all(annotations.get(k) == v for k, v in want.items()):
            return True
        new = copy.deepcopy(node)
        new["metadata"]["annotations"] = {**annotations, **want}
        try:
            await self.store.update(kind, new, None, self.settings.name, check_rv=False)
        except StoreError as e:
            log.warning("bus: cannot announce its endpoints on Node %s: %s",
                        self.settings.name, e)
            return False
        return True

    def render(self) -> dict[str, Any]:
        nodes = self.store.replica.list(NODES)
        self.topology = site_topology.topology(self._me(), nodes, set(self.gone()))
        return nats_config.render(self.settings, self.topology)

    def _cert_stamps(self) -> tuple[int, ...]:
        tls = self.settings.tls
        return tuple(p.stat().st_mtime_ns if p.exists() else 0
                     for p in ((tls.cert, tls.key, tls.ca) if tls else ()))

    def _fingerprint(self) -> tuple[Any, ...]:
        return (self.store.replica.resource_revision(NODES), tuple(sorted(self.gone())),
                self._cert_stamps())

    def announced_here(self) -> set[int]:
        """The ports other nodes on this host (our advertised address) announce for their
        buses, listening on them yet or not."""
        host = self.settings.endpoint(0).rpartition(":")[0]
        ports = set()
        for node in self.store.replica.list(NODES):
            peer = site_topology.peer_of_node(node)
            if peer is None or peer.name == self.settings.name:
                continue
            for endpoint in (peer.client, peer.cluster, peer.leafnodes):
                their_host, _, port = endpoint.rpartition(":")
                if their_host == host and port.isdigit():
                    ports.add(int(port))
        return ports

    def _avoid_announced_ports(self) -> None:
        taken = self.announced_here()
        clash = [f for f in sorted(self.movable_ports) if getattr(self.settings, f) in taken]
        if clash:
            self.settings = self._with_free(clash)
            log.info("bus: %s announced by another node on this host; using %s instead "
                     "(cluster %d, leafnodes %d)", ", ".join(clash), self.url,
                     self.settings.cluster_port, self.settings.leafnode_port)
            if self.on_moved is not None:
                self.on_moved(self.url)

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._avoid_announced_ports()
        await self.announce()
        self._seen = self._fingerprint()
        self._applied_stamps = self._cert_stamps()
        conf = self.render()
        await self.supervisor.start(nats_config.config_text(conf))
        self._applied = conf
        log.info("bus: %s on %s (site %s%s)", self.settings.name, self.url,
                 self.topology.site if self.topology else "?",
                 ", hub" if self.topology and self.topology.is_hub else "")
        self._task = asyncio.create_task(self._keep_configured(), name="bus-config")

    def refresh(self) -> str:
        """Render again and apply: "reload", "restart" or "" when nothing changed."""
        conf = self.render()
        stamps = self._cert_stamps()
        renewed, self._applied_stamps = stamps != self._applied_stamps, stamps
        if conf == self._applied:
            if not renewed:
                return ""
            # Same file names, new certificates (a renewal): nats-server rereads them.
            self.supervisor.reload(nats_config.config_text(conf))
            self.reloads += 1
            return "reload"
        text = nats_config.config_text(conf)
        assert self._applied is not None
        if nats_config.restart_key(conf) == nats_config.restart_key(self._applied):
            self.supervisor.reload(text)
            self.reloads += 1
            outcome = "reload"
        else:
            self.supervisor.restart(text)
            self.restarts += 1
            outcome = "restart"
        self._applied = conf
        return outcome

    async def _keep_configured(self) -> None:
        announced = False
        while True:
            await asyncio.sleep(self.poll)
            try:
                if self._ports_taken():
                    self._move_ports()
                    announced = False
                seen = self._fingerprint()
                if seen == self._seen and announced:
                    continue
                # Our own endpoints or key may have changed too (a renewal, a restart).
                announced = await self.announce()
                self._seen = self._fingerprint()
                self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad pass must not end the bus's upkeep
                log.exception("bus: configuring nats-server failed")

    def _ports_taken(self) -> bool:
        """Whether the server died because a port was taken (another node on this host
        chose the same default between our check and its bind): looked for while it is
        down, once per start that failed."""
        restarts = self.supervisor.restarts
        down = self.supervisor.pid is None
        if not self.movable_ports or self._moved_at == restarts or (
                restarts == self._checked_restarts and not down):
            return False
        try:
            with open(self.supervisor.log_file, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 4096))
                tail = f.read().decode(errors="replace")
        except OSError:
            return False
        last_start = tail.rfind("Starting nats-server")
        s = self.settings
        mine = {s.client_port, s.cluster_port, s.leafnode_port}
        # Only a port it still has: a start on the old ports that raced a move is stale.
        taken = any(int(port) in mine for port in _TAKEN.findall(tail[max(last_start, 0):]))
        if taken:
            self._moved_at = restarts
        elif not down:
            self._checked_restarts = restarts
        return taken

    def _with_free(self, ports: Collection[str]) -> BusSettings:
        """The settings with these ports (``client_port``...) moved to free ones."""
        s = self.settings
        return resolve_ports(replace(
            s, client_port=0 if "client_port" in ports else s.client_port,
            cluster_port=0 if "cluster_port" in ports else s.cluster_port,
            leafnode_port=0 if "leafnode_port" in ports else s.leafnode_port))

    def _move_ports(self) -> None:
        self.settings = self._with_free(self.movable_ports)
        log.warning("bus: a port of nats-server was taken; moving to %s (cluster %d, "
                    "leafnodes %d)", self.url, self.settings.cluster_port,
                    self.settings.leafnode_port)
        self._seen = ()
        if self.on_moved is not None:
            self.on_moved(self.url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.supervisor.stop()
