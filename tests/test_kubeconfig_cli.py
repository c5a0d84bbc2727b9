"""`shoal kubeconfig`: 0600 output, credentials for people, and where it must run."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from shoal.mesh import join
from shoal.mesh.pki import NodePKI
from tests.conftest import VENV_BIN


def signer_dir(tmp_path: Path) -> Path:
    join.prepare_pki(NodePKI(tmp_path / "d" / "pki"), "a", ["127.0.0.1"])
    return tmp_path / "d"


def shoal(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "shoal"), *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_kubeconfig_output_and_a_redirected_stdout_are_0600(tmp_path: Path) -> None:
    data = signer_dir(tmp_path)
    out = tmp_path / "admin.kubeconfig"
    out.write_text("old")
    out.chmod(0o644)
    assert shoal("kubeconfig", "--data-dir", str(data), "--output", str(out)).returncode == 0
    assert mode(out) == "0o600" and "client-key-data" in out.read_text()
    redirected = tmp_path / "redirected.kubeconfig"
    with open(redirected, "w") as f:  # the shell's `> file`: created 0644 under umask 022
        os.fchmod(f.fileno(), 0o644)
        assert shoal("kubeconfig", "--data-dir", str(data), stdout=f.fileno()).returncode == 0
    assert mode(redirected) == "0o600" and "client-key-data" in redirected.read_text()
    # To a pipe it is printed as before.
    assert "client-key-data" in shoal("kubeconfig", "--data-dir", str(data)).stdout


def test_kubeconfig_for_a_user_carries_a_new_certificate_with_its_name_and_groups(
        tmp_path: Path) -> None:
    data = signer_dir(tmp_path)
    r = shoal("kubeconfig", "--data-dir", str(data), "--server", "https://10.0.0.1:6443",
              "--user", "alice", "--group", "team-a", "--group", "qa", "--ttl", "2h")
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    assert config["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"
    user = config["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)] == ["team-a", "qa"]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 7200 <= life.total_seconds() <= 7200 * 1.1
    admin = (data / "pki" / "admin.crt").read_bytes()
    assert base64.b64decode(user["client-certificate-data"]) != admin


def test_kubeconfig_on_a_data_dir_without_the_ca_key_says_to_run_it_on_a_signer(
        tmp_path: Path) -> None:
    data = signer_dir(tmp_path)
    (data / "pki" / "ca.key").unlink()
    for extra in ([], ["--user", "bob"]):
        r = shoal("kubeconfig", "--data-dir", str(data), *extra)
        assert r.returncode == 1 and r.stdout == ""
        assert "signer's data dir" in r.stderr and "--server" in r.stderr
