"""What controllers create carries ``metadata.managedFields`` as in Kubernetes: one Update
entry by ``kube-controller-manager`` owning what the controller set (labels, owner
references, spec; not status, nor the server's metadata), one tree shared by the objects of
a template, and a user's later writes share the object with it as with any other manager."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from shoal.control.cronjob import CronJobController
from shoal.control.daemonset import DaemonSetController
from shoal.control.deployment import DeploymentController
from shoal.control.field_owner import CONTROLLER_MANAGER, updated_by
from shoal.control.horizontal_autoscaler import HorizontalPodAutoscaler
from shoal.control.job import JobController
from shoal.control.replicaset import ReplicaSetController
from shoal.control.statefulset import StatefulSetController
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.inprocess_api import AUTH, InProcessApi, in_process_api
from tests.test_controller_daemonset import add_node
from tests.test_cronjob import REG, T0, Clock, kind
from tests.test_hpa import FakeReports, autoscaler
from tests.test_hpa import pods as hpa_pods

NS, POD = kind("v1", "Namespace"), kind("v1", "Pod")
RS, DEPLOY = kind("apps/v1", "ReplicaSet"), kind("apps/v1", "Deployment")
STS, DS = kind("apps/v1", "StatefulSet"), kind("apps/v1", "DaemonSet")
JOB, CRONJOB = kind("batch/v1", "Job"), kind("batch/v1", "CronJob")


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1", clock=Clock()), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


def template(app: str, restart: str = "Always") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}}, "spec": {
        "restartPolicy": restart,
        "containers": [{"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}}


def replicaset(name: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": template(name)}}


def only_entry(obj: dict[str, Any]) -> dict[str, Any]:
    entries = obj["metadata"].get("managedFields")
    assert entries is not None and len(entries) == 1, entries
    return dict(entries[0])


def owned(obj: dict[str, Any]) -> dict[str, Any]:
    return {e["manager"]: e["fieldsV1"] for e in obj["metadata"].get("managedFields", [])}


async def test_a_pod_made_by_a_replicaset_names_kube_controller_manager_with_the_templates_fields(
        store: ObjectStore) -> None:
    rs = await store.create(RS, replicaset("web", 1), "default")
    await ReplicaSetController(store).sync()
    [pod] = store.list(POD, "default")
    entry = only_entry(pod)
    tree = entry.pop("fieldsV1")
    assert entry == {"manager": CONTROLLER_MANAGER, "operation": "Update", "apiVersion": "v1",
                     "time": now_rfc3339(T0), "fieldsType": "FieldsV1"}
    uid_key = 'k:{"uid":"' + rs["metadata"]["uid"] + '"}'
    assert tree["f:metadata"]["f:labels"] == {"f:app": {}}
    assert set(tree["f:metadata"]["f:ownerReferences"][uid_key]) >= {
        ".", "f:apiVersion", "f:kind", "f:name", "f:uid", "f:controller"}
    container = tree["f:spec"]["f:containers"]['k:{"name":"c"}']
    assert {"f:image", "f:name", "f:ports"} <= set(container)
    assert 'k:{"containerPort":80,"protocol":"TCP"}' in container["f:ports"]
    assert "f:restartPolicy" in tree["f:spec"]  # the defaulted fields are the creator's too
    # The server's own metadata and the status are no manager's.
    assert set(tree["f:metadata"]) == {"f:labels", "f:ownerReferences"}
    assert "f:status" not in tree


async def test_the_pods_of_one_template_share_one_tree(store: ObjectStore) -> None:
    await store.create(RS, replicaset("web", 3), "default")
    await ReplicaSetController(store).sync()
    # (the replica's own values: the tests' store hands out frozen copies)
    trees = [only_entry(p)["fieldsV1"] for p in store.replica.list("pods")]
    assert len(trees) == 3
    assert trees[0] is trees[1] is trees[2]  # read-only, so shared rather than copied


async def _deployment(store: ObjectStore) -> list[dict[str, Any]]:
    await store.create(DEPLOY, {"metadata": {"name": "api"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "api"}},
        "template": template("api")}}, "default")
    await DeploymentController(store).sync()
    return store.list(RS, "default")


async def _job(store: ObjectStore) -> list[dict[str, Any]]:
    await store.create(JOB, {"metadata": {"name": "once"}, "spec": {
        "template": template("once", "Never")}}, "default")
    await JobController(store, backoff_base=0).sync()
    return store.list(POD, "default")


async def _statefulset(store: ObjectStore) -> list[dict[str, Any]]:
    await store.create(STS, {"metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": template("db")}}, "default")
    await StatefulSetController(store).sync()
    return store.list(POD, "default")


async def _daemonset(store: ObjectStore) -> list[dict[str, Any]]:
    await add_node(store, "n1")
    await store.create(DS, {"metadata": {"name": "agent"}, "spec": {
        "selector": {"matchLabels": {"app": "agent"}}, "template": template("agent")}},
        "default")
    await DaemonSetController(store).sync()
    return store.list(POD, "default")


async def _cronjob(store: ObjectStore) -> list[dict[str, Any]]:
    await store.create(CRONJOB, {"metadata": {"name": "tick"}, "spec": {
        "schedule": "* * * * *",
        "jobTemplate": {"spec": {"template": template("tick", "Never")}}}}, "default")
    ctl = CronJobController(store)
    clock = store.replica.wall
    assert isinstance(clock, Clock)
    clock.t = T0 + 31  # 08:01:01, a minute's time has come
    await ctl.sync()
    return store.list(JOB, "default")


@pytest.mark.parametrize("made", [_deployment, _job, _statefulset, _daemonset, _cronjob],
                         ids=["a Deployment's ReplicaSet", "a Job's pod", "a StatefulSet's pod",
                              "a DaemonSet's pod", "a CronJob's Job"])
async def test_what_each_workload_controller_creates_is_owned_by_kube_controller_manager(
        store: ObjectStore, made: Callable[[ObjectStore], Awaitable[list[dict[str, Any]]]]
) -> None:
    objs = await made(store)
    assert objs
    for obj in objs:
        entry = only_entry(obj)
        assert entry["manager"] == CONTROLLER_MANAGER and entry["operation"] == "Update"
        assert entry["apiVersion"] == obj["apiVersion"]
        assert "f:ownerReferences" in entry["fieldsV1"]["f:metadata"]
        assert "f:template" in entry["fieldsV1"]["f:spec"] or \
            "f:containers" in entry["fieldsV1"]["f:spec"]


async def test_the_deployment_controller_takes_back_a_replicasets_replicas_another_set(
        store: ObjectStore) -> None:
    # Its writes to its ReplicaSets record an Update (updated_by): the field moves back to it.
    [rs] = await _deployment(store)
    other = copy.deepcopy(rs)
    other["spec"]["replicas"] = 5
    await store.update(RS, other, "default", rs["metadata"]["name"],
                       managed_fields=updated_by(store, RS, manager="someone"))
    await DeploymentController(store).sync()
    rs = store.get(RS, "default", rs["metadata"]["name"])
    assert rs["spec"]["replicas"] == 1
    owners = {e["manager"]: e["fieldsV1"] for e in rs["metadata"]["managedFields"]}
    assert "f:replicas" in owners[CONTROLLER_MANAGER]["f:spec"]
    assert "f:replicas" not in owners.get("someone", {}).get("f:spec", {})


# -- a user's writes on a controller's pod, through the API ---------------------------------


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcessApi]:
    async with in_process_api(tmp_path) as a:
        yield a


async def _controllers_pod(api: InProcessApi) -> str:
    await api.store.create(RS, replicaset("web", 1), "default")
    await ReplicaSetController(api.store).sync()
    [pod] = api.store.list(POD, "default")
    return f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}"


async def test_a_users_label_is_the_users_and_the_rest_stays_the_controllers(
        api: InProcessApi) -> None:
    path = await _controllers_pod(api)
    r = await api.client.patch(path, params={"fieldManager": "kubectl-label"},
                               data=orjson.dumps({"metadata": {"labels": {"tier": "web"}}}),
                               headers={**AUTH, "Content-Type": "application/merge-patch+json"})
    assert r.status == 200, await r.text()
    by = owned(await r.json())
    assert set(by) == {CONTROLLER_MANAGER, "kubectl-label"}
    assert by["kubectl-label"] == {"f:metadata": {"f:labels": {"f:tier": {}}}}
    assert "f:tier" not in by[CONTROLLER_MANAGER]["f:metadata"]["f:labels"]
    assert "f:app" in by[CONTROLLER_MANAGER]["f:metadata"]["f:labels"]
    assert "f:containers" in by[CONTROLLER_MANAGER]["f:spec"]


async def test_an_apply_of_the_controllers_field_conflicts_until_forced(
        api: InProcessApi) -> None:
    path = await _controllers_pod(api)
    pod = await (await api.client.get(path, headers=AUTH)).json()
    config = orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": pod["metadata"]["name"]}, "spec": {"containers": [
            {"name": "c", "image": "nginx:2"}]}})
    headers = {**AUTH, "Content-Type": "application/apply-patch+yaml"}
    r = await api.client.patch(path, params={"fieldManager": "ops"}, data=config,
                               headers=headers)
    assert r.status == 409
    message = (await r.json())["message"]
    assert f'conflict with "{CONTROLLER_MANAGER}" using v1' in message
    assert '.spec.containers[name="c"].image' in message
    r = await api.client.patch(path, params={"fieldManager": "ops", "force": "true"},
                               data=config, headers=headers)
    assert r.status == 200, await r.text()
    by = owned(await r.json())
    container = 'k:{"name":"c"}'
    assert "f:image" in by["ops"]["f:spec"]["f:containers"][container]
    assert "f:image" not in by[CONTROLLER_MANAGER]["f:spec"]["f:containers"][container]


async def test_an_autoscalers_replicas_are_its_own_and_a_reapply_of_them_conflicts(
        api: InProcessApi) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    headers = {**AUTH, "Content-Type": "application/apply-patch+yaml"}

    def manifest(replicas: int) -> bytes:
        return orjson.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": {"name": "web"}, "spec": {
                                 "replicas": replicas,
                                 "selector": {"matchLabels": {"app": "web"}},
                                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                                     "containers": [{"name": "c", "image": "x"}]}}}})

    r = await api.client.patch(path, params={"fieldManager": "ops"}, data=manifest(2),
                               headers=headers)
    assert r.status == 201, await r.text()
    await hpa_pods(api.store, 2)
    await autoscaler(api.store)
    metrics = FakeReports(api.store)
    metrics.cpu = {"web-0": 200, "web-1": 200}  # twice the target: four replicas
    await HorizontalPodAutoscaler(api.store, metrics).sync()
    deploy = await (await api.client.get(path, headers=AUTH)).json()
    assert deploy["spec"]["replicas"] == 4
    scaler = [e for e in deploy["metadata"]["managedFields"]
              if e["manager"] == CONTROLLER_MANAGER]
    assert [(e["operation"], e.get("subresource"), e["fieldsV1"]) for e in scaler] == [
        ("Update", "scale", {"f:spec": {"f:replicas": {}}})]
    assert "f:replicas" not in owned(deploy)["ops"]["f:spec"]
    # As in Kubernetes: a manifest that still sets replicas conflicts with the autoscaler.
    r = await api.client.patch(path, params={"fieldManager": "ops"}, data=manifest(2),
                               headers=headers)
    assert r.status == 409
    assert (f'conflict with "{CONTROLLER_MANAGER}" with subresource "scale" using apps/v1: '
            ".spec.replicas") in (await r.json())["message"]
