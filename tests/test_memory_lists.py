"""Large lists are streamed in chunks, not built whole in memory (issue 11, memory under load)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shoal.api import resources
from shoal.api.authentication import Credentials
from shoal.api.server import ApiServer
from shoal.api.tables import build_table
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

REG = KindRegistry()
TOKEN = "memory-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COUNT = resources.STREAM_ITEMS + 2 * resources.CHUNK_ITEMS + 7
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


CM = kind("v1", "ConfigMap")


@pytest.fixture
async def api() -> AsyncIterator[tuple[ObjectStore, ApiServer, TestClient[Any, Any]]]:
    store = ObjectStore(Replica(None, "memory-1"), REG)
    await store.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    for i in range(COUNT):
        await store.create(CM, {"metadata": {"name": f"cm-{i:04d}", "labels": {
            "parity": "even" if i % 2 == 0 else "odd"}}, "data": {"i": str(i)}}, "default")
    server = ApiServer(store, REG, Credentials({TOKEN: "admin"}))
    client: TestClient[Any, Any] = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield store, server, client
    finally:
        await client.close()
        store.replica.close()


async def test_a_large_list_is_streamed_in_chunks_and_equals_the_whole_list(
    api: tuple[ObjectStore, ApiServer, TestClient[Any, Any]],
) -> None:
    store, _, client = api
    r = await client.get("/api/v1/namespaces/default/configmaps", headers=AUTH)
    assert r.status == 200 and r.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in r.headers
    body = orjson.loads(await r.read())
    assert body["kind"] == "ConfigMapList"
    assert body["metadata"]["resourceVersion"] == str(store.replica.revision)
    assert body["items"] == store.list(CM, "default")
    # A selector that leaves fewer items than STREAM_ITEMS answers in one body.
    r = await client.get("/api/v1/namespaces/default/configmaps?labelSelector=parity%3Dodd",
                         headers=AUTH)
    assert r.headers.get("Content-Length") is not None
    assert len(orjson.loads(await r.read())["items"]) == COUNT // 2
    # Paging still pages: a first page above STREAM_ITEMS, then the rest.
    r = await client.get("/api/v1/namespaces/default/configmaps?limit=600", headers=AUTH)
    first = orjson.loads(await r.read())
    assert len(first["items"]) == 600 and first["metadata"]["remainingItemCount"] == COUNT - 600
    r = await client.get("/api/v1/namespaces/default/configmaps?limit=600&continue="
                         + first["metadata"]["continue"], headers=AUTH)
    rest = orjson.loads(await r.read())
    assert [o["metadata"]["name"] for o in first["items"] + rest["items"]] == \
        [f"cm-{i:04d}" for i in range(COUNT)]


async def test_a_large_table_is_streamed_row_by_row_as_kubectl_get_reads_it(
    api: tuple[ObjectStore, ApiServer, TestClient[Any, Any]],
) -> None:
    store, _, client = api
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    r = await client.get("/api/v1/namespaces/default/configmaps",
                         headers={**AUTH, "Accept": accept})
    assert r.status == 200 and r.headers.get("Transfer-Encoding") == "chunked"
    table = orjson.loads(await r.read())
    whole = build_table(CM, store.list(CM, "default"), now=datetime.datetime.now(datetime.UTC),
                        resource_version=str(store.replica.revision))
    assert table["columnDefinitions"] == whole["columnDefinitions"]
    assert [row["cells"][0] for row in table["rows"]] == [row["cells"][0] for row in whole["rows"]]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_an_objects_json_is_reused_until_it_changes_and_the_cache_stays_bounded() -> None:
    from shoal.api.encoded import EncodedObjects

    cache = EncodedObjects(max_bytes=4096)
    v1 = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7"}, "data": {}}
    assert cache.dumps(v1) == orjson.dumps(v1) and cache.dumps(dict(v1)) == orjson.dumps(v1)
    assert (cache.hits, cache.misses) == (1, 1)
    v2 = {"metadata": {**v1["metadata"], "resourceVersion": "8"}, "data": {"k": "v"}}
    assert orjson.loads(cache.dumps(v2))["data"] == {"k": "v"}
    for i in range(200):
        cache.dumps({"metadata": {"name": f"n{i}", "resourceVersion": str(100 + i)}})
    assert cache._bytes <= 4096
    unversioned = {"metadata": {"name": "dry-run"}, "x": 1}
    assert cache.dumps(unversioned) == orjson.dumps(unversioned)
