"""One node's API served in process (aiohttp test client, no ``shoal server`` process),
for compatibility tests that only need the HTTP surface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from shoal.api.authentication import Credentials
from shoal.api.server import ApiServer
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

TOKEN = "compat-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class InProcessApi:
    client: TestClient[Any, Any]
    store: ObjectStore
    kinds: KindRegistry


@asynccontextmanager
async def in_process_api(data_dir: Path, namespaces: tuple[str, ...] = ("default",)
                         ) -> AsyncIterator[InProcessApi]:
    kinds = KindRegistry()
    replica = Replica(data_dir / "data", "pi-compat")
    store = ObjectStore(replica, kinds)
    api = ApiServer(store, kinds, Credentials({TOKEN: "admin"}))
    client: TestClient[Any, Any] = TestClient(TestServer(api.app()))
    await client.start_server()
    namespace = kinds.by_kind("v1", "Namespace")
    assert namespace is not None
    for ns in namespaces:
        await store.create(namespace, {"metadata": {"name": ns}})
    try:
        yield InProcessApi(client, store, kinds)
    finally:
        await client.close()
        replica.close()
