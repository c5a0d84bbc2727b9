"""A local-path claim bind-mounted into a runc container (the other runtime)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ShoalProcess
from tests.test_images import busybox_layer, write_docker_save
from tests.test_runc_e2e import IMAGE, runc_node, shoal_cli, wait_pod
from tests.test_runc_e2e import running as pod_running
from tests.test_runtime_runc import runc_works

pytestmark = pytest.mark.slow

__all__ = ["runc_node", "runc_works"]  # fixtures, used by name

STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kv}
spec:
  replicas: 1
  serviceName: kv
  selector: {matchLabels: {app: kv}}
  template:
    metadata: {labels: {app: kv}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: %s
        imagePullPolicy: Never
        command: ["sh", "-c", "hostname >> /data/boots; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"""


def test_a_claim_is_bind_mounted_into_a_runc_container(
        tmp_path: Path, runc_node: ShoalProcess) -> None:
    node = runc_node
    archive = tmp_path / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], IMAGE)
    shoal_cli("image", "import", "--data-dir", str(node.data_dir), str(archive))
    node.kubectl("apply", "-f", "-", input=STS % IMAGE)
    wait_pod(node, pod_running, 30, selector="app=kv")
    claim = json.loads(node.kubectl("get", "pvc", "data-kv-0", "-o", "json").stdout)
    pv = json.loads(node.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
    host = Path(pv["spec"]["local"]["path"])
    assert host.is_relative_to(node.data_dir / "local-path")
    r = node.kubectl("exec", "kv-0", "--", "sh", "-c", "echo from-inside > /data/f; cat /data/boots")
    assert r.stdout == "kv-0\n"
    assert (host / "f").read_text() == "from-inside\n"
