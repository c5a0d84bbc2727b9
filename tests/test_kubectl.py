"""Real kubectl against a real ``shoal server`` process."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ShoalProcess, kubectl_binary

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "app.yaml"

CRD = textwrap.dedent("""\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.example.com
    spec:
      group: example.com
      scope: Namespaced
      names:
        plural: widgets
        singular: widget
        kind: Widget
        shortNames: [wd]
      versions:
        - name: v1
          served: true
          storage: true
          subresources:
            status: {}
            scale:
              specReplicasPath: .spec.replicas
              statusReplicasPath: .status.replicas
          additionalPrinterColumns:
            - name: Size
              type: string
              jsonPath: .spec.size
            - name: Replicas
              type: integer
              jsonPath: .spec.replicas
            - name: Age
              type: date
              jsonPath: .metadata.creationTimestamp
          schema:
            openAPIV3Schema:
              type: object
              description: A widget for the tests.
              properties:
                spec:
                  type: object
                  description: What the widget should be.
                  properties:
                    size:
                      type: string
                      description: How big the widget is.
                    replicas:
                      type: integer
                status:
                  type: object
                  properties:
                    replicas:
                      type: integer
    """)

WIDGET = textwrap.dedent("""\
    apiVersion: example.com/v1
    kind: Widget
    metadata:
      name: gizmo
    spec:
      size: large
      replicas: 1
    """)


def getj(node: ShoalProcess, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(node.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def create_namespace(node: ShoalProcess, name: str) -> None:
    node.kubectl("apply", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")


def test_kubectl_apply_creates_the_sample_app_and_get_shows_the_usual_columns(
    shoal_module: ShoalProcess,
) -> None:
    node = shoal_module
    out = node.kubectl("apply", "-f", str(APP)).stdout
    assert "deployment.apps/hello created" in out
    assert "service/hello created" in out
    assert "configmap/hello-config created" in out
    table = node.kubectl("get", "deployments").stdout
    assert table.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert "hello" in table
    # Applying again changes nothing.
    again = node.kubectl("apply", "-f", str(APP)).stdout
    assert "deployment.apps/hello unchanged" in again


def test_label_annotate_patch_scale_and_edit_change_the_deployment(
    shoal_module: ShoalProcess,
) -> None:
    node = shoal_module
    node.kubectl("apply", "-f", str(APP))
    node.kubectl("label", "deployment/hello", "tier=edge", "--overwrite")
    node.kubectl("annotate", "deployment/hello", "owner=team-a", "--overwrite")
    node.kubectl("scale", "deployment/hello", "--replicas=4")
    d = getj(node, "deployment", "hello")
    assert d["metadata"]["labels"]["tier"] == "edge"
    assert d["metadata"]["annotations"]["owner"] == "team-a"
    assert d["spec"]["replicas"] == 4
    gen = d["metadata"]["generation"]
    node.kubectl("patch", "deployment/hello", "--type=strategic", "-p",
                 '{"spec":{"template":{"spec":{"containers":[{"name":"hello","image":"busybox:1.37"}]}}}}')
    node.kubectl("patch", "deployment/hello", "--type=merge", "-p",
                 '{"metadata":{"labels":{"patched":"merge"}}}')
    node.kubectl("patch", "deployment/hello", "--type=json", "-p",
                 '[{"op":"add","path":"/metadata/labels/patched-json","value":"yes"}]')
    d = getj(node, "deployment", "hello")
    containers = d["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["busybox:1.37"]
    assert containers[0]["command"][0] == "sh", "the strategic patch kept the other fields"
    assert d["metadata"]["labels"]["patched"] == "merge"
    assert d["metadata"]["labels"]["patched-json"] == "yes"
    assert d["metadata"]["generation"] == gen + 1
    # kubectl edit, non-interactively: the "editor" rewrites the replica count.
    editor = node.data_dir.parent / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 4/replicas: 6/' \"$1\"\n")
    editor.chmod(0o755)
    node.kubectl("edit", "deployment/hello", env={"KUBE_EDITOR": str(editor)})
    assert getj(node, "deployment", "hello")["spec"]["replicas"] == 6


def test_describe_shows_a_deployment_and_a_service(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("apply", "-f", str(APP))
    out = node.kubectl("describe", "deployment", "hello").stdout
    assert "Name:" in out and "hello" in out
    assert "RollingUpdateStrategy" in out
    svc = node.kubectl("describe", "service", "hello").stdout
    assert "Port:" in svc and "80/TCP" in svc


def test_a_crd_serves_its_custom_resources_with_printer_columns_and_subresources(
    shoal_module: ShoalProcess,
) -> None:
    node = shoal_module
    node.kubectl("apply", "-f", "-", input=CRD)
    node.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s")
    node.kubectl("apply", "-f", "-", input=WIDGET)
    table = node.kubectl("get", "widgets").stdout
    header = table.split("\n")[0].split()
    assert header == ["NAME", "SIZE", "REPLICAS", "AGE"]
    assert "gizmo" in table and "large" in table
    assert "gizmo" in node.kubectl("get", "wd").stdout, "short names work"
    node.kubectl("scale", "widget/gizmo", "--replicas=3")
    assert getj(node, "widget", "gizmo")["spec"]["replicas"] == 3
    node.kubectl("label", "widget/gizmo", "color=blue")
    node.kubectl("patch", "widget/gizmo", "--type=merge", "-p", '{"spec":{"size":"small"}}')
    w = getj(node, "widget", "gizmo")
    assert w["spec"]["size"] == "small"
    assert w["metadata"]["labels"]["color"] == "blue"
    explain = node.kubectl("explain", "widgets.spec.size").stdout
    assert "How big the widget is" in explain
    node.kubectl("delete", "widget", "gizmo")
    r = node.kubectl("get", "widget", "gizmo", check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr


def test_explain_and_api_resources_describe_the_built_in_kinds(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    res = node.kubectl("api-resources").stdout
    assert any(line.split()[:2] == ["pods", "po"] for line in res.splitlines())
    assert "deployments" in res and "customresourcedefinitions" in res
    explain = node.kubectl("explain", "pods.spec.containers.image").stdout
    assert "image" in explain.lower() and "FIELD:" in explain


def test_get_watch_sees_a_change(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    create_namespace(node, "watched")
    node.kubectl("apply", "-n", "watched", "-f", "-",
                 input="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\ndata:\n  a: '1'\n")
    proc = subprocess.Popen(
        [kubectl_binary(), "--kubeconfig", str(node.kubeconfig), "get", "configmaps", "-n",
         "watched", "-w", "--output-watch-events"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.5)
        node.kubectl("label", "-n", "watched", "configmap/w", "seen=yes")
        node.kubectl("delete", "-n", "watched", "configmap/w")
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    lines = [line.split() for line in out.splitlines() if line.strip()]
    events = [line[0] for line in lines]
    assert "ADDED" in events and "MODIFIED" in events and "DELETED" in events, (out, err)


def test_deleting_a_namespace_deletes_its_contents(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    create_namespace(node, "doomed")
    node.kubectl("apply", "-n", "doomed", "-f", str(APP))
    node.kubectl("delete", "namespace", "doomed", "--timeout=30s")
    r = node.kubectl("get", "namespace", "doomed", check=False)
    assert "NotFound" in r.stderr
    assert getj(node, "deployments", "-n", "doomed")["items"] == []


def test_delete_removes_the_sample_app(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    create_namespace(node, "gone")
    node.kubectl("apply", "-n", "gone", "-f", str(APP))
    out = node.kubectl("delete", "-n", "gone", "-f", str(APP)).stdout
    assert 'deployment.apps "hello" deleted' in out
    # The garbage collector removes the ReplicaSet and its pods in the background.
    deadline = time.monotonic() + 20
    while getj(node, "all", "-n", "gone")["items"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert getj(node, "all", "-n", "gone")["items"] == []


def test_bad_input_gets_a_clear_error_and_the_node_keeps_serving(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    bad_yaml = node.kubectl("apply", "-f", "-", input="kind: [unclosed\n", check=False)
    assert bad_yaml.returncode != 0
    unknown = node.kubectl("apply", "-f", "-", check=False,
                           input="apiVersion: nope.example.com/v1\nkind: Gadget\nmetadata:\n  name: x\n")
    assert unknown.returncode != 0 and "Gadget" in unknown.stderr
    invalid = node.kubectl("apply", "-f", "-", check=False, input=textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata:
          name: Not_A_Valid_Name
        spec:
          containers:
            - name: c
        """))
    assert invalid.returncode != 0
    assert "is invalid" in invalid.stderr
    assert node.kubectl("get", "namespaces").returncode == 0


def _older_kubectls() -> list[str]:
    """kubectl 1.36 from the bootstrap, and any other release the machine carries."""
    pinned = ROOT / ".venv" / "kubectl-1.36" / "bin" / "kubectl"
    if not pinned.exists() and IN_CI:
        pytest.fail("the bootstrap did not install kubectl 1.36 (`make venv`)")
    found = [str(pinned)] if pinned.exists() else []
    if os.path.exists("/usr/bin/kubectl"):
        found.append("/usr/bin/kubectl")
    return found


@pytest.mark.parametrize("which", [0, 1], ids=["kubectl-1.36", "system-kubectl"])
def test_an_older_kubectl_release_works_too(shoal_module: ShoalProcess, which: int) -> None:
    olds = _older_kubectls()
    if which >= len(olds):
        pytest.skip("no such kubectl on this machine")
    old = olds[which]
    node = shoal_module
    ver = subprocess.run([old, "version", "--client", "-o", "json"], capture_output=True, text=True)
    assert ver.returncode == 0
    node.kubectl("apply", "-f", str(APP), binary=old)
    out = node.kubectl("get", "deployments", binary=old).stdout
    assert "hello" in out
    node.kubectl("scale", "deployment/hello", "--replicas=2", binary=old)
    node.kubectl("label", "deployment/hello", "older=yes", "--overwrite", binary=old)
    assert getj(node, "deployment", "hello")["metadata"]["labels"]["older"] == "yes"
    assert "image" in node.kubectl("explain", "pods.spec.containers.image", binary=old).stdout
