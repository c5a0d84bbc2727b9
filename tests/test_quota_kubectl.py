"""Quotas, limits, priorities and autoscaling through real kubectl and the Python client,
on one server.

``kubectl create quota`` / ``priorityclass`` (protobuf bodies), ``kubectl describe quota``
with usage, Kubernetes' 403 for a pod past the quota, a LimitRange's default, the
built-in PriorityClasses and ``kubectl autoscale`` scaling a busy Deployment on the
node's own CPU samples; an autoscaling/v1 manifest; updates charged against a quota
and a claim kept while its pod uses it (pvc-protection).
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client, config

from tests.conftest import ShoalProcess
from tests.test_cluster import wait_for

# Starts real `shoal server` processes: run one at a time (make test), not on xdist workers.
pytestmark = pytest.mark.slow

BUSY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: busy}
spec:
  replicas: 1
  selector: {matchLabels: {app: busy}}
  template:
    metadata: {labels: {app: busy}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "while :; do :; done"]
        resources: {requests: {cpu: 20m}}
"""


@pytest.fixture(scope="module")
def node(shoal_module: ShoalProcess) -> ShoalProcess:
    return shoal_module


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().split("\n")]


def pod_json(name: str, cpu: str | None) -> str:
    resources = {"requests": {"cpu": cpu}} if cpu else {}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": "busybox", "command": ["sleep", "600"],
             "resources": resources}]}})


def test_a_quota_counts_limits_and_refuses_with_kubernetes_message(node: ShoalProcess) -> None:
    node.kubectl("create", "namespace", "team")
    node.kubectl("-n", "team", "create", "quota", "small", "--hard=pods=2,requests.cpu=1")
    node.kubectl("-n", "team", "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
        "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "300m"}}]}}))
    node.kubectl("-n", "team", "apply", "-f", "-", input=pod_json("one", None))
    one = json.loads(node.kubectl("-n", "team", "get", "pod", "one", "-o", "json").stdout)
    assert one["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "300m"}
    node.kubectl("-n", "team", "apply", "-f", "-", input=pod_json("two", "500m"))
    refused = node.kubectl("-n", "team", "apply", "-f", "-", input=pod_json("three", "100m"),
                           check=False)
    assert refused.returncode != 0
    assert ('pods "three" is forbidden: exceeded quota: small, requested: pods=1, '
            "used: pods=2, limited: pods=2") in refused.stderr
    wait_for(lambda: "800m" in node.kubectl("-n", "team", "describe", "quota", "small").stdout)
    described = rows(node.kubectl("-n", "team", "describe", "quota", "small").stdout)
    assert ["pods", "2", "2"] in described and ["requests.cpu", "800m", "1"] in described
    table = rows(node.kubectl("-n", "team", "get", "quota").stdout)
    assert table[0] == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert "pods: 2/2," in " ".join(table[1])


def test_priority_classes_are_served_and_set_a_pods_priority(node: ShoalProcess) -> None:
    node.kubectl("create", "priorityclass", "high", "--value=1000", "--description=urgent")
    table = rows(node.kubectl("get", "pc").stdout)
    assert table[0] == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    names = {r[0]: r[1] for r in table[1:]}
    assert names == {"high": "1000", "system-cluster-critical": "2000000000",
                     "system-node-critical": "2000001000"}
    node.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vip"}, "spec": {
            "priorityClassName": "high", "containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "600"]}]}}))
    vip = json.loads(node.kubectl("get", "pod", "vip", "-o", "json").stdout)
    assert vip["spec"]["priority"] == 1000


def test_kubectl_autoscale_scales_a_busy_deployment_on_its_cpu(node: ShoalProcess) -> None:
    node.kubectl("apply", "-f", "-", input=BUSY)
    # Once a sample exists (kubectl top shows it), the autoscaler's first pass can act.
    wait_for(lambda: "busy-" in node.kubectl("top", "pods", "-l", "app=busy", check=False).stdout)
    node.kubectl("autoscale", "deployment", "busy", "--cpu=50%", "--min=1", "--max=3")
    wait_for(lambda: json.loads(node.kubectl("get", "deploy", "busy", "-o", "json").stdout)[
        "spec"]["replicas"] == 3)
    hpa = json.loads(node.kubectl("get", "hpa", "busy", "-o", "json").stdout)
    assert hpa["status"]["desiredReplicas"] == 3
    assert hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"] > 75
    table = rows(node.kubectl("get", "hpa", "busy").stdout)
    assert table[0] == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    assert table[1][:3] == ["busy", "Deployment/busy", "cpu:"] and table[1][3].endswith("/50%")
    assert table[1][4:6] == ["1", "3"]


def test_the_python_client_reads_and_writes_every_new_kind(node: ShoalProcess) -> None:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(node.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota("default", client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="py"), spec=client.V1ResourceQuotaSpec(
            hard={"count/configmaps": "50"})))
    core.create_namespaced_limit_range("default", client.V1LimitRange(
        metadata=client.V1ObjectMeta(name="py"), spec=client.V1LimitRangeSpec(limits=[
            client.V1LimitRangeItem(type="Container", max={"memory": "1Gi"})])))
    wait_for(lambda: core.read_namespaced_resource_quota("py", "default").status is not None
          and core.read_namespaced_resource_quota("py", "default").status.used is not None)
    assert core.read_namespaced_limit_range("py", "default").spec.limits[0].default == {
        "memory": "1Gi"}
    classes = client.SchedulingV1Api(api).list_priority_class().items
    assert {"system-node-critical", "system-cluster-critical"} <= {
        c.metadata.name for c in classes}
    hpas = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler("default")
    busy = next(h for h in hpas.items if h.metadata.name == "busy")
    assert busy.status.desired_replicas == 3
    assert busy.status.current_metrics[0].resource.current.average_utilization > 75


def test_an_autoscaling_v1_manifest_is_served_in_both_versions(node: ShoalProcess) -> None:
    node.kubectl("apply", "-f", "-", input="""
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: v1-hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: busy}
  maxReplicas: 4
  targetCPUUtilizationPercentage: 55
""")
    v1 = node.kubectl("get", "horizontalpodautoscalers.v1.autoscaling", "v1-hpa", "-o",
                      "jsonpath={.apiVersion} {.spec.targetCPUUtilizationPercentage}").stdout
    assert v1 == "autoscaling/v1 55"
    metric = json.loads(node.kubectl("get", "hpa", "v1-hpa", "-o", "jsonpath={.spec.metrics}").stdout)
    assert metric[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 55}
    config.load_kube_config(config_file=str(node.kubeconfig))
    api = client.ApiClient()
    listed = client.AutoscalingV1Api(api).read_namespaced_horizontal_pod_autoscaler(
        "v1-hpa", "default")
    assert listed.spec.target_cpu_utilization_percentage == 55
    node.kubectl("delete", "horizontalpodautoscalers.v1.autoscaling", "v1-hpa")


def test_an_update_past_the_quota_is_refused_and_a_claim_in_use_is_kept(
        node: ShoalProcess) -> None:
    node.kubectl("create", "namespace", "edge")
    node.kubectl("-n", "edge", "create", "quota", "ports",
                 "--hard=services.nodeports=1,requests.storage=2Gi")
    node.kubectl("-n", "edge", "create", "service", "clusterip", "web", "--tcp=80", "--tcp=443")
    refused = node.kubectl("-n", "edge", "patch", "svc", "web", "-p",
                           '{"spec":{"type":"NodePort"}}', check=False)
    assert ('services "web" is forbidden: exceeded quota: ports, requested: '
            "services.nodeports=2, used: services.nodeports=0, limited: "
            "services.nodeports=1") in refused.stderr
    node.kubectl("-n", "edge", "apply", "-f", "-", input="""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: [sleep, "600"]}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
""")
    wait_for(lambda: "Bound" in node.kubectl("-n", "edge", "get", "pvc", "data").stdout)
    grown = node.kubectl("-n", "edge", "patch", "pvc", "data", "-p",
                         '{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}', check=False)
    assert "requested: requests.storage=2Gi, used: requests.storage=1Gi" in grown.stderr
    # pvc-protection: deleted under its pod, the claim stays Terminating until the pod goes
    node.kubectl("-n", "edge", "delete", "pvc", "data", "--wait=false")
    assert rows(node.kubectl("-n", "edge", "get", "pvc", "data").stdout)[1][1] == "Terminating"
    node.kubectl("-n", "edge", "delete", "pod", "user")
    wait_for(lambda: node.kubectl("-n", "edge", "get", "pvc", "data", check=False).returncode != 0)
