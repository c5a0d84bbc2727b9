"""ResourceQuota: admission on the serving peer, the status controller, and a partition."""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.api.limit_ranger import LimitRanger
from shoal.api.quota_admission import QuotaAdmission
from shoal.control.resource_quota import OVER_REASON, ResourceQuotaController
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import Forbidden, Invalid, ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import ManualClock, merge

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


POD, QUOTA, CM = kind("v1", "Pod"), kind("v1", "ResourceQuota"), kind("v1", "ConfigMap")
DEPLOY = kind("apps/v1", "Deployment")


def admitting_store(node: str, clock: ManualClock) -> ObjectStore:
    s = ObjectStore(Replica(None, node, clock=clock), REG)
    quota_admission = QuotaAdmission(s.replica)
    s.admission += [LimitRanger(s.replica), quota_admission]
    s.update_admission.append(quota_admission.on_update)
    return s


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = admitting_store("n1", ManualClock())
    await s.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


def pod(name: str, cpu: str | None = "500m", memory: str | None = "64Mi",
        limit_cpu: str | None = None) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    limits = {"cpu": limit_cpu} if limit_cpu else {}
    return {"metadata": {"name": name}, "spec": {"containers": [
        {"name": "app", "image": "x", "resources": {"requests": requests, "limits": limits}}]}}


def quota(**hard: str) -> dict[str, Any]:
    return {"metadata": {"name": "compute"}, "spec": {"hard": hard}}


async def test_a_pod_past_the_cpu_quota_gets_kubernetes_403_message(store: ObjectStore) -> None:
    await store.create(QUOTA, quota(**{"requests.cpu": "1", "pods": "10"}), "default")
    await store.create(POD, pod("a"), "default")
    await store.create(POD, pod("b"), "default")
    with pytest.raises(Forbidden) as e:
        await store.create(POD, pod("c", cpu="200m"), "default")
    assert e.value.code == 403
    assert e.value.message == ('pods "c" is forbidden: exceeded quota: compute, requested: '
                               "requests.cpu=200m, used: requests.cpu=1, limited: requests.cpu=1")


async def test_the_pod_count_and_object_counts_are_enforced(store: ObjectStore) -> None:
    await store.create(QUOTA, quota(pods="1", **{"count/configmaps": "1",
                                                 "count/deployments.apps": "0"}), "default")
    await store.create(POD, pod("a"), "default")
    with pytest.raises(Forbidden, match="requested: pods=1, used: pods=1, limited: pods=1"):
        await store.create(POD, pod("b"), "default")
    await store.create(CM, {"metadata": {"name": "one"}}, "default")
    with pytest.raises(Forbidden, match=r"count/configmaps=1, used: count/configmaps=1"):
        await store.create(CM, {"metadata": {"name": "two"}}, "default")
    with pytest.raises(Forbidden, match=r'^deployments.apps "d" is forbidden: exceeded quota'):
        await store.create(DEPLOY, {"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"a": "b"}}, "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "default")


async def test_a_finished_pod_no_longer_counts(store: ObjectStore) -> None:
    await store.create(QUOTA, quota(pods="1"), "default")
    await store.create(POD, pod("a"), "default")
    done = store.get(POD, "default", "a") | {"status": {"phase": "Succeeded"}}
    await store.update(POD, done, "default", "a", "status")
    await store.create(POD, pod("b"), "default")


async def test_a_pod_without_the_constrained_request_is_refused(store: ObjectStore) -> None:
    await store.create(QUOTA, quota(**{"limits.cpu": "2", "requests.memory": "1Gi"}), "default")
    with pytest.raises(Forbidden) as e:
        await store.create(POD, pod("a", memory=None), "default")
    assert e.value.message == ('pods "a" is forbidden: failed quota: compute: must specify '
                               "limits.cpu for: app; requests.memory for: app")


async def test_a_limit_range_default_satisfies_the_quota(store: ObjectStore) -> None:
    await store.create(kind("v1", "LimitRange"), {"metadata": {"name": "defaults"}, "spec": {
        "limits": [{"type": "Container", "default": {"cpu": "300m"}}]}}, "default")
    await store.create(QUOTA, quota(**{"limits.cpu": "500m"}), "default")
    created = await store.create(POD, pod("a", cpu="100m"), "default")
    assert created["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "300m"}
    with pytest.raises(Forbidden, match=r"requested: limits\.cpu=300m, used: limits\.cpu=300m"):
        await store.create(POD, pod("b", cpu="100m"), "default")


async def test_the_controller_reports_hard_and_used(store: ObjectStore) -> None:
    await store.create(QUOTA, quota(**{"requests.cpu": "2", "requests.memory": "1Gi",
                                       "pods": "5"}), "default")
    for name in ("a", "b", "c"):
        await store.create(POD, pod(name), "default")
    await ResourceQuotaController(store).sync()
    st = store.get(QUOTA, "default", "compute")["status"]
    assert st["hard"] == {"requests.cpu": "2", "requests.memory": "1Gi", "pods": "5"}
    assert st["used"] == {"pods": "3", "requests.cpu": "1500m", "requests.memory": "192Mi"}


async def test_a_bad_quantity_is_a_422(store: ObjectStore) -> None:
    with pytest.raises(Invalid, match=r"spec.hard\[pods\]"):
        await store.create(QUOTA, quota(pods="lots"), "default")


async def test_two_sides_of_a_partition_over_admit_at_most_what_each_saw_and_it_shows(
        store: ObjectStore) -> None:
    await store.create(QUOTA, quota(pods="4"), "default")
    await store.create(POD, pod("before"), "default")
    other = admitting_store("n2", ManualClock())
    await merge(store, other)
    admitted: dict[str, int] = {}
    # Cut apart, each side admits until the quota it sees is spent: 3 remain on both.
    for side in (store, other):
        node = side.replica.node_id
        admitted[node] = 0
        for i in range(10):
            try:
                await side.create(POD, pod(f"{node}-{i}"), "default")
            except Forbidden:
                break
            admitted[node] += 1
    assert admitted == {"n1": 3, "n2": 3}
    await merge(other, store)
    await ResourceQuotaController(store).sync()
    st = store.get(QUOTA, "default", "compute")["status"]
    assert (st["used"]["pods"], st["hard"]["pods"]) == ("7", "4")  # 1 + 3 + 3: bounded, visible
    warned = [e for e in store.list(kind("v1", "Event"), "default") if e["reason"] == OVER_REASON]
    assert len(warned) == 1 and "pods=7/4" in warned[0]["message"]
    # And the merged side refuses more until pods go.
    with pytest.raises(Forbidden, match="used: pods=7, limited: pods=4"):
        await store.create(POD, pod("after"), "default")
    other.replica.close()


async def test_a_replica_set_past_the_quota_reports_failed_create_without_retrying(
        store: ObjectStore) -> None:
    from shoal.control.replicaset import ReplicaSetController

    await store.create(QUOTA, quota(pods="2"), "default")
    await store.create(kind("apps/v1", "ReplicaSet"), {"metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "default")
    controller = ReplicaSetController(store)
    await controller.sync()
    assert len(store.list(POD, "default")) == 2
    assert not await controller.sync()  # no 0.1 s retry loop while the quota is full
    (event,) = [e for e in store.list(kind("v1", "Event"), "default")
                if e["reason"] == "FailedCreate"]
    assert "is forbidden: exceeded quota: compute, requested: pods=1" in event["message"]


PVC, SVC = kind("v1", "PersistentVolumeClaim"), kind("v1", "Service")


def claim(name: str, size: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}


async def test_a_claim_resized_past_the_storage_quota_is_refused(store: ObjectStore) -> None:
    await store.create(QUOTA, quota(**{"requests.storage": "10Gi"}), "default")
    await store.create(PVC, claim("data", "4Gi"), "default")
    await store.create(PVC, claim("logs", "4Gi"), "default")
    grown = copy.deepcopy(store.get(PVC, "default", "data"))
    grown["spec"]["resources"]["requests"]["storage"] = "7Gi"
    with pytest.raises(Forbidden) as e:
        await store.update(PVC, grown, "default", "data")
    assert str(e.value) == ('persistentvolumeclaims "data" is forbidden: exceeded quota: compute, '
                            "requested: requests.storage=3Gi, used: requests.storage=8Gi, "
                            "limited: requests.storage=10Gi")
    grown["spec"]["resources"]["requests"]["storage"] = "6Gi"  # 2Gi more fits
    await store.update(PVC, grown, "default", "data")


async def test_a_service_turned_node_port_or_load_balancer_is_counted(store: ObjectStore) -> None:
    await store.create(QUOTA, quota(**{"services.nodeports": "2",
                                       "services.loadbalancers": "0"}), "default")
    ports = [{"name": n, "port": p} for n, p in (("http", 80), ("https", 443), ("admin", 9000))]
    await store.create(SVC, {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": ports}}, "default")
    web = copy.deepcopy(store.get(SVC, "default", "web"))
    web["spec"]["type"] = "NodePort"
    with pytest.raises(Forbidden, match=re.escape(
            "requested: services.nodeports=3, used: services.nodeports=0, "
            "limited: services.nodeports=2")):
        await store.update(SVC, web, "default", "web")
    web["spec"]["ports"] = ports[:2]
    await store.update(SVC, web, "default", "web")
    lb = copy.deepcopy(store.get(SVC, "default", "web"))
    lb["spec"]["type"] = "LoadBalancer"
    with pytest.raises(Forbidden, match=re.escape("services.loadbalancers=1")):
        await store.update(SVC, lb, "default", "web")


async def test_an_update_that_adds_nothing_passes_in_a_namespace_over_its_quota(
        store: ObjectStore) -> None:
    await store.create(PVC, claim("a", "4Gi"), "default")
    await store.create(PVC, claim("b", "4Gi"), "default")
    await store.create(QUOTA, quota(**{"requests.storage": "5Gi"}), "default")  # 8Gi used
    labelled = copy.deepcopy(store.get(PVC, "default", "b"))
    labelled["metadata"]["labels"] = {"tier": "cold"}
    await store.update(PVC, labelled, "default", "b")
