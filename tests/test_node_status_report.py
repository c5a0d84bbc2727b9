"""The node agent renews its Lease every heartbeat but writes its Node's status only
when a condition changed or every ``STATUS_REPORT_SECONDS``, as the kubelet does with
``nodeStatusReportFrequency``: a quiet node's heartbeats send one small Lease to every
peer, not its whole Node."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest

from shoal.model.kinds import KindRegistry
from shoal.node.node_status import LEASE_NAMESPACE, STATUS_REPORT_SECONDS, NodeStatusReporter
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import ManualClock

REG = KindRegistry()
NODE, LEASE, NAMESPACE = (REG.by_kind(*k) for k in (
    ("v1", "Node"), ("coordination.k8s.io/v1", "Lease"), ("v1", "Namespace")))


@pytest.fixture
async def node() -> AsyncIterator[tuple[ObjectStore, ManualClock, NodeStatusReporter]]:
    clock = ManualClock()
    replica = Replica(None, "pi-1", clock=clock)
    store = ObjectStore(replica, REG)
    assert NAMESPACE is not None
    await store.create(NAMESPACE, {"metadata": {"name": LEASE_NAMESPACE}})
    reporter = NodeStatusReporter(store, "pi-1", "10.0.0.1")
    await reporter.register()
    yield store, clock, reporter
    replica.close()


def versions(store: ObjectStore) -> tuple[str, str]:
    assert NODE is not None and LEASE is not None
    lease = store.find(LEASE, LEASE_NAMESPACE, "pi-1")
    return (store.get(NODE, None, "pi-1")["metadata"]["resourceVersion"],
            lease["metadata"]["resourceVersion"] if lease else "")


async def test_a_quiet_heartbeat_renews_the_lease_and_leaves_the_node_alone(
    node: tuple[ObjectStore, ManualClock, NodeStatusReporter],
) -> None:
    store, clock, reporter = node
    await reporter.heartbeat()
    node_rv, lease_rv = versions(store)
    for _ in range(5):
        clock.t += 10.0
        await reporter.heartbeat()
        again_node, again_lease = versions(store)
        assert again_node == node_rv
        assert again_lease != lease_rv
        lease_rv = again_lease


async def test_by_default_a_quiet_node_never_rewrites_its_status(
    node: tuple[ObjectStore, ManualClock, NodeStatusReporter],
) -> None:
    """Each refresh of every node would reach every peer: the Lease is the heartbeat."""
    store, clock, reporter = node
    await reporter.heartbeat()
    node_rv, _ = versions(store)
    for _ in range(3):
        clock.t += STATUS_REPORT_SECONDS + 1.0
        await reporter.heartbeat()
    assert versions(store)[0] == node_rv


async def test_the_node_status_is_written_again_after_the_report_interval(
    node: tuple[ObjectStore, ManualClock, NodeStatusReporter],
) -> None:
    store, clock, reporter = node
    reporter.report_every = STATUS_REPORT_SECONDS  # --node-status-report-frequency 5m
    node_rv, _ = versions(store)
    clock.t += STATUS_REPORT_SECONDS + 1.0
    await reporter.heartbeat()
    assert NODE is not None
    written = store.get(NODE, None, "pi-1")
    assert written["metadata"]["resourceVersion"] != node_rv
    ready = next(c for c in written["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


async def test_a_changed_condition_is_written_at_the_next_heartbeat(
    node: tuple[ObjectStore, ManualClock, NodeStatusReporter],
) -> None:
    store, clock, reporter = node
    node_rv, _ = versions(store)
    reporter.disk_pressure = lambda: "data dir 97% full"
    clock.t += 10.0
    await reporter.heartbeat()
    assert NODE is not None
    conds = store.get(NODE, None, "pi-1")["status"]["conditions"]
    assert next(c for c in conds if c["type"] == "DiskPressure")["status"] == "True"
    assert versions(store)[0] != node_rv


async def test_a_node_marked_unknown_by_its_peers_says_ready_at_the_next_heartbeat(
    node: tuple[ObjectStore, ManualClock, NodeStatusReporter],
) -> None:
    store, clock, reporter = node
    assert NODE is not None
    marked = copy.deepcopy(store.get(NODE, None, "pi-1"))
    for c in marked["status"]["conditions"]:
        if c["type"] == "Ready":
            c.update(status="Unknown", reason="NodeStatusUnknown")
    await store.update(NODE, marked, None, "pi-1", "status", check_rv=False)
    clock.t += 10.0
    await reporter.heartbeat()
    conds = store.get(NODE, None, "pi-1")["status"]["conditions"]
    assert next(c for c in conds if c["type"] == "Ready")["status"] == "True"


async def test_a_node_that_renews_less_often_declares_a_longer_lease(
    node: tuple[ObjectStore, ManualClock, NodeStatusReporter],
) -> None:
    """Four renewals, at least 40 s: the kubelet's 10 s gives 40, a weak peer's 30 s 120."""
    store, clock, reporter = node
    assert LEASE is not None
    await reporter.heartbeat()
    assert store.get(LEASE, LEASE_NAMESPACE, "pi-1")["spec"]["leaseDurationSeconds"] == 40
    reporter.interval = 30.0
    clock.t += 30.0
    await reporter.heartbeat()
    assert store.get(LEASE, LEASE_NAMESPACE, "pi-1")["spec"]["leaseDurationSeconds"] == 120


async def test_the_node_names_the_runtime_its_pods_run_under() -> None:
    """``kubectl get nodes -o wide``'s CONTAINER-RUNTIME: runc when the agent runs runc."""
    replica = Replica(None, "pi-2", clock=ManualClock())
    store = ObjectStore(replica, REG)
    assert NAMESPACE is not None and NODE is not None
    await store.create(NAMESPACE, {"metadata": {"name": LEASE_NAMESPACE}})
    await NodeStatusReporter(store, "pi-2", "10.0.0.2", runtime="runc").register()
    info = store.get(NODE, None, "pi-2")["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("shoal-runc://")
    replica.close()
