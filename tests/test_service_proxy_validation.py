"""Bad Services through a real ``shoal server``: Kubernetes' 422 with one cause per field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from tests.conftest import ShoalProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core(shoal_module: ShoalProcess) -> Iterator[client.CoreV1Api]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(shoal_module.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield client.CoreV1Api(c)


def service(name: str = "web", **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"name": "http", "port": 80}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def rejected(core: client.CoreV1Api, body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The (reason, field, message) causes of a create that must fail with 422 Invalid."""
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_service("default", body)
    assert e.value.status == 422
    status = json.loads(e.value.body)
    assert status["reason"] == "Invalid" and status["details"]["name"] == body["metadata"]["name"]
    return [(c["reason"], c["field"], c["message"]) for c in status["details"]["causes"]]


TWO_PORTS = [{"name": "a", "port": 80, "protocol": "TCP"},
             {"name": "b", "port": 80, "protocol": "TCP"}]


@pytest.mark.parametrize(("body", "cause"), [
    pytest.param(service(ports=TWO_PORTS),
                 ("FieldValueDuplicate", "spec.ports[1]",
                  'Duplicate value: {"port":80,"protocol":"TCP"}'),
                 id="two ports with the same number and protocol clash"),
    pytest.param(service(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 81}]),
                 ("FieldValueDuplicate", "spec.ports[1].name", 'Duplicate value: "http"'),
                 id="two ports with the same name clash"),
    pytest.param(service(type="NodePort", ports=[
                     {"name": "a", "port": 80, "nodePort": 30100},
                     {"name": "b", "port": 81, "nodePort": 30100}]),
                 ("FieldValueDuplicate", "spec.ports[1].nodePort", "Duplicate value: 30100"),
                 id="two ports with the same node port clash"),
    pytest.param(service("s" * 64),
                 ("FieldValueInvalid", "metadata.name", "must be no more than 63 characters"),
                 id="a name over 63 characters is refused, since it becomes a DNS label"),
    pytest.param(service(type="ExternalName"),
                 ("FieldValueRequired", "spec.externalName", "Required value"),
                 id="an ExternalName Service needs its external name"),
    pytest.param(service(type="NodePort", clusterIP="None"),
                 ("FieldValueInvalid", "spec.clusterIPs[0]",
                  "may not be set to 'None' for NodePort services"),
                 id="a headless Service cannot have node ports"),
])
def test_a_bad_service_is_refused_with_the_field_that_is_wrong(
        core: client.CoreV1Api, body: dict[str, Any], cause: tuple[str, str, str]) -> None:
    causes = rejected(core, body)
    assert any(r == cause[0] and f == cause[1] and cause[2] in m for r, f, m in causes), causes


def test_a_selector_that_matches_nothing_and_an_external_name_are_valid(
        core: client.CoreV1Api) -> None:
    lonely = core.create_namespaced_service("default", service(
        "lonely", selector={"app": "nothing-has-this-label"}))
    assert lonely.spec.cluster_ip.startswith("10.")
    external = core.create_namespaced_service("default", service(
        "ext", type="ExternalName", externalName="example.com", ports=[]))
    assert external.spec.cluster_ip is None and external.spec.external_name == "example.com"
