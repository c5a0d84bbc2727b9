"""Fuzzing the Kubernetes API in process: thousands of hostile requests against the real
aiohttp app of one node, and a corpus of the cases that once got a 500 or wedged a node.

Every answer is a 2xx or a 4xx, and every error is a ``Status`` with its code; none is a
500 (a 504 only for a resourceVersion from the future, as Kubernetes answers). After the
storm the node still answers, the watch opened before it still delivers, the revision
stream is not wedged, and no object stored before it changed unless a request that
named it succeeded. Hypothesis runs derandomized, so a failure replays in CI as here.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.api.authentication import Credentials
from shoal.api.server import ApiServer
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
REG = KindRegistry()
TOKEN = "fuzz-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 1000


def _kind(api_version: str, kind: str) -> Any:
    k = REG.by_kind(api_version, kind)
    assert k is not None
    return k


def deployment(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


SEEDED: dict[str, dict[str, Any]] = {
    "/api/v1/namespaces/default/configmaps/keep": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep",
                                                              "labels": {"a": "b"}},
        "data": {"k": "v"}},
    "/api/v1/namespaces/default/secrets/keep": {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keep"},
        "data": {"k": base64.b64encode(b"secret").decode()}},
    "/apis/apps/v1/namespaces/default/deployments/keep": deployment("keep"),
    "/api/v1/namespaces/default/pods/keep": {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "keep"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    "/api/v1/namespaces/default/services/keep": {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "keep"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "keep"}}},
}
"""Objects stored before the fuzzing, by path: the fuzz aims at them."""

CORPUS_CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "corpus"},
             "data": {"k": "v"}}
"""What the corpus writes aim at (the random requests never name it)."""


@dataclass
class Node:
    loop: asyncio.AbstractEventLoop
    store: ObjectStore
    client: TestClient[Any, Any]
    watch: ClientResponse
    before: dict[str, Any]
    """The seeded objects as stored before the fuzzing."""
    changed: set[str] = field(default_factory=set)
    """Seeded paths a successful mutating request named (they may differ after)."""
    requests: int = 0
    codes: dict[int, int] = field(default_factory=dict)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    loop = asyncio.new_event_loop()
    replica = Replica(Path(tmp_path_factory.mktemp("fuzz-api")) / "data", "pi-fuzz")
    store = ObjectStore(replica, REG)
    api = ApiServer(store, REG, Credentials({TOKEN: "admin"}))
    client: TestClient[Any, Any] = TestClient(TestServer(api.app()), loop=loop)

    async def setup() -> Node:
        await client.start_server()
        for ns in ("default", "fuzz"):
            await store.create(_kind("v1", "Namespace"), {"metadata": {"name": ns}})
        before = {}
        for path, obj in SEEDED.items():
            r = await client.post(path.rsplit("/", 1)[0], json=obj, headers=AUTH)
            assert r.status == 201, await r.text()
            before[path] = await r.json()
        r = await client.post("/api/v1/namespaces/default/configmaps", json=CORPUS_CM,
                              headers=AUTH)
        assert r.status == 201
        watch = await client.get(
            f"/api/v1/configmaps?watch=true&resourceVersion={replica.revision}", headers=AUTH)
        assert watch.status == 200
        return Node(loop, store, client, watch, before)

    n = loop.run_until_complete(setup())
    yield n
    n.watch.close()
    loop.run_until_complete(client.close())
    replica.close()
    loop.close()


# -- what a request may be -------------------------------------------------------------

NAMES = st.one_of(st.sampled_from(["keep", "new-one"]), st.sampled_from(
    ["x" * 300, "Bad_Name", "..", "a%2Fb", "ü", "", "a/b", "-", "0", "keep.", " keep"]))
NAMESPACES = st.one_of(st.sampled_from(["default", "fuzz"]), st.sampled_from(
    ["missing", "kube-system", "BAD", "..", ""]))
RESOURCES = st.sampled_from([
    ("/api/v1", "configmaps"), ("/api/v1", "secrets"), ("/api/v1", "pods"),
    ("/api/v1", "services"), ("/apis/apps/v1", "deployments"),
    ("/apis/apps/v1", "replicasets"), ("/apis/batch/v1", "jobs"), ("/api/v1", "events"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"), ("/api/v1", "serviceaccounts"),
    ("/apis/apps/v1", "nosuchthings"), ("/apis/nosuch.group/v1", "widgets")])
SUBRESOURCES = st.sampled_from(["", "", "", "/status", "/scale", "/log", "/eviction",
                                "/binding", "/exec", "/attach", "/portforward", "/proxy",
                                "/token", "/nosuch"])
CLUSTER_PATHS = st.sampled_from([
    "/api/v1/namespaces", "/api/v1/namespaces/fuzz", "/api/v1/nodes", "/api/v1/nodes/n1",
    "/apis/apps/v1/deployments", "/api/v1/pods", "/apis", "/api", "/version", "/openapi/v2",
    "/openapi/v3/apis/apps/v1", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "/api/v1/namespaces/default/configmaps/keep/../../secrets", "/%ff%fe", "/api/v1/%00",
    "/apis/apps/v1/namespaces/default/deployments/keep/scale"])


@st.composite
def targets(draw: st.DrawFn) -> tuple[str, str]:
    """A method and a path, mostly ones that reach the handlers (a write to a collection
    or an object that exists) rather than a 404 or a 405."""
    if draw(st.integers(0, 7)) == 0:
        return draw(METHOD), draw(CLUSTER_PATHS)
    if draw(st.integers(0, 2)) == 0:
        path = draw(st.sampled_from(sorted(SEEDED)))
        sub = draw(SUBRESOURCES)
        return draw(OBJECT_METHOD if not sub else METHOD), path + sub
    prefix, resource = draw(RESOURCES)
    path = f"{prefix}/namespaces/{quote(draw(NAMESPACES), safe='')}/{resource}"
    if draw(st.booleans()):
        return draw(COLLECTION_METHOD), path
    return draw(OBJECT_METHOD), path + "/" + quote(draw(NAMES), safe="") + draw(SUBRESOURCES)


METHOD = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])
COLLECTION_METHOD = st.sampled_from(["POST", "POST", "POST", "GET", "DELETE", "PUT"])
OBJECT_METHOD = st.sampled_from(["PUT", "PATCH", "PATCH", "GET", "DELETE", "POST"])
TEXT = st.text(max_size=40)
NUMBERS = st.sampled_from(["0", "-1", "1", "1e308", "99999999999999999999999", "NaN", "0x10",
                           "", "1.5", " 1", "18446744073709551616"])
QUERY_KEYS = st.sampled_from([
    "resourceVersion", "resourceVersionMatch", "continue", "limit", "labelSelector",
    "fieldSelector", "watch", "timeoutSeconds", "allowWatchBookmarks", "fieldValidation",
    "dryRun", "propagationPolicy", "gracePeriodSeconds", "fieldManager", "force", "pretty",
    "sendInitialEvents", "container", "follow", "tailLines", "sinceSeconds", "limitBytes",
    "orphanDependents", "nosuch"])


@st.composite
def queries(draw: st.DrawFn) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in draw(st.lists(QUERY_KEYS, max_size=4, unique=True)):
        value = draw(st.one_of(TEXT, NUMBERS, st.sampled_from(
            ["true", "false", "All", "Strict", "Warn", "Ignore", "Foreground", "Orphan",
             "NotOlderThan", "Exact", "a=b", "a in (b", "metadata.name=keep", "!!", "=="]),
            st.builds(lambda raw: base64.urlsafe_b64encode(raw).decode(), st.binary(max_size=60)),
            st.builds(lambda v: base64.urlsafe_b64encode(dumps(v)).decode(),
                      st.fixed_dictionaries({"rv": st.one_of(st.integers(), st.floats(),
                                                              st.text(max_size=5)),
                                             "ns": TEXT, "name": TEXT}))))
        out[key] = value
    if out.get("watch") in ("true", "1") or "follow" in out:
        out["timeoutSeconds"] = "1"  # a watch that is served streams: cut it short
    return out


def dumps(value: Any) -> bytes:
    """JSON as a client may send it: integers of any size included."""
    return json.dumps(value).encode()


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25)


@st.composite
def mutated_objects(draw: st.DrawFn, base: dict[str, Any] | None = None) -> Any:
    """A seeded object (``base``, else any) with one place replaced, removed or nested
    deeply."""
    obj = copy.deepcopy(base or draw(st.sampled_from(list(SEEDED.values()))))
    node: Any = obj
    for _ in range(draw(st.integers(0, 5))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict | list) or draw(st.booleans()):
                action = draw(st.integers(0, 3))
                if action == 0:
                    node[key] = draw(JSON)
                elif action == 1:
                    del node[key]
                elif action == 2:
                    deep: Any = "x"
                    for _ in range(draw(st.integers(40, 400))):
                        deep = {"a": deep} if draw(st.booleans()) else [deep]
                    node[key] = deep
                else:
                    node[draw(st.text(max_size=8))] = draw(JSON)
                return obj
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[draw(st.integers(0, len(node) - 1))]
        else:
            break
    return obj


YAML_BITS = st.sampled_from([
    "a: !!binary aGVsbG8=\n", "a: !!set {x, y}\n", "a: !!python/object:os.system {}\n",
    "1: one\n", "a: .inf\n", "a: .nan\n", "a: &x [*x]\n", "a: 2020-01-01\n", "? [a]\n: b\n",
    "a: [" * 300 + "]" * 300 + "\n", "- a\n", "a: b\n---\nc: d\n", "\t\x00\n", "a: 0o777\n",
    "metadata:\n  name: keep\n", "apiVersion: v1\nkind: ConfigMap\n", "a: " + "[" * 5000])


def _seeded_kind(path: str) -> dict[str, Any] | None:
    """The seeded object of the kind ``path`` names, if any (for a body that gets as far
    as validation)."""
    for seeded, obj in SEEDED.items():
        collection = seeded.rsplit("/", 1)[0].rsplit("/", 1)[1]
        if f"/{collection}" in path and path.split("/")[1:3] == seeded.split("/")[1:3]:
            return obj
    return None


@st.composite
def bodies(draw: st.DrawFn, path: str = "") -> tuple[bytes, str]:
    content_type = draw(st.sampled_from([
        "application/json", "application/json", "application/yaml",
        "application/merge-patch+json", "application/strategic-merge-patch+json",
        "application/json-patch+json", "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf", "text/plain", "", "application/json; charset=x"]))
    base = _seeded_kind(path)
    kind = draw(st.integers(0, 7))
    if kind >= 6 and base is not None:  # the right kind, one place wrong
        body = draw(mutated_objects(base))
        if isinstance(body.get("metadata"), dict) and "/keep" not in path:
            body["metadata"]["name"] = path.rsplit("/", 1)[1] if path.count("/") > 5 else "new"
        raw = dumps(body)
        content_type = draw(st.sampled_from(["application/json", "application/yaml"]))
    elif kind in (0, 6, 7):
        raw = draw(st.binary(max_size=200))
    elif kind == 1:
        raw = dumps(draw(JSON))
    elif kind == 2:
        raw = dumps(draw(mutated_objects()))
    elif kind == 3:
        raw = "".join(draw(st.lists(YAML_BITS, min_size=1, max_size=3))).encode()
    elif kind == 4:  # a JSON patch of random operations
        raw = dumps(draw(st.lists(st.fixed_dictionaries({
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
            "path": st.sampled_from(["/metadata/name", "/spec", "/data/k", "/metadata/labels/a",
                                     "/", "", "/spec/template/spec/containers/0", "/~2", "/a/-",
                                     "/metadata/uid", "/metadata/resourceVersion"]),
            "value": JSON, "from": st.sampled_from(["/data", "/spec", "/x"])}), max_size=3)))
    else:
        raw = dumps(draw(mutated_objects()))[: draw(st.integers(0, 200))]
    return raw, content_type


# -- checking an answer ----------------------------------------------------------------


async def send(node: Node, method: str, path: str, query: dict[str, str], body: bytes,
               content_type: str) -> tuple[int, bytes]:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    async with node.client.request(method, path, params=query, data=body or None,
                                   headers=headers) as r:
        if r.status == 200 and query.get("watch") in ("true", "1"):
            # The first event only (an error a watch meets is an ERROR event, as in
            # Kubernetes); timeoutSeconds ends the stream soon anyway.
            async with asyncio.timeout(5):
                return r.status, await r.content.readline()
        if r.status == 200 and "follow" in query:
            return r.status, b""
        return r.status, await r.read()


def check(node: Node, method: str, path: str, query: dict[str, str], status: int,
          data: bytes) -> None:
    node.requests += 1
    node.codes[status] = node.codes.get(status, 0) + 1
    where = f"{method} {path} {query}"
    if status == 504:
        assert "resourceVersion" in query, f"{where}: 504 {data[:300]!r}"
    elif status == 503:  # a proxy to a pod that runs nowhere, as Kubernetes answers
        assert path.endswith("/proxy"), f"{where}: 503 {data[:300]!r}"
    else:
        assert status < 500, f"{where}: {status} {data[:300]!r}"
    if status >= 400 and data:
        status_obj = orjson.loads(data)
        assert status_obj["kind"] == "Status" and status_obj["code"] == status, where
    if status < 300 and method != "GET":
        path = posixpath.normpath(path)  # as the client sends it
        for seeded in SEEDED:
            if path.startswith(seeded) or seeded.startswith(path):
                node.changed.add(seeded)


def test_hostile_requests_get_a_status_with_a_4xx_never_a_500(node: Node) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        method, path = data.draw(targets(), "target")
        query = data.draw(queries(), "query")
        raw, content_type = data.draw(bodies(path), "body")
        status, answer = node.run(send(node, method, path, query, raw, content_type))
        check(node, method, path, query, status, answer)

    fuzz()
    node.run(still_serving(node))
    assert node.requests >= EXAMPLES


def _nested_json(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def _laughs(tail: bytes) -> bytes:
    """Nine levels of ten aliases each, under ``data``: 10^9 values from 1 KB."""
    levels = [b"l0: &l0 [" + b",".join([b"x"] * 10) + b"]"]
    levels += [b"l%d: &l%d [" % (i, i) + b",".join([b"*l%d" % (i - 1)] * 10) + b"]"
               for i in range(1, 9)]
    return b"\n".join(levels) + b"\n" + tail + b"data: {k: *l8}\n"


def _continue(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


CORPUS: list[tuple[str, str, dict[str, str], bytes, str]] = [
    # A Deployment with an unknown field nested 300 levels deep once wedged every watch.
    ("POST", "/apis/apps/v1/namespaces/default/deployments", {},
     orjson.dumps({**deployment("deep"), "spec": {**deployment("deep")["spec"],
                                                  "unknown": orjson.loads(_nested_json(200))}}),
     "application/json"),
    ("POST", "/apis/apps/v1/namespaces/default/deployments", {},
     b'{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":'
     + _nested_json(300) + b"}", "application/json"),
    ("POST", "/api/v1/namespaces/default/configmaps", {}, _nested_json(1000), "application/json"),
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"a: " + b"[" * 5000 + b"]" * 5000, "application/yaml"),
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bin}\ndata:\n  a: !!binary aGk=\n",
     "application/yaml"),
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata: !!set {a, b}\n",
     "application/yaml"),
    # An integer key is "1" for Kubernetes (sigs.k8s.io/yaml), a null key an error.
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k}\ndata:\n  ~: one\n",
     "application/yaml"),
    # Base 60: replicas 1:20 was 80 (PyYAML's YAML 1.1), a string for Kubernetes: refused.
    ("POST", "/apis/apps/v1/namespaces/default/deployments", {},
     b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: sexagesimal}\nspec:\n"
     b"  replicas: 1:20\n  selector: {matchLabels: {a: b}}\n  template:\n"
     b"    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
     "application/yaml"),
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k}\ndata:\n  a: .inf\n",
     "application/yaml"),
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"a: &a [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n", "application/yaml"),
    # A YAML "billion laughs" (1 KB of aliases, 10^9 values when walked) held the
    # event loop of a real node for good: no request, watch or controller ran again.
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     _laughs(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: laughs}\n"),
     "application/yaml"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/corpus", {"fieldManager": "fuzz"},
     _laughs(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus}\n"),
     "application/apply-patch+yaml"),
    ("GET", "/api/v1/namespaces/default/configmaps",
     {"limit": "1", "continue": _continue(b'{"rv": 1e308, "ns": "", "name": "x"}')}, b"", ""),
    ("GET", "/api/v1/namespaces/default/configmaps",
     {"limit": "1", "continue": _continue(b'{"rv": 1180591620717411303424, "ns": "", '
                                          b'"name": "x"}')}, b"", ""),
    ("GET", "/api/v1/namespaces/default/configmaps", {"resourceVersion": "1e308"}, b"", ""),
    ("GET", "/api/v1/namespaces/default/configmaps",
     {"watch": "true", "resourceVersion": "-5", "timeoutSeconds": "1"}, b"", ""),
    ("GET", "/api/v1/namespaces/default/configmaps", {"limit": "1e308"}, b"", ""),
    ("GET", "/api/v1/namespaces/default/configmaps", {"labelSelector": "a in (b"}, b"", ""),
    ("GET", "/api/v1/namespaces/default/configmaps", {"fieldSelector": "metadata.name"},
     b"", ""),
    ("GET", "/api/v1/namespaces/default/configmaps", {"timeoutSeconds": "NaN-ish",
                                                      "watch": "1"}, b"", ""),
    ("PATCH", "/api/v1/namespaces/default/configmaps/corpus", {},
     orjson.dumps({"metadata": {"annotations": orjson.loads(_nested_json(120))}}),
     "application/merge-patch+json"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/corpus", {},
     b'[{"op":"add","path":"/data/x","value":' + _nested_json(200) + b"}]",
     "application/json-patch+json"),
    # 40 copies of a list into itself: 2^40 elements; a real node grew to 8.8 GB, wedged.
    ("PATCH", "/api/v1/namespaces/default/configmaps/corpus", {},
     orjson.dumps([{"op": "add", "path": "/data/x", "value": ["x" * 1000]}]
                  + [{"op": "copy", "from": "/data/x", "path": "/data/x/-"}] * 40),
     "application/json-patch+json"),
    # replicas of 2^200 arrive as a float (orjson): stored, the Deployment's controller then
    # failed on it several times a second, for good.
    ("POST", "/apis/apps/v1/namespaces/default/deployments", {},
     orjson.dumps(deployment("huge")).replace(b'"replicas":1', b'"replicas":' + b"1" + b"0" * 60),
     "application/json"),
    # An integer past Python's 4,300 digits in YAML raised ValueError: a 500.
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata: {k: 1" + b"0" * 5000
     + b"}\n", "application/yaml"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/corpus", {}, b"{", "application/json"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/corpus", {}, b'{"a":1}',
     "application/x-unknown-patch"),
    ("PUT", "/api/v1/namespaces/default/configmaps/corpus", {},
     orjson.dumps({**CORPUS_CM,
                   "metadata": {"name": "other"}}), "application/json"),
    ("PUT", "/api/v1/namespaces/default/configmaps/corpus", {},
     orjson.dumps({**CORPUS_CM,
                   "metadata": {"name": "corpus", "resourceVersion": "1e308"}}),
     "application/json"),
    ("POST", "/api/v1/namespaces/default/configmaps", {}, b"\x00" * 100,
     "application/vnd.kubernetes.protobuf"),
    ("POST", "/api/v1/namespaces/default/configmaps", {},
     b"k8s\x00" + b"\x0a\xff\xff\xff\xff\x0f", "application/vnd.kubernetes.protobuf"),
    ("POST", "/api/v1/namespaces/default/configmaps", {}, b"x" * (4 * 1024 * 1024),
     "application/json"),
    ("DELETE", "/api/v1/namespaces/default/configmaps/corpus", {}, b"[]", "application/json"),
    ("DELETE", "/api/v1/namespaces/default/configmaps/corpus", {"gracePeriodSeconds": "1e308"},
     b"", ""),
    ("POST", "/api/v1/namespaces/default/pods/keep/eviction", {}, b'{"a":', "application/json"),
    ("GET", "/api/v1/namespaces/default/pods/keep/log", {"tailLines": "-1"}, b"", ""),
    ("GET", "/api/v1/namespaces/default/pods/keep/exec", {"command": "sh"}, b"", ""),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {}, _nested_json(400),
     "application/json"),
    # A pod of 5,000 containers (or env entries, or volumes) was accepted: a 422 now.
    ("POST", "/api/v1/namespaces/default/pods", {},
     orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "many"},
                   "spec": {"containers": [{"name": f"c{i}", "image": "busybox"}
                                           for i in range(5000)]}}), "application/json"),
    ("POST", "/api/v1/namespaces/default/pods", {},
     orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "many-env"},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "env": [
                       {"name": f"E{i}", "value": "x"} for i in range(20000)]}]}}),
     "application/json"),
]


def test_a_corpus_of_known_hostile_requests_gets_4xx_statuses(node: Node) -> None:
    start = node.requests
    # A namespace of its own, made now: the random requests may have deleted any other.
    ns = f"corpus-{next(SENTINELS)}"

    async def setup() -> None:
        for path, obj in (("/api/v1/namespaces", {"metadata": {"name": ns}}),
                          (f"/api/v1/namespaces/{ns}/configmaps", CORPUS_CM)):
            r = await node.client.post(path, json=obj, headers=AUTH)
            assert r.status == 201, await r.text()

    node.run(setup())
    for method, path, query, body, content_type in CORPUS:
        path = path.replace("/namespaces/default/", f"/namespaces/{ns}/")
        status, data = node.run(send(node, method, path, query, body, content_type))
        check(node, method, path, query, status, data)
        if status == 200 and "watch" in query:  # refused inside the stream
            event = orjson.loads(data)
            assert event["type"] == "ERROR" and 400 <= event["object"]["code"] < 500, data
            continue
        assert status >= 400, f"{method} {path} {query}: {status}"
    node.run(still_serving(node))
    assert node.requests - start == len(CORPUS)


SENTINELS = itertools.count()


async def still_serving(node: Node) -> None:
    """The node answers, its watch delivers, its commits have settled, and no object
    seeded before changed unless a request naming it succeeded."""
    r = await node.client.get("/healthz")
    assert r.status == 200
    for path, before in node.before.items():
        if path in node.changed:
            continue
        r = await node.client.get(path, headers=AUTH)
        assert r.status == 200, path
        assert await r.json() == before, path
    replica = node.store.replica
    for _ in range(100):  # let in-flight commits settle
        if replica.durable_revision == replica.revision:
            break
        await asyncio.sleep(0.01)
    assert replica.durable_revision == replica.revision
    # In a namespace of its own: the fuzz may have deleted every namespace (as an
    # administrator may).
    name = f"after-fuzz-{next(SENTINELS)}"
    r = await node.client.post("/api/v1/namespaces", headers=AUTH,
                               json={"metadata": {"name": name}})
    assert r.status == 201, await r.text()
    r = await node.client.post(f"/api/v1/namespaces/{name}/configmaps", headers=AUTH,
                               json={"metadata": {"name": "sentinel"}})
    assert r.status == 201, await r.text()
    async with asyncio.timeout(10):
        while True:
            line = await node.watch.content.readline()
            assert line, "the watch ended"
            event = orjson.loads(line)
            if event["object"]["metadata"].get("namespace") == name:
                break
