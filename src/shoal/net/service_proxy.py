"""The node's Service proxy: keeps the ``ip shoal-services`` nftables table in step with its replica.

It wakes on changes to Services, EndpointSlices and Nodes in the replica's
change feed, and every ``membership_poll`` seconds asks which nodes are
unreachable (a partition changes the rules with no change to any object).
After a short debounce it renders the rules (``shoal.net.service_rules``) and,
if they differ from what it applied last, applies them in one ``nft -f``
transaction: packets see either the old rules or the new ones, never a mix.
Only its own table is ever written; :meth:`ServiceProxy.stop` deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shoal.net.service_rules import TABLE, NodeFacts, Ruleset, render
from shoal.node.subprocesses import communicate
from shoal.store.change_feed import Change
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

SERVICES = "services"
ENDPOINT_SLICES = "endpointslices.discovery.k8s.io"
NODES = "nodes"
PROXY_MODES = ("auto", "nftables", "none")


class NftError(Exception):
    """``nft`` refused a transaction."""


@dataclass
class ProxySettings:
    """How the proxy runs; every field has a default that suits a real node."""

    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    nft: Sequence[str] = ("nft",)
    """The command that runs nft (tests prefix ``ip netns exec <ns>``)."""
    debounce: float = 0.01
    """Seconds to wait after a change, so that a burst of writes is one transaction."""
    membership_poll: float = 1.0
    """Seconds between looks at which nodes are unreachable."""
    resync: float = 30.0
    """Seconds between renders with no change at all (a safety net)."""
    dns_listener: Callable[[], tuple[str, int] | None] = field(default=lambda: None)
    """This node's DNS server, asked at every render (it moves when the podCIDR arrives)."""
    is_reachable: Callable[[str], bool] = field(default=lambda node: True)
    """Whether this node can reach a node now (the mesh's membership)."""
    forwarding: Path | None = Path("/proc/sys/net/ipv4/ip_forward")
    """Where to turn IPv4 forwarding on, as k3s's agent does (None: leave it; the in-process
    test harness, whose nft runs in another namespace): a node port or cluster IP DNATed to
    an endpoint on another node is forwarded. A new network namespace inherits the root's
    value, so without this whether Services reached other nodes depended on what had set
    it before (test_service_proxy_e2e failed after a reboot)."""


def nft_usable(nft: Sequence[str] = ("nft",)) -> str | None:
    """Why nftables cannot be programmed here, or None (``--proxy-mode auto`` asks this)."""
    if shutil.which(nft[0]) is None:
        return f"`{nft[0]}` is missing (Debian package nftables)"
    r = subprocess.run([*nft, "list", "tables"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`nft list tables` fails: {r.stderr.strip() or r.returncode}"
    return None


async def run_nft(nft: Sequence[str], script: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *nft, "-f", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await communicate(proc, script.encode())
    if proc.returncode != 0:
        raise NftError(err.decode(errors="replace").strip() or f"exit {proc.returncode}")


class ServiceProxy:
    """Renders and applies this node's Service rules whenever their inputs change."""

    def __init__(self, replica: Replica, node_name: str,
                 settings: ProxySettings | None = None) -> None:
        self.replica = replica
        self.node_name = node_name
        self.settings = settings or ProxySettings()
        self.applied: Ruleset | None = None
        self._applied_text = ""
        self._facts: NodeFacts | None = None
        self._wake = asyncio.Event()
        self._changed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.applies = 0
        """Transactions applied so far."""
        self.last_delay: float | None = None
        """Seconds from the first change a transaction reflects to the end of ``nft -f``."""

    def relevant(self, change: Change) -> bool:
        return change.resource in (SERVICES, ENDPOINT_SLICES, NODES)

    def facts(self) -> NodeFacts:
        s = self.settings
        nodes = {e.get("nodeName") for sl in self.replica.list(ENDPOINT_SLICES)
                 for e in sl.get("endpoints") or []}
        unreachable = frozenset(n for n in nodes if isinstance(n, str) and n != self.node_name
                                and not s.is_reachable(n))
        return NodeFacts(self.node_name, s.cluster_cidr, s.service_cidr, s.dns_listener(),
                         unreachable)

    def desired(self, facts: NodeFacts | None = None) -> Ruleset:
        """The rules for the replica as it is now."""
        return render(self.replica.list(SERVICES), self.replica.list(ENDPOINT_SLICES),
                      facts or self.facts())

    def up_to_date(self) -> bool:
        """Whether the applied rules are those of the replica and membership as they are now."""
        return self.applied is not None and self.desired().text() == self._applied_text

    async def sync(self) -> bool:
        """Render and apply if anything changed; True if a transaction was applied."""
        changed_at, self._changed_at = self._changed_at, None
        self._facts = self.facts()
        rules = self.desired(self._facts)
        text = rules.text()
        if text == self._applied_text:
            return False
        try:
            await run_nft(self.settings.nft, rules.script(self.applied))
        except NftError as e:
            if self.applied is None:
                raise
            # Someone changed our table under us: replace it whole.
            log.warning("service rules: incremental update refused (%s); replacing the table", e)
            await run_nft(self.settings.nft, rules.script(None))
        self.applied, self._applied_text = rules, text
        self.applies += 1
        if changed_at is not None:
            self.last_delay = time.monotonic() - changed_at
        log.debug("service rules applied (%d chains, unreachable: %s)", len(rules.chains),
                  sorted(self._facts.unreachable) or "none")
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="service-proxy")

    async def stop(self) -> None:
        """Stop watching and delete the table (nothing of ours stays in the kernel)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.applied is not None:
            try:
                await run_nft(self.settings.nft, f"delete table ip {TABLE}\n")
            except NftError as e:
                log.warning("service rules: could not delete the table: %s", e)
            self.applied, self._applied_text = None, ""

    def enable_forwarding(self) -> None:
        path = self.settings.forwarding
        if path is None:
            return
        try:
            if path.read_text().strip() != "1":
                path.write_text("1\n")
                log.info("service proxy: IPv4 forwarding turned on (%s)", path)
        except OSError as e:
            log.warning("service proxy: could not turn IPv4 forwarding on (%s): Services "
                        "reach only this node's endpoints through it", e)

    async def run(self) -> None:
        self.enable_forwarding()
        tasks = [asyncio.create_task(self._drain()),
                 asyncio.create_task(self._poll_membership())]
        try:
            self._changed_at = time.monotonic()
            while True:
                try:
                    await self.sync()
                except Exception:
                    log.exception("service rules: sync failed; retrying in 1 s")
                    await asyncio.sleep(1.0)
                    self._wake.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.resync):
                        await self._wake.wait()
                await asyncio.sleep(self.settings.debounce)
                self._wake.clear()
        finally:
            for t in tasks:
                t.cancel()

    def _mark_changed(self) -> None:
        if self._changed_at is None:
            self._changed_at = time.monotonic()
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            sub = self.replica.subscribe(self.relevant)
            try:
                while await sub.queue.get() is not None:
                    self._mark_changed()
            finally:
                sub.close()
            self._mark_changed()  # the feed dropped us: changes may be lost, render anew

    async def _poll_membership(self) -> None:
        while True:
            await asyncio.sleep(self.settings.membership_poll)
            if self._facts is not None and self.facts() != self._facts:
                self._mark_changed()


def proxy_enabled(mode: str, nft: Sequence[str] = ("nft",)) -> bool:
    """Whether ``--proxy-mode`` asks for the proxy here; ``nftables`` insists, ``auto`` falls back.

    Raises NftError when ``nftables`` is asked for and nft cannot be used.
    """
    if mode == "none":
        log.info("service proxy: off (--proxy-mode none): Services answer on no address")
        return False
    why = nft_usable(nft)
    if why is None:
        log.info("service proxy: nftables (table ip %s)", TABLE)
        return True
    if mode == "nftables":
        raise NftError(f"--proxy-mode nftables: {why}")
    log.warning("service proxy: off, Services answer on no address: %s (--proxy-mode auto "
                "needs nftables and root)", why)
    return False
