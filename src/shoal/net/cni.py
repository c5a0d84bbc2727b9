"""Invoking the standard CNI plugins (Debian ``containernetworking-plugins``) as libcni does.

A plugin is an executable in ``/usr/lib/cni``: its network config comes on stdin,
the operation (``CNI_COMMAND`` ADD, DEL or CHECK) and the container
(``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``) in the environment, and the
result (or a CNI error object) on stdout. A *conflist* chains plugins: ADD runs
them in order, each getting the previous one's result as ``prevResult``; DEL runs
them in reverse with the result ADD returned, which the caller keeps (a DEL must
release what was allocated then, even if the node's podCIDR has changed since).

Shoal's network (:func:`pod_conflist`): ``bridge`` (``shoal0``, the gateway
address .1 of the node's podCIDR) with ``host-local`` addresses from the
podCIDR, then ``portmap`` for ``hostPort``. ``loopback`` is its own one-plugin
network, as the kubelet runs it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shoal.node.subprocesses import communicate

CNI_VERSION = "1.0.0"
PLUGIN_DIR = Path("/usr/lib/cni")
BRIDGE = "shoal0"
IFNAME = "eth0"
NETWORK_NAME = "shoal"
# Pods' MTU on a 1500-byte underlay: WireGuard's overhead (80 bytes with an IPv6 outer
# header; its device's default MTU 1420) is larger than VXLAN's (50), and one MTU for every
# pod means no packet between sites needs path MTU discovery to fit.
POD_MTU = 1420


class CniError(Exception):
    """A plugin failed; ``code`` and ``msg`` come from its CNI error object when it gave one."""

    def __init__(self, plugin: str, command: str, code: int, msg: str) -> None:
        super().__init__(f"CNI {plugin} {command}: {msg} (code {code})")
        self.code = code


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str  # tcp, udp or sctp
    host_ip: str = ""


def pod_conflist(pod_cidr: str, ipam_dir: Path, mtu: int = POD_MTU) -> dict[str, Any]:
    """The node's pod network: a bridge with host-local addresses from ``pod_cidr``."""
    gateway = gateway_address(pod_cidr)
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True,
             # Masquerading is Shoal's own nftables rule: only traffic leaving the cluster.
             "ipMasq": False, "mtu": mtu,
             # A changed podCIDR moves the bridge to its new gateway (the old one is put
             # back beside it for the pods still in the old range: cni_network).
             "forceAddress": True,
             "ipam": {"type": "host-local", "dataDir": str(ipam_dir),
                      "ranges": [[{"subnet": pod_cidr, "gateway": gateway}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


LOOPBACK = {"cniVersion": CNI_VERSION, "name": "cni-loopback", "plugins": [{"type": "loopback"}]}


def gateway_address(pod_cidr: str) -> str:
    """The .1 of a podCIDR: the bridge's address and the pods' default route."""
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address + 1)


def pod_ips(result: dict[str, Any]) -> list[str]:
    """The addresses (without prefix length) a CNI result gave the container."""
    return [str(ip["address"]).split("/")[0] for ip in result.get("ips") or []]


def port_mappings(pod: dict[str, Any]) -> list[PortMapping]:
    """Every container port with a ``hostPort``, as portmap's runtimeConfig wants them."""
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append(PortMapping(int(p["hostPort"]), int(p["containerPort"]),
                                       str(p.get("protocol") or "TCP").lower(),
                                       str(p.get("hostIP") or "")))
    return out


class CniRunner:
    """Runs a conflist's plugins for one container."""

    def __init__(self, plugin_dir: Path = PLUGIN_DIR) -> None:
        self.plugin_dir = plugin_dir

    def available(self) -> bool:
        return all(os.access(self.plugin_dir / p, os.X_OK)
                   for p in ("bridge", "host-local", "portmap", "loopback"))

    async def add(self, conflist: dict[str, Any], container_id: str, netns: Path,
                  ports: Sequence[PortMapping] = ()) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        for plugin in conflist["plugins"]:
            result = await self._invoke("ADD", conflist, plugin, container_id, netns, result,
                                        ports)
        return result or {}

    async def delete(self, conflist: dict[str, Any], container_id: str, netns: Path | None,
                     result: dict[str, Any] | None,
                     ports: Sequence[PortMapping] = ()) -> None:
        """DEL in reverse order; every plugin runs even when one fails (the first error is
        raised at the end), so that what can be released is."""
        first: CniError | None = None
        for plugin in reversed(conflist["plugins"]):
            try:
                await self._invoke("DEL", conflist, plugin, container_id, netns, result, ports)
            except CniError as e:
                first = first or e
        if first is not None:
            raise first

    async def check(self, conflist: dict[str, Any], container_id: str, netns: Path,
                    result: dict[str, Any],
                    ports: Sequence[PortMapping] = ()) -> None:
        for plugin in conflist["plugins"]:
            # portmap 1.1's CHECK looks for an IPv6 chain an IPv4-only pod never gets, and
            # fails; its rules are re-checked by ADD on the next fresh sandbox anyway.
            if plugin["type"] == "portmap" and any(":" not in ip for ip in pod_ips(result)):
                continue
            await self._invoke("CHECK", conflist, plugin, container_id, netns, result, ports)

    async def _invoke(self, command: str, conflist: dict[str, Any], plugin: dict[str, Any],
                      container_id: str, netns: Path | None, prev: dict[str, Any] | None,
                      ports: Sequence[PortMapping]) -> dict[str, Any] | None:
        if (plugin.get("capabilities") or {}).get("portMappings") and not ports:
            return prev  # no hostPort: portmap would do nothing, save its exec
        config = {"cniVersion": conflist["cniVersion"], "name": conflist["name"],
                  **{k: v for k, v in plugin.items() if k != "capabilities"}}
        if prev is not None:
            config["prevResult"] = prev
        if (plugin.get("capabilities") or {}).get("portMappings"):
            config["runtimeConfig"] = {"portMappings": [
                {"hostPort": p.host_port, "containerPort": p.container_port,
                 "protocol": p.protocol, **({"hostIP": p.host_ip} if p.host_ip else {})}
                for p in ports]}
        env = {
            "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
            "CNI_NETNS": str(netns) if netns is not None else "", "CNI_IFNAME": IFNAME,
            "CNI_PATH": str(self.plugin_dir),
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }
        kind = str(plugin["type"])
        proc = await asyncio.create_subprocess_exec(
            str(self.plugin_dir / kind), env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await communicate(proc, orjson.dumps(config))
        if proc.returncode != 0:
            code, msg = proc.returncode or 1, err.decode(errors="replace").strip()
            try:
                obj = orjson.loads(out)
                code = int(obj.get("code", code))
                msg = " ".join(str(obj.get(k)) for k in ("msg", "details") if obj.get(k))
            except (orjson.JSONDecodeError, AttributeError, ValueError):
                msg = msg or out.decode(errors="replace").strip()
            raise CniError(kind, command, code, msg)
        if command != "ADD":
            return prev
        result: dict[str, Any] = orjson.loads(out) if out.strip() else (prev or {})
        return result
