"""Subresource bodies decoded as kube-apiserver decodes them, like a resource's
(tests/test_field_validation, which /status writes already went through): a Scale, a
Binding, an Eviction, a TokenRequest and the Pod of pods/ephemeralcontainers have their
unknown fields and repeated keys warned of (``fieldValidation`` Warn, the default),
refused with a 400 in the apiserver's words (Strict) or passed over (Ignore); an applied
Scale may hold no field a Scale lacks. In process, one server for the module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from shoal.api import token_request, web
from shoal.api.errors import ApiError, error_response
from shoal.api.routing import Target
from tests.http_test_server import TestServer
from tests.inprocess_api import AUTH, InProcessApi, in_process_api
from tests.test_field_validation import APPLY, ASYNC, MERGE, NS, RAW_JSON, STRATEGIC, _warnings

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
CONTAINER = {"name": "c", "image": "busybox"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(Path(tmp_path_factory.mktemp("subresource-fields"))) as a:
        labels = {"app": "web"}
        r = await a.client.post(DEPLOYMENTS, headers=AUTH, json={
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [CONTAINER]}}}})
        assert r.status == 201, await r.text()
        for name, spec in (("unbound", {}), ("evicted", {}), ("placed", {"nodeName": "n1"})):
            r = await a.client.post(f"{NS}/pods", headers=AUTH, json={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [CONTAINER], **spec}})
            assert r.status == 201, await r.text()
        yield a


async def _refused(r: Any) -> str:
    body = await r.json()
    assert r.status == 400 and body["reason"] == "BadRequest", body
    message: str = body["message"]
    return message


def _scale(replicas: int, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, **extra}}


@ASYNC
async def test_a_scale_is_decoded_strictly_as_a_scale(api: InProcessApi) -> None:
    scale = f"{DEPLOYMENTS}/web/scale"
    r = await api.client.put(f"{scale}?fieldValidation=Strict", json=_scale(2, colour=1),
                             headers=AUTH)
    assert await _refused(r) == ('Scale in version "v1" cannot be handled as a Scale: strict '
                                 'decoding error: unknown field "spec.colour"')
    r = await api.client.put(scale, json=_scale(2, colour=1), headers=AUTH)
    assert r.status == 200 and _warnings(r) == ['unknown field "spec.colour"']
    assert (await r.json())["spec"] == {"replicas": 2}
    r = await api.client.put(f"{scale}?fieldValidation=Ignore", json=_scale(3, colour=1),
                             headers=AUTH)
    assert r.status == 200 and _warnings(r) == []
    # (a Deployment's own spec field is no Scale's)
    r = await api.client.patch(f"{scale}?fieldValidation=Strict", headers=MERGE,
                               json={"spec": {"paused": True}})
    assert await _refused(r) == 'strict decoding error: unknown field "spec.paused"'
    r = await api.client.patch(scale, headers=STRATEGIC, json={"spec": {"replicas": 4, "x": 1}})
    assert r.status == 200 and _warnings(r) == ['unknown field "spec.x"']
    r = await api.client.patch(f"{scale}?fieldValidation=Strict", headers=MERGE,
                               data=b'{"spec":{"replicas":5,"replicas":6}}')
    assert await _refused(r) == 'strict decoding error: duplicate field "spec.replicas"'
    deployment = await (await api.client.get(f"{DEPLOYMENTS}/web", headers=AUTH)).json()
    assert deployment["spec"]["replicas"] == 4


@ASYNC
async def test_an_applied_scale_holds_only_a_scales_fields(api: InProcessApi) -> None:
    r = await api.client.patch(
        f"{DEPLOYMENTS}/web/scale?fieldManager=hpa&fieldValidation=Ignore", headers=APPLY,
        data=b"apiVersion: autoscaling/v1\nkind: Scale\nmetadata:\n  name: web\n"
             b"spec:\n  replicas: 2\n  colour: red\n")
    assert await _refused(r) == (
        "failed to create typed patch object (default/web; autoscaling/v1, Kind=Scale): "
        ".spec.colour: field not declared in schema")


@ASYNC
async def test_a_binding_and_an_eviction_are_decoded_strictly(api: InProcessApi) -> None:
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "unbound"},
               "target": {"kind": "Node", "name": "n1", "nodeName": "n1"}}
    r = await api.client.post(f"{NS}/pods/unbound/binding?fieldValidation=Strict",
                              json=binding, headers=AUTH)
    assert await _refused(r) == ('Binding in version "v1" cannot be handled as a Binding: '
                                 'strict decoding error: unknown field "target.nodeName"')
    r = await api.client.post(f"{NS}/pods/unbound/binding", json=binding, headers=AUTH)
    assert r.status == 201 and _warnings(r) == ['unknown field "target.nodeName"']
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "evicted"},
                "deleteOptions": {"gracePeriodSeconds": 0, "force": True}}
    r = await api.client.post(f"{NS}/pods/evicted/eviction?fieldValidation=Strict",
                              json=eviction, headers=AUTH)
    assert await _refused(r) == (
        'Eviction in version "v1" cannot be handled as a Eviction: strict decoding error: '
        'unknown field "deleteOptions.force"')
    assert (await api.client.get(f"{NS}/pods/evicted", headers=AUTH)).status == 200
    r = await api.client.post(f"{NS}/pods/evicted/eviction", headers=RAW_JSON, data=orjson.dumps(
        eviction).replace(b'"kind":"Eviction"', b'"kind":"Eviction","kind":"Eviction"'))
    assert r.status == 201
    assert _warnings(r) == ['duplicate field "kind"', 'unknown field "deleteOptions.force"']


@ASYNC
async def test_ephemeral_containers_are_decoded_strictly(api: InProcessApi) -> None:
    path = f"{NS}/pods/placed/ephemeralcontainers"
    pod = await (await api.client.get(path, headers=AUTH)).json()
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox", "tty": True,
                                           "colour": 1}]
    r = await api.client.put(f"{path}?fieldValidation=Strict", json=pod, headers=AUTH)
    assert await _refused(r) == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown '
        'field "spec.ephemeralContainers[0].colour"')
    r = await api.client.patch(f"{path}?fieldValidation=Strict", headers=STRATEGIC, json={
        "spec": {"ephemeralContainers": [{"name": "debug", "image": "busybox", "colour": 1}]}})
    assert await _refused(r) == ('strict decoding error: unknown field '
                                 '"spec.ephemeralContainers[0].colour"')
    r = await api.client.put(path, json=pod, headers=AUTH)
    assert r.status == 200, await r.text()
    assert _warnings(r) == ['unknown field "spec.ephemeralContainers[0].colour"']
    assert "colour" not in (await r.json())["spec"]["ephemeralContainers"][0]


@ASYNC
async def test_a_token_request_is_decoded_strictly(api: InProcessApi) -> None:
    sa = api.kinds.by_kind("v1", "ServiceAccount")
    assert sa is not None
    target = Target(sa, "default", "default", "token", False)
    # (refused before a token is signed: no issuer needed)
    requests = token_request.TokenRequests(issuer=lambda: pytest.fail("signed"))

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await token_request.serve(request, target, api.store, requests)
        except ApiError as e:
            return error_response(e)

    app = web.Application()
    app.router.add_post("/token", handle)
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/token?fieldValidation=Strict", json={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["a"], "expirySeconds": 600}})
        assert await _refused(r) == (
            'TokenRequest in version "v1" cannot be handled as a TokenRequest: strict '
            'decoding error: unknown field "spec.expirySeconds"')
