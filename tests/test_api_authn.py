"""Who is calling, per credential, against a real node: the admin's certificate and token, a
person's certificate from ``shoal kubeconfig --user``, a node's own peer certificate
(``pki/node.crt``), no credential and a bad token; with real kubectl (``auth whoami``) and the
``kubernetes`` Python client."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import VENV_BIN, ShoalProcess, kubectl_binary

pytestmark = pytest.mark.slow


def user_kubeconfig(node: ShoalProcess, user: str, *groups: str) -> Path:
    """A kubeconfig with a client certificate for ``user`` (not an administrator)."""
    path = node.data_dir.parent / f"{user}.kubeconfig"
    subprocess.run([str(VENV_BIN / "shoal"), "kubeconfig", "--data-dir", str(node.data_dir),
                    "--server", node.url, "--user", user,
                    *(x for g in groups for x in ("--group", g)), "--output", str(path)],
                   check=True, capture_output=True)
    return path


def kubectl(kubeconfig: Path | None, *args: str, node: ShoalProcess | None = None,
            ) -> subprocess.CompletedProcess[str]:
    cmd = [kubectl_binary()]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    if node is not None:
        pki = node.data_dir / "pki"
        cmd += ["--server", node.url, "--certificate-authority", str(pki / "ca.crt")]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def node_cert_args(node: ShoalProcess) -> list[str]:
    pki = node.data_dir / "pki"
    return ["--client-certificate", str(pki / "node.crt"), "--client-key", str(pki / "node.key")]


def raw(node: ShoalProcess, path: str, token: str | None = None) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(node.data_dir / "pki" / "ca.crt"))
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(node.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def whoami(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)["status"]["userInfo"]
    return body


def test_the_admin_certificate_is_shoal_admin_in_system_masters(
        shoal_module: ShoalProcess) -> None:
    me = whoami(kubectl(shoal_module.kubeconfig, "auth", "whoami", "-o", "json"))
    assert me == {"username": "shoal-admin",
                  "groups": ["system:masters", "system:authenticated"]}


def test_the_admin_token_is_an_administrator_too(shoal_module: ShoalProcess) -> None:
    token = (shoal_module.data_dir / "pki" / "admin.token").read_text().strip()
    code, body = raw(shoal_module, "/api/v1/namespaces/kube-system/secrets", token)
    assert code == 200 and body["kind"] == "SecretList"


def test_a_person_is_the_certificates_cn_in_its_o_groups(shoal_module: ShoalProcess) -> None:
    kc = user_kubeconfig(shoal_module, "alice", "team", "qa")
    me = whoami(kubectl(kc, "auth", "whoami", "-o", "json"))
    assert me == {"username": "alice", "groups": ["team", "qa", "system:authenticated"]}
    table = kubectl(kc, "auth", "whoami")
    assert "alice" in table.stdout and "[team qa system:authenticated]" in table.stdout


def test_a_nodes_peer_certificate_is_that_nodes_user_and_nothing_more(
        shoal_module: ShoalProcess) -> None:
    args = node_cert_args(shoal_module)
    me = whoami(kubectl(None, *args, "auth", "whoami", "-o", "json", node=shoal_module))
    assert me == {"username": "system:node:node-1",
                  "groups": ["system:nodes", "system:authenticated"]}
    r = kubectl(None, *args, "get", "secrets", "-A", node=shoal_module)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        'Error from server (Forbidden): secrets is forbidden: User "system:node:node-1" cannot '
        'list resource "secrets" in API group "" at the cluster scope: can only get individual '
        "resources of this type (secrets)")


def test_no_credential_is_401_with_kubernetes_status(shoal_module: ShoalProcess) -> None:
    code, body = raw(shoal_module, "/api/v1/namespaces")
    assert code == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert raw(shoal_module, "/version")[0] == 200  # public, as system:public-info-viewer


@pytest.mark.parametrize("token", ["not-a-token", "a.b.c"])
def test_a_bad_token_is_401_to_kubectl(shoal_module: ShoalProcess, token: str) -> None:
    r = kubectl(None, "--token", token, "get", "namespaces", node=shoal_module)
    assert r.returncode == 1
    assert "error: You must be logged in to the server (Unauthorized)" in r.stderr


def test_the_python_client_gets_a_403_status_for_a_person_without_bindings(
        shoal_module: ShoalProcess) -> None:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(user_kubeconfig(shoal_module, "dave")),
                            client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        with pytest.raises(ApiException) as e:
            client.CoreV1Api(api).list_namespaced_config_map("default")
        assert e.value.status == 403
        status = json.loads(e.value.body)
        assert status["reason"] == "Forbidden"
        assert status["message"] == ('configmaps is forbidden: User "dave" cannot list resource '
                                     '"configmaps" in API group "" in the namespace "default"')
        assert status["details"] == {"kind": "configmaps"}
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview())
        assert review.status.user_info.username == "dave"


def test_kubectl_as_impersonates_only_for_those_allowed_to(shoal_module: ShoalProcess) -> None:
    me = whoami(kubectl(shoal_module.kubeconfig, "--as=erin", "--as-group=ops", "auth",
                        "whoami", "-o", "json"))
    assert me == {"username": "erin", "groups": ["ops", "system:authenticated"]}
    r = kubectl(user_kubeconfig(shoal_module, "frank"), "--as=erin", "get", "pods")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        'Error from server (Forbidden): users "erin" is forbidden: User "frank" cannot '
        'impersonate resource "users" in API group "" at the cluster scope')
