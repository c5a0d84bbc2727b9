"""Whether a peer has caught up with the mesh since it started: client-go's ``HasSynced``
for a leaderless replica.

A peer that has just joined (or restarted) holds an empty or stale replica; acting on
it as a controller or scheduler makes decisions the others would not (a Deployment's
pods all scheduled onto the only node it knows). It is *caught up* once, since it
started:

- a pull from one of its partners completed: every scope both hold, up to the
  partner's revision (it now holds everything that partner held); or
- every live member it knows failed to answer a pull, or every member it knows is
  held dead or gone (it is cut off: a cut-off peer acts on what it holds, as the
  design wants). A suspect is neither: over a slow link a joiner's first probes of its
  seed time out, and the seed refutes within seconds (then it is pulled); or
- it knows no other member and expects none (a first node, started without seeds); or
- ``max_wait`` seconds passed (logged: a mesh that answers but never completes a pull
  must not stop the controllers for good).

Once caught up, it stays so (as ``HasSynced``): a later partition is the mesh's business.
Times come from the running loop, so ``shoal.sim`` runs it on virtual time.

``synced`` is narrower: a pull completed since start (or it is a first node, alone). What a
replica lacks only then may be created: a cluster-wide default (the ``kubernetes`` Service,
the bus's ``nats`` Service and CRDs) that a joiner creates while it holds its seed dead (a
slow link: it is caught up as cut off, with an empty replica) is the later create, and
replaces the cluster's own in the merge (its uid, its creationTimestamp). The defaults a
node cannot work without (the system namespaces, the RBAC policy, ``kube-dns``) wait for it
only up to ``CREATE_BOUND`` (``may_create_defaults``): a joiner cut off at its join still
gets working ones, at the price of new uids once the link returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from shoal.mesh.anti_entropy import AntiEntropy
from shoal.mesh.membership import Member, Membership
from shoal.mesh.messages import State

log = logging.getLogger(__name__)

MAX_WAIT = 30.0
"""Seconds after which a peer acts whatever its pulls did."""
CREATE_BOUND = 30.0
"""Seconds after start after which a peer that has not synced creates the defaults it cannot
work without anyway (``may_create_defaults``)."""
CHECK_INTERVAL = 1.0
"""Seconds between two looks at the membership (are all the members it knows dead?)."""


def may_create(catch_up: CatchUp | None) -> bool:
    """Whether a peer may create a cluster-wide object its replica lacks: a pull completed
    since it started (``CatchUp.synced``), or it runs without a mesh. A joiner's create
    would replace the cluster's object in the merge (a later stamp, a new uid)."""
    return catch_up is None or catch_up.synced


def may_create_defaults(catch_up: CatchUp | None, bound: float = CREATE_BOUND) -> bool:
    """``may_create``, or ``bound`` seconds passed since start: for the defaults a node cannot
    work without (the system namespaces, the RBAC policy), which a joiner cut off at its join
    must not lack for good."""
    return may_create(catch_up) or (catch_up is not None and catch_up.age() >= bound)


async def until_may_create_defaults(catch_up: CatchUp | None,
                                    bound: float = CREATE_BOUND) -> None:
    """Returns once ``may_create_defaults`` holds: at once on a first node (synced alone) or
    without a mesh, at a joiner's first completed pull, at ``bound`` seconds after start
    at the latest."""
    if catch_up is None or catch_up.synced:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, bound - catch_up.age())):
            await catch_up.wait_synced()


class CatchUp:
    """Tracks one peer's catch-up from the pulls its anti-entropy reports."""

    def __init__(self, anti_entropy: AntiEntropy, membership: Membership, *,
                 expect_peers: bool = True, max_wait: float = MAX_WAIT) -> None:
        self._membership = membership
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.started = self._loop.time()
        self.reason = ""
        """Why it counts as caught up (empty until it does)."""
        self.seconds: float | None = None
        """How long catching up took."""
        self.unreachable: set[str] = set()
        self._synced = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        if not expect_peers and not membership.live():
            self._synced.set()
            self._finish("alone at start: no other member known")
            return
        anti_entropy.pull_listeners.append(self._pulled)
        self._timers = [self._loop.call_later(max_wait, self._give_up, max_wait),
                        self._loop.call_later(CHECK_INTERVAL, self._check_members)]

    @property
    def synced(self) -> bool:
        """A pull from a partner completed since start, or it started alone (a first node)."""
        return self._synced.is_set()

    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def age(self) -> float:
        """Seconds since this peer started (the loop's clock)."""
        return self._loop.time() - self.started

    def status(self) -> dict[str, Any]:
        """For ``/readyz?verbose``, ``shoal status`` and the live page."""
        waited = self.seconds if self.seconds is not None else self.age()
        return {"caughtUp": self.done(), "reason": self.reason or "catching up",
                "seconds": round(waited, 3), "unreachable": sorted(self.unreachable)}

    def _pulled(self, partner: str, complete: bool) -> None:
        if complete and not self.synced:
            self._synced.set()
            log.info("synced %.1fs after start: a pull from %s completed", self.age(), partner)
        if self.done():
            return
        if complete:
            self._finish(f"pulled everything {partner} held")
            return
        self.unreachable.add(partner)
        live = {m.name for m in self._not_dead()}
        if live and live <= self.unreachable:
            self._finish("no live member answered a pull: acting on the replica as it is")

    def _not_dead(self) -> list[Member]:
        """The other members alive, or suspect for a short while (``Membership.routable``).
        A seed that flaps suspect over a slow link refutes within seconds, and a joiner waits
        for it rather than act as cut off; a suspect that stays so (a peer restarted behind
        a cut link) stops counting after ``routing_unreachable_after``, not after the
        suspicion timeout an isolated node's Lifeguard stretches."""
        m = self._membership
        return [p for p in m.others((State.ALIVE, State.SUSPECT)) if m.routable(p.name)]

    def _check_members(self) -> None:
        if self.done():
            return
        m = self._membership
        if not self._not_dead() and any(name != m.name for name in m.members):
            self._finish("every member it knows is held dead or gone: acting on the "
                         "replica as it is")
        else:
            self._timers.append(self._loop.call_later(CHECK_INTERVAL, self._check_members))

    def _give_up(self, max_wait: float) -> None:
        if not self.done():
            log.warning("not caught up with any partner after %gs; acting on the replica "
                        "as it is", max_wait)
            self._finish(f"gave up waiting after {max_wait:g}s")

    def _finish(self, reason: str) -> None:
        self.reason = reason
        self.seconds = self.age()
        self._event.set()
        for t in self._timers:
            t.cancel()
        log.info("caught up in %.1fs: %s", self.seconds, reason)
