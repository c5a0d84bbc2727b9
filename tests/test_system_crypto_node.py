"""A running node never loads ``cryptography``: its Secrets, tokens and peer certificates go
through the system's libcrypto, and issuing runs in a child process (issue 11)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, ShoalProcess
from tests.test_join import peer_address, shoal_cli, start_node

pytestmark = pytest.mark.slow


def _mapped_files(proc: subprocess.Popen[bytes] | None) -> set[str]:
    assert proc is not None and proc.poll() is None
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    return {line.split(maxsplit=5)[5] for line in maps.splitlines()
            if len(line.split(maxsplit=5)) == 6}


def test_a_signer_and_a_node_that_joined_it_never_load_cryptography(tmp_path: Path) -> None:
    a = start_node(tmp_path, "node-a")  # first start: the CA and its certificates are made
    b: ShoalProcess | None = None
    try:
        token = shoal_cli("token", "create", "--data-dir", str(a.data_dir), "--ttl", "10m")
        b = start_node(tmp_path, "node-b",
                       ["--join", peer_address(a), "--token", token.stdout.strip()])
        # A Secret sealed on write and opened on read, on both nodes.
        a.kubectl("create", "secret", "generic", "s1", "--from-literal=k=sealed")
        assert a.kubectl("get", "secret", "s1", "-o", "jsonpath={.data.k}").stdout == "c2VhbGVk"
        # A token the signer made with its CA key, verified by the node that joined.
        sa_token = a.kubectl("create", "token", "default").stdout.strip()
        who = subprocess.run([str(VENV_BIN / "kubectl"), "--kubeconfig", "/dev/null",
                              "--server", b.url, "--insecure-skip-tls-verify", "--token",
                              sa_token, "auth", "whoami", "-o",
                              "jsonpath={.status.userInfo.username}"],
                             capture_output=True, text=True, timeout=60, check=True)
        assert who.stdout == "system:serviceaccount:default:default"
        for node in (a, b):
            files = _mapped_files(node.proc)
            assert any("libcrypto" in f for f in files), "the system libcrypto is in use"
            assert not [f for f in files if "cryptography" in f], node.name
    finally:
        if b is not None:
            b.stop()
        a.stop()
