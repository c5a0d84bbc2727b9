"""Compatibility bugs strict clients hit (issue 12), on an in-process API and store."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shoal.api.admission import default_tolerations
from shoal.api.authentication import Credentials
from shoal.api.server import ApiServer
from shoal.control.disruption import DisruptionController
from shoal.control.kubernetes_service import KubernetesService
from shoal.control.replication_controller import ReplicationControllerController
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

REG = KindRegistry()
TOKEN = "compat-admin"
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


POD, PDB, RC = kind("v1", "Pod"), kind("policy/v1", "PodDisruptionBudget"), \
    kind("v1", "ReplicationController")


@pytest.fixture
async def api() -> AsyncIterator[tuple[ObjectStore, TestClient[Any, Any]]]:
    store = ObjectStore(Replica(None, "compat-1"), REG)
    await store.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    client: TestClient[Any, Any] = TestClient(TestServer(
        ApiServer(store, REG, Credentials({TOKEN: "admin"})).app()))
    await client.start_server()
    try:
        yield store, client
    finally:
        await client.close()
        store.replica.close()


async def call(client: TestClient[Any, Any], method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    r = await client.request(method, path, headers=AUTH,
                             data=None if body is None else orjson.dumps(body))
    return r.status, orjson.loads(await r.read())


async def test_a_secret_with_line_wrapped_base64_is_accepted_and_stored_unwrapped(
        api: tuple[ObjectStore, TestClient[Any, Any]]) -> None:
    _, client = api
    raw = b"-----BEGIN CERTIFICATE-----\n" + b"A" * 120 + b"\n-----END CERTIFICATE-----\n"
    encoded = base64.b64encode(raw).decode()
    wrapped = "\n".join(encoded[i:i + 64] for i in range(0, len(encoded), 64))
    code, body = await call(client, "POST", "/api/v1/namespaces/default/secrets", {
        "metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": wrapped, "tls.key": base64.b64encode(b"key").decode()}})
    assert code == 201, body
    assert body["data"]["tls.crt"] == encoded


async def test_a_service_created_from_json_has_a_status(
        api: tuple[ObjectStore, TestClient[Any, Any]]) -> None:
    _, client = api
    code, body = await call(client, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}})
    assert code == 201
    assert body["status"] == {"loadBalancer": {}}


@pytest.mark.parametrize(("plural", "kind_name", "obj"), [
    ("services", "Service", {"spec": {"ports": [{"port": 80}]}}),
    ("serviceaccounts", "ServiceAccount", {}),
])
async def test_deleting_a_service_or_service_account_returns_the_deleted_object(
        api: tuple[ObjectStore, TestClient[Any, Any]], plural: str, kind_name: str,
        obj: dict[str, Any]) -> None:
    _, client = api
    code, created = await call(client, "POST", f"/api/v1/namespaces/default/{plural}",
                               {"metadata": {"name": "gone"}, **obj})
    assert code == 201
    code, body = await call(client, "DELETE", f"/api/v1/namespaces/default/{plural}/gone")
    assert code == 200
    assert body["kind"] == kind_name
    assert body["metadata"]["uid"] == created["metadata"]["uid"]


async def test_a_conflict_answers_a_status_in_kubernetes_field_order(
        api: tuple[ObjectStore, TestClient[Any, Any]]) -> None:
    _, client = api
    code, cm = await call(client, "POST", "/api/v1/namespaces/default/configmaps",
                          {"metadata": {"name": "c"}, "data": {"a": "1"}})
    stale = {**cm, "metadata": {**cm["metadata"], "resourceVersion": "1"}}
    code, body = await call(client, "PUT", "/api/v1/namespaces/default/configmaps/c", stale)
    assert code == 409
    assert list(body) == ["kind", "apiVersion", "metadata", "status", "message", "reason",
                          "details", "code"]
    assert body["details"] == {"name": "c", "kind": "configmaps"}
    code, body = await call(client, "POST", "/api/v1/namespaces/default/configmaps",
                            {"metadata": {"name": "c"}})
    assert (code, body["reason"], list(body)[-1]) == (409, "AlreadyExists", "code")


def test_a_new_pod_tolerates_not_ready_and_unreachable_for_300_seconds() -> None:
    pod: dict[str, Any] = {"spec": {"containers": [{"name": "c"}]}}
    default_tolerations(POD, pod)
    assert pod["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300}]
    own = {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
           "effect": "NoExecute", "tolerationSeconds": 6000}
    pod = {"spec": {"tolerations": [own]}}
    default_tolerations(POD, pod)
    assert pod["spec"]["tolerations"][0] == own
    assert [t["key"] for t in pod["spec"]["tolerations"]] == [
        "node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"]
    everything = {"spec": {"tolerations": [{"operator": "Exists"}]}}
    default_tolerations(POD, everything)
    assert everything["spec"]["tolerations"] == [{"operator": "Exists"}]


def ready_pod(name: str, labels: dict[str, str], owner: dict[str, Any] | None = None,
              ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "x"}]}}


async def make_ready(store: ObjectStore, name: str) -> None:
    pod = dict(store.get(POD, "default", name))  # a stored object is read-only: a copy
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    await store.update(POD, pod, "default", name, "status")


async def test_eviction_spends_the_budget_then_answers_429_with_kubernetes_message(
        api: tuple[ObjectStore, TestClient[Any, Any]]) -> None:
    store, client = api
    for n in ("a", "b", "c"):
        await store.create(POD, ready_pod(n, {"app": "web"}), "default")
        await make_ready(store, n)
    await store.create(PDB, {"metadata": {"name": "web"}, "spec": {
        "minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}, "default")
    await DisruptionController(store).sync()
    status = store.get(PDB, "default", "web")["status"]
    assert (status["expectedPods"], status["currentHealthy"], status["desiredHealthy"],
            status["disruptionsAllowed"]) == (3, 3, 2, 1)
    assert status["conditions"][0]["reason"] == "SufficientPods"

    def eviction(pod: str) -> dict[str, Any]:
        return {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod, "namespace": "default"}}

    code, body = await call(client, "POST", "/api/v1/namespaces/default/pods/a/eviction",
                            eviction("a"))
    assert (code, body["status"]) == (201, "Success")
    assert store.find(POD, "default", "a") is None
    assert "a" in store.get(PDB, "default", "web")["status"]["disruptedPods"]
    await DisruptionController(store).sync()
    code, body = await call(client, "POST", "/api/v1/namespaces/default/pods/b/eviction",
                            eviction("b"))
    assert code == 429
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == ("Cannot evict pod as it would violate the pod's disruption "
                               "budget.")
    assert body["details"]["causes"] == [{"reason": "DisruptionBudget", "message": (
        "The disruption budget web needs 2 healthy pods and has 2 currently")}]
    code, body = await call(client, "POST", "/api/v1/namespaces/default/pods/b/eviction",
                            eviction("c"))
    assert code == 400
    code, body = await call(client, "POST", "/api/v1/namespaces/default/pods/zz/eviction",
                            eviction("zz"))
    assert code == 404


async def test_a_budget_by_percentage_counts_the_controllers_replicas() -> None:
    store = ObjectStore(Replica(None, "compat-2"), REG)
    await store.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    rc = await store.create(RC, {"metadata": {"name": "old"}, "spec": {
        "replicas": 4, "template": {"metadata": {"labels": {"app": "old"}},
                                    "spec": {"containers": [{"name": "c", "image": "x"}]}}}},
        "default")
    assert rc["spec"]["selector"] == {"app": "old"}
    ctl = ReplicationControllerController(store)
    await ctl.sync()
    pods = store.list(POD, "default")
    assert len(pods) == 4
    assert {p["metadata"]["ownerReferences"][0]["kind"] for p in pods} == \
        {"ReplicationController"}
    for p in pods[:3]:
        await make_ready(store, p["metadata"]["name"])
    await ctl.sync()
    assert store.get(RC, "default", "old")["status"]["readyReplicas"] == 3
    assert store.get(RC, "default", "old")["spec"]["selector"] == {"app": "old"}
    await store.create(PDB, {"metadata": {"name": "old"}, "spec": {
        "maxUnavailable": "50%", "selector": {"matchLabels": {"app": "old"}}}}, "default")
    await DisruptionController(store).sync()
    status = store.get(PDB, "default", "old")["status"]
    assert (status["expectedPods"], status["desiredHealthy"], status["currentHealthy"],
            status["disruptionsAllowed"]) == (4, 2, 3, 1)
    store.replica.close()


async def test_the_kubernetes_service_lists_the_api_of_every_live_node() -> None:
    store = ObjectStore(Replica(None, "compat-3"), REG)
    for ns in ("default", "kube-node-lease"):
        await store.create(kind("v1", "Namespace"), {"metadata": {"name": ns}})
    now = store.replica.wall.now()
    for name, ip, renewed in (("a", "10.0.0.1", now), ("b", "10.0.0.2", now - 100)):
        await store.create(kind("v1", "Node"), {"metadata": {"name": name}, "status": {
            "addresses": [{"type": "InternalIP", "address": ip}]}})
        await store.create(kind("coordination.k8s.io/v1", "Lease"), {
            "metadata": {"name": name}, "spec": {"renewTime": now_rfc3339(renewed)}},
            "kube-node-lease")
    await KubernetesService(store, 6443).sync()
    svc = store.get(kind("v1", "Service"), "default", "kubernetes")
    assert svc["spec"]["clusterIP"] == "10.96.0.1"
    assert svc["spec"]["ports"][0] == {"name": "https", "port": 443, "protocol": "TCP",
                                       "targetPort": 6443}
    ep = store.get(kind("v1", "Endpoints"), "default", "kubernetes")
    assert ep["subsets"] == [{"addresses": [{"ip": "10.0.0.1"}],
                              "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]
    es = store.get(kind("discovery.k8s.io/v1", "EndpointSlice"), "default", "kubernetes")
    assert [e["addresses"] for e in es["endpoints"]] == [["10.0.0.1"]]
    await asyncio.sleep(0)
    store.replica.close()


async def test_a_replication_controller_whose_selector_misses_its_template_is_refused() -> None:
    from shoal.store.objects import Invalid

    store = ObjectStore(Replica(None, "compat-4"), REG)
    await store.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    with pytest.raises(Invalid) as e:
        await store.create(RC, {"metadata": {"name": "bad"}, "spec": {
            "selector": {"app": "a"}, "template": {"metadata": {"labels": {"app": "b"}},
                                                   "spec": {"containers": [
                                                       {"name": "c", "image": "x"}]}}}},
            "default")
    assert "`selector` does not match template `labels`" in str(e.value)
    store.replica.close()
