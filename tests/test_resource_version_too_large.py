"""Reads at a revision this node has not reached, and empty integer parameters, as
kube-apiserver answers them.

A list or a get whose resourceVersion is newer than the node's (``resourceVersionMatch``
NotOlderThan or none) waits a while for it, as the apiserver's watch cache waits for etcd's,
then answers 504 with the ``ResourceVersionTooLarge`` cause and ``Retry-After``; a watch
list (``sendInitialEvents``) waits likewise and ends with that Status as its ERROR event.
An integer query parameter given empty (``limit=``) is a 400, as ``strconv.ParseInt`` is.
In process, one server for the module, the wait shortened (a real node waits its 3 s)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import make_mocked_request

from shoal.api import pod_streams, watch
from shoal.api.errors import ApiError
from tests.inprocess_api import AUTH, InProcessApi, in_process_api

ASYNC = pytest.mark.asyncio(loop_scope="module")
NS = "/api/v1/namespaces/default"
CAUSE = {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(Path(tmp_path_factory.mktemp("too-large"))) as a:
        yield a


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "REVISION_WAIT", 0.2, raising=False)


def _too_large(want: int, current: int) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"Timeout: Too large resource version: {want}, current: {current}",
            "reason": "Timeout", "details": {"causes": [CAUSE], "retryAfterSeconds": 1},
            "code": 504}


async def _create(api: InProcessApi, name: str) -> None:
    r = await api.client.post(f"{NS}/configmaps", headers=AUTH, json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
    assert r.status == 201, await r.text()


# -- empty integer parameters ----------------------------------------------------------------


@ASYNC
@pytest.mark.parametrize("query", ["limit=", "timeoutSeconds=", "watch=true&limit=",
                                   "watch=true&timeoutSeconds=", "limit=&limit=5"])
async def test_an_empty_integer_parameter_is_a_400(api: InProcessApi, query: str) -> None:
    r = await asyncio.wait_for(api.client.get(f"{NS}/configmaps?{query}", headers=AUTH), 10)
    assert r.status == 400  # (before the body: a watch served would stream)
    body = await r.json()
    assert body["reason"] == "BadRequest", body
    assert body["message"] == 'strconv.ParseInt: parsing "": invalid syntax'


@ASYNC
async def test_an_empty_grace_period_is_a_400(api: InProcessApi) -> None:
    await _create(api, "graceful")
    r = await api.client.delete(f"{NS}/configmaps/graceful?gracePeriodSeconds=", headers=AUTH)
    assert r.status == 400
    assert (await r.json())["message"] == 'strconv.ParseInt: parsing "": invalid syntax'
    assert (await api.client.get(f"{NS}/configmaps/graceful", headers=AUTH)).status == 200


# -- a revision not reached ------------------------------------------------------------------


@ASYNC
@pytest.mark.parametrize("match", ["", "&resourceVersionMatch=NotOlderThan"])
async def test_a_list_past_the_nodes_revision_is_a_504_to_retry(
        api: InProcessApi, short_wait: None, match: str) -> None:
    current = api.store.replica.revision
    r = await api.client.get(f"{NS}/configmaps?resourceVersion={current + 5}{match}",
                             headers=AUTH)
    assert r.status == 504 and r.headers["Retry-After"] == "1"
    assert await r.json() == _too_large(current + 5, current)


@ASYNC
async def test_a_list_waits_for_a_revision_the_node_reaches(api: InProcessApi,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(watch, "REVISION_WAIT", 30.0, raising=False)
    feed = api.store.replica.feed
    want = api.store.replica.revision + 1
    watchers = feed.watchers
    listing = asyncio.create_task(api.client.get(
        f"{NS}/configmaps?resourceVersion={want}&resourceVersionMatch=NotOlderThan",
        headers=AUTH))
    while feed.watchers == watchers and not listing.done():  # until the list waits
        await asyncio.sleep(0.01)
    await _create(api, "awaited")
    r = await asyncio.wait_for(listing, 10)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert int(body["metadata"]["resourceVersion"]) >= want
    assert "awaited" in [o["metadata"]["name"] for o in body["items"]]
    assert feed.watchers == watchers


@ASYNC
async def test_a_watch_list_past_the_nodes_revision_ends_with_the_504(
        api: InProcessApi, short_wait: None) -> None:
    current = api.store.replica.revision
    r = await api.client.get(
        f"{NS}/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
        f"&resourceVersionMatch=NotOlderThan&resourceVersion={current + 5}&timeoutSeconds=2",
        headers=AUTH)
    assert r.status == 200
    lines = (await asyncio.wait_for(r.read(), 10)).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"type": "ERROR", "object": _too_large(current + 5, current)}]


@pytest.mark.parametrize("key", ["tailLines", "limitBytes", "sinceSeconds"])
def test_an_empty_log_parameter_is_a_400(key: str) -> None:
    request = make_mocked_request("GET", f"/api/v1/namespaces/d/pods/p/log?{key}=")
    with pytest.raises(ApiError) as e:
        pod_streams._int(request, key)
    assert e.value.code == 400
    assert e.value.message == 'strconv.ParseInt: parsing "": invalid syntax'


@ASYNC
async def test_a_get_past_the_nodes_revision_is_a_504_to_retry(api: InProcessApi,
                                                               short_wait: None) -> None:
    await _create(api, "got")
    current = api.store.replica.revision
    r = await api.client.get(f"{NS}/configmaps/got?resourceVersion={current + 5}", headers=AUTH)
    assert r.status == 504 and r.headers["Retry-After"] == "1"
    assert await r.json() == _too_large(current + 5, current)
    r = await api.client.get(f"{NS}/configmaps/got?resourceVersion={current}", headers=AUTH)
    assert r.status == 200
