"""A create changes the body it parsed in place when nothing else can hold a part of it
(JSON), and copies it first when parts may be shared (a YAML alias repeats one node)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shoal.api.authentication import Credentials
from shoal.api.server import ApiServer
from shoal.control.service_accounts import admit_pod
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

# Both containers name one list of mounts; the ServiceAccount admission adds its token's
# mount to each container's list, so a shared list would get it twice.
YAML_POD = b"""apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - {name: a, image: busybox, volumeMounts: &m [{name: data, mountPath: /data}]}
  - {name: b, image: busybox, volumeMounts: *m}
"""


def _json_pod(name: str) -> bytes:
    mounts = [{"name": "data", "mountPath": "/data"}]
    return orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"volumes": [{"name": "data", "emptyDir": {}}],
                                  "containers": [{"name": n, "image": "busybox",
                                                  "volumeMounts": mounts} for n in "ab"]}})


def _comparable(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod["metadata"]
    for k in ("name", "uid", "creationTimestamp", "resourceVersion", "managedFields"):
        meta.pop(k)
    for v in pod["spec"]["volumes"]:
        if v["name"].startswith("kube-api-access-"):
            v["name"] = "kube-api-access"
    for c in pod["spec"]["containers"]:
        for m in c["volumeMounts"]:
            if m["name"].startswith("kube-api-access-"):
                m["name"] = "kube-api-access"
    return pod


async def test_yaml_aliases_are_copied_apart_and_json_creates_the_same_pod(
        tmp_path: Path) -> None:
    reg = KindRegistry()
    replica = Replica(tmp_path / "data", "n-1")
    store = ObjectStore(replica, reg)
    store.admission.append(lambda kind, obj: admit_pod(kind, obj, replica))
    ns = reg.by_kind("v1", "Namespace")
    assert ns is not None
    await store.create(ns, {"metadata": {"name": "default"}})
    client: TestClient[Any, Any] = TestClient(TestServer(
        ApiServer(store, reg, Credentials({"t": "admin"})).app()))
    await client.start_server()
    auth = {"Authorization": "Bearer t"}
    try:
        r = await client.post("/api/v1/namespaces/default/pods",
                              data=YAML_POD.replace(b"NAME", b"from-yaml"),
                              headers={**auth, "Content-Type": "application/yaml"})
        assert r.status == 201, await r.text()
        from_yaml = await r.json()
        for c in from_yaml["spec"]["containers"]:
            assert [m["mountPath"] for m in c["volumeMounts"]] == [
                "/data", "/var/run/secrets/kubernetes.io/serviceaccount"]
        r = await client.post("/api/v1/namespaces/default/pods", data=_json_pod("from-json"),
                              headers={**auth, "Content-Type": "application/json"})
        assert r.status == 201, await r.text()
        from_json = await r.json()
        stored = replica.get("pods", "default", "from-json")
        assert stored is not None and from_json == stored
        assert _comparable(from_json) == _comparable(from_yaml)
    finally:
        await client.close()
        replica.close()
