"""The DaemonSet controller, in process, with the real scheduler and a stand-in kubelet."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.daemonset import (
    HASH_LABEL,
    DaemonSetController,
    daemon_pod_name,
    target_node,
)
from shoal.control.pod_state import is_active, is_ready
from shoal.control.scheduling import Scheduler
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.conftest import ShoalProcess

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


NS = kind("v1", "Namespace")
POD = kind("v1", "Pod")
NODE = kind("v1", "Node")
DS = kind("apps/v1", "DaemonSet")
ALLOC = {"cpu": "4", "memory": "8Gi", "pods": "110"}


def daemonset(name: str, image: str = "agent:1", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": image}]}},
        **spec}}


async def add_node(store: ObjectStore, name: str, labels: dict[str, str] | None = None,
                   taints: list[dict[str, str]] | None = None) -> None:
    body: dict[str, Any] = {"metadata": {"name": name, "labels": labels or {}}}
    if taints:
        body["spec"] = {"taints": taints}
    await store.create(NODE, body)
    n = copy.deepcopy(store.get(NODE, None, name))
    n["status"] = {"allocatable": ALLOC, "capacity": ALLOC,
                   "conditions": [{"type": "Ready", "status": "True"}]}
    await store.update(NODE, n, None, name, "status")


async def make_store(node_id: str) -> ObjectStore:
    s = ObjectStore(Replica(None, node_id), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    return s


async def merge(src: ObjectStore, dst: ObjectStore) -> None:
    """Hand every document of ``src`` to ``dst``, as anti-entropy would."""
    for resource in src.replica.resources():
        for (ns, name), entry in src.replica.iter_entries(resource):
            result = dst.replica.merge(resource, ns, name, entry.document())
            if result is not None:
                await result[1]


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = await make_store("n1")
    yield s
    s.replica.close()


async def kubelet(store: ObjectStore) -> None:
    """Run every bound pending pod and make it Ready; finish graceful deletions."""
    now = now_rfc3339(store.replica.wall.now())
    for p in store.list(POD):
        name = p["metadata"]["name"]
        if p["metadata"].get("deletionTimestamp"):
            await store.delete(POD, "default", name, grace_period=0)
            continue
        if not p["spec"].get("nodeName") or p["status"].get("phase") != "Pending":
            continue
        new = copy.deepcopy(p)
        new["status"] = {"phase": "Running", "startTime": now, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}
        await store.update(POD, new, "default", name, "status", check_rv=False)


async def settle(store: ObjectStore, rounds: int = 20) -> list[int]:
    """Run the controller, scheduler and kubelet; returns the ready daemon pods per round."""
    dc, sched = DaemonSetController(store), Scheduler(store)
    ready = []
    for _ in range(rounds):
        await dc.sync()
        await sched.sync()
        await kubelet(store)
        ready.append(sum(1 for p in pods(store) if is_ready(p)))
    await dc.sync()
    return ready


def pods(store: ObjectStore) -> list[dict[str, Any]]:
    return [p for p in store.list(POD) if is_active(p)]


def by_node(store: ObjectStore) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in pods(store):
        out.setdefault(p["spec"].get("nodeName", ""), []).append(p["metadata"]["name"])
    return out


async def test_one_pod_runs_on_each_eligible_node_pinned_by_node_affinity(
    store: ObjectStore,
) -> None:
    await add_node(store, "edge-1", {"role": "edge"})
    await add_node(store, "edge-2", {"role": "edge"})
    await add_node(store, "cloud", {"role": "cloud"})
    body = daemonset("agent")
    body["spec"]["template"]["spec"]["nodeSelector"] = {"role": "edge"}
    await store.create(DS, body, "default")
    await settle(store)
    assert {k: len(v) for k, v in by_node(store).items()} == {"edge-1": 1, "edge-2": 1}
    ds = store.get(DS, "default", "agent")
    for p in pods(store):
        node = p["spec"]["nodeName"]
        term = p["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert term == [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}]}]
        assert p["metadata"]["name"] == daemon_pod_name(
            "agent", ds["metadata"]["uid"], node, p["metadata"]["labels"][HASH_LABEL])
        keys = {t["key"] for t in p["spec"]["tolerations"]}
        assert {"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready",
                "node.kubernetes.io/disk-pressure", "node.kubernetes.io/unschedulable"} <= keys
    st = ds["status"]
    assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"],
            st["numberAvailable"], st["updatedNumberScheduled"], st["numberMisscheduled"]) == \
        (2, 2, 2, 2, 2, 0)
    assert st["observedGeneration"] == ds["metadata"]["generation"]


async def test_taints_keep_daemon_pods_off_unless_tolerated_and_defaults_are_tolerated(
    store: ObjectStore,
) -> None:
    await add_node(store, "gpu", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])
    await add_node(store, "flaky", taints=[
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}])
    await add_node(store, "plain")
    await store.create(DS, daemonset("plain-ds"), "default")
    tolerant = daemonset("gpu-ds")
    tolerant["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    await store.create(DS, tolerant, "default")
    await DaemonSetController(store).sync()
    targets: dict[str, set[str]] = {}
    for p in pods(store):
        targets.setdefault(p["metadata"]["labels"]["app"], set()).add(target_node(p) or "")
    assert targets["plain-ds"] == {"flaky", "plain"}, "unreachable is a default toleration"
    assert targets["gpu-ds"] == {"gpu", "flaky", "plain"}


async def test_nodes_that_come_go_or_repel_the_pod_are_followed(store: ObjectStore) -> None:
    await add_node(store, "a")
    await store.create(DS, daemonset("follow"), "default")
    await settle(store)
    await add_node(store, "b")
    await add_node(store, "c")
    await settle(store)
    assert sorted(by_node(store)) == ["a", "b", "c"]
    # NoSchedule added later: the running pod stays, but counts as misscheduled.
    n = copy.deepcopy(store.get(NODE, None, "b"))
    n["spec"] = {"taints": [{"key": "maint", "effect": "NoSchedule"}]}
    await store.update(NODE, n, None, "b")
    # NoExecute: the pod goes.
    n = copy.deepcopy(store.get(NODE, None, "c"))
    n["spec"] = {"taints": [{"key": "evict", "effect": "NoExecute"}]}
    await store.update(NODE, n, None, "c")
    await store.delete(NODE, None, "a")
    await settle(store)
    assert sorted(by_node(store)) == ["b"]
    st = store.get(DS, "default", "follow")["status"]
    assert st["desiredNumberScheduled"] == 0 and st["numberMisscheduled"] == 1


async def test_a_rolling_update_replaces_pods_within_max_unavailable(store: ObjectStore) -> None:
    for i in range(4):
        await add_node(store, f"n{i}")
    await store.create(DS, daemonset("roll", updateStrategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}), "default")
    await settle(store)
    old_hash = {p["metadata"]["labels"][HASH_LABEL] for p in pods(store)}
    d = copy.deepcopy(store.get(DS, "default", "roll"))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
    await store.update(DS, d, "default", "roll")
    ready = await settle(store, rounds=30)
    assert 3 in ready, f"the update did take nodes down one at a time: {ready}"
    assert min(ready) >= 3, f"never more than one node without a ready pod: {ready}"
    images = {p["spec"]["containers"][0]["image"] for p in pods(store)}
    assert images == {"agent:2"} and len(pods(store)) == 4
    assert not old_hash & {p["metadata"]["labels"][HASH_LABEL] for p in pods(store)}
    assert store.get(DS, "default", "roll")["status"]["updatedNumberScheduled"] == 4


async def test_a_surge_update_starts_the_new_pod_before_stopping_the_old(
    store: ObjectStore,
) -> None:
    for i in range(3):
        await add_node(store, f"n{i}")
    await store.create(DS, daemonset("surge", updateStrategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
        "default")
    await settle(store)
    d = copy.deepcopy(store.get(DS, "default", "surge"))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
    await store.update(DS, d, "default", "surge")
    ready = await settle(store, rounds=30)
    assert min(ready) >= 3, "maxUnavailable 0: every node keeps a ready pod"
    assert max(len(v) for v in by_node(store).values()) == 1
    assert {p["spec"]["containers"][0]["image"] for p in pods(store)} == {"agent:2"}


async def test_on_delete_replaces_a_pod_only_once_it_is_deleted(store: ObjectStore) -> None:
    await add_node(store, "a")
    await add_node(store, "b")
    await store.create(DS, daemonset("manual", updateStrategy={"type": "OnDelete"}), "default")
    await settle(store)
    d = copy.deepcopy(store.get(DS, "default", "manual"))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
    await store.update(DS, d, "default", "manual")
    await settle(store)
    assert {p["spec"]["containers"][0]["image"] for p in pods(store)} == {"agent:1"}
    victim = next(p for p in pods(store) if p["spec"]["nodeName"] == "a")
    await store.delete(POD, "default", victim["metadata"]["name"])
    await settle(store)
    images = {p["spec"]["nodeName"]: p["spec"]["containers"][0]["image"] for p in pods(store)}
    assert images == {"a": "agent:2", "b": "agent:1"}


async def test_two_partitioned_peers_running_one_daemonset_end_with_one_pod_per_node() -> None:
    a, b = await make_store("peer-a"), await make_store("peer-b")
    for name in ("x", "y", "z"):
        await add_node(a, name)
    await a.create(DS, daemonset("split"), "default")
    await merge(a, b)  # both sides know the nodes and the DaemonSet before the partition
    for s in (a, b):
        await DaemonSetController(s).sync()
        assert len(pods(s)) == 3
    await merge(a, b)
    await merge(b, a)
    for s in (a, b):
        names = sorted(p["metadata"]["name"] for p in pods(s))
        assert len(names) == 3, "one pod per deterministic name, not two"
        assert sorted(target_node(p) or "" for p in pods(s)) == ["x", "y", "z"]
    a.replica.close()
    b.replica.close()


DS_YAML = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: everywhere}
spec:
  selector: {matchLabels: {app: everywhere}}
  template:
    metadata: {labels: {app: everywhere}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
"""


@pytest.mark.slow
def test_kubectl_rollout_status_completes_for_a_daemonset_on_a_real_server(
    shoal: ShoalProcess,
) -> None:
    shoal.kubectl("apply", "-f", "-", input=DS_YAML)
    r = shoal.kubectl("rollout", "status", "ds/everywhere", "--timeout=20s")
    assert "successfully rolled out" in r.stdout
    got = json.loads(shoal.kubectl("get", "ds", "everywhere", "-o", "json").stdout)
    assert got["status"]["numberReady"] == got["status"]["desiredNumberScheduled"] == 1
