"""Node lifecycle judges a node only once this peer has known it for the grace period."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest

from shoal.control.node_lifecycle import LEASE_NAMESPACE, UNREACHABLE, NodeLifecycle
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.tools.stores import FixedView, ManualClock

REG = KindRegistry()
NODE = REG.by_kind("v1", "Node")
LEASE = REG.by_kind("coordination.k8s.io/v1", "Lease")
NAMESPACE = REG.by_kind("v1", "Namespace")
GRACE = 40.0


@pytest.fixture
async def peer() -> AsyncIterator[tuple[ObjectStore, ManualClock]]:
    clock = ManualClock()
    replica = Replica(None, "a", clock=clock)
    store = ObjectStore(replica, REG)
    assert NAMESPACE is not None
    await store.create(NAMESPACE, {"metadata": {"name": LEASE_NAMESPACE}})
    yield store, clock
    replica.close()


async def _register(store: ObjectStore, name: str) -> None:
    """A node's registration as the agent writes it: the Node, Ready, and no Lease yet."""
    assert NODE is not None
    await store.create(NODE, {"metadata": {"name": name}})
    node = copy.deepcopy(store.get(NODE, None, name))
    node["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    await store.update(NODE, node, None, name, "status")


async def _renew(store: ObjectStore, clock: ManualClock, name: str,
                 duration: int | None = None) -> None:
    assert LEASE is not None
    spec: dict[str, object] = {"holderIdentity": name,
                               "renewTime": now_rfc3339(clock.t).replace("Z", ".000000Z")}
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    lease = store.find(LEASE, LEASE_NAMESPACE, name)
    if lease is None:
        await store.create(LEASE, {"metadata": {"name": name}, "spec": spec}, LEASE_NAMESPACE)
    else:
        await store.update(LEASE, {**lease, "spec": spec}, LEASE_NAMESPACE, name)


def _tainted(store: ObjectStore, name: str) -> bool:
    assert NODE is not None
    node = store.get(NODE, None, name)
    return any(t.get("key") == UNREACHABLE for t in (node.get("spec") or {}).get("taints") or [])


async def test_a_node_that_joins_is_not_judged_before_its_first_lease_arrives(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    store, clock = peer
    lifecycle = NodeLifecycle(store, FixedView("a", ["a", "c"]), grace=GRACE)
    await lifecycle.sync()  # this peer has run for long
    clock.t += 600
    await _register(store, "c")  # its Node arrives first: the Lease follows a moment later
    await lifecycle.sync()
    assert not _tainted(store, "c")
    clock.t += 5
    await _renew(store, clock, "c")
    clock.t += GRACE - 1
    await lifecycle.sync()
    assert not _tainted(store, "c")


async def test_a_node_that_never_renews_is_judged_once_known_for_the_grace_period(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    store, clock = peer
    lifecycle = NodeLifecycle(store, FixedView("a", ["a", "c"]), grace=GRACE)
    await lifecycle.sync()
    clock.t += 600
    await _register(store, "c")
    await lifecycle.sync()
    clock.t += GRACE + 1
    await lifecycle.sync()
    assert _tainted(store, "c")


async def test_a_peer_that_restarts_with_stale_leases_waits_the_grace_period(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    store, clock = peer
    await _register(store, "c")
    await _renew(store, clock, "c")
    clock.t += 600  # this peer was down for ten minutes; c kept renewing elsewhere
    lifecycle = NodeLifecycle(store, FixedView("a", ["a", "c"]), grace=GRACE)
    await lifecycle.sync()
    assert not _tainted(store, "c")
    clock.t += 2
    await _renew(store, clock, "c")  # the pull brings c's current Lease
    clock.t += GRACE - 5
    await lifecycle.sync()
    assert not _tainted(store, "c")


async def test_a_judge_whose_own_lease_ran_out_is_passed_over_though_membership_holds_it_alive(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """A partition: b (c's preferred judge) and c are across the cut from a. Membership
    still holds b alive (its suspicion takes tens of seconds more), but b's Lease ran out
    like c's: a judges c at the grace period, as it judges b, instead of waiting for
    membership to give b up."""
    store, clock = peer
    view = FixedView("a", ["a", "b", "c"])
    lifecycle = NodeLifecycle(store, view, grace=GRACE)
    await lifecycle.sync()
    for name in ("b", "c"):
        await _register(store, name)
        await _renew(store, clock, name)
    await lifecycle.sync()
    assert not lifecycle._acts_for("c"), "b is c's judge while its Lease is fresh"
    clock.t += GRACE + 1  # the cut: neither renews
    await lifecycle.sync()
    assert _tainted(store, "b") and _tainted(store, "c")
    # The heal: b renews again and is c's judge again.
    await _renew(store, clock, "b")
    await lifecycle.sync()
    assert not lifecycle._acts_for("c")
    assert NODE is not None
    assert not any(t.get("effect") == "NoExecute"
                   for t in store.get(NODE, None, "b")["spec"].get("taints") or []), \
        "b is reachable again (its NoSchedule taint waits for its agent's Ready=True)"


async def test_a_node_whose_lease_declares_longer_than_the_grace_is_judged_by_its_lease(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """A weak peer renews every 30 s and declares a 120 s Lease: it is not unreachable 40 s
    after its last renewal, only 120 s after; a node with the usual 40 s Lease is judged at
    the grace period as before."""
    store, clock = peer
    lifecycle = NodeLifecycle(store, FixedView("a", ["a"]), grace=GRACE)
    await _register(store, "pi")
    await _register(store, "c")
    await lifecycle.sync()  # known from here on
    await _renew(store, clock, "pi", duration=120)
    await _renew(store, clock, "c", duration=40)
    clock.t += GRACE + 20
    await lifecycle.sync()
    assert _tainted(store, "c")
    assert not _tainted(store, "pi")
    clock.t += 120 - (GRACE + 20) + 1
    await lifecycle.sync()
    assert _tainted(store, "pi")
