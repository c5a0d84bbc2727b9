"""The ``kubernetes`` Python client, and raw HTTP for the error paths."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.conftest import ShoalProcess

pytestmark = pytest.mark.slow

ROOT_CA = "kube-root-ca.crt"  # the ServiceAccounts controller puts it in every namespace


@pytest.fixture
def api(shoal_module: ShoalProcess) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(shoal_module.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield c


def raw(node: ShoalProcess, method: str, path: str, body: bytes | None = None,
        content_type: str = "application/json", token: str | None = "admin") -> tuple[int, Any]:
    """An HTTP request with the admin token (or none), returning (code, parsed body)."""
    ctx = ssl.create_default_context(cafile=str(node.data_dir / "pki" / "ca.crt"))
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    if token == "admin":
        headers["Authorization"] = "Bearer " + (node.data_dir / "pki" / "admin.token").read_text().strip()
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(node.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def cm(name: str, data: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data or {"k": "v"})


def test_create_get_list_update_delete_with_the_python_client(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map("default", cm("py-crud"))
    assert created.metadata.uid and created.metadata.resource_version
    got = core.read_namespaced_config_map("py-crud", "default")
    assert got.data == {"k": "v"}
    got.data["k"] = "w"
    updated = core.replace_namespaced_config_map("py-crud", "default", got)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    names = [i.metadata.name for i in core.list_namespaced_config_map("default").items]
    assert "py-crud" in names
    core.delete_namespaced_config_map("py-crud", "default")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("py-crud", "default")
    assert e.value.status == 404


def test_an_update_with_a_stale_resource_version_gets_409(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map("default", cm("py-stale"))
    first.data = {"k": "one"}
    core.replace_namespaced_config_map("py-stale", "default", first)
    first.data = {"k": "two"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("py-stale", "default", first)
    assert e.value.status == 409
    assert json.loads(e.value.body)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("py-stale", "default").data == {"k": "one"}


def test_a_watch_resumes_from_a_resource_version(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", cm("py-w1"))
    core.create_namespaced_config_map("default", cm("py-w2"))
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, "default", resource_version=start,
                       timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 2:
            w.stop()
    assert seen == [("ADDED", "py-w1"), ("ADDED", "py-w2")]


def test_a_watch_from_a_revision_the_node_no_longer_holds_gets_410(shoal: ShoalProcess) -> None:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(shoal.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        core = client.CoreV1Api(c)
        old_rv = core.create_namespaced_config_map("default", cm("py-old")).metadata.resource_version
    # A restarted node keeps its objects but not the history of their changes.
    shoal.stop()
    shoal.start()
    with client.ApiClient(cfg) as c:
        core = client.CoreV1Api(c)
        w = watch.Watch()
        with pytest.raises(ApiException) as e:
            for _ in w.stream(core.list_namespaced_config_map, "default",
                              resource_version=str(int(old_rv) - 1), timeout_seconds=5):
                pass
        assert e.value.status == 410
        # Relisting gives a revision the watch can start from.
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        events = list(w.stream(core.list_namespaced_config_map, "default", resource_version=rv,
                               timeout_seconds=1))
        assert events == []


def test_a_watch_sees_a_change_made_while_it_runs(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version

    def later() -> None:
        time.sleep(0.5)
        core.create_namespaced_config_map("default", cm("py-live"))

    threading.Thread(target=later).start()
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, "default", resource_version=rv,
                       timeout_seconds=10):
        if ev["object"].metadata.name == "py-live":
            assert ev["type"] == "ADDED"
            w.stop()
            break
    else:
        pytest.fail("the watch never saw the new ConfigMap")


def test_list_pages_with_limit_and_continue(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="paged")))
    for i in range(7):
        core.create_namespaced_config_map("paged", cm(f"p{i}"))
    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map("paged", limit=3, _continue=token)
        # Every namespace also holds kube-root-ca.crt, as in Kubernetes.
        names += [i.metadata.name for i in page.items if i.metadata.name != ROOT_CA]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert names == [f"p{i}" for i in range(7)]
    assert pages == 3


def test_label_and_field_selectors_filter_a_list(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="selectors")))
    for name, tier in (("a", "front"), ("b", "back"), ("c", "front")):
        m = cm(name)
        m.metadata.labels = {"tier": tier}
        core.create_namespaced_config_map("selectors", m)
    front = core.list_namespaced_config_map("selectors", label_selector="tier=front").items
    assert sorted(i.metadata.name for i in front) == ["a", "c"]
    notback = core.list_namespaced_config_map("selectors", label_selector="tier notin (back)").items
    assert sorted(i.metadata.name for i in notback if i.metadata.name != ROOT_CA) == ["a", "c"]
    byname = core.list_namespaced_config_map("selectors", field_selector="metadata.name=b").items
    assert [i.metadata.name for i in byname] == ["b"]


def test_a_request_without_credentials_gets_401_with_a_status(shoal_module: ShoalProcess) -> None:
    code, body = raw(shoal_module, "GET", "/api/v1/namespaces", token=None)
    assert code == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
    code, body = raw(shoal_module, "GET", "/api/v1/namespaces", token="wrong-token")
    assert code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "ctype", "code", "reason"),
    [
        ("POST", "/api/v1/namespaces/default/configmaps", b"{not json", "application/json", 400,
         "BadRequest"),
        ("POST", "/api/v1/namespaces/default/configmaps", b"a: [b", "application/yaml", 400,
         "BadRequest"),
        ("POST", "/api/v1/namespaces/default/gadgets", b"{}", "application/json", 404, "NotFound"),
        ("POST", "/apis/nope.example.com/v1/namespaces/default/gadgets", b"{}", "application/json",
         404, "NotFound"),
        ("POST", "/api/v1/namespaces/default/configmaps",
         b'{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}', "application/json",
         400, "BadRequest"),
        ("POST", "/api/v1/namespaces/default/configmaps",
         b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"other"}}',
         "application/json", 400, "BadRequest"),
        ("POST", "/api/v1/namespaces/default/configmaps",
         b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}',
         "application/json", 422, "Invalid"),
        ("PUT", "/api/v1/namespaces/default/configmaps/a",
         b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}', "application/json",
         400, "BadRequest"),
        ("POST", "/api/v1/namespaces/default/configmaps",
         b'{"metadata":{"name":"big"},"data":{"x":"' + b"a" * (4 * 1024 * 1024) + b'"}}',
         "application/json", 413, "RequestEntityTooLarge"),
    ],
    ids=["malformed-json", "malformed-yaml", "unknown-kind", "unknown-group", "wrong-apiversion",
         "namespace-mismatch", "invalid-name", "name-mismatch", "huge-body"],
)
def test_bad_input_gets_a_status_with_the_right_code(
    shoal_module: ShoalProcess, method: str, path: str, body: bytes, ctype: str, code: int,
    reason: str,
) -> None:
    got, status = raw(shoal_module, method, path, body, ctype)
    assert got == code, status
    assert status["kind"] == "Status" and status["code"] == code and status["reason"] == reason
    # The node is unharmed.
    assert raw(shoal_module, "GET", "/api/v1/namespaces/default")[0] == 200


def test_a_deployment_without_an_image_is_rejected_with_the_field_path(
    shoal_module: ShoalProcess,
) -> None:
    body = json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "noimage"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c"}]}}},
    }).encode()
    code, status = raw(shoal_module, "POST", "/apis/apps/v1/namespaces/default/deployments", body)
    assert code == 422
    fields = [c["field"] for c in status["details"]["causes"]]
    assert "spec.template.spec.containers[0].image" in fields


def test_deletecollection_removes_only_what_the_selector_matches(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="sweep")))
    for name, keep in (("a", "no"), ("b", "no"), ("c", "yes")):
        m = cm(name)
        m.metadata.labels = {"keep": keep}
        core.create_namespaced_config_map("sweep", m)
    core.delete_collection_namespaced_config_map("sweep", label_selector="keep=no")
    left = [i.metadata.name for i in core.list_namespaced_config_map("sweep").items
            if i.metadata.name != ROOT_CA]
    assert left == ["c"]


def test_a_watch_that_allows_bookmarks_gets_them(shoal_module: ShoalProcess) -> None:
    # The test server sends a bookmark every second (--bookmark-interval 1s).
    ctx = ssl.create_default_context(cafile=str(shoal_module.data_dir / "pki" / "ca.crt"))
    token = (shoal_module.data_dir / "pki" / "admin.token").read_text().strip()
    _, listed = raw(shoal_module, "GET", "/api/v1/namespaces/default/configmaps")
    rv = listed["metadata"]["resourceVersion"]
    req = urllib.request.Request(
        f"{shoal_module.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
        "&allowWatchBookmarks=true&timeoutSeconds=3",
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)
