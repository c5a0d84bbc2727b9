"""The node's NetworkPolicy enforcer: keeps the ``inet shoal-netpol`` nftables table in step with its replica.

It wakes on changes to Pods, Namespaces, NetworkPolicies and Services (the
cluster DNS address) in the replica's change feed, renders the table
(``shoal.net.network_policy_rules``) after a short debounce and, if it differs
from what it applied last, replaces it in one ``nft -f`` transaction: packets
see the old rules or the new ones, never a mix. Each side of a partition thus
enforces what its own replica holds. Bridged traffic between two pods of this
node crosses the ``inet`` hooks only with ``br_netfilter``, which
:func:`enable_bridge_filtering` turns on. :meth:`NetworkPolicyEnforcer.stop`
deletes the table.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shoal.net.network_policy_rules import TABLE, NodeFacts, Ruleset, render
from shoal.net.replica_follower import cancel, render_loop
from shoal.net.service_proxy import NftError, run_nft
from shoal.store.change_feed import Change
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

PODS = "pods"
NAMESPACES = "namespaces"
NETWORK_POLICIES = "networkpolicies.networking.k8s.io"
SERVICES = "services"
_BRIDGE_SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


@dataclass
class NetworkPolicySettings:
    cluster_cidr: str = "10.42.0.0/16"
    nft: Sequence[str] = ("nft",)
    debounce: float = 0.05
    """Seconds to wait after a change, so that a burst of writes is one transaction."""
    resync: float = 30.0
    dns_listener: Callable[[], tuple[str, int] | None] = field(default=lambda: None)
    bridge_filtering: bool = True
    """Turn on ``br_netfilter`` at start (tests that must not touch the host say False)."""


def enable_bridge_filtering() -> str | None:
    """Load ``br_netfilter`` and let bridged IPv4 cross the inet hooks; why not, or None."""
    if not _BRIDGE_SYSCTL.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    try:
        if _BRIDGE_SYSCTL.read_text().strip() != "1":
            _BRIDGE_SYSCTL.write_text("1\n")
    except OSError as e:
        return f"br_netfilter unavailable ({e}): pods of one node reach each other unfiltered"
    return None


class NetworkPolicyEnforcer:
    """Renders and applies this node's NetworkPolicy rules whenever their inputs change."""

    def __init__(self, replica: Replica, node_name: str,
                 settings: NetworkPolicySettings | None = None) -> None:
        self.replica = replica
        self.node_name = node_name
        self.settings = settings or NetworkPolicySettings()
        self.applied: Ruleset | None = None
        self._applied_text = ""
        self._task: asyncio.Task[None] | None = None
        self.applies = 0
        self.last_apply_seconds: float | None = None

    def relevant(self, change: Change) -> bool:
        return change.resource in (PODS, NAMESPACES, NETWORK_POLICIES, SERVICES)

    def facts(self) -> NodeFacts:
        dns = self.replica.get(SERVICES, "kube-system", "kube-dns")
        cluster_ip = ((dns or {}).get("spec") or {}).get("clusterIP")
        return NodeFacts(self.node_name, self.settings.cluster_cidr,
                         self.settings.dns_listener(),
                         cluster_ip if isinstance(cluster_ip, str) else None)

    def desired(self) -> Ruleset:
        r = self.replica
        return render(r.list(PODS), r.list(NAMESPACES), r.list(NETWORK_POLICIES), self.facts())

    async def sync(self) -> bool:
        """Render and apply if anything changed; True if a transaction was applied."""
        rules = self.desired()
        text = rules.text()
        if text == self._applied_text:
            return False
        started = time.monotonic()
        await run_nft(self.settings.nft, text)
        self.last_apply_seconds = time.monotonic() - started
        self.applied, self._applied_text = rules, text
        self.applies += 1
        log.debug("network policy rules applied (%d chains)", len(rules.chains))
        return True

    def start(self) -> None:
        why = enable_bridge_filtering() if self.settings.bridge_filtering else None
        if why:
            log.warning("network policy: %s", why)
        self._task = asyncio.create_task(self.run(), name="network-policy")

    async def stop(self) -> None:
        """Stop following the replica and delete the table (nothing of ours stays)."""
        await cancel(self._task)
        self._task = None
        if self.applied is None:
            return
        self.applied, self._applied_text = None, ""
        try:
            await run_nft(self.settings.nft, f"delete table inet {TABLE}\n")
        except NftError as e:
            log.warning("network policy: could not delete the table: %s", e)

    async def run(self) -> None:
        await render_loop(self.replica, self.relevant, self.sync, "network policy",
                          resync=self.settings.resync, debounce=self.settings.debounce)
