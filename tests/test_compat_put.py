"""A PUT to an object that does not exist answers as the Kubernetes API server does:
404 NotFound for kinds whose registry does not allow create-on-update (ConfigMap,
Deployment, custom resources, ...), whatever resourceVersion the body carries; a create
(201) for those that do (Lease, Endpoints, Event, Service, RBAC roles, ...), with the
body's resourceVersion ignored. In process, one server for the module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.inprocess_api import AUTH, InProcessApi, in_process_api

ASYNC = pytest.mark.asyncio(loop_scope="module")
NS = "/api/v1/namespaces/default"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(Path(tmp_path_factory.mktemp("compat-put"))) as a:
        yield a


def _cm(name: str, rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


@ASYNC
@pytest.mark.parametrize("rv", [None, "1", "999999"])
async def test_a_put_to_a_missing_configmap_is_not_found(api: InProcessApi,
                                                        rv: str | None) -> None:
    r = await api.client.put(f"{NS}/configmaps/ghost", json=_cm("ghost", rv), headers=AUTH)
    body = await r.json()
    assert r.status == 404, body
    assert body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "ghost" not found'
    assert body["details"]["name"] == "ghost"
    r = await api.client.get(f"{NS}/configmaps/ghost", headers=AUTH)
    assert r.status == 404  # nothing was created


@ASYNC
async def test_a_put_to_a_missing_deployment_names_its_group(api: InProcessApi) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    r = await api.client.put("/apis/apps/v1/namespaces/default/deployments/d", json=dep,
                             headers=AUTH)
    assert r.status == 404
    assert (await r.json())["message"] == 'deployments.apps "d" not found'


@ASYNC
@pytest.mark.parametrize("rv", [None, "424242"])
async def test_a_put_to_a_missing_lease_creates_it(api: InProcessApi, rv: str | None) -> None:
    name = f"lease-{rv or 'unversioned'}"
    meta: dict[str, Any] = {"name": name}
    if rv is not None:
        meta["resourceVersion"] = rv
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
             "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}
    path = f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}"
    r = await api.client.put(path, json=lease, headers=AUTH)
    body = await r.json()
    assert r.status == 201, body
    assert body["spec"]["holderIdentity"] == "me"
    assert body["metadata"]["resourceVersion"] not in ("", rv)  # the body's is ignored
    r = await api.client.get(path, headers=AUTH)
    assert r.status == 200


@ASYNC
async def test_a_put_to_a_missing_event_or_endpoints_creates_it(api: InProcessApi) -> None:
    ev = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev"},
          "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
          "reason": "R", "message": "m", "type": "Normal"}
    r = await api.client.put(f"{NS}/events/ev", json=ev, headers=AUTH)
    assert r.status == 201, await r.text()
    ep = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ep"}, "subsets": []}
    r = await api.client.put(f"{NS}/endpoints/ep", json=ep, headers=AUTH)
    assert r.status == 201, await r.text()


@ASYNC
async def test_a_put_to_an_existing_configmap_still_updates_it(api: InProcessApi) -> None:
    r = await api.client.post(f"{NS}/configmaps", json=_cm("here"), headers=AUTH)
    assert r.status == 201
    created = await r.json()
    cm = _cm("here", created["metadata"]["resourceVersion"])
    cm["data"] = {"k": "w"}
    r = await api.client.put(f"{NS}/configmaps/here", json=cm, headers=AUTH)
    assert r.status == 200 and (await r.json())["data"] == {"k": "w"}
    # A stale resourceVersion on an existing object is a conflict, not a create.
    r = await api.client.put(f"{NS}/configmaps/here", json=_cm("here", "1"), headers=AUTH)
    assert r.status == 409


@ASYNC
async def test_a_write_with_an_unknown_field_warns_rather_than_failing(
        api: InProcessApi) -> None:
    # The user and the warnings ride on the request under typed keys: string keys made
    # aiohttp warn, which under warnings-as-errors turned this request into a 500.
    cm = _cm("warned")
    cm["bogus"] = 1
    r = await api.client.post(f"{NS}/configmaps", json=cm, headers=AUTH)
    assert r.status == 201, await r.text()
    assert r.headers.getall("Warning") == ['299 - "unknown field \\"bogus\\""']
