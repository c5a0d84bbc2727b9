"""Issue 12's kinds and fixes through real clients: kubectl and the official Python client.

One server for the module (process runtime): CronJob columns and ``kubectl create job
--from=cronjob/...``, a ReplicationController scaled, the ``kubernetes`` Service and
its endpoints, the TLS Secret of Kubernetes' docs, exec stdin sent as text frames, and
last (it cordons the node) ``kubectl drain`` held back by a PodDisruptionBudget.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.stream import stream

from tests.conftest import ShoalProcess
from tests.test_cluster import wait_for

# Starts real `shoal server` processes: run one at a time (make test), not on xdist workers.
pytestmark = pytest.mark.slow

CRONJOB = """
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/5 * * * *"
  timeZone: Europe/Berlin
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - {name: c, image: busybox, command: ["sh", "-c", "echo hi"]}
"""

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox, command: ["sh", "-c", "sleep 3600"]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
"""

RC = """
apiVersion: v1
kind: ReplicationController
metadata: {name: old}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: old}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox, command: ["sh", "-c", "sleep 3600"]}
"""


@pytest.fixture(scope="module")
def node(shoal_module: ShoalProcess) -> ShoalProcess:
    return shoal_module


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().split("\n")]


def test_kubectl_shows_a_cronjob_and_creates_a_job_from_it(node: ShoalProcess) -> None:
    node.kubectl("apply", "-f", "-", input=CRONJOB)
    table = rows(node.kubectl("get", "cj").stdout)
    assert table[0] == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST",
                        "SCHEDULE", "AGE"]
    assert table[1][:7] == ["tick", "*/5", "*", "*", "*", "*", "Europe/Berlin"]
    assert table[1][7:10] == ["False", "0", "<none>"]
    node.kubectl("create", "job", "by-hand", "--from=cronjob/tick")
    job = json.loads(node.kubectl("get", "job", "by-hand", "-o", "json").stdout)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    wait_for(lambda: "Complete" in node.kubectl("get", "job", "by-hand").stdout)


def test_kubectl_create_cronjob_and_pdb_send_protobuf_the_server_reads(
        node: ShoalProcess) -> None:
    node.kubectl("create", "cronjob", "made", "--image=busybox", "--schedule=0 3 * * *",
                 "--", "echo", "hi")
    node.kubectl("create", "pdb", "made", "--selector=app=made", "--max-unavailable=30%")
    cj = json.loads(node.kubectl("get", "cj", "made", "-o", "json").stdout)
    assert cj["spec"]["schedule"] == "0 3 * * *"
    assert cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "command"] == ["echo", "hi"]
    pdb = json.loads(node.kubectl("get", "pdb", "made", "-o", "json").stdout)
    assert pdb["spec"]["maxUnavailable"] == "30%"
    assert pdb["spec"]["selector"] == {"matchLabels": {"app": "made"}}


def test_a_replication_controller_runs_and_scales(node: ShoalProcess) -> None:
    node.kubectl("apply", "-f", "-", input=RC)
    wait_for(lambda: rows(node.kubectl("get", "rc", "old").stdout)[1][1:4] == ["2", "2", "2"])
    node.kubectl("scale", "rc", "old", "--replicas=1")
    wait_for(lambda: rows(node.kubectl("get", "rc", "old").stdout)[1][1:3] == ["1", "1"])
    scale = json.loads(node.kubectl("get", "--raw", "/api/v1/namespaces/default/"
                                    "replicationcontrollers/old/scale").stdout)
    assert scale["status"]["selector"] == "app=old"


def test_the_kubernetes_service_points_at_the_api(node: ShoalProcess) -> None:
    wait_for(lambda: node.kubectl("get", "endpoints", "kubernetes", check=False).returncode == 0)
    svc = rows(node.kubectl("get", "svc", "kubernetes").stdout)[1]
    assert svc[:5] == ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    endpoints = rows(node.kubectl("get", "endpoints", "kubernetes").stdout)[1]
    assert endpoints[1] == f"{node.host}:{node.port}"


def test_kubectl_deletes_a_service_and_applies_the_docs_tls_secret(node: ShoalProcess) -> None:
    node.kubectl("create", "service", "clusterip", "gone", "--tcp=80:80")
    r = node.kubectl("delete", "--raw", "/api/v1/namespaces/default/services/gone")
    assert json.loads(r.stdout)["kind"] == "Service"  # the deleted object, not a Status
    encoded = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n" + b"M" * 200).decode()
    wrapped = "\n    ".join(encoded[i:i + 64] for i in range(0, len(encoded), 64))
    node.kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Secret
metadata: {{name: secret-tls}}
type: kubernetes.io/tls
data:
  tls.crt: |
    {wrapped}
  tls.key: {base64.b64encode(b"key").decode()}
""")
    got = node.kubectl("get", "secret", "secret-tls", "-o", "jsonpath={.data.tls\\.crt}").stdout
    assert got == encoded


def test_exec_stdin_written_as_text_reaches_the_command(node: ShoalProcess) -> None:
    node.kubectl("run", "reader", "--image=busybox", "--command", "--", "sh", "-c",
                 "sleep 3600")
    wait_for(lambda: "Running" in node.kubectl("get", "pod", "reader").stdout)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(node.kubeconfig), client_configuration=cfg)
    api = client.CoreV1Api(client.ApiClient(cfg))
    resp = stream(api.connect_get_namespaced_pod_exec, "reader", "default",
                  command=["head", "-n", "1"], stdin=True, stdout=True, stderr=True, tty=False,
                  _preload_content=False)
    resp.write_stdin("hello as text\n")  # a str: the client sends a text frame
    out = ""
    deadline = time.monotonic() + 10
    while resp.is_open() and time.monotonic() < deadline and "\n" not in out:
        resp.update(timeout=1)
        out += resp.read_stdout() or ""
    resp.close()
    assert out == "hello as text\n"


def pdb_status(node: ShoalProcess) -> dict[str, Any]:
    pdb = json.loads(node.kubectl("get", "pdb", "web", "-o", "json").stdout)
    return pdb.get("status") or {}  # type: ignore[no-any-return]


def test_drain_evicts_what_the_budget_allows_and_stops_at_it(node: ShoalProcess) -> None:
    node.kubectl("delete", "pod", "reader", "--grace-period=0", "--force", check=False)
    node.kubectl("apply", "-f", "-", input=APP)
    wait_for(lambda: pdb_status(node).get("currentHealthy") == 2)
    st = pdb_status(node)
    assert (st["expectedPods"], st["desiredHealthy"], st["disruptionsAllowed"]) == (2, 1, 1)
    table = rows(node.kubectl("get", "pdb", "web").stdout)
    assert table[0] == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED",
                        "DISRUPTIONS", "AGE"]
    assert table[1][:4] == ["web", "1", "N/A", "1"]
    before = {p["metadata"]["name"] for p in json.loads(node.kubectl(
        "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]}

    # One disruption allowed: drain evicts one pod. Its replacement stays pending on the
    # cordoned node, so the other pod's eviction is refused (429) until drain's timeout.
    r = node.kubectl("drain", node.name, "--ignore-daemonsets", "--timeout", "3s",
                     check=False)
    assert r.returncode != 0
    assert "evicted" in r.stdout, r.stdout + r.stderr
    assert "Cannot evict pod as it would violate the pod's disruption budget." in r.stderr
    pods = json.loads(node.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)
    running = {p["metadata"]["name"] for p in pods["items"]
               if not p["metadata"].get("deletionTimestamp") and p["spec"].get("nodeName")}
    assert len(running & before) == 1  # the budget kept one of the two
    assert json.loads(node.kubectl("get", "node", node.name, "-o", "json").stdout)[
        "spec"].get("unschedulable") is True
    wait_for(lambda: pdb_status(node).get("disruptionsAllowed") == 0)
    node.kubectl("uncordon", node.name)
