"""StatefulSets with local-path volumes on a real node: kubectl, the Python client, and a
kill -9 that the pods survive with their data. One server for everything (it is slow to
start): the Python client's claims, volumes and classes, then the StatefulSet."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import ShoalProcess

STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 2
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox:1.36
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        command: ["sh", "-c", "echo $POD_NAME >> $SHOAL_VOLUME_DATA/boots; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
        volumeMounts: [{name: data, mountPath: /nonexistent-shoal-test/data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
"""


def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.2)


def get(node: ShoalProcess, *args: str) -> dict[str, Any]:
    return dict(json.loads(node.kubectl("get", *args, "-o", "json").stdout))


def running(node: ShoalProcess, name: str) -> dict[str, Any] | None:
    r = node.kubectl("get", "pod", name, "-o", "json", check=False)
    if r.returncode != 0:
        return None
    pod = json.loads(r.stdout)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in pod.get("status", {}).get("conditions") or [])
    return pod if pod.get("status", {}).get("phase") == "Running" and ready else None


def python_client_round_trip(node: ShoalProcess) -> None:
    """Claims, volumes and classes through the official Python client's typed models."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(node.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        classes = storage.list_storage_class().items
        default = [c for c in classes if (c.metadata.annotations or {}).get(
            "storageclass.kubernetes.io/is-default-class") == "true"]
        assert [c.metadata.name for c in default] == ["local-path"]
        assert default[0].volume_binding_mode == "WaitForFirstConsumer"
        storage.create_storage_class(client.V1StorageClass(
            metadata=client.V1ObjectMeta(name="manual"), provisioner="kubernetes.io/no-provisioner",
            reclaim_policy="Retain"))
        core.create_persistent_volume(client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name="static-1"),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"}, access_modes=["ReadWriteOnce"],
                storage_class_name="manual",
                host_path=client.V1HostPathVolumeSource(path="/tmp"))))
        core.create_namespaced_persistent_volume_claim("default", client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="static"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"], storage_class_name="manual",
                resources=client.V1VolumeResourceRequirements(requests={"storage": "512Mi"}))))
        bound = until(lambda: (c := core.read_namespaced_persistent_volume_claim(
            "static", "default")).status.phase == "Bound" and c, 15, "the static claim bound")
        assert bound.spec.volume_name == "static-1"
        assert bound.status.capacity == {"storage": "1Gi"}
        pv = core.read_persistent_volume("static-1")
        assert pv.spec.claim_ref.name == "static" and pv.status.phase == "Bound"
        with pytest.raises(ApiException) as bad:
            core.create_namespaced_persistent_volume_claim("default", {
                "metadata": {"name": "bad"}, "spec": {"accessModes": []}})
        assert bad.value.status == 422
        core.delete_namespaced_persistent_volume_claim("static", "default")
        assert until(lambda: core.read_persistent_volume("static-1").status.phase ==
                     "Released", 15, "the static volume released")
        core.delete_persistent_volume("static-1")
        storage.delete_storage_class("manual")


def boots(node: ShoalProcess, claim: str) -> list[str]:
    pv = get(node, "pv", get(node, "pvc", claim)["spec"]["volumeName"])
    path = pv["spec"]["local"]["path"]
    try:
        with open(f"{path}/boots") as f:
            return f.read().split()
    except OSError:
        return []


@pytest.mark.slow
def test_a_statefulset_keeps_its_names_and_data_across_a_kill_9(shoal: ShoalProcess) -> None:
    out = shoal.kubectl("get", "storageclass").stdout
    assert "local-path (default)" in out and "WaitForFirstConsumer" in out
    explain = shoal.kubectl("explain", "pvc.spec").stdout
    assert "storageClassName" in explain and "volumeName" in explain
    python_client_round_trip(shoal)
    t0 = time.monotonic()
    shoal.kubectl("apply", "-f", "-", input=STS)
    shoal.kubectl("rollout", "status", "statefulset/web", "--timeout=60s")
    applied_to_ready = time.monotonic() - t0
    pvcs = shoal.kubectl("get", "pvc").stdout.splitlines()
    assert pvcs[0].split() == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES",
                               "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"]
    assert [line.split()[:2] for line in pvcs[1:]] == [["data-web-0", "Bound"],
                                                       ["data-web-1", "Bound"]]
    pv_line = shoal.kubectl("get", "pv").stdout.splitlines()[1].split()
    assert pv_line[1:5] == ["64Mi", "RWO", "Delete", "Bound"]
    assert until(lambda: boots(shoal, "data-web-0") == ["web-0"], what="web-0's file")
    assert until(lambda: boots(shoal, "data-web-1") == ["web-1"], what="web-1's file")
    uid = get(shoal, "pod", "web-0")["metadata"]["uid"]
    shoal.kill9()
    t1 = time.monotonic()
    shoal.start()
    until(lambda: running(shoal, "web-0"), 60, "web-0 to run again")
    restart_to_back = time.monotonic() - t1
    assert get(shoal, "pod", "web-0")["metadata"]["uid"] == uid  # the same pod, not a new one
    assert until(lambda: boots(shoal, "data-web-0") == ["web-0", "web-0"], what="its data")
    print(f"apply to 2/2 Ready {applied_to_ready:.1f} s; restart to web-0 back {restart_to_back:.1f} s")
    # Scale to zero: the highest ordinal goes first, and Delete reclaims nothing while the
    # claims stay (the default retention is Retain).
    shoal.kubectl("scale", "statefulset/web", "--replicas=0")
    until(lambda: not get(shoal, "pods")["items"], 60, "the pods to go")
    assert len(get(shoal, "pvc")["items"]) == 2
    shoal.kubectl("delete", "pvc", "data-web-1")
    until(lambda: len(get(shoal, "pv")["items"]) == 1, 30, "the released volume to go")
