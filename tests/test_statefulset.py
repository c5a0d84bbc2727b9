"""The StatefulSet controller, in process: ordinals, claims, updates, and who may create."""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.ownership import SinglePeer
from shoal.control.statefulset import (
    POD_NAME_LABEL,
    REVISION_LABEL,
    StatefulSetController,
    claim_name,
    home_peer,
    ordinal_of,
)
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import Invalid, ObjectStore, now_rfc3339
from shoal.store.replica import Replica

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


NS, POD, NODE = kind("v1", "Namespace"), kind("v1", "Pod"), kind("v1", "Node")
STS, PVC = kind("apps/v1", "StatefulSet"), kind("v1", "PersistentVolumeClaim")
REV = kind("apps/v1", "ControllerRevision")


class View:
    """A peer's view: its name and the peers it can reach."""

    def __init__(self, name: str, live: list[str]) -> None:
        self.name, self._live = name, live

    def live(self) -> list[str]:
        return list(self._live)


def statefulset(name: str = "web", replicas: int = 3, image: str = "app:1",
                **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": image}]}},
        **spec}}


CLAIMS = [{"metadata": {"name": "data"},
           "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}]


async def make_store(node_id: str, nodes: tuple[str, ...] = ()) -> ObjectStore:
    s = ObjectStore(Replica(None, node_id), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    for n in nodes:
        await s.create(NODE, {"metadata": {"name": n}})
    return s


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = await make_store("n1", ("n1",))
    yield s
    s.replica.close()


async def run_pods(store: ObjectStore, node: str = "n1") -> None:
    """A stand-in kubelet: every pod of the set is bound, Running and Ready."""
    now = now_rfc3339(store.replica.wall.now())
    for p in store.list(POD, "default"):
        if (p.get("status") or {}).get("phase") == "Running" or p["metadata"].get(
                "deletionTimestamp"):
            continue
        bound = copy.deepcopy(p)
        bound["spec"]["nodeName"] = node
        bound = await store.update(POD, bound, "default", p["metadata"]["name"], "binding")
        bound["status"] = {"phase": "Running", "startTime": now, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}
        await store.update(POD, bound, "default", p["metadata"]["name"], "status")


async def finish_deletions(store: ObjectStore) -> None:
    """The kubelet confirms every graceful deletion."""
    for p in store.list(POD, "default"):
        if p["metadata"].get("deletionTimestamp"):
            await store.delete(POD, "default", p["metadata"]["name"], grace_period=0)


def names(store: ObjectStore) -> list[str]:
    return sorted(p["metadata"]["name"] for p in store.list(POD, "default"))


async def settle(ctl: StatefulSetController, store: ObjectStore, rounds: int = 8) -> None:
    for _ in range(rounds):
        await ctl.sync()
        await run_pods(store)
        await finish_deletions(store)


def test_ordinals_and_claim_names() -> None:
    assert ordinal_of("web", "web-12") == 12
    assert ordinal_of("web", "web2-1") is None
    assert ordinal_of("web", "web-x") is None
    assert claim_name("data", "web", 0) == "data-web-0"


async def test_ordered_ready_creates_one_ordinal_at_a_time(store: ObjectStore) -> None:
    await store.create(STS, statefulset(), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await ctl.sync()
    await ctl.sync()
    assert names(store) == ["web-0"]  # web-1 waits for web-0 to be Ready
    await run_pods(store)
    await ctl.sync()
    assert names(store) == ["web-0", "web-1"]
    await settle(ctl, store)
    assert names(store) == ["web-0", "web-1", "web-2"]
    pod = store.get(POD, "default", "web-2")
    assert pod["spec"]["hostname"] == "web-2" and pod["spec"]["subdomain"] == "web"
    assert pod["metadata"]["labels"][POD_NAME_LABEL] == "web-2"
    status = store.get(STS, "default", "web")["status"]
    assert status["readyReplicas"] == 3 and status["updatedReplicas"] == 3
    assert status["currentRevision"] == status["updateRevision"]
    assert status["observedGeneration"] == 1
    # The revision is recorded for kubectl rollout history.
    rev = store.get(REV, "default", status["updateRevision"])
    assert rev["revision"] == 1


async def test_parallel_creates_every_ordinal_at_once(store: ObjectStore) -> None:
    await store.create(STS, statefulset(podManagementPolicy="Parallel"), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await ctl.sync()
    assert names(store) == ["web-0", "web-1", "web-2"]


async def test_claim_templates_give_each_ordinal_its_claim(store: ObjectStore) -> None:
    await store.create(STS, statefulset(replicas=2, volumeClaimTemplates=CLAIMS), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await settle(ctl, store)
    claims = sorted(c["metadata"]["name"] for c in store.list(PVC, "default"))
    assert claims == ["data-web-0", "data-web-1"]
    vol = store.get(POD, "default", "web-1")["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}} in vol
    assert store.get(PVC, "default", "data-web-0")["metadata"]["labels"] == {"app": "web"}
    # A deleted pod comes back with the same name and the same claim.
    await store.delete(POD, "default", "web-0", grace_period=0)
    await ctl.sync()
    vol = store.get(POD, "default", "web-0")["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}} in vol


async def test_scale_down_goes_from_the_highest_ordinal_one_at_a_time(
        store: ObjectStore) -> None:
    await store.create(STS, statefulset(replicas=4), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await settle(ctl, store)
    sts = copy.deepcopy(store.get(STS, "default", "web"))  # stored objects are read-only
    sts["spec"]["replicas"] = 1
    await store.update(STS, sts, "default", "web")
    order: list[str] = []
    for _ in range(6):
        await ctl.sync()
        going = [p["metadata"]["name"] for p in store.list(POD, "default")
                 if p["metadata"].get("deletionTimestamp")]
        assert len(going) <= 1  # one at a time, waiting for the kubelet
        order += going
        await finish_deletions(store)
    assert order == ["web-3", "web-2", "web-1"]
    assert names(store) == ["web-0"]


async def test_when_scaled_delete_hands_the_claim_to_its_pod(store: ObjectStore) -> None:
    policy = {"whenScaled": "Delete", "whenDeleted": "Retain"}
    await store.create(STS, statefulset(replicas=2, volumeClaimTemplates=CLAIMS,
                                        persistentVolumeClaimRetentionPolicy=policy), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await settle(ctl, store)
    pod_uid = store.get(POD, "default", "web-1")["metadata"]["uid"]
    sts = copy.deepcopy(store.get(STS, "default", "web"))  # stored objects are read-only
    sts["spec"]["replicas"] = 1
    await store.update(STS, sts, "default", "web")
    await ctl.sync()
    refs = store.get(PVC, "default", "data-web-1")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [pod_uid]  # the garbage collector takes it with the pod
    assert "ownerReferences" not in store.get(PVC, "default", "data-web-0")["metadata"]


async def test_when_deleted_delete_makes_the_set_own_its_claims(store: ObjectStore) -> None:
    policy = {"whenDeleted": "Delete"}
    await store.create(STS, statefulset(replicas=1, volumeClaimTemplates=CLAIMS,
                                        persistentVolumeClaimRetentionPolicy=policy), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await ctl.sync()
    refs = store.get(PVC, "default", "data-web-0")["metadata"]["ownerReferences"]
    assert refs[0]["kind"] == "StatefulSet" and not refs[0].get("controller")


async def test_rolling_update_respects_the_partition(store: ObjectStore) -> None:
    await store.create(STS, statefulset(), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await settle(ctl, store)
    old = store.get(STS, "default", "web")["status"]["currentRevision"]
    sts = copy.deepcopy(store.get(STS, "default", "web"))  # stored objects are read-only
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "app:2"
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    await store.update(STS, sts, "default", "web")
    await settle(ctl, store, rounds=10)
    pods = {p["metadata"]["name"]: p for p in store.list(POD, "default")}
    images = {n: p["spec"]["containers"][0]["image"] for n, p in pods.items()}
    assert images == {"web-0": "app:1", "web-1": "app:2", "web-2": "app:2"}
    status = store.get(STS, "default", "web")["status"]
    assert status["updatedReplicas"] == 2 and status["currentRevision"] == old
    assert pods["web-0"]["metadata"]["labels"][REVISION_LABEL] == old
    # Partition 0: the last one goes too, and the rollout is over.
    sts = copy.deepcopy(store.get(STS, "default", "web"))  # stored objects are read-only
    sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = 0
    await store.update(STS, sts, "default", "web")
    await settle(ctl, store, rounds=6)
    status = store.get(STS, "default", "web")["status"]
    assert status["updatedReplicas"] == 3
    assert status["currentRevision"] == status["updateRevision"] != old


async def test_a_pod_on_a_node_cut_off_is_never_replaced(store: ObjectStore) -> None:
    await store.create(STS, statefulset(replicas=1), "default")
    ctl = StatefulSetController(store, View("n1", ["n1"]))
    await ctl.sync()
    await store.create(NODE, {"metadata": {"name": "far"}})
    await run_pods(store, node="far")
    # Its deletion waits for the kubelet of "far", which nobody reaches: it stays, and no
    # peer creates another web-0.
    await store.delete(POD, "default", "web-0")
    for peer in ("n1", "far"):
        for _ in range(3):
            await StatefulSetController(store, View(peer, [peer])).sync()
    pods = store.list(POD, "default")
    assert [p["metadata"]["name"] for p in pods] == ["web-0"]
    assert pods[0]["metadata"].get("deletionTimestamp")
    assert pods[0]["spec"]["nodeName"] == "far"


async def test_two_sides_of_a_partition_never_create_the_same_ordinal() -> None:
    """Each side's peers act for every ordinal whose preferred live actor they are, yet
    only an ordinal's home (over every Node, reachable or not) creates it."""
    nodes = ("a", "b", "c", "d")
    base = await make_store("a", nodes)
    created = await base.create(STS, statefulset(replicas=12, podManagementPolicy="Parallel"),
                                "default")
    uid = created["metadata"]["uid"]
    made: dict[tuple[str, ...], set[int]] = {}
    stores = [base]
    for side in (("a", "b"), ("c", "d")):
        s = await make_store(side[0], nodes)
        stores.append(s)
        entry = base.replica.entry("statefulsets.apps", "default", "web")
        assert entry is not None
        merged = s.replica.merge("statefulsets.apps", "default", "web", entry.document())
        assert merged is not None
        await merged[1]
        for peer in side:
            await StatefulSetController(s, View(peer, list(side))).sync()
        made[side] = {int(p["metadata"]["name"].split("-")[1]) for p in s.list(POD, "default")}
    assert not made[("a", "b")] & made[("c", "d")]
    homes = {n: home_peer(uid, n, list(nodes)) for n in range(12)}
    assert made[("a", "b")] == {n for n, h in homes.items() if h in ("a", "b")}
    assert made[("c", "d")] == {n for n, h in homes.items() if h in ("c", "d")}
    for s in stores:
        s.replica.close()


async def test_revisions_are_patches_kubectl_can_undo_and_a_rollback_renumbers(
        store: ObjectStore) -> None:
    await store.create(STS, statefulset(replicas=1), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await settle(ctl, store)
    first = store.get(STS, "default", "web")["status"]["updateRevision"]
    assert store.get(REV, "default", first)["data"]["spec"]["template"]["$patch"] == "replace"
    for image in ("app:2", "app:1"):  # an update, then kubectl rollout undo
        sts = copy.deepcopy(store.get(STS, "default", "web"))
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = image
        await store.update(STS, sts, "default", "web")
        await settle(ctl, store, rounds=4)
    revisions = {r["metadata"]["name"]: r["revision"] for r in store.list(REV, "default")}
    assert revisions[first] == 3 and sorted(revisions.values()) == [2, 3]
    assert store.get(POD, "default", "web-0")["metadata"]["labels"][REVISION_LABEL] == first


async def test_ordinals_start_numbers_the_pods_and_moving_it_replaces_the_edge(
        store: ObjectStore) -> None:
    await store.create(STS, statefulset(ordinals={"start": 5}), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await settle(ctl, store)
    assert names(store) == ["web-5", "web-6", "web-7"]
    assert store.get(POD, "default", "web-5")["metadata"]["labels"][
        "apps.kubernetes.io/pod-index"] == "5"
    sts = copy.deepcopy(store.get(STS, "default", "web"))
    sts["spec"]["ordinals"]["start"] = 4
    await store.update(STS, sts, "default", "web")
    await settle(ctl, store)
    assert names(store) == ["web-4", "web-5", "web-6"]  # web-4 made, then web-7 condemned


async def test_max_unavailable_updates_several_pods_at_once(store: ObjectStore) -> None:
    await store.create(STS, statefulset(replicas=4, podManagementPolicy="Parallel"), "default")
    ctl = StatefulSetController(store, SinglePeer("n1"))
    await settle(ctl, store)
    sts = copy.deepcopy(store.get(STS, "default", "web"))
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "app:2"
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "50%"}}
    await store.update(STS, sts, "default", "web")
    await ctl.sync()
    going = sorted(p["metadata"]["name"] for p in store.list(POD, "default")
                   if p["metadata"].get("deletionTimestamp"))
    assert going == ["web-2", "web-3"]  # 50 % of 4: two at once, the highest first
    await ctl.sync()  # both still going: nothing more is taken
    assert sum(1 for p in store.list(POD, "default")
               if p["metadata"].get("deletionTimestamp")) == 2
    await settle(ctl, store, rounds=6)
    images = {p["spec"]["containers"][0]["image"] for p in store.list(POD, "default")}
    assert images == {"app:2"} and len(names(store)) == 4


async def test_max_unavailable_zero_and_a_negative_start_are_422(store: ObjectStore) -> None:
    bad = statefulset(updateStrategy={"type": "RollingUpdate",
                                      "rollingUpdate": {"maxUnavailable": 0}})
    with pytest.raises(Invalid, match="maxUnavailable"):
        await store.create(STS, bad, "default")
    with pytest.raises(Invalid, match=re.escape("spec.ordinals.start")):
        await store.create(STS, statefulset(ordinals={"start": -1}), "default")
