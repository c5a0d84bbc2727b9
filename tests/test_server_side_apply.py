"""Server-side apply and managedFields through the API, in process (one server for the
module): appliers own exactly what they apply, what they stop applying goes unless someone
else owns it, a value another manager owns is a 409 with Kubernetes' message and causes
unless forced, and every other write records an Update entry that takes fields over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests.inprocess_api import AUTH, InProcessApi, in_process_api

ASYNC = pytest.mark.asyncio(loop_scope="module")
NS = "/api/v1/namespaces/default"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
APPLY = {**AUTH, "Content-Type": "application/apply-patch+yaml"}
MERGE = {**AUTH, "Content-Type": "application/merge-patch+json"}
JSON_PATCH = {**AUTH, "Content-Type": "application/json-patch+json"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(Path(tmp_path_factory.mktemp("ssa"))) as a:
        yield a


def _cm(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> bytes:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                         "data": data})


async def _apply(api: InProcessApi, path: str, body: bytes, manager: str | None,
                 **params: str) -> tuple[int, dict[str, Any]]:
    if manager is not None:
        params["fieldManager"] = manager
    r = await api.client.patch(path, data=body, headers=APPLY, params=params)
    return r.status, await r.json()


def _owners(obj: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"], e.get("subresource", "")): e["fieldsV1"]
            for e in obj["metadata"].get("managedFields", [])}


@ASYNC
async def test_apply_creates_the_object_and_the_applier_owns_what_it_applied(
        api: InProcessApi) -> None:
    code, obj = await _apply(api, f"{NS}/configmaps/created", _cm("created", {"a": "1"}), "ops")
    assert code == 201
    assert obj["data"] == {"a": "1"}
    entry = obj["metadata"]["managedFields"][0]
    assert entry["manager"] == "ops" and entry["operation"] == "Apply"
    assert entry["apiVersion"] == "v1" and entry["fieldsType"] == "FieldsV1" and entry["time"]
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}}}
    stored = await (await api.client.get(f"{NS}/configmaps/created", headers=AUTH)).json()
    assert stored["metadata"]["managedFields"] == obj["metadata"]["managedFields"]
    # Applying the same configuration again changes nothing, not even the resourceVersion.
    code, again = await _apply(api, f"{NS}/configmaps/created", _cm("created", {"a": "1"}),
                               "ops")
    assert code == 200 and again["metadata"] == stored["metadata"]


@ASYNC
async def test_a_field_no_longer_applied_is_removed_unless_another_manager_owns_it(
        api: InProcessApi) -> None:
    path = f"{NS}/configmaps/removal"
    await _apply(api, path, _cm("removal", {"a": "1", "b": "2", "c": "3"}, {"x": "1"}), "one")
    await _apply(api, path, _cm("removal", {"c": "3"}), "two")  # two also owns c
    code, obj = await _apply(api, path, _cm("removal", {"a": "1"}), "one")
    assert code == 200
    assert obj["data"] == {"a": "1", "c": "3"}  # b went; c stays, two still applies it
    assert "labels" not in obj["metadata"]  # the whole labels map went with its last key
    assert _owners(obj)[("one", "Apply", "")] == {"f:data": {"f:a": {}}}


@ASYNC
async def test_a_conflicting_apply_is_a_409_naming_each_field_and_manager(
        api: InProcessApi) -> None:
    path = f"{NS}/configmaps/conflict"
    await _apply(api, path, _cm("conflict", {"a": "1", "b": "2"}), "one")
    code, status = await _apply(api, path, _cm("conflict", {"a": "9", "b": "2"}), "two")
    assert code == 409
    assert status["reason"] == "Conflict" and status["code"] == 409
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "one": .data.a'
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "one"', "field": ".data.a"}]
    code, status = await _apply(api, path, _cm("conflict", {"a": "9", "b": "8"}), "two")
    assert status["message"] == ('Apply failed with 2 conflicts: conflicts with "one":\n'
                                 "- .data.a\n- .data.b")
    # The same value is no conflict: both own it.
    code, obj = await _apply(api, path, _cm("conflict", {"b": "2"}), "two")
    assert code == 200
    assert "f:b" in _owners(obj)[("one", "Apply", "")]["f:data"]
    assert "f:b" in _owners(obj)[("two", "Apply", "")]["f:data"]


@ASYNC
async def test_force_takes_the_field_from_its_owner(api: InProcessApi) -> None:
    path = f"{NS}/configmaps/forced"
    await _apply(api, path, _cm("forced", {"a": "1", "b": "2"}), "one")
    code, obj = await _apply(api, path, _cm("forced", {"a": "9"}), "two", force="true")
    assert code == 200 and obj["data"] == {"a": "9", "b": "2"}
    owners = _owners(obj)
    assert owners[("one", "Apply", "")] == {"f:data": {"f:b": {}}}
    assert owners[("two", "Apply", "")] == {"f:data": {"f:a": {}}}
    # one no longer owns a: applying without it leaves two's value alone.
    code, obj = await _apply(api, path, _cm("forced", {"b": "2"}), "one")
    assert obj["data"] == {"a": "9", "b": "2"}


@ASYNC
async def test_an_update_takes_a_field_from_the_applier_without_a_conflict(
        api: InProcessApi) -> None:
    path = f"{NS}/configmaps/updated"
    await _apply(api, path, _cm("updated", {"a": "1", "b": "2"}), "one")
    r = await api.client.patch(path, data=b'{"data":{"a":"5"}}', headers=MERGE,
                               params={"fieldManager": "editor"})
    obj = await r.json()
    assert r.status == 200
    owners = _owners(obj)
    assert owners[("editor", "Update", "")] == {"f:data": {"f:a": {}}}
    assert owners[("one", "Apply", "")] == {"f:data": {"f:b": {}}}
    assert obj["metadata"]["managedFields"][0]["operation"] == "Apply"  # Apply entries first
    code, status = await _apply(api, path, _cm("updated", {"a": "1", "b": "2"}), "one")
    assert code == 409
    assert status["message"].startswith('Apply failed with 1 conflict: conflict with "editor" '
                                        "using v1")
    assert status["message"].endswith(": .data.a")


@ASYNC
async def test_writes_without_a_field_manager_are_named_by_their_user_agent(
        api: InProcessApi) -> None:
    r = await api.client.post(f"{NS}/configmaps", data=_cm("by-agent", {"a": "1"}),
                              headers={**AUTH, "User-Agent": "Go-http-client/1.1"})
    obj = await r.json()
    assert r.status == 201
    assert _owners(obj) == {("Go-http-client", "Update", ""): {"f:data": {"f:a": {}}}}
    r = await api.client.put(f"{NS}/configmaps/by-agent",
                             data=_cm("by-agent", {"a": "1", "b": "2"}),
                             headers=AUTH, params={"fieldManager": "kubectl-edit"})
    owners = _owners(await r.json())
    assert owners[("kubectl-edit", "Update", "")] == {"f:data": {"f:b": {}}}
    assert owners[("Go-http-client", "Update", "")] == {"f:data": {"f:a": {}}}


@ASYNC
async def test_apply_needs_a_field_manager_and_force_needs_an_apply(api: InProcessApi) -> None:
    code, status = await _apply(api, f"{NS}/configmaps/nameless", _cm("nameless", {}), None)
    assert code == 422
    assert status["message"] == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                                 "Required value: is required for apply patch")
    r = await api.client.patch(f"{NS}/configmaps/created", data=b"{}", headers=MERGE,
                               params={"force": "true"})
    assert r.status == 422
    assert "force: Forbidden: may not be specified for non-apply patch" in \
        (await r.json())["message"]
    body = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "created", "managedFields": [{"manager": "x", "operation": "Apply"}]}})
    code, status = await _apply(api, f"{NS}/configmaps/created", body, "ops")
    assert code == 400 and "managedFields must be nil" in status["message"]


@ASYNC
async def test_a_dry_run_apply_answers_without_storing(api: InProcessApi) -> None:
    code, obj = await _apply(api, f"{NS}/configmaps/dry", _cm("dry", {"a": "1"}), "ops",
                             dryRun="All")
    assert code == 201 and obj["metadata"]["managedFields"][0]["manager"] == "ops"
    r = await api.client.get(f"{NS}/configmaps/dry", headers=AUTH)
    assert r.status == 404


@ASYNC
async def test_kubectl_keeps_the_client_side_annotation_in_step_and_a_dry_run_changes_nothing(
        api: InProcessApi) -> None:
    path = f"{NS}/configmaps/annotated"
    last = '{"apiVersion":"v1","kind":"ConfigMap","data":{"a":"1"}}'
    body = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "annotated",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last}},
        "data": {"a": "1"}})
    r = await api.client.post(f"{NS}/configmaps", data=body, headers=AUTH,
                              params={"fieldManager": "kubectl-client-side-apply"})
    assert r.status == 201
    code, dry = await _apply(api, path, _cm("annotated", {"a": "2"}), "kubectl", dryRun="All")
    annotations = dry["metadata"]["annotations"]
    assert code == 200 and '"a":"2"' in annotations["kubectl.kubernetes.io/last-applied-configuration"]
    stored = await (await api.client.get(path, headers=AUTH)).json()
    assert stored["data"] == {"a": "1"}
    assert stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] \
        == last


@ASYNC
async def test_managed_fields_can_be_cleared_by_a_json_patch(api: InProcessApi) -> None:
    path = f"{NS}/configmaps/cleared"
    await _apply(api, path, _cm("cleared", {"a": "1"}), "ops")
    patch = b'[{"op":"replace","path":"/metadata/managedFields","value":[{}]}]'
    r = await api.client.patch(path, data=patch, headers=JSON_PATCH)
    assert "managedFields" not in (await r.json())["metadata"]


def _deployment(containers: list[dict[str, Any]], replicas: int | None = 2) -> bytes:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": containers}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return orjson.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": "web"}, "spec": spec})


@ASYNC
async def test_containers_merge_by_name_and_each_applier_keeps_its_own(
        api: InProcessApi) -> None:
    path = f"{DEPLOYMENTS}/web"
    main = {"name": "main", "image": "nginx", "ports": [{"containerPort": 80}]}
    code, obj = await _apply(api, path, _deployment([main]), "app")
    assert code == 201
    fields = _owners(obj)[("app", "Apply", "")]
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers['k:{"name":"main"}']["f:ports"] == {
        'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}
    side = {"name": "side", "image": "busybox"}
    code, obj = await _apply(api, path, _deployment([side], None), "mesh-injector")
    names = [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]
    assert names == ["main", "side"]
    # The app drops its container: it goes, the injector's stays.
    other = {"name": "other", "image": "nginx"}
    code, obj = await _apply(api, path, _deployment([other]), "app")
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["side", "other"]


@ASYNC
async def test_scale_then_reapply_of_replicas_conflicts_with_the_scale_subresource(
        api: InProcessApi) -> None:
    app = {"name": "app", "image": "nginx"}
    path = f"{DEPLOYMENTS}/scaled"
    body = _deployment([app]).replace(b'"name":"web"}', b'"name":"scaled"}', 1)
    code, _ = await _apply(api, path, body, "app")
    assert code == 201
    r = await api.client.patch(f"{path}/scale", data=b'{"spec":{"replicas":5}}',
                               headers=MERGE, params={"fieldManager": "kubectl"})
    assert r.status == 200
    code, status = await _apply(api, path, body, "app")
    assert code == 409
    assert status["message"] == ('Apply failed with 1 conflict: conflict with "kubectl" with '
                                 'subresource "scale" using apps/v1: .spec.replicas')


@ASYNC
async def test_status_applied_through_the_subresource_is_owned_apart(api: InProcessApi) -> None:
    # Its own Deployment: with xdist the test may run without the others of the module.
    path = f"{DEPLOYMENTS}/status-apart"
    body = _deployment([{"name": "other", "image": "nginx"}]).replace(
        b'"name":"web"}', b'"name":"status-apart"}', 1)
    code, _ = await _apply(api, path, body, "app")
    assert code == 201
    status = orjson.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "status-apart"},
                           "status": {"observedGeneration": 1}})
    code, obj = await _apply(api, f"{path}/status", status, "controller")
    assert code == 200
    assert _owners(obj)[("controller", "Apply", "status")] == {
        "f:status": {"f:observedGeneration": {}}}
    # A main-resource apply neither owns status nor removes it.
    code, obj = await _apply(api, path, body, "app")
    assert obj["status"]["observedGeneration"] == 1
    assert "f:status" not in _owners(obj)[("app", "Apply", "")]


def _without_revision(obj: dict[str, Any] | None) -> dict[str, Any]:
    """The object without resourceVersion, each replica's own revision."""
    assert obj is not None
    meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


async def _sync(src: InProcessApi, dst: InProcessApi, name: str) -> None:
    entry = src.store.replica.entry("configmaps", "default", name)
    assert entry is not None
    merged = dst.store.replica.merge("configmaps", "default", name, entry.document())
    if merged is not None:
        await merged[1]


@ASYNC
async def test_applies_on_two_sides_of_a_partition_merge_to_one_owner_list(
        api: InProcessApi, tmp_path_factory: pytest.TempPathFactory) -> None:
    async with in_process_api(Path(tmp_path_factory.mktemp("ssa-peer"))) as peer:
        path = f"{NS}/configmaps/split"
        await _apply(api, path, _cm("split", {"a": "1", "b": "2"}), "gitops")
        await _sync(api, peer, "split")
        # Apart: gitops drops b here; an operator sets c over there.
        await _apply(api, path, _cm("split", {"a": "1"}), "gitops")
        _, there = await _apply(peer, path, _cm("split", {"c": "3"}), "operator")
        await _sync(api, peer, "split")
        await _sync(peer, api, "split")
        ours, theirs = (_without_revision(a.store.replica.get("configmaps", "default", "split"))
                        for a in (api, peer))
        assert ours == theirs  # every replica agrees
        # Fields merge leaf by leaf; managedFields is one value: the later side's list.
        assert ours["data"] == {"a": "1", "c": "3"}
        assert ours["metadata"]["managedFields"] == there["metadata"]["managedFields"]
        # That list still says gitops owns b, which it dropped on the other side; its next
        # apply sets its entry right, and c stays the operator's.
        _, after = await _apply(api, path, _cm("split", {"a": "1"}), "gitops")
        assert after["data"] == {"a": "1", "c": "3"}
        assert _owners(after)[("gitops", "Apply", "")] == {"f:data": {"f:a": {}}}
        assert _owners(after)[("operator", "Apply", "")] == {"f:data": {"f:c": {}}}
