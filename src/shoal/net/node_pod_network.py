"""One node's pod network, assembled: which one (``--pod-network``), and what keeps it current.

``cni`` gives every runc pod its own namespace and address (``cni_network``),
routes to the pods of the other nodes of its site over VXLAN (``overlay``) and
of other sites over WireGuard (``wireguard``, when ``wireguard-go`` and ``wg``
are installed), and masquerades pod traffic leaving the cluster
(``masquerade``). Both are re-derived from the replica's Node objects whenever
one changes, and re-asserted every 30 s. ``host`` leaves every pod on the
node's network, as the process runtime must (it cannot put a process in a
namespace of its own). ``auto`` is ``cni`` when the runtime is runc and the CNI
plugins are installed, else ``host``; the choice and its reason are logged.

A stop leaves the pods' namespaces (and their addresses) and ``wireguard-go`` for the
next start. A start releases what an earlier run on the same data dir left and this
run will not use, whatever the runtime was then: with ``host``, the pods' namespaces
under ``DATA_DIR/net/pods`` (CNI DEL, unmount); without WireGuard, or under another
device name, that run's ``wireguard-go`` (``wireguard.stop_left_behind``). Everything
it touches is found through the data dir, so another node's is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from shoal.net import masquerade, wireguard
from shoal.net.cni import CniRunner
from shoal.net.cni_network import CniPodNetwork
from shoal.net.overlay import Overlay, node_pod_cidr
from shoal.net.wireguard import WireGuard
from shoal.node.pod_network import HostNetwork, PodNetwork
from shoal.store.objects import ObjectStore
from shoal.store.service_ips import SERVICE_CIDR

log = logging.getLogger(__name__)

RESYNC = 30.0  # seconds: re-assert every route and peer, in case something flushed them

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

    def __init__(self, mode: str, runtime: str, store: ObjectStore, node_name: str,
                 node_ip: str, data_dir: Path, cluster_cidr: str = "10.42.0.0/16") -> None:
        self.mode, why = choose_mode(mode, runtime)
        log.info("pod network: %s (%s)", self.mode, why)
        self.replica = replica = store.replica
        self.node_name = node_name
        self.node_ip = node_ip
        self.data_dir = data_dir
        self.cluster_cidr = cluster_cidr
        self.overlay: Overlay | None = None
        self.wireguard: WireGuard | None = None
        self.cni: CniPodNetwork | None = None
        self._wake = asyncio.Event()
        self.network: PodNetwork = HostNetwork(node_ip)
        if self.mode == "cni":
            self.cni = CniPodNetwork(data_dir, node_ip, self.pod_cidr)
            self.network = self.cni
            self.overlay = Overlay(node_name, node_ip, lambda: replica.list("nodes"))
            if shutil.which("wireguard-go") and shutil.which("wg"):
                self.wireguard = WireGuard(node_name, data_dir, store)
            else:
                log.warning("pod network: no wireguard-go or wg (Debian packages wireguard-go, "
                            "wireguard-tools): pods of other sites (zones) are unreachable")
        self._tasks: list[asyncio.Task[Any]] = []
        self._wireguard_retry_at = 0.0  # loop time before which a failed start is not retried

    def pod_cidr(self) -> str | None:
        node = self.replica.get("nodes", "", self.node_name)
        return node_pod_cidr(node) if node is not None else None

    def bound_here(self) -> set[str]:
        return {str(p["metadata"].get("uid")) for p in self.replica.list("pods")
                if (p.get("spec") or {}).get("nodeName") == self.node_name}

    async def start(self) -> None:
        await self.release_left_behind()
        if self.cni is None or self.overlay is None:
            return
        await masquerade.apply(self.cluster_cidr, str(SERVICE_CIDR))
        await self._start_wireguard()
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._sync_loop(), name="pod-network-routes"),
            loop.create_task(self._watch_nodes(), name="pod-network-nodes"),
            loop.create_task(self.cni.run_garbage_collector(self.bound_here),
                             name="pod-network-gc"),
        ]

    async def release_left_behind(self) -> None:
        """What an earlier run on this data dir left that this run will not use."""
        if self.cni is None:
            earlier = CniPodNetwork(self.data_dir, self.node_ip, lambda: None)
            if released := await earlier.collect_garbage(set):  # this run keeps none
                log.info("pod network: released %d pod namespace(s) an earlier run with "
                         "--pod-network cni left", released)
        await wireguard.stop_left_behind(
            self.node_name, self.data_dir,
            keep=self.wireguard.device if self.wireguard is not None else None)

    async def _start_wireguard(self) -> bool:
        """Whether WireGuard runs. A failed start is tried again at most every RESYNC seconds
        (an older wireguard-go of this node may still be exiting), never given up on."""
        wg = self.wireguard
        if wg is None or wg.started:
            return wg is not None
        now = asyncio.get_running_loop().time()
        if now < self._wireguard_retry_at:
            return False
        try:
            await wg.start()
        except (RuntimeError, OSError) as e:
            self._wireguard_retry_at = now + RESYNC
            log.error("wireguard: %s; pods of other sites (zones) are unreachable until it "
                      "starts (next try in %.0f s)", e, RESYNC)
            return False
        return True

    async def _watch_nodes(self) -> None:
        sub = self.replica.subscribe(lambda c: c.resource == "nodes")
        while True:
            change = await sub.queue.get()
            if change is None:  # the feed dropped us: subscribe again and resync
                sub = self.replica.subscribe(lambda c: c.resource == "nodes")
            self._wake.set()

    async def _sync_loop(self) -> None:
        """Routes to the other nodes' pods, each time the Node objects change."""
        assert self.overlay is not None
        while True:
            self._wake.clear()
            try:
                await self.overlay.sync()
                if self.wireguard is not None and await self._start_wireguard():
                    await self.wireguard.sync(self.replica.list("nodes"))
            except Exception:
                log.exception("pod network: routes to other nodes failed")
            try:
                async with asyncio.timeout(RESYNC):
                    await self._wake.wait()
            except TimeoutError:
                self.overlay.forget()

    async def stop(self) -> None:
        """Stop the loops; namespaces, routes and rules stay for the pods and the next start."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
