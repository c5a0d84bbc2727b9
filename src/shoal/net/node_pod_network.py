"""One node's pod network, assembled: which one (``--pod-network``), and what keeps it current.

``cni`` gives every runc pod its own namespace and address (``cni_network``),
routes to the other nodes' pods over VXLAN (``overlay``) and masquerades pod
traffic leaving the cluster (``masquerade``). ``host`` leaves every pod on the
node's network, as the process runtime must (it cannot put a process in a
namespace of its own). ``auto`` is ``cni`` when the runtime is runc and the CNI
plugins are installed, else ``host``; the choice and its reason are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from shoal.net import masquerade
from shoal.net.cni import CniRunner
from shoal.net.cni_network import CniPodNetwork
from shoal.net.overlay import Overlay, node_pod_cidr
from shoal.node.pod_network import HostNetwork, PodNetwork
from shoal.store.replica import Replica
from shoal.store.service_ips import SERVICE_CIDR

log = logging.getLogger(__name__)

MODES = ("auto", "cni", "host")


def choose_mode(mode: str, runtime: str, runner: CniRunner | None = None) -> tuple[str, str]:
    """(``cni`` or ``host``, why) for ``--pod-network mode`` with this runtime."""
    if mode not in MODES:
        raise ValueError(f"unknown pod network {mode!r} ({', '.join(MODES)})")
    plugins = (runner or CniRunner()).available()
    if runtime != "runc":
        if mode == "cni":
            log.warning("--pod-network cni needs --runtime runc: the %s runtime runs pods on "
                        "the host's network", runtime)
        return "host", f"the {runtime} runtime runs pods on the host's network (podIP = node IP)"
    if mode == "host":
        return "host", "--pod-network host"
    if not plugins:
        if mode == "cni":
            raise RuntimeError("--pod-network cni: the CNI plugins are missing from /usr/lib/cni "
                               "(Debian package containernetworking-plugins)")
        return "host", "no CNI plugins in /usr/lib/cni (containernetworking-plugins)"
    return "cni", f"--pod-network {mode}: runc and the CNI plugins are here"


class NodePodNetwork:
    """The pod network of this node and its background loops (overlay, garbage collection)."""

    def __init__(self, mode: str, runtime: str, replica: Replica, node_name: str, node_ip: str,
                 data_dir: Path, cluster_cidr: str = "10.42.0.0/16") -> None:
        self.mode, why = choose_mode(mode, runtime)
        log.info("pod network: %s (%s)", self.mode, why)
        self.replica = replica
        self.node_name = node_name
        self.cluster_cidr = cluster_cidr
        self.overlay: Overlay | None = None
        self.cni: CniPodNetwork | None = None
        self.network: PodNetwork = HostNetwork(node_ip)
        if self.mode == "cni":
            self.cni = CniPodNetwork(data_dir, node_ip, self.pod_cidr)
            self.network = self.cni
            self.overlay = Overlay(node_name, node_ip, lambda: replica.list("nodes"))
        self._tasks: list[asyncio.Task[Any]] = []

    def pod_cidr(self) -> str | None:
        node = self.replica.get("nodes", "", self.node_name)
        return node_pod_cidr(node) if node is not None else None

    def bound_here(self) -> set[str]:
        return {str(p["metadata"].get("uid")) for p in self.replica.list("pods")
                if (p.get("spec") or {}).get("nodeName") == self.node_name}

    async def start(self) -> None:
        if self.cni is None or self.overlay is None:
            return
        await masquerade.apply(self.cluster_cidr, str(SERVICE_CIDR))
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self.overlay.run(), name="pod-network-overlay"),
            loop.create_task(self._watch_nodes(), name="pod-network-nodes"),
            loop.create_task(self.cni.run_garbage_collector(self.bound_here),
                             name="pod-network-gc"),
        ]

    async def _watch_nodes(self) -> None:
        assert self.overlay is not None
        sub = self.replica.subscribe(lambda c: c.resource == "nodes")
        while True:
            change = await sub.queue.get()
            if change is None:  # the feed dropped us: subscribe again and resync
                sub = self.replica.subscribe(lambda c: c.resource == "nodes")
            self.overlay.wake()

    async def stop(self) -> None:
        """Stop the loops; namespaces, routes and rules stay for the pods and the next start."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
