"""A joiner leaves the system namespaces (``default``, ``kube-system``, ``kube-public``,
``kube-node-lease``) to its first pull: its empty replica lacks them at start, and its own,
created then, would be the later creates and replace the cluster's in the merge (new uids
and ages). ``register`` skips them until ``may_create_defaults``; the heartbeat creates one
still missing once a pull completed, or after the bound (a joiner cut off at its join). Its
Lease waits for ``kube-node-lease``; its Node, cluster-scoped, does not wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from shoal.mesh.catch_up import CatchUp, may_create_defaults, until_may_create_defaults
from shoal.model.kinds import KindRegistry
from shoal.node.node_status import LEASE_NAMESPACE, SYSTEM_NAMESPACES, NodeStatusReporter
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.test_caught_up import _catch_up
from tests.tools.stores import ManualClock

REG = KindRegistry()
NODE, LEASE, NAMESPACE = (REG.by_kind(*k) for k in (
    ("v1", "Node"), ("coordination.k8s.io/v1", "Lease"), ("v1", "Namespace")))


@pytest.fixture
def store() -> Iterator[ObjectStore]:
    replica = Replica(None, "pi-2", clock=ManualClock())
    yield ObjectStore(replica, REG)
    replica.close()


def _namespaces(store: ObjectStore) -> list[str]:
    assert NAMESPACE is not None
    return sorted(n["metadata"]["name"] for n in store.list(NAMESPACE))


def _reporter(store: ObjectStore, c: CatchUp, bound: float = 30.0) -> NodeStatusReporter:
    return NodeStatusReporter(store, "pi-2", "10.0.0.2",
                              may_create=lambda: may_create_defaults(c, bound))


async def test_a_joiner_registers_its_node_but_no_namespace_before_its_first_pull(
        store: ObjectStore) -> None:
    assert NODE is not None and LEASE is not None
    c, ae = _catch_up(["pi-1"])
    reporter = _reporter(store, c)
    await reporter.register()
    await reporter.heartbeat()
    assert _namespaces(store) == []
    assert store.find(NODE, None, "pi-2") is not None  # cluster-scoped: needs none
    assert store.find(LEASE, LEASE_NAMESPACE, "pi-2") is None  # no kube-node-lease yet
    ae.pulled("pi-1", False)  # caught up as cut off (its seed held dead): still not synced
    await reporter.heartbeat()
    assert _namespaces(store) == []


async def test_a_joiner_keeps_the_namespaces_its_pull_brought_and_creates_the_rest(
        store: ObjectStore) -> None:
    assert NAMESPACE is not None and LEASE is not None
    c, ae = _catch_up(["pi-1"])
    reporter = _reporter(store, c)
    await reporter.register()
    # The pull brings the cluster's (the tombstone of one an administrator deleted aside,
    # a cluster lacking one is a cluster made before it was a default).
    for ns in ("default", LEASE_NAMESPACE):
        await store.create(NAMESPACE, {"metadata": {"name": ns, "labels": {"from": "pi-1"}}})
    pulled = {ns: store.get(NAMESPACE, None, ns)["metadata"]["uid"]
              for ns in ("default", LEASE_NAMESPACE)}
    ae.pulled("pi-1", True)
    await reporter.heartbeat()
    assert _namespaces(store) == sorted(SYSTEM_NAMESPACES)
    assert {ns: store.get(NAMESPACE, None, ns)["metadata"]["uid"] for ns in pulled} == pulled
    assert store.find(LEASE, LEASE_NAMESPACE, "pi-2") is not None


async def test_a_joiner_cut_off_at_its_join_creates_them_after_the_bound(
        store: ObjectStore) -> None:
    assert LEASE is not None
    c, _ = _catch_up(["pi-1"])
    reporter = _reporter(store, c, bound=0.2)
    await reporter.register()
    assert _namespaces(store) == []
    await asyncio.sleep(0.25)
    await reporter.heartbeat()
    assert _namespaces(store) == sorted(SYSTEM_NAMESPACES)
    assert store.find(LEASE, LEASE_NAMESPACE, "pi-2") is not None


async def test_a_first_node_alone_creates_them_at_registration(store: ObjectStore) -> None:
    c, _ = _catch_up([], expect_peers=False)
    await _reporter(store, c).register()
    assert _namespaces(store) == sorted(SYSTEM_NAMESPACES)


async def test_the_lease_follows_the_first_pull_within_the_short_poll(
        store: ObjectStore) -> None:
    """Not a whole heartbeat interval (10 s) later: the heartbeat looks every 0.5 s while
    it has no Lease."""
    assert LEASE is not None
    c, ae = _catch_up(["pi-1"])
    reporter = _reporter(store, c)
    await reporter.register()
    running = asyncio.create_task(reporter.run())
    try:
        await asyncio.sleep(0.2)
        assert store.find(LEASE, LEASE_NAMESPACE, "pi-2") is None
        ae.pulled("pi-1", True)
        await asyncio.sleep(0.7)
        assert store.find(LEASE, LEASE_NAMESPACE, "pi-2") is not None
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_waiting_for_the_defaults_ends_at_the_first_pull_or_at_the_bound() -> None:
    loop = asyncio.get_running_loop()
    c, ae = _catch_up(["pi-1"])
    loop.call_later(0.1, ae.pulled, "pi-1", True)
    began = loop.time()
    await until_may_create_defaults(c, bound=5.0)
    assert c.synced and loop.time() - began < 1.0
    cut_off, _ = _catch_up(["pi-1"])
    await until_may_create_defaults(cut_off, bound=0.2)
    assert not cut_off.synced and may_create_defaults(cut_off, bound=0.2)
    alone, _ = _catch_up([], expect_peers=False)
    began = loop.time()
    await until_may_create_defaults(alone, bound=5.0)  # a first node: at once
    assert loop.time() - began < 0.05
    await until_may_create_defaults(None)  # no mesh: at once
