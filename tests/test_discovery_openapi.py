"""Discovery and OpenAPI documents, checked directly and through real kubectl.

The kubectl tests run against a stub aiohttp server on 127.0.0.1 that serves only the
discovery and OpenAPI endpoints from :mod:`shoal.api.discovery` and
:mod:`shoal.api.openapi` (plus an echoing POST so that ``kubectl create`` can finish),
and logs every request, so the tests can assert what kubectl asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from shoal.api import discovery
from shoal.api.openapi import (
    V2_PROTOBUF_CONTENT_TYPE,
    OpenAPIDocuments,
    wants_v2_protobuf,
)
from shoal.model.kinds import KindRegistry
from shoal.node.subprocesses import communicate

REPO = Path(__file__).resolve().parent.parent
KUBECTL_NEW = REPO / ".venv" / "bin" / "kubectl"
KUBECTL_OLD = Path("/usr/bin/kubectl")

KUBECTLS = [
    pytest.param(KUBECTL_NEW, id="kubectl-1.37",
                 marks=pytest.mark.skipif(not KUBECTL_NEW.exists(), reason="no kubectl 1.37")),
    pytest.param(KUBECTL_OLD, id="kubectl-1.32",
                 marks=pytest.mark.skipif(not KUBECTL_OLD.exists(), reason="no kubectl 1.32")),
]

CRONTAB_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "crontabs.stable.example.com"},
    "spec": {
        "group": "stable.example.com",
        "scope": "Namespaced",
        "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab",
                  "shortNames": ["ct"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "CronTab runs a command on a schedule.",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "description": "What to run and when.",
                            "properties": {
                                "cronSpec": {"type": "string",
                                             "description": "The schedule, in cron format."},
                                "image": {"type": "string",
                                          "description": "The image that runs the job."},
                                "replicas": {"type": "integer", "minimum": 1},
                                "port": {"x-kubernetes-int-or-string": True,
                                         "anyOf": [{"type": "integer"}, {"type": "string"}]},
                                "extra": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": True},
                            },
                            "required": ["cronSpec"],
                        },
                        "status": {"type": "object", "nullable": True,
                                   "properties": {"lastRun": {"type": "string"}}},
                    },
                }},
            },
            {"name": "v1beta1", "served": True, "storage": False},
        ],
    },
}

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
"""

LIST_OF_OBJECTS = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings, namespace: default}
  data: {mode: fast}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: default}
  spec:
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec:
        containers:
        - {name: web, image: nginx, %s}
"""


# -- the stub server -------------------------------------------------------------------------


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


@dataclass
class Stub:
    registry: KindRegistry
    aggregated: bool = False
    docs: OpenAPIDocuments = field(init=False)
    log: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    plain: list[str] = field(default_factory=list)  # the paths alone
    accepts: dict[str, str] = field(default_factory=dict)  # path -> last Accept header
    objects: dict[str, Any] = field(default_factory=dict)  # item path -> object to GET
    patches: list[tuple[str, Any]] = field(default_factory=list)  # (Content-Type, body)

    def __post_init__(self) -> None:
        self.docs = OpenAPIDocuments(self.registry)

    def paths(self) -> list[str]:
        return list(self.plain)

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.log.append((request.method, request.path_qs))
        self.plain.append(request.path)
        self.accepts[request.path] = request.headers.get("Accept", "")
        return await handler(request)  # type: ignore[no-any-return]

    @staticmethod
    def json(body: Any, status: int = 200, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, headers={
            "Content-Type": content_type, **(headers or {})})

    def not_found(self, request: web.Request) -> web.Response:
        return self.json(status_body(404, "NotFound", f"the server could not find the requested "
                                                      f"resource ({request.path})"), status=404)

    async def version(self, request: web.Request) -> web.Response:
        return self.json(discovery.version_info())

    async def api(self, request: web.Request) -> web.Response:
        if self.aggregated and discovery.wants_aggregated(request.headers.get("Accept")):
            return self.json(discovery.aggregated_discovery(self.registry, core=True),
                             content_type=discovery.AGGREGATED_CONTENT_TYPE)
        return self.json(discovery.core_api_versions("127.0.0.1:6443"))

    async def apis(self, request: web.Request) -> web.Response:
        if self.aggregated and discovery.wants_aggregated(request.headers.get("Accept")):
            return self.json(discovery.aggregated_discovery(self.registry, core=False),
                             content_type=discovery.AGGREGATED_CONTENT_TYPE)
        return self.json(discovery.api_group_list(self.registry))

    async def core_v1(self, request: web.Request) -> web.Response:
        body = discovery.api_resource_list(self.registry, "", "v1")
        return self.json(body) if body else self.not_found(request)

    async def group(self, request: web.Request) -> web.Response:
        body = discovery.api_group(self.registry, request.match_info["group"])
        return self.json(body) if body else self.not_found(request)

    async def group_version(self, request: web.Request) -> web.Response:
        mi = request.match_info
        body = discovery.api_resource_list(self.registry, mi["group"], mi["version"])
        return self.json(body) if body else self.not_found(request)

    async def openapi_v2(self, request: web.Request) -> web.Response:
        etag = f'"{self.docs.v2_hash()}"'
        headers = {"ETag": etag, "Vary": "Accept"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        if wants_v2_protobuf(request.headers.get("Accept")):
            return web.Response(body=self.docs.v2_protobuf(),
                                headers={**headers, "Content-Type": V2_PROTOBUF_CONTENT_TYPE})
        return web.Response(body=self.docs.v2(),
                            headers={**headers, "Content-Type": "application/json"})

    async def openapi_v3_index(self, request: web.Request) -> web.Response:
        return self.json(self.docs.v3_index())

    async def openapi_v3(self, request: web.Request) -> web.StreamResponse:
        parts = request.match_info["tail"].strip("/").split("/")
        if parts[:1] == ["api"] and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[:1] == ["apis"] and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return self.not_found(request)
        doc = self.docs.v3_group_version(group, version)
        if doc is None:
            return self.not_found(request)
        digest = self.docs.hash_of(group, version)
        wanted = request.query.get("hash")
        if wanted is not None and wanted != digest:
            # A stale hash: send the client to the current document (as kube-apiserver does).
            raise web.HTTPMovedPermanently(f"{request.path}?hash={digest}")
        headers = {"ETag": f'"{digest}"', "Vary": "Accept"}
        if wanted is not None:
            # The URL names the content: kubectl's HTTP cache may keep it for a year.
            headers["Cache-Control"] = "public, immutable"
            headers["Expires"] = formatdate(time.time() + 365 * 86400, usegmt=True)
        if request.headers.get("If-None-Match") == f'"{digest}"':
            return web.Response(status=304, headers=headers)
        return web.Response(body=doc, headers={**headers, "Content-Type": "application/json"})

    async def create(self, request: web.Request) -> web.Response:
        # Just enough of a server for `kubectl create`: echo the object back.
        body = await request.json()
        return self.json(body, status=201)

    async def get_object(self, request: web.Request) -> web.Response:
        obj = self.objects.get(request.path)
        return self.json(obj) if obj is not None else self.not_found(request)

    async def patch(self, request: web.Request) -> web.Response:
        obj = self.objects.get(request.path)
        if obj is None:
            return self.not_found(request)
        self.patches.append((request.content_type, await request.json()))
        return self.json(obj)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        r = app.router
        r.add_get("/version", self.version)
        r.add_get("/api", self.api)
        r.add_get("/api/v1", self.core_v1)
        r.add_get("/apis", self.apis)
        r.add_get("/apis/{group}", self.group)
        r.add_get("/apis/{group}/{version}", self.group_version)
        r.add_get("/openapi/v2", self.openapi_v2)
        r.add_get("/openapi/v3", self.openapi_v3_index)
        r.add_get("/openapi/v3/{tail:.*}", self.openapi_v3)
        r.add_post("/apis/{group}/{version}/namespaces/{ns}/{plural}", self.create)
        r.add_get("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", self.get_object)
        r.add_patch("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", self.patch)
        r.add_route("*", "/{tail:.*}", self.not_found_handler)
        return app

    async def not_found_handler(self, request: web.Request) -> web.Response:
        return self.not_found(request)


@dataclass
class Running:
    stub: Stub
    url: str
    home: Path

    async def kubectl(self, binary: Path, *args: str, stdin: str | None = None,
                      check: bool = True) -> tuple[int, str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.home),
               "KUBECONFIG": str(self.home / "kubeconfig")}
        proc = await asyncio.create_subprocess_exec(
            str(binary), "--server", self.url, "--cache-dir", str(self.home / "cache"),
            *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )
        out, err = await asyncio.wait_for(
            communicate(proc, stdin.encode() if stdin is not None else None), timeout=60)
        rc = proc.returncode or 0
        if check and rc != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({rc}):\n{err.decode()}\n"
                f"requests: {json.dumps(self.stub.log, indent=1)}")
        return rc, out.decode(), err.decode()


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: stub
  cluster: {server: "%s"}
users:
- name: stub
  user: {}
contexts:
- name: stub
  context: {cluster: stub, user: stub, namespace: default}
current-context: stub
"""


async def start(stub: Stub, tmp_path: Path) -> AsyncIterator[Running]:
    runner = web.AppRunner(stub.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "kubeconfig").write_text(KUBECONFIG % url)
    try:
        yield Running(stub, url, tmp_path)
    finally:
        await runner.cleanup()


@pytest.fixture
def registry() -> KindRegistry:
    reg = KindRegistry()
    reg.register_crd(CRONTAB_CRD)
    return reg


@pytest.fixture
async def server(registry: KindRegistry, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in start(Stub(registry), tmp_path):
        yield running


@pytest.fixture
async def aggregated_server(registry: KindRegistry, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in start(Stub(registry, aggregated=True), tmp_path):
        yield running


# -- discovery, directly ----------------------------------------------------------------------


def test_version_info() -> None:
    v = discovery.version_info()
    assert (v["major"], v["minor"]) == ("1", "37")
    assert v["gitVersion"].startswith("v1.37.")
    assert "/" in v["platform"]


def test_core_resource_list(registry: KindRegistry) -> None:
    body = discovery.api_resource_list(registry, "", "v1")
    assert body is not None
    assert body["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in body["resources"]}
    pods = by_name["pods"]
    assert pods["shortNames"] == ["po"] and pods["kind"] == "Pod" and pods["namespaced"]
    assert pods["categories"] == ["all"] and pods["singularName"] == "pod"
    assert "deletecollection" in pods["verbs"] and "watch" in pods["verbs"]
    assert len(pods["storageVersionHash"]) == 12  # base64 of 8 bytes
    assert by_name["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert by_name["pods/binding"] == {"name": "pods/binding", "singularName": "",
                                       "namespaced": True, "kind": "Binding",
                                       "verbs": ["create"]}
    assert by_name["pods/log"]["kind"] == "Pod" and by_name["pods/log"]["verbs"] == ["get"]
    assert by_name["pods/exec"]["kind"] == "PodExecOptions"
    assert by_name["pods/exec"]["verbs"] == ["create", "get"]
    evict = by_name["pods/eviction"]
    assert (evict["group"], evict["version"], evict["kind"]) == ("policy", "v1", "Eviction")
    assert "deletecollection" not in by_name["namespaces"]["verbs"]
    assert not by_name["namespaces"]["namespaced"]
    assert "configmaps/status" not in by_name


def test_group_resource_lists(registry: KindRegistry) -> None:
    apps = discovery.api_resource_list(registry, "apps", "v1")
    assert apps is not None and apps["groupVersion"] == "apps/v1"
    by_name = {r["name"]: r for r in apps["resources"]}
    scale = by_name["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert "group" not in by_name["deployments/status"]
    assert by_name["deployments"]["shortNames"] == ["deploy"]
    assert "daemonsets/scale" not in by_name
    assert discovery.api_resource_list(registry, "apps", "v2") is None
    assert discovery.api_resource_list(registry, "nope", "v1") is None
    crontabs = discovery.api_resource_list(registry, "stable.example.com", "v1beta1")
    assert crontabs is not None
    v1 = discovery.api_resource_list(registry, "stable.example.com", "v1")
    assert v1 is not None
    # Every version of a CRD reports the hash of its storage version.
    assert (crontabs["resources"][0]["storageVersionHash"]
            == v1["resources"][0]["storageVersionHash"])


def test_groups(registry: KindRegistry) -> None:
    groups = discovery.api_group_list(registry)
    names = [g["name"] for g in groups["groups"]]
    assert "" not in names and "apps" in names and "stable.example.com" in names
    crd = discovery.api_group(registry, "stable.example.com")
    assert crd is not None
    assert [v["version"] for v in crd["versions"]] == ["v1", "v1beta1"]
    assert crd["preferredVersion"] == {"groupVersion": "stable.example.com/v1", "version": "v1"}
    assert discovery.api_group(registry, "") is None
    assert discovery.api_group(registry, "nope") is None
    assert discovery.core_api_versions("10.0.0.1:6443")["versions"] == ["v1"]


def test_version_priority() -> None:
    versions = ["v1alpha1", "foo", "v2", "v1beta2", "v1", "v1beta1", "v10", "bar"]
    assert sorted(versions, key=discovery.version_priority_key) == [
        "v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]


def test_aggregated_accept_header() -> None:
    assert discovery.wants_aggregated(
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")
    assert discovery.wants_aggregated(
        "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io")
    assert not discovery.wants_aggregated("application/json")
    assert not discovery.wants_aggregated(
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
    assert not discovery.wants_aggregated(None)


def test_aggregated_discovery(registry: KindRegistry) -> None:
    core = discovery.aggregated_discovery(registry, core=True)
    assert [item["metadata"] for item in core["items"]] == [{}]
    pods = next(r for r in core["items"][0]["versions"][0]["resources"]
                if r["resource"] == "pods")
    assert pods["scope"] == "Namespaced" and pods["shortNames"] == ["po"]
    subs = {s["subresource"]: s for s in pods["subresources"]}
    assert subs["eviction"]["responseKind"] == {"group": "policy", "version": "v1",
                                                "kind": "Eviction"}
    groups = discovery.aggregated_discovery(registry, core=False)
    names = [item["metadata"]["name"] for item in groups["items"]]
    assert "apps" in names and "" not in names
    crd = next(i for i in groups["items"] if i["metadata"]["name"] == "stable.example.com")
    assert [v["version"] for v in crd["versions"]] == ["v1", "v1beta1"]


# -- OpenAPI, directly ------------------------------------------------------------------------


def test_v3_index_and_hashes(registry: KindRegistry) -> None:
    docs = OpenAPIDocuments(registry)
    index = docs.v3_index()["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/stable.example.com/v1"} <= set(index)
    url = index["apis/apps/v1"]["serverRelativeURL"]
    assert url == f"/openapi/v3/apis/apps/v1?hash={docs.hash_of('apps', 'v1')}"
    assert len(docs.hash_of("apps", "v1")) == 128
    assert docs.hash_of("nope", "v1") == ""
    assert docs.v3_group_version("nope", "v1") is None
    # Another registry with the same kinds produces the same hashes (any node, any time).
    assert OpenAPIDocuments(registry).hash_of("", "v1") == docs.hash_of("", "v1")
    before = {gv: docs.hash_of(*gv) for gv in [("", "v1"), ("stable.example.com", "v1")]}
    doc_before = docs.v3_group_version("stable.example.com", "v1")
    crd = json.loads(json.dumps(CRONTAB_CRD))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["suspend"] = {"type": "boolean"}
    registry.register_crd(crd)
    assert docs.hash_of("", "v1") == before[("", "v1")]
    assert docs.hash_of("stable.example.com", "v1") != before[("stable.example.com", "v1")]
    doc_after = docs.v3_group_version("stable.example.com", "v1")
    assert doc_after != doc_before and doc_after is not None and b"suspend" in doc_after
    registry.unregister_crd(CRONTAB_CRD["metadata"]["name"])
    assert "apis/stable.example.com/v1" not in docs.v3_index()["paths"]
    assert docs.v3_group_version("stable.example.com", "v1") is None


def _patch_ops(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, item["patch"]) for path, item in doc["paths"].items() if "patch" in item]


def test_v3_documents_say_what_kubectl_looks_for(registry: KindRegistry) -> None:
    docs = OpenAPIDocuments(registry)
    for group, versions in registry.groups().items():
        for version in versions:
            raw = docs.v3_group_version(group, version)
            assert raw is not None
            doc = json.loads(raw)
            assert doc["openapi"].startswith("3.")
            schemas = doc["components"]["schemas"]
            # Every $ref resolves inside the document.
            for ref in _refs(doc):
                assert ref.removeprefix("#/components/schemas/") in schemas, ref
            patched = {tuple(sorted(op["x-kubernetes-group-version-kind"].items()))
                       for _, op in _patch_ops(doc)}
            for k in registry.kinds_in(group, version):
                gvk = {"group": group, "kind": k.kind, "version": version}
                assert tuple(sorted(gvk.items())) in patched, k
                # explain finds the kind's schema by the same GVK, in a list.
                assert any(gvk in s.get("x-kubernetes-group-version-kind", [])
                           for s in schemas.values()), k
            for path, op in _patch_ops(doc):
                names = {(p["name"], p["in"]) for p in op["parameters"]}
                assert ("fieldValidation", "query") in names, path
                assert ("dryRun", "query") in names and ("fieldManager", "query") in names
                assert op["x-kubernetes-action"] == "patch"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for v in node.values():
            out += _refs(v)
        return out
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_builtin_schemas(registry: KindRegistry) -> None:
    doc = json.loads(OpenAPIDocuments(registry).v3_group_version("", "v1") or b"{}")
    schemas = doc["components"]["schemas"]
    pod_spec = schemas["io.k8s.api.core.v1.PodSpec"]
    assert "containers" in pod_spec["required"]
    containers = pod_spec["properties"]["containers"]
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    container = schemas["io.k8s.api.core.v1.Container"]["properties"]
    assert container["image"]["type"] == "string"
    assert container["image"]["description"].startswith("Container image name.")
    assert container["ports"]["x-kubernetes-patch-merge-key"] == "containerPort"
    assert "tolerations" in pod_spec["properties"]
    assert "x-kubernetes-patch-merge-key" not in pod_spec["properties"]["tolerations"]
    meta = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert meta["creationTimestamp"]["format"] == "date-time"
    assert meta["labels"]["additionalProperties"] == {"type": "string"}
    assert meta["finalizers"]["x-kubernetes-patch-strategy"] == "merge"
    assert "x-kubernetes-patch-merge-key" not in meta["finalizers"]
    port = schemas["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]
    assert port["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]
    assert schemas["io.k8s.api.core.v1.Event"]["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "Event", "version": "v1"}]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    item = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]
    assert "application/strategic-merge-patch+json" in item["patch"]["requestBody"]["content"]
    eviction = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
    assert eviction["x-kubernetes-group-version-kind"] == {
        "group": "policy", "kind": "Eviction", "version": "v1"}


def test_custom_resource_schemas(registry: KindRegistry) -> None:
    docs = OpenAPIDocuments(registry)
    doc = json.loads(docs.v3_group_version("stable.example.com", "v1") or b"{}")
    schemas = doc["components"]["schemas"]
    crontab = schemas["com.example.stable.v1.CronTab"]
    assert crontab["x-kubernetes-group-version-kind"] == [
        {"group": "stable.example.com", "kind": "CronTab", "version": "v1"}]
    assert crontab["properties"]["spec"]["required"] == ["cronSpec"]
    assert crontab["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    assert "com.example.stable.v1.CronTabList" in schemas
    item = doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]
    content = item["patch"]["requestBody"]["content"]
    assert "application/merge-patch+json" in content
    assert "application/strategic-merge-patch+json" not in content
    assert "/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status" in (
        doc["paths"])
    # A version without a schema preserves unknown fields.
    beta = json.loads(docs.v3_group_version("stable.example.com", "v1beta1") or b"{}")
    assert beta["components"]["schemas"]["com.example.stable.v1beta1.CronTab"][
        "x-kubernetes-preserve-unknown-fields"] is True
    # Swagger 2.0 cannot express int-or-string or nullable: those nodes are left untyped.
    v2 = json.loads(docs.v2())
    spec = v2["definitions"]["com.example.stable.v1.CronTab"]["properties"]["spec"]
    assert "type" not in spec["properties"]["port"] and "anyOf" not in spec["properties"]["port"]
    assert "properties" not in spec["properties"]["extra"]
    status = v2["definitions"]["com.example.stable.v1.CronTab"]["properties"]["status"]
    assert "type" not in status and "nullable" not in status


def test_v2_document(registry: KindRegistry) -> None:
    docs = OpenAPIDocuments(registry)
    v2 = json.loads(docs.v2())
    assert v2["swagger"] == "2.0"
    for ref in _refs(v2):
        assert ref.removeprefix("#/definitions/") in v2["definitions"], ref
    patch = v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    body = next(p for p in patch["parameters"] if p["in"] == "body")
    assert body["schema"] == {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
    assert docs.v2_protobuf()[:5] == b"\n\x032.0"  # field 1 (swagger) = "2.0"
    assert wants_v2_protobuf(V2_PROTOBUF_CONTENT_TYPE)
    assert not wants_v2_protobuf("application/json")


def test_build_is_cached_and_fast(registry: KindRegistry) -> None:
    docs = OpenAPIDocuments(registry)
    timings = {}
    for group, versions in registry.groups().items():
        for version in versions:
            t = time.perf_counter()
            docs.v3_group_version(group, version)
            timings[f"{group}/{version}"] = time.perf_counter() - t
    # The generated models are read once per process; after that a build is milliseconds.
    assert max(timings.values()) < 2.0, timings
    t = time.perf_counter()
    first = docs.v3_group_version("apps", "v1")
    assert docs.v3_group_version("apps", "v1") == first  # kept compressed, not rebuilt
    assert time.perf_counter() - t < 0.05  # two inflates of ~1 ms (a build is ~50 ms)
    fresh = OpenAPIDocuments(registry)
    t = time.perf_counter()
    fresh.v3_group_version("apps", "v1")
    assert time.perf_counter() - t < 0.5


# -- kubectl, end to end ------------------------------------------------------------------


def _openapi_requests(stub: Stub) -> list[str]:
    return [p for p in stub.paths() if p.startswith("/openapi")]


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_api_resources(server: Running, kubectl: Path) -> None:
    _, out, _ = await server.kubectl(kubectl, "api-resources")
    rows = [line.split() for line in out.splitlines()]
    pods = next(r for r in rows if r[0] == "pods")
    assert pods[1:] == ["po", "v1", "true", "Pod"]
    assert any(r[0] == "deployments" and "apps/v1" in r for r in rows)
    assert any(r[0] == "crontabs" and "stable.example.com/v1" in r for r in rows)
    _, out, _ = await server.kubectl(kubectl, "api-versions")
    assert {"v1", "apps/v1", "stable.example.com/v1", "stable.example.com/v1beta1"} <= set(
        out.split())
    # Legacy discovery: one request per group/version.
    assert "/apis/apps/v1" in server.stub.paths() and "/api/v1" in server.stub.paths()


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_aggregated_discovery(aggregated_server: Running, kubectl: Path) -> None:
    _, out, _ = await aggregated_server.kubectl(kubectl, "api-resources")
    assert any(line.split()[:2] == ["pods", "po"] for line in out.splitlines())
    assert any(line.startswith("crontabs ") for line in out.splitlines())
    # Aggregated discovery answers everything in two requests. (The gcloud build of
    # kubectl 1.32 first reads /version to pick the kubectl release that matches.)
    assert [p for p in aggregated_server.stub.paths() if p != "/version"] == ["/api", "/apis"]


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_explain(server: Running, kubectl: Path) -> None:
    _, out, _ = await server.kubectl(kubectl, "explain", "pods.spec.containers.image")
    assert "KIND:       Pod" in out and "VERSION:    v1" in out
    assert "FIELD: image <string>" in out
    assert "Container image name." in out
    _, out, _ = await server.kubectl(kubectl, "explain", "pods.spec.containers")
    assert "FIELD: containers <[]Container>" in out
    assert "image\t<string>" in out and "name\t<string> -required-" in out
    _, out, _ = await server.kubectl(kubectl, "explain", "deployments", "--recursive")
    assert "GROUP:      apps" in out
    for line in ("replicas\t<integer>", "containers\t<[]Container> -required-",
                 "matchLabels\t<map[string]string>"):
        assert line in out, line
    _, out, _ = await server.kubectl(kubectl, "explain", "crontabs.spec")
    assert "GROUP:      stable.example.com" in out and "KIND:       CronTab" in out
    assert "What to run and when." in out
    assert "cronSpec\t<string> -required-" in out
    _, out, _ = await server.kubectl(kubectl, "explain", "ct.metadata.labels")
    assert "FIELD: labels <map[string]string>" in out
    assert all(p.startswith("/openapi/v3") for p in _openapi_requests(server.stub))


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_explain_openapi_v2(server: Running, kubectl: Path) -> None:
    # The v2 renderer parses the protobuf encoding of /openapi/v2.
    _, out, _ = await server.kubectl(kubectl, "explain", "pods.spec.containers",
                                     "--output=plaintext-openapiv2")
    assert "RESOURCE: containers <[]Object>" in out
    assert "Container image name." in out
    assert "proto-openapi.spec.v2" in server.stub.accepts["/openapi/v2"]


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_apply_dry_run_validates_on_server(server: Running, kubectl: Path,
                                                         tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT)
    _, out, _ = await server.kubectl(kubectl, "apply", "--dry-run=client", "-f", str(manifest),
                                     "-o", "yaml")
    assert "kind: Deployment" in out and "image: nginx:1.27" in out
    paths = server.stub.paths()
    # kubectl found fieldValidation in the v3 document, so it skipped client-side
    # validation and never downloaded /openapi/v2.
    assert "/openapi/v3" in paths
    assert any(p.startswith("/openapi/v3/apis/apps/v1?hash=") for _, p in server.stub.log)
    assert "/openapi/v2" not in paths
    assert "/apis/apps/v1/namespaces/default/deployments/web" in paths
    # The same holds for a custom resource: its PATCH operation has fieldValidation too.
    crontab = tmp_path / "crontab.yaml"
    crontab.write_text("apiVersion: stable.example.com/v1\nkind: CronTab\n"
                       "metadata: {name: nightly}\nspec: {cronSpec: '0 3 * * *'}\n")
    _, out, _ = await server.kubectl(kubectl, "apply", "--dry-run=client", "-f", str(crontab))
    assert "crontab.stable.example.com/nightly created (dry run)" in out
    assert "/openapi/v2" not in server.stub.paths()
    assert "/apis/apiextensions.k8s.io/v1/customresourcedefinitions" not in server.stub.paths()


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_create_sends_strict_field_validation(server: Running, kubectl: Path,
                                                            tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT)
    _, out, _ = await server.kubectl(kubectl, "create", "-f", str(manifest))
    assert "deployment.apps/web created" in out
    posts = [p for m, p in server.stub.log if m == "POST"]
    assert posts == [
        "/apis/apps/v1/namespaces/default/deployments?fieldManager=kubectl-create"
        "&fieldValidation=Strict"]
    assert "/openapi/v2" not in server.stub.paths()


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_apply_patches_with_merge_keys(server: Running, kubectl: Path,
                                                     tmp_path: Path) -> None:
    # An existing Deployment, last applied with two containers.
    old = DEPLOYMENT.replace("        ports:\n        - containerPort: 80\n",
                             "      - name: sidecar\n        image: busybox\n")
    obj = yaml.safe_load(old)
    obj["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(obj)}
    obj["metadata"]["uid"] = "u-1"
    obj["metadata"]["resourceVersion"] = "7"
    server.stub.objects["/apis/apps/v1/namespaces/default/deployments/web"] = obj
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT.replace("nginx:1.27", "nginx:1.28"))
    _, out, err = await server.kubectl(kubectl, "apply", "-f", str(manifest))
    assert "deployment.apps/web configured" in out
    assert "error calculating patch" not in err
    # Computed from the v3 document: no fallback to /openapi/v2 or kubectl's built-in types.
    assert "/openapi/v2" not in server.stub.paths()
    [(content_type, patch)] = server.stub.patches
    assert content_type == "application/strategic-merge-patch+json"
    pod = patch["spec"]["template"]["spec"]
    # The v3 schema told kubectl that containers merge by name: it deletes the sidecar
    # by key and sends only what changed in the other.
    assert pod["$setElementOrder/containers"] == [{"name": "web"}]
    assert {"$patch": "delete", "name": "sidecar"} in pod["containers"]
    web_patch = next(c for c in pod["containers"] if c.get("name") == "web")
    assert web_patch["image"] == "nginx:1.28"
    assert web_patch["ports"] == [{"containerPort": 80}]


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_validates_lists_client_side(server: Running, kubectl: Path,
                                                   tmp_path: Path) -> None:
    # kubectl always validates `kind: List` itself, against the protobuf v2 document.
    good = tmp_path / "good.yaml"
    good.write_text(LIST_OF_OBJECTS % "ports: [{containerPort: 80}]")
    _, out, _ = await server.kubectl(kubectl, "apply", "--dry-run=client", "-f", str(good))
    assert "configmap/settings created (dry run)" in out
    assert "deployment.apps/web created (dry run)" in out
    assert "/openapi/v2" in server.stub.paths()
    bad = tmp_path / "bad.yaml"
    bad.write_text(LIST_OF_OBJECTS % "imagePullPolicyy: Always")
    rc, _, err = await server.kubectl(kubectl, "apply", "--dry-run=client", "-f", str(bad),
                                      check=False)
    assert rc != 0
    assert 'unknown field "imagePullPolicyy"' in err


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_kubectl_uses_the_disk_cache(server: Running, kubectl: Path,
                                           tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT)
    await server.kubectl(kubectl, "apply", "--dry-run=client", "-f", str(manifest))
    server.stub.log.clear()
    server.stub.plain.clear()
    await server.kubectl(kubectl, "apply", "--dry-run=client", "-f", str(manifest))
    # Discovery comes from the disk cache; the hashed v3 document is immutable, so kubectl
    # only revalidates the index.
    assert not [p for p in server.stub.paths() if p.startswith("/openapi/v3/")]

