"""What every pod gets: the kube-api-access volume (token, ca.crt, namespace), written
atomically and renewed, and KUBERNETES_SERVICE_HOST/PORT naming its node's API."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.control.service_accounts import projected_volume
from shoal.node import volumes
from tests.test_runtime_runc import runc_works

__all__ = ["runc_works"]  # a fixture, used by name

POD: dict[str, Any] = {"metadata": {"name": "web", "namespace": "team", "uid": "u1"},
                       "spec": {"nodeName": "pi-1", "volumes": [projected_volume("kube-api-access-x")]}}
CA_MAP = {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "CA PEM"}}


def _lookup(resource: str, ns: str, name: str) -> dict[str, Any] | None:
    return CA_MAP if (resource, ns, name) == ("configmaps", "team", "kube-root-ca.crt") else None


class FakeTokens:
    """Unsigned tokens with the claims the renewal reads."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.issued = 0

    def __call__(self, pod: dict[str, Any], audience: str, expiration: int) -> str:
        self.issued += 1
        body = base64.urlsafe_b64encode(json.dumps(
            {"iat": self.now, "exp": self.now + expiration, "n": self.issued}).encode()).decode()
        return f"h.{body}.s"


def test_the_volume_holds_token_ca_and_namespace_behind_a_data_symlink(tmp_path: Path) -> None:
    tokens = FakeTokens()
    vols = volumes.prepare(POD, tmp_path, _lookup, tokens)
    d = vols["kube-api-access-x"]
    assert (d / "ca.crt").read_text() == "CA PEM"
    assert (d / "namespace").read_text() == "team"
    assert (d / "token").read_text().startswith("h.")
    assert os.readlink(d / "token") == "..data/token"
    assert (d / "..data").is_symlink()


def test_a_token_is_renewed_at_80_percent_of_its_lifetime_by_swapping_data(tmp_path: Path
                                                                           ) -> None:
    tokens = FakeTokens()
    d = volumes.prepare(POD, tmp_path, _lookup, tokens)["kube-api-access-x"]
    first_data = os.readlink(d / "..data")
    due = volumes.refresh_projected(POD, tmp_path, _lookup, tokens, now=1000.0 + 100)
    assert due == pytest.approx(1000.0 + 0.8 * 3607)
    assert tokens.issued == 1  # not due yet: nothing rewritten
    tokens.now = 1000.0 + 2900
    due = volumes.refresh_projected(POD, tmp_path, _lookup, tokens, now=tokens.now)
    assert tokens.issued == 2
    assert due == pytest.approx(tokens.now + 0.8 * 3607)
    assert os.readlink(d / "..data") != first_data
    assert not (d / first_data).exists()  # the old generation is gone
    assert '"n": 2' in base64.urlsafe_b64decode((d / "token").read_text().split(".")[1] + "==") \
        .decode()


def test_a_long_lived_token_is_renewed_after_24_hours(tmp_path: Path) -> None:
    pod = json.loads(json.dumps(POD))
    pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"][
        "expirationSeconds"] = 7 * 86400
    tokens = FakeTokens()
    volumes.prepare(pod, tmp_path, _lookup, tokens)
    assert volumes.refresh_projected(pod, tmp_path, _lookup, tokens, now=1001.0) == \
        pytest.approx(1000.0 + 86400)


def test_a_pod_without_a_token_issuer_waits_for_one(tmp_path: Path) -> None:
    with pytest.raises(volumes.VolumeError):
        volumes.prepare(POD, tmp_path, _lookup, None)


# -- a real node ---------------------------------------------------------------------------

POD_SCRIPT = r"""
import glob, os, ssl, sys, time, urllib.request, urllib.error
d = "/var/run/secrets/kubernetes.io/serviceaccount"
if not os.path.isdir(d):
    d = [v for k, v in os.environ.items() if k.startswith("SHOAL_VOLUME_KUBE_API_ACCESS_")][0]
token = open(d + "/token").read()
ns = open(d + "/namespace").read()
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
ctx.check_hostname = False
url = "https://%s:%s/api" % (os.environ["KUBERNETES_SERVICE_HOST"],
                             os.environ["KUBERNETES_SERVICE_PORT"])
print("namespace=" + ns, flush=True)
while True:
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    try:
        code = urllib.request.urlopen(req, context=ctx, timeout=5).status
    except urllib.error.HTTPError as e:
        code = e.code
    except OSError as e:
        code = repr(e)
    print("code=%s" % code, flush=True)
    time.sleep(0.5)
"""


def _wait_log(shoal: Any, pod: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = shoal.kubectl("logs", pod, check=False).stdout
        if text in out:
            return out
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in the logs of {pod}:\n{out}")


@pytest.mark.slow
def test_a_pod_calls_its_node_api_with_its_token_until_its_service_account_goes(
        shoal: Any) -> None:
    deadline = time.monotonic() + 20
    while shoal.kubectl("get", "sa", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.3)
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "caller"},
                "spec": {"containers": [{"name": "c", "image": "python",
                                         "command": ["python3", "-c", POD_SCRIPT]}]}}
    shoal.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    pod = json.loads(shoal.kubectl("get", "pod", "caller", "-o", "json").stdout)
    assert pod["spec"]["serviceAccountName"] == "default"
    mount = pod["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert mount["readOnly"] is True and mount["name"].startswith("kube-api-access-")
    out = _wait_log(shoal, "caller", "code=200")
    assert "namespace=default" in out
    cm = json.loads(shoal.kubectl("get", "cm", "kube-root-ca.crt", "-o", "json").stdout)
    assert cm["data"]["ca.crt"] == (shoal.data_dir / "pki" / "ca.crt").read_text()
    shoal.kubectl("delete", "sa", "default")
    _wait_log(shoal, "caller", "code=401")


@pytest.mark.slow
def test_kubectl_create_token_on_the_signer_gives_a_token_the_api_accepts(shoal: Any) -> None:
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(shoal.data_dir / "pki" / "ca.crt"))
    ctx.check_hostname = False
    # Ready (the fixture waited for /readyz) only with the default RBAC policy in place: a
    # token made before it was refused /api, which system:discovery grants everyone.
    with urllib.request.urlopen(f"{shoal.url}/readyz?verbose", context=ctx, timeout=5) as ready:
        assert "[+]rbac-bootstrap ok" in ready.read().decode()
    deadline = time.monotonic() + 20
    while True:
        r = shoal.kubectl("create", "token", "default", "--duration", "20m", check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()

    def code(tok: str) -> int:
        req = urllib.request.Request(f"{shoal.url}/api", headers={"Authorization": f"Bearer {tok}"})
        try:
            return int(urllib.request.urlopen(req, context=ctx, timeout=5).status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert code(token) == 200
    review = urllib.request.Request(
        f"{shoal.url}/apis/authentication.k8s.io/v1/selfsubjectreviews", method="POST",
        data=b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(review, context=ctx, timeout=5) as r:
        user = json.loads(r.read())["status"]["userInfo"]
    assert user["username"] == "system:serviceaccount:default:default"
    assert "system:serviceaccounts:default" in user["groups"]
    assert code(token[:-4] + "AAAA") == 401
    too_short = shoal.kubectl("create", "token", "default", "--duration", "5m", check=False)
    assert too_short.returncode != 0 and "less than 10 minutes" in too_short.stderr


@pytest.mark.slow
def test_a_runc_container_finds_its_token_ca_and_namespace_mounted_read_only(
        tmp_path: Path, runc_works: str) -> None:
    from tests.conftest import ShoalProcess, free_port
    from tests.test_images import busybox_layer, write_docker_save
    from tests.test_runc_e2e import IMAGE, shoal_cli

    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start(["--runtime", "runc"])
    try:
        archive = tmp_path / "busybox.tar"
        write_docker_save(archive, [busybox_layer()], IMAGE)
        shoal_cli("image", "import", "--data-dir", str(node.data_dir), str(archive))
        sa = "/var/run/secrets/kubernetes.io/serviceaccount"
        script = (f"cat {sa}/namespace; echo; head -c 3 {sa}/token; echo; "
                  f"grep -c BEGIN {sa}/ca.crt; echo $KUBERNETES_SERVICE_HOST:"
                  f"$KUBERNETES_SERVICE_PORT; touch {sa}/x || echo read-only; sleep 60")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
               "spec": {"containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                                        "command": ["sh", "-c", script]}]}}
        node.kubectl("apply", "-f", "-", input=json.dumps(pod))
        out = _wait_log(node, "reader", "read-only")
        # touch's complaint goes to stderr, whose lines may land anywhere among stdout's.
        lines = [line for line in out.split("\n") if not line.startswith("touch:")]
        assert lines[:4] == ["default", "eyJ", "1", f"127.0.0.1:{node.port}"]
    finally:
        node.stop()
