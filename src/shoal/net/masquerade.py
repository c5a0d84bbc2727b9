"""Masquerade pod traffic that leaves the cluster, and only that.

One nftables table of our own, ``ip shoal-podnet``: packets from the cluster's
pod CIDR to anything outside it and outside the service CIDR leave with the
node's address. Pod-to-pod traffic, on one node or across the overlay, keeps the
pod's address (Services and NetworkPolicy-like rules need to see it); traffic to
a Service has already been DNATed to a pod address (or to the node's DNS
listener, a .1 in the pod CIDR) before postrouting.

The table is replaced in one ``nft -f`` transaction, so re-applying is
idempotent and never leaves a half-written rule set.
"""

from __future__ import annotations

import asyncio

from shoal.node.subprocesses import communicate

TABLE = "shoal-podnet"


def ruleset(cluster_cidr: str, service_cidr: str) -> str:
    return (
        f"table ip {TABLE}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {cluster_cidr} ip daddr != {cluster_cidr} ip daddr != {service_cidr} "
        "masquerade\n"
        "  }\n"
        "}\n"
    )


async def apply(cluster_cidr: str, service_cidr: str) -> None:
    await _nft(ruleset(cluster_cidr, service_cidr))


async def remove() -> None:
    await _nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n")


async def _nft(script: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "nft", "-f", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await communicate(proc, script.encode())
    if proc.returncode != 0:
        raise RuntimeError(f"nft: {err.decode(errors='replace').strip()}")
