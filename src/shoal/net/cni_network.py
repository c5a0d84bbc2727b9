"""The pod network through the CNI plugins: one network namespace and address per pod.

Per pod, ``DATA_DIR/net/pods/<uid>/`` holds ``netns`` (the namespace, see
``shoal.net.netns``), ``resolv.conf`` and ``hosts`` (mounted into every
container), and ``sandbox.json``: the conflist and the CNI result of the ADD, so
that DEL releases exactly what was allocated, even after the node's podCIDR has
changed or the node restarted. host-local keeps its leases under
``DATA_DIR/net/ipam``.

The address range is the node's own Node ``spec.podCIDR`` in the replica (the
pod CIDR allocator in ``shoal.control`` fills it, leaderless); until it is set a
pod waits (``PodNetworkError``), and a changed podCIDR applies to new pods.

After a node restart a pod whose namespace is still alive and passes CNI CHECK
keeps it (and its address); otherwise the old one is released and a fresh one
made. Sandboxes of pods that are no longer bound here are released by
:meth:`CniPodNetwork.collect_garbage`, which the node runs at start and
periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from shoal.net import netns
from shoal.net.cni import (
    BRIDGE,
    LOOPBACK,
    CniError,
    CniRunner,
    PortMapping,
    pod_conflist,
    pod_ips,
    port_mappings,
)
from shoal.net.overlay import run_ip
from shoal.net.pod_etc import HOST_RESOLV_CONF, hosts_file, resolv_conf
from shoal.node.pod_network import PodNetworkError, PodSandbox, host_network

log = logging.getLogger(__name__)

GC_INTERVAL = 60.0  # seconds between sweeps for sandboxes of pods gone while we were down


class CniPodNetwork:
    name = "cni"

    def __init__(self, data_dir: Path, node_ip: str, pod_cidr: Callable[[], str | None],
                 runner: CniRunner | None = None) -> None:
        self.root = data_dir.resolve() / "net"
        self.pods_root = self.root / "pods"
        self.ipam_dir = self.root / "ipam"
        self.node_ip = node_ip
        self.pod_cidr = pod_cidr
        self.runner = runner or CniRunner()
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    async def setup(self, pod: dict[str, Any]) -> PodSandbox:
        if host_network(pod):
            return PodSandbox(ips=(self.node_ip,))
        uid = str(pod["metadata"]["uid"])
        async with self._lock(uid):
            d = self.pods_root / uid
            ips = await self._reuse(pod, d)
            if ips is None:
                ips = await self._create(pod, d)
            host_resolv = ""
            with contextlib.suppress(OSError):
                host_resolv = HOST_RESOLV_CONF.read_text()
            (d / "resolv.conf").write_text(resolv_conf(pod, host_resolv))
            (d / "hosts").write_text(hosts_file(pod, ips))
            return PodSandbox(ips=tuple(ips), netns=d / "netns", resolv_conf=d / "resolv.conf",
                              hosts=d / "hosts")

    async def _reuse(self, pod: dict[str, Any], d: Path) -> list[str] | None:
        """The addresses of a sandbox made earlier that still works, else None (and the
        old one is released)."""
        saved = _load(d)
        if saved is None:
            return None
        if netns.alive(d / "netns"):
            try:
                await self.runner.check(saved["conflist"], d.name, d / "netns", saved["result"],
                                        port_mappings(pod))
                return pod_ips(saved["result"])
            except CniError as e:
                log.info("pod %s: its network failed CNI CHECK (%s); making it afresh",
                         d.name, e)
        await self._release(d, saved)
        return None

    async def _create(self, pod: dict[str, Any], d: Path) -> list[str]:
        cidr = self.pod_cidr()
        if not cidr:
            raise PodNetworkError("the node has no spec.podCIDR yet")
        d.mkdir(parents=True, exist_ok=True)
        ns_path = d / "netns"
        try:
            await netns.create(ns_path)
            await self.runner.add(LOOPBACK, d.name, ns_path)
            conflist = pod_conflist(cidr, self.ipam_dir)
            ports = port_mappings(pod)
            result = await self.runner.add(conflist, d.name, ns_path, ports)
        except (CniError, netns.NetnsError, OSError) as e:
            with contextlib.suppress(CniError, netns.NetnsError, OSError):
                await self.runner.delete(pod_conflist(cidr, self.ipam_dir), d.name, ns_path,
                                         None, port_mappings(pod))
            with contextlib.suppress(netns.NetnsError, OSError):
                await netns.remove(ns_path)
            raise PodNetworkError(f"pod network: {e}") from e
        _save(d, {"conflist": conflist, "result": result,
                  "ports": [p.__dict__ for p in ports]})
        await self._keep_old_gateways(cidr)
        ips = pod_ips(result)
        log.info("pod %s/%s: %s in its own network namespace",
                 (pod["metadata"].get("namespace") or "default"), pod["metadata"]["name"],
                 ", ".join(ips))
        return ips

    async def _keep_old_gateways(self, cidr: str) -> None:
        """After the podCIDR changed: the bridge holds only the new gateway, so give it back
        the gateways of the pods still running in an older range (their default route)."""
        for uid in self.sandboxes():
            saved = _load(self.pods_root / uid)
            if saved is None:
                continue
            rng = saved["conflist"]["plugins"][0]["ipam"]["ranges"][0][0]
            if rng["subnet"] != cidr:
                prefix = rng["subnet"].split("/")[1]
                await run_ip("addr", "replace", f"{rng['gateway']}/{prefix}", "dev", BRIDGE)

    async def teardown(self, uid: str, namespace: str, name: str) -> None:
        async with self._lock(uid):
            d = self.pods_root / uid
            if d.exists():
                await self._release(d, _load(d))
                shutil.rmtree(d, ignore_errors=True)
        self._locks.pop(uid, None)

    async def _release(self, d: Path, saved: dict[str, Any] | None) -> None:
        """CNI DEL (address, veth, port mappings) and the namespace; errors are logged."""
        ns_path = d / "netns"
        if saved is not None:
            ports = [PortMapping(**p) for p in saved.get("ports") or []]
            try:
                await self.runner.delete(saved["conflist"], d.name,
                                         ns_path if netns.alive(ns_path) else None,
                                         saved["result"], ports)
            except (CniError, OSError) as e:  # OSError: a plugin is missing (uninstalled)
                log.warning("pod %s: CNI DEL: %s", d.name, e)
        with contextlib.suppress(FileNotFoundError):
            (d / "sandbox.json").unlink()
        try:
            await netns.remove(ns_path)
        except netns.NetnsError as e:
            log.warning("pod %s: %s", d.name, e)

    def sandboxes(self) -> list[str]:
        """The pod uids that have a sandbox directory here."""
        if not self.pods_root.is_dir():
            return []
        return sorted(p.name for p in self.pods_root.iterdir() if p.is_dir())

    async def collect_garbage(self, bound_here: Callable[[], set[str]]) -> int:
        """Release the sandboxes of pods no longer bound to this node; how many."""
        gone = [uid for uid in self.sandboxes() if uid not in bound_here()]
        for uid in gone:
            log.info("pod %s: gone, releasing its network", uid)
            await self.teardown(uid, "", "")
        return len(gone)

    async def run_garbage_collector(self, bound_here: Callable[[], set[str]],
                                    interval: float = GC_INTERVAL) -> None:
        while True:
            try:
                await self.collect_garbage(bound_here)
            except OSError as e:
                log.warning("pod network garbage collection: %s", e)
            await asyncio.sleep(interval)


def _load(d: Path) -> dict[str, Any] | None:
    try:
        saved: dict[str, Any] = orjson.loads((d / "sandbox.json").read_bytes())
        return saved
    except (OSError, orjson.JSONDecodeError):
        return None


def _save(d: Path, saved: dict[str, Any]) -> None:
    tmp = d / "sandbox.json.tmp"
    tmp.write_bytes(orjson.dumps(saved))
    tmp.replace(d / "sandbox.json")
