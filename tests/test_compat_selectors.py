"""Field selectors answer as the Kubernetes API server does: a field the kind cannot be
selected on is a 400 BadRequest ``field label not supported: <field>``, and every field
Kubernetes supports for a kind keeps filtering. In process, one server for the module;
no string keys on requests, so aiohttp's NotAppKeyWarning (an error here) never fires."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from shoal.model.selectors import FIELD_LABELS, FieldSelector, SelectorError
from tests.inprocess_api import AUTH, InProcessApi, in_process_api

ASYNC = pytest.mark.asyncio(loop_scope="module")

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
       "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "n1",
                "serviceAccountName": "builder"}}
CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"k": "v"}}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
          "type": "kubernetes.io/basic-auth", "stringData": {"username": "u", "password": "p"}}
EVENT = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
         "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
         "reason": "Started", "type": "Normal", "message": "m"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(Path(tmp_path_factory.mktemp("compat-selectors"))) as a:
        base = "/api/v1/namespaces/default/"
        for plural, obj in (("pods", POD), ("configmaps", CM), ("secrets", SECRET),
                            ("events", EVENT)):
            r = await a.client.post(base + plural, json=obj, headers=AUTH)
            assert r.status == 201, await r.text()
        yield a


async def _list(api: InProcessApi, path: str, selector: str) -> tuple[int, dict[str, Any]]:
    r = await api.client.get(f"{path}?fieldSelector={quote(selector)}", headers=AUTH)
    return r.status, await r.json()


@ASYNC
async def test_an_unsupported_field_is_a_bad_request(api: InProcessApi) -> None:
    status, body = await _list(api, "/api/v1/namespaces/default/configmaps", "spec.x=y")
    assert status == 400
    assert body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert body["message"] == "field label not supported: spec.x"


@ASYNC
async def test_a_field_of_another_kind_is_refused(api: InProcessApi) -> None:
    # spec.nodeName is a pod field; configmaps cannot be selected on it.
    status, body = await _list(api, "/api/v1/configmaps", "spec.nodeName=n1")
    assert (status, body["message"]) == (400, "field label not supported: spec.nodeName")


@ASYNC
async def test_a_watch_with_an_unsupported_field_is_refused(api: InProcessApi) -> None:
    r = await api.client.get("/api/v1/namespaces/default/configmaps?watch=true&"
                             "fieldSelector=data.k%3Dv", headers=AUTH)
    assert r.status == 400
    assert (await r.json())["message"] == "field label not supported: data.k"


@ASYNC
async def test_delete_collection_with_an_unsupported_field_deletes_nothing(
        api: InProcessApi) -> None:
    r = await api.client.delete("/api/v1/namespaces/default/configmaps?fieldSelector=x%3Dy",
                                headers=AUTH)
    assert r.status == 400
    status, body = await _list(api, "/api/v1/namespaces/default/configmaps", "metadata.name=c1")
    assert status == 200 and [o["metadata"]["name"] for o in body["items"]] == ["c1"]


@pytest.mark.parametrize(("path", "selector", "names"), [
    ("/api/v1/namespaces/default/configmaps", "metadata.name=c1", ["c1"]),
    ("/api/v1/configmaps", "metadata.namespace=default,metadata.name!=c1", []),
    ("/api/v1/pods", "spec.nodeName=n1", ["p1"]),
    ("/api/v1/pods", "spec.nodeName=n2", []),
    ("/api/v1/pods", "spec.restartPolicy=Always,spec.hostNetwork=false", ["p1"]),
    ("/api/v1/pods", "spec.schedulerName=default-scheduler", ["p1"]),
    ("/api/v1/pods", "spec.serviceAccountName=builder,status.podIP=", ["p1"]),
    ("/api/v1/pods", "status.nominatedNodeName=", ["p1"]),
    ("/api/v1/namespaces/default/secrets", "type=kubernetes.io/basic-auth", ["s1"]),
    ("/api/v1/namespaces/default/events",
     "involvedObject.kind=Pod,involvedObject.name=p1,reason=Started,type=Normal", ["e1"]),
    ("/api/v1/namespaces", "metadata.name=default,status.phase=Active", ["default"]),
])
@ASYNC
async def test_supported_fields_still_filter(api: InProcessApi, path: str, selector: str,
                                             names: list[str]) -> None:
    status, body = await _list(api, path, selector)
    assert status == 200, body
    assert [o["metadata"]["name"] for o in body["items"]] == names


@ASYNC
async def test_a_watch_on_one_named_object_is_allowed(api: InProcessApi) -> None:
    # A watch of one object adds metadata.name to the selector: always supported.
    # (timeoutSeconds is an integer, as in Kubernetes: 0.1 is a 400.)
    r = await api.client.get("/api/v1/namespaces/default/configmaps?watch=true&"
                             "fieldSelector=metadata.name%3Dc1&timeoutSeconds=1",
                             headers=AUTH)
    assert r.status == 200
    await r.read()


def test_the_supported_fields_are_data_per_kind() -> None:
    for kind, field in (("Node", "spec.unschedulable"), ("Namespace", "status.phase"),
                        ("Job", "status.successful"), ("ReplicaSet", "status.replicas"),
                        ("ReplicationController", "status.replicas"),
                        ("Event", "reportingComponent"), ("Event", "source")):
        assert field in FIELD_LABELS[kind]
        FieldSelector.parse(f"{field}=x").check_supported(kind)
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.nodeName"):
        FieldSelector.parse("spec.nodeName=x").check_supported("Deployment")
    # A custom resource (no entry) allows only metadata.name and metadata.namespace.
    FieldSelector.parse("metadata.name=a,metadata.namespace=b").check_supported("Widget")



@ASYNC
async def test_the_all_namespaces_path_only_lists_and_watches(api: InProcessApi) -> None:
    """DELETE /api/v1/configmaps would empty every namespace at once: Kubernetes answers 405
    there (the fuzz suite reached it through /api/v1/namespaces/../pods), and to POST too."""
    for method in ("DELETE", "POST"):
        r = await api.client.request(method, "/api/v1/configmaps", headers=AUTH,
                                     json={"metadata": {"name": "x", "namespace": "default"}})
        assert r.status == 405, method
        assert (await r.json())["kind"] == "Status"
    status, body = await _list(api, "/api/v1/namespaces/default/configmaps", "metadata.name=c1")
    assert status == 200 and len(body["items"]) == 1
