"""Server-side apply with the real clients, against one real node for the module: kubectl
apply --server-side (create, prune, conflicts and --force-conflicts, after kubectl scale),
client-side apply and the switch from it, and the kubernetes Python client's apply."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from tests.conftest import ShoalProcess

pytestmark = pytest.mark.slow


def _cm(name: str, data: dict[str, str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": "default"}, "data": data})


def _get(node: ShoalProcess, what: str, *extra: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(node.kubectl("get", what, "-o", "json", *extra).stdout)
    return out


def _managers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f'{e["manager"]}/{e["operation"]}': e["fieldsV1"]
            for e in obj["metadata"].get("managedFields", [])}


def test_apply_server_side_creates_and_a_reapply_without_a_field_removes_it(
        shoal_module: ShoalProcess) -> None:
    node = shoal_module
    r = node.kubectl("apply", "--server-side", "-f", "-", input=_cm("ssa-a", {"a": "1", "b": "2"}))
    assert "configmap/ssa-a serverside-applied" in r.stdout
    node.kubectl("apply", "--server-side", "-f", "-", input=_cm("ssa-a", {"a": "1"}))
    obj = _get(node, "configmap/ssa-a", "--show-managed-fields")
    assert obj["data"] == {"a": "1"}
    assert _managers(obj) == {"kubectl/Apply": {"f:data": {"f:a": {}}}}
    assert "managedFields" not in _get(node, "configmap/ssa-a")["metadata"]  # kubectl hides them


def test_a_second_manager_conflicts_until_it_forces(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("apply", "--server-side", "-f", "-", input=_cm("ssa-b", {"a": "1"}))
    r = node.kubectl("apply", "--server-side", "--field-manager=other", "-f", "-",
                     input=_cm("ssa-b", {"a": "2"}), check=False)
    assert r.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .data.a' in r.stderr
    assert "--force-conflicts" in r.stderr  # kubectl's own advice, from the 409's reason
    node.kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts",
                 "-f", "-", input=_cm("ssa-b", {"a": "2"}))
    obj = _get(node, "configmap/ssa-b", "--show-managed-fields")
    assert obj["data"] == {"a": "2"}
    assert _managers(obj) == {"other/Apply": {"f:data": {"f:a": {}}}}


def test_kubectl_scale_then_a_reapply_of_replicas_conflicts(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    deployment = json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ssa-web", "namespace": "default"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "ssa-web"}},
                 "template": {"metadata": {"labels": {"app": "ssa-web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox",
                                                       "command": ["sleep", "3600"]}]}}}})
    node.kubectl("apply", "--server-side", "-f", "-", input=deployment)
    node.kubectl("scale", "deployment/ssa-web", "--replicas=0", "--current-replicas=0")
    r = node.kubectl("scale", "deployment/ssa-web", "--replicas=1")
    assert "scaled" in r.stdout
    r = node.kubectl("apply", "--server-side", "-f", "-", input=deployment, check=False)
    assert r.returncode == 1, r.stdout
    assert ('Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" '
            "using apps/v1: .spec.replicas") in r.stderr
    node.kubectl("delete", "deployment/ssa-web", "--wait=false")


def test_client_side_apply_works_and_switching_to_server_side_migrates_its_manager(
        shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("apply", "-f", "-", input=_cm("csa", {"a": "1", "b": "2"}))
    node.kubectl("apply", "-f", "-", input=_cm("csa", {"a": "1", "c": "3"}))
    obj = _get(node, "configmap/csa", "--show-managed-fields")
    assert obj["data"] == {"a": "1", "c": "3"}  # client-side apply pruned b itself
    assert "kubectl-client-side-apply/Update" in _managers(obj)
    # The switch: a changed value that only client-side apply owned is no conflict.
    node.kubectl("apply", "--server-side", "-f", "-", input=_cm("csa", {"a": "9", "c": "3"}))
    obj = _get(node, "configmap/csa", "--show-managed-fields")
    assert obj["data"] == {"a": "9", "c": "3"}
    managers = _managers(obj)
    # kubectl moved the old manager's fields over, the annotation to a manager of its own.
    assert set(managers) == {"kubectl-last-applied/Apply", "kubectl/Apply"}
    assert managers["kubectl-last-applied/Apply"] == {"f:metadata": {"f:annotations": {
        "f:kubectl.kubernetes.io/last-applied-configuration": {}}}}
    assert "f:c" in managers["kubectl/Apply"]["f:data"]
    # From now on, what server-side apply stops applying goes.
    node.kubectl("apply", "--server-side", "-f", "-", input=_cm("csa", {"a": "9"}))
    assert _get(node, "configmap/csa")["data"] == {"a": "9"}


@pytest.fixture(scope="module")
def core(shoal_module: ShoalProcess) -> Iterator[client.CoreV1Api]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(shoal_module.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield client.CoreV1Api(c)


def test_the_python_client_applies_with_a_field_manager(core: client.CoreV1Api) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-ssa"},
            "data": {"a": "1", "b": "2"}}
    kwargs: dict[str, Any] = {"field_manager": "py-operator",
                              "_content_type": "application/apply-patch+yaml"}
    created = core.patch_namespaced_config_map("py-ssa", "default", body, **kwargs)
    assert created.data == {"a": "1", "b": "2"}
    assert created.metadata.managed_fields[0].manager == "py-operator"
    assert created.metadata.managed_fields[0].operation == "Apply"
    body["data"] = {"a": "1"}
    applied = core.patch_namespaced_config_map("py-ssa", "default", body, **kwargs)
    assert applied.data == {"a": "1"}
    assert applied.metadata.managed_fields[0].fields_v1 == {"f:data": {"f:a": {}}}


WIDGETS = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.ssa.example.com"},
    "spec": {"group": "ssa.example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "properties": {"ports": {
                         "type": "array", "x-kubernetes-list-type": "map",
                         "x-kubernetes-list-map-keys": ["name"],
                         "items": {"type": "object", "properties": {
                             "name": {"type": "string"}, "port": {"type": "integer"}}}}}}}}}}]}}


def test_a_custom_resources_keyed_list_merges_by_its_schemas_keys(
        core: client.CoreV1Api) -> None:
    api = core.api_client
    client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGETS)
    custom = client.CustomObjectsApi(api)

    def apply_widget(manager: str, ports: list[dict[str, Any]],
                     **extra: Any) -> dict[str, Any]:
        body = {"apiVersion": "ssa.example.com/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "spec": {"ports": ports, **extra}}
        for _ in range(50):  # until the new kind is served
            try:
                out: dict[str, Any] = custom.patch_namespaced_custom_object(
                    "ssa.example.com", "v1", "default", "widgets", "w", body,
                    field_manager=manager, _content_type="application/apply-patch+yaml")
                return out
            except client.ApiException as e:
                if e.status != 404:
                    raise
                time.sleep(0.1)
        raise AssertionError("widgets were never served")

    apply_widget("a", [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}])
    # A field the schema does not know is refused, as the apiserver refuses it (it fails
    # to build the typed patch object; a 500 there, a 400 here), whatever fieldValidation.
    with pytest.raises(client.ApiException) as refused:
        apply_widget("b", [{"name": "metrics", "port": 9100}], bogus=1)
    assert refused.value.status == 400
    assert ".spec.bogus: field not declared in schema" in str(refused.value.body)
    obj = apply_widget("b", [{"name": "metrics", "port": 9100}])
    assert "bogus" not in obj["spec"]
    obj = apply_widget("a", [{"name": "http", "port": 8080}])
    assert obj["spec"]["ports"] == [{"name": "http", "port": 8080},
                                    {"name": "metrics", "port": 9100}]
    owners = {e["manager"]: e["fieldsV1"] for e in obj["metadata"]["managedFields"]}
    assert owners["b"] == {"f:spec": {"f:ports": {'k:{"name":"metrics"}': {
        ".": {}, "f:name": {}, "f:port": {}}}}}
