"""Node lifecycle taints a node by its condition with NoSchedule, as Kubernetes'
TaintNodesByCondition: new pods (whose default tolerations cover NoExecute only) are not
bound to an unreachable or not-ready node, pods tolerating the taint still are, and the
taint goes when the node is Ready again."""

from __future__ import annotations

import copy
from typing import Any

from shoal.api.admission import default_tolerations
from shoal.control.daemonset import node_should_run, with_default_tolerations
from shoal.control.node_lifecycle import NOT_READY, UNREACHABLE, NodeLifecycle
from shoal.control.scheduler import Snapshot
from shoal.control.scheduler.plugins import taint_toleration
from shoal.control.scheduler.testing import make_pod, run_filter
from shoal.model.kinds import KindRegistry
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
