"""The bus as the node assembles it: its ports, certificates and directory, the members
that left, the Stream and Consumer kinds, and their reconciler (``shoal.bus.streams``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from shoal.bus import cluster_service
from shoal.bus.crds import ensure_crds
from shoal.bus.nats_config import (
    DEFAULT_CLIENT_PORT,
    DEFAULT_CLUSTER_PORT,
    DEFAULT_LEAFNODE_PORT,
    DEFAULT_MQTT_PORT,
    BusSettings,
    TlsFiles,
    memory_store_limit,
)
from shoal.bus.node_bus import NodeBus, free_port
from shoal.bus.supervisor import nats_server_path
from shoal.mesh.catch_up import CatchUp, may_create
from shoal.mesh.membership import Member
from shoal.mesh.messages import State
from shoal.node.env import bus_env
from shoal.store.objects import ObjectStore

log = logging.getLogger(__name__)

CATCH_UP_WAIT = 10.0
"""Seconds the bus of a node whose replica holds no other Node waits at start for it to
catch up with the mesh. A peer that has just joined knows no other Node yet: it would
start nats-server alone (JetStream standalone, no routes) and restart it clustered a
second later, once replication told it of its site's peers. A restarted node holds the
Nodes already and does not wait (cut off, catching up takes until its peers are held
dead, and its pods start after its bus). Bounded, so that a node whose mesh answers
slowly still gets its bus (restarted when the Nodes say so)."""


def status_interval() -> float:
    """Seconds between writes of a Stream's status (each one replicated to every peer):
    ``SHOAL_BUS_STATUS_INTERVAL``, 10 by default."""
    try:
        return max(0.5, float(os.environ.get("SHOAL_BUS_STATUS_INTERVAL", "10")))
    except ValueError:
        return 10.0


def bus_wanted(flag: bool | None) -> bool:
    """--bus/--no-bus, or by default whether nats-server is installed."""
    if flag is not None:
        return flag
    return nats_server_path() is not None


def port_or_free(host: str, given: int | None, default: int, what: str) -> int:
    """``given`` as is (0: a free port); None: ``default`` if it is free, else a free port
    (several nodes on one host, as in the tests and the demo)."""
    if given is not None:
        return given
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, default))
            return default
        except OSError:
            log.warning("bus: %s port %d is taken; using a free port instead", what, default)
            return 0


@dataclass
class BusPorts:
    client: int | None = None
    cluster: int | None = None
    leafnodes: int | None = None
    mqtt: int | None = None  # devices' MQTT listener (issue 15)


def left_members(members: Iterable[Member]) -> set[str]:
    """Members that left the cluster: no route to them, and their keys are no longer
    accepted. A member merely held dead (as an edge behind a cut uplink is) stays, so
    that its leaf link is taken back at once when the uplink heals."""
    return {m.name for m in members if m.state == State.LEFT}


class BusService:
    """nats-server for this node (:class:`NodeBus`), started once its Node exists, its
    Stream objects (:class:`StreamReconciler`) and its endpoint of the ``nats`` Service."""

    def __init__(self, store: ObjectStore, name: str, data_dir: Path, bind: str,
                 advertise: str, tls: TlsFiles, ports: BusPorts,
                 members: Callable[[], Iterable[Member]]) -> None:
        settings = BusSettings(
            name=name, store_dir=data_dir / "bus" / "jetstream", bind=bind, advertise=advertise,
            client_port=port_or_free(bind, ports.client, DEFAULT_CLIENT_PORT, "client"),
            cluster_port=port_or_free(bind, ports.cluster, DEFAULT_CLUSTER_PORT, "cluster"),
            leafnode_port=port_or_free(bind, ports.leafnodes, DEFAULT_LEAFNODE_PORT, "leafnode"),
            tls=tls, max_memory_store=memory_store_limit(),
            # devices (issue 15): MQTT 1883, or a free port when taken (logged at start)
            mqtt_port=port_or_free(bind, ports.mqtt, DEFAULT_MQTT_PORT, "mqtt")
            or free_port(bind))
        self.env: dict[str, str] = {}
        """Variables to keep current for pods (NATS_URL): :meth:`keep_env` names the dict."""
        self.node_bus = NodeBus(
            store, settings, data_dir / "bus", gone=lambda: left_members(members()),
            movable_ports=[f for f, given in (("client_port", ports.client),
                                              ("cluster_port", ports.cluster),
                                              ("leafnode_port", ports.leafnodes))
                           if given is None],
            on_moved=self._moved)
        self.store = store
        # nats-py (1.4 MB) only on a node that runs the bus
        from shoal.bus.streams import StreamReconciler

        self.streams = StreamReconciler(
            store, lambda: f"nats://{_loopback(bind)}:{self.node_bus.settings.client_port}",
            name,
            lambda: self.node_bus.topology, data_dir / "bus" / "managed-streams.json",
            status_interval=status_interval())
        self._tasks: list[asyncio.Task[None]] = []
        self._caught_up: CatchUp | None = None

    @property
    def url(self) -> str:
        return self.node_bus.url

    def keep_env(self, env: dict[str, str]) -> None:
        """Set NATS_URL in ``env`` (the node agent's variables for every container) now
        and whenever the bus moves."""
        self.env = env
        env.update(bus_env(self.url))

    def _moved(self, url: str) -> None:
        self.env.update(bus_env(url))

    async def start(self, caught_up: CatchUp | None = None) -> None:
        """nats-server on the configuration the replica implies; on a node that knows no
        other Node yet, once the replica has caught up (:data:`CATCH_UP_WAIT`). The
        cluster-wide objects its replica lacks (the CRDs, the ``nats`` Service) are created
        only once a pull completed (``CatchUp.synced``): a joiner's creates would replace the
        cluster's in the merge."""
        self._caught_up = caught_up
        knows_others = any(n["metadata"].get("name") != self.node_bus.settings.name
                           for n in self.store.replica.list("nodes"))
        if caught_up is not None and not caught_up.done() and not knows_others:
            try:
                async with asyncio.timeout(CATCH_UP_WAIT):
                    await caught_up.wait()
            except TimeoutError:
                log.warning("bus: the replica has not caught up with the mesh after %.0f s; "
                            "starting nats-server on the Nodes it holds", CATCH_UP_WAIT)
        await self.node_bus.start()
        self._tasks = [asyncio.create_task(self._install_crds(), name="bus-crds"),
                       asyncio.create_task(self.streams.run(), name="bus-streams"),
                       asyncio.create_task(self._keep_service(), name="bus-service")]

    def _synced(self) -> bool:
        """Whether cluster-wide objects this replica lacks may be created (``CatchUp.synced``)."""
        return may_create(self._caught_up)

    async def _install_crds(self) -> None:
        while not (self._synced() and await ensure_crds(self.store)):
            await asyncio.sleep(1.0)

    async def _keep_service(self, every: float = 5.0) -> None:
        """The ``nats`` Service and this node's endpoint of it (its port may move)."""
        while True:
            s = self.node_bus.settings
            try:
                await cluster_service.publish(self.store, s.name, s.advertise, s.client_port,
                                              ready=self.node_bus.supervisor.pid is not None,
                                              create_service=self._synced())
            except Exception:  # the next pass tries again
                log.exception("bus: writing the nats Service's endpoint failed")
            await asyncio.sleep(every)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.streams.close()
        await self.node_bus.stop()


def _loopback(bind: str) -> str:
    """Where this node reaches its own nats-server."""
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind
