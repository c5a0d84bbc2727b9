"""Node lifecycle taints a node by its condition with NoSchedule, as Kubernetes'
TaintNodesByCondition: new pods (whose default tolerations cover NoExecute only) are not
bound to an unreachable or not-ready node, pods tolerating the taint still are, and the
taint goes when the node is Ready again."""

from __future__ import annotations

import copy
from typing import Any

from shoal.api.admission import default_tolerations
from shoal.control.daemonset import node_should_run, with_default_tolerations
from shoal.control.node_lifecycle import (
    DISK_PRESSURE,
    MEMORY_PRESSURE,
    NETWORK_UNAVAILABLE,
    NOT_READY,
    UNREACHABLE,
    NodeLifecycle,
)
from shoal.control.scheduler import Snapshot, default_profile, schedule
from shoal.control.scheduler.plugins import taint_toleration
from shoal.control.scheduler.testing import make_pod, run_filter
from shoal.model.kinds import KindRegistry
from shoal.node.node_status import NodeStatusReporter
from shoal.store.objects import ObjectStore
from tests.test_node_lifecycle_grace import GRACE, NODE, _register, _renew, peer  # noqa: F401
from tests.tools.stores import FixedView, ManualClock

POD = KindRegistry().by_kind("v1", "Pod")


def taints(store: ObjectStore, name: str) -> set[tuple[str, str]]:
    assert NODE is not None
    node = store.get(NODE, None, name)
    return {(t["key"], t["effect"]) for t in (node.get("spec") or {}).get("taints") or []}


async def report_ready(store: ObjectStore, name: str, status: str) -> None:
    assert NODE is not None
    node = copy.deepcopy(store.get(NODE, None, name))
    node["status"]["conditions"] = [{"type": "Ready", "status": status}]
    await store.update(NODE, node, None, name, "status")


def schedulable(store: ObjectStore, name: str, pod: dict[str, Any]) -> bool:
    assert NODE is not None
    snapshot = Snapshot([store.get(NODE, None, name)])
    return run_filter(taint_toleration.TaintToleration(), pod, snapshot, name) is None


def pod_with_default_tolerations(**spec: Any) -> dict[str, Any]:
    """A pod as the API admits it (DefaultTolerationSeconds: NoExecute tolerations)."""
    pod = make_pod("web", **spec)
    assert POD is not None
    default_tolerations(POD, pod)
    return pod


async def watching_node_c(store: ObjectStore, clock: ManualClock) -> NodeLifecycle:
    """Peer a's node lifecycle, judging node c, which has registered and renewed."""
    lifecycle = NodeLifecycle(store, FixedView("a", ["a", "c"]), grace=GRACE)
    await _register(store, "c")
    await _renew(store, clock, "c")
    return lifecycle


async def test_an_unreachable_node_takes_no_new_pods_until_it_is_ready_again(
    peer: tuple[ObjectStore, ManualClock],  # noqa: F811 - the fixture
) -> None:
    store, clock = peer
    lifecycle = await watching_node_c(store, clock)
    await lifecycle.sync()
    ordinary = pod_with_default_tolerations()
    tolerant = pod_with_default_tolerations(
        tolerations=[{"key": UNREACHABLE, "operator": "Exists"}])
    assert taints(store, "c") == set() and schedulable(store, "c", ordinary)
    clock.t += GRACE + 1
    await lifecycle.sync()
    assert taints(store, "c") == {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")}
    # The default 300 s NoExecute tolerations keep a bound pod there a while, but do
    # not let the scheduler bind a new one; a pod tolerating the key still lands.
    assert not schedulable(store, "c", ordinary)
    assert schedulable(store, "c", tolerant)
    # A DaemonSet's pod keeps running there, and one tolerating everything is placed.
    daemon: dict[str, Any] = {"containers": [{"name": "d", "image": "x"}]}
    with_default_tolerations(daemon)
    assert NODE is not None
    node = store.get(NODE, None, "c")
    assert node_should_run(daemon, node) == (False, True)
    assert node_should_run({**daemon, "tolerations": [{"operator": "Exists"}]}, node) == \
        (True, True)
    # Back: the lease renews, NoExecute goes at once; NoSchedule once it reports Ready.
    await _renew(store, clock, "c")
    await lifecycle.sync()
    assert taints(store, "c") == {(UNREACHABLE, "NoSchedule")}
    await report_ready(store, "c", "True")
    await lifecycle.sync()
    assert taints(store, "c") == set() and schedulable(store, "c", ordinary)


async def test_a_node_reporting_not_ready_gets_the_not_ready_no_schedule_taint_only(
    peer: tuple[ObjectStore, ManualClock],  # noqa: F811 - the fixture
) -> None:
    store, clock = peer
    lifecycle = await watching_node_c(store, clock)
    await report_ready(store, "c", "False")
    await lifecycle.sync()
    assert taints(store, "c") == {(NOT_READY, "NoSchedule")}
    assert not schedulable(store, "c", pod_with_default_tolerations())
    await report_ready(store, "c", "True")
    await lifecycle.sync()
    assert taints(store, "c") == set()


async def test_a_node_under_disk_pressure_takes_no_new_pods_until_it_clears(
    peer: tuple[ObjectStore, ManualClock],  # noqa: F811 - the fixture
) -> None:
    """Node c's agent reports DiskPressure=True (its data dir's disk is full, as
    ``NodeStatusReporter`` words it); peer a's node lifecycle taints it
    ``disk-pressure:NoSchedule``, so the scheduler places new pods on node a, and takes
    the taint off once the condition clears."""
    store, clock = peer
    lifecycle = NodeLifecycle(store, FixedView("a", ["a", "c"]), grace=GRACE)
    for name in ("a", "c"):
        await NodeStatusReporter(store, name, "10.0.0.1").register()
    agent = NodeStatusReporter(store, "c", "10.0.0.3")
    short: list[str] = []
    agent.disk_pressure = lambda: short[0] if short else None
    await agent.heartbeat()
    await lifecycle.sync()
    assert taints(store, "c") == set()
    ordinary = pod_with_default_tolerations()
    tolerant = pod_with_default_tolerations(
        tolerations=[{"key": DISK_PRESSURE, "operator": "Exists", "effect": "NoSchedule"}])

    def placed(pod: dict[str, Any]) -> set[str]:
        """The nodes the scheduler (its default profile) may put ``pod`` on."""
        assert NODE is not None
        return {n for n in ("a", "c") if schedule(
            pod, Snapshot([store.get(NODE, None, n)]), default_profile()).node_name == n}

    assert placed(ordinary) == {"a", "c"}
    short.append("/var/lib/shoal: 0.9 MiB free of 6 MiB")
    clock.t += 10
    await agent.heartbeat()
    await lifecycle.sync()
    assert taints(store, "c") == {(DISK_PRESSURE, "NoSchedule")}
    assert placed(ordinary) == {"a"}
    assert placed(tolerant) == {"a", "c"}
    assert NODE is not None
    result = schedule(ordinary, Snapshot([store.get(NODE, None, "c")]), default_profile())
    assert result.node_name is None and DISK_PRESSURE in (result.message or "")
    # A DaemonSet's pod tolerates disk-pressure (as Kubernetes' DaemonSet controller adds).
    daemon: dict[str, Any] = {"containers": [{"name": "d", "image": "x"}]}
    with_default_tolerations(daemon)
    assert node_should_run(daemon, store.get(NODE, None, "c")) == (True, True)
    # Space freed: the condition clears, and so does the taint.
    short.clear()
    clock.t += 10
    await agent.heartbeat()
    await lifecycle.sync()
    assert taints(store, "c") == set()
    assert placed(ordinary) == {"a", "c"}


async def test_pressure_taints_follow_their_conditions_and_leave_other_taints_alone(
    peer: tuple[ObjectStore, ManualClock],  # noqa: F811 - the fixture
) -> None:
    store, clock = peer
    lifecycle = await watching_node_c(store, clock)
    assert NODE is not None
    node = copy.deepcopy(store.get(NODE, None, "c"))
    node["spec"] = {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}
    await store.update(NODE, node, None, "c")
    node = copy.deepcopy(store.get(NODE, None, "c"))
    node["status"]["conditions"] = [
        {"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "True"},
        {"type": "DiskPressure", "status": "True"}, {"type": "PIDPressure", "status": "False"},
        {"type": "NetworkUnavailable", "status": "True"}]
    await store.update(NODE, node, None, "c", "status")
    await lifecycle.sync()
    assert taints(store, "c") == {("dedicated", "NoSchedule"), (DISK_PRESSURE, "NoSchedule"),
                                  (MEMORY_PRESSURE, "NoSchedule"),
                                  (NETWORK_UNAVAILABLE, "NoSchedule")}
    await report_ready(store, "c", "False")  # the pressure conditions gone
    await lifecycle.sync()
    assert taints(store, "c") == {("dedicated", "NoSchedule"), (NOT_READY, "NoSchedule")}


async def test_a_node_alone_keeps_its_own_disk_pressure_taint(
    peer: tuple[ObjectStore, ManualClock],  # noqa: F811 - the fixture
) -> None:
    """A single-node cluster: nobody else judges node a, so a taints itself while its
    disk is short; with a live peer it leaves that to the peer."""
    store, _ = peer
    agent = NodeStatusReporter(store, "a", "10.0.0.1")
    short = ["/var/lib/shoal: 0.9 MiB free of 6 MiB"]
    agent.disk_pressure = lambda: short[0] if short else None
    await agent.register()
    await agent.heartbeat()
    await NodeLifecycle(store, FixedView("a", ["a", "c"]), grace=GRACE).sync()
    assert taints(store, "a") == set()  # c judges a
    alone = NodeLifecycle(store, FixedView("a", ["a"]), grace=GRACE)
    await alone.sync()
    assert taints(store, "a") == {(DISK_PRESSURE, "NoSchedule")}
    assert not schedulable(store, "a", pod_with_default_tolerations())
    short.clear()
    await agent.heartbeat()
    await alone.sync()
    assert taints(store, "a") == set()
