"""The node's cluster DNS: the index that follows the replica, the server, and where it listens.

The listener is the pod bridge's gateway (``.1`` of the node's podCIDR) on port
53 when the pod network is on, so pods reach it through the kube-dns Service
rules without leaving the node; otherwise the node's ``--bind`` address on
``--dns-port``. The podCIDR arrives after start-up, so the placement is checked
every few seconds and the listener moves when it changes. A bind failure is
logged (once per address) and retried; it never stops the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.mesh.catch_up import CatchUp, may_create_defaults, until_may_create_defaults
from shoal.net.dns_records import DnsIndex, follow
from shoal.net.dns_server import DnsServer, read_upstreams
from shoal.net.dns_service import ensure_kube_dns
from shoal.node.dns_config import CLUSTER_DOMAIN, DNS_PORT
from shoal.store.objects import ObjectStore

log = logging.getLogger(__name__)

Listener = tuple[str, int]
NAMESPACE_RETRY = 1.0
"""Seconds before the next try at kube-dns while ``kube-system`` is missing."""


@dataclass
class DnsSettings:
    port: int = DNS_PORT
    """The port on the node's bind address when there is no pod network; 0 turns DNS off."""
    bind: str = "127.0.0.1"
    cluster_domain: str = CLUSTER_DOMAIN
    resolv_conf: Path = field(default_factory=lambda: Path("/etc/resolv.conf"))
    """The host's resolvers, to which names outside the cluster domain are forwarded."""
    placement_interval: float = 2.0
    """Seconds between checks of where the listener belongs (the podCIDR may change)."""
    ensure_interval: float = 30.0
    """Seconds between checks that kube-dns still exists (a deleted one comes back)."""


def pod_gateway(pod_cidr: str | None) -> str | None:
    """The bridge's address in a podCIDR: its first host (``10.42.3.1`` in ``10.42.3.0/24``)."""
    if not pod_cidr:
        return None
    try:
        return str(ipaddress.ip_network(pod_cidr, strict=False).network_address + 1)
    except ValueError:
        return None


def forwards_to_itself(upstream: tuple[str, int], listener: Listener) -> bool:
    """Whether forwarding to ``upstream`` would reach this very server (a loop)."""
    host, port = upstream
    if port != listener[1]:
        return False
    if host.split("%", 1)[0] == listener[0]:
        return True
    try:
        loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
    return listener[0] in ("0.0.0.0", "::") and loopback


class ClusterDns:
    def __init__(self, store: ObjectStore, settings: DnsSettings,
                 gateway: Callable[[], str | None] = lambda: None) -> None:
        """``gateway``: the pod bridge's address when the pod network is on, else None."""
        self.store = store
        self.settings = settings
        self.gateway = gateway
        self.index = DnsIndex(settings.cluster_domain)
        self.server: DnsServer | None = None
        self._listening: Listener | None = None
        self._failed: Listener | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def listener(self) -> Listener | None:
        """Where the server answers now (the kube-dns Service rules DNAT to it)."""
        return self._listening

    def wanted(self) -> Listener | None:
        if self.settings.port == 0:
            return None
        gateway = self.gateway()
        if gateway is not None:
            return (gateway, DNS_PORT)
        return (self.settings.bind, self.settings.port)

    async def start(self, catch_up: CatchUp | None = None) -> None:
        """Serve, and create the kube-dns Service if this replica lacks it: at once on a
        first node (synced alone) or without a mesh; on a joiner once its first pull
        completed (``may_create_defaults``), as its own create, the later one, would replace
        the cluster's Service (its uid) in the merge."""
        created = may_create_defaults(catch_up)
        if created:
            await ensure_kube_dns(self.store)
        self.index.load(self.store.replica)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(follow(self.store.replica, self.index),
                                            name="dns-index"))
        await self.place()
        self._tasks.append(loop.create_task(self._placement_loop(), name="dns-placement"))
        self._tasks.append(loop.create_task(self._ensure_loop(catch_up, created),
                                            name="dns-service"))

    async def place(self) -> None:
        """Listen where :meth:`wanted` says, moving the listener if needed."""
        want = self.wanted()
        if want == self._listening:
            return
        if self.server is not None:
            await self.server.close()
            self.server, self._listening = None, None
        if want is None:
            return
        server = DnsServer(self.index, [u for u in read_upstreams(self.settings.resolv_conf)
                                        if not forwards_to_itself(u, want)])
        try:
            await server.start(*want, freebind=want[0] != self.settings.bind)
        except OSError as e:
            if self._failed != want:
                log.error("cluster DNS cannot listen on %s:%d (%s); retrying every %gs "
                          "(--dns-port chooses another port, 0 turns DNS off)",
                          *want, e, self.settings.placement_interval)
                self._failed = want
            return
        self.server, self._listening, self._failed = server, want, None
        log.info("cluster DNS for %s answering on %s:%d (UDP and TCP)",
                 self.settings.cluster_domain, *want)

    async def _placement_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.placement_interval)
            try:
                await self.place()
            except Exception:  # the next round tries again; DNS must not take the node down
                log.exception("cluster DNS placement failed")

    async def _ensure_loop(self, catch_up: CatchUp | None, created: bool) -> None:
        if created:
            await asyncio.sleep(self.settings.ensure_interval)
        else:
            await until_may_create_defaults(catch_up)
        while True:
            namespace_missing = False
            try:
                namespace_missing = not await ensure_kube_dns(self.store)
            except Exception:
                log.exception("cannot check the kube-dns Service")
            # kube-system not there yet (a joiner cut off at its join creates it at the same
            # bound, with its heartbeat): look again soon
            await asyncio.sleep(NAMESPACE_RETRY if namespace_missing
                                else self.settings.ensure_interval)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.server is not None:
            await self.server.close()
