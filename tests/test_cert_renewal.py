"""Node certificates are renewed before they expire, and the node keeps serving on them."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shoal.mesh import cert_renewal, join
from shoal.mesh.join_tokens import create_token
from shoal.mesh.pki import LIFETIME_ENV, NodePKI
from shoal.mesh.tls_transport import TlsTransport
from shoal.store.system_crypto import load_der_certificate, load_pem_certificate
from tests.conftest import ShoalProcess, free_port

LIFETIME = 24.0
"""Seconds: the leaves a test signer issues (renewed about 16 s after issue)."""


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_certificate_is_due_once_less_than_a_third_of_its_lifetime_is_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIFETIME_ENV, "300")
    pki = NodePKI(tmp_path / "pki")
    join.prepare_pki(pki, "a", ["127.0.0.1"])
    cert = _cert(join.node_cert_path(pki))
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(seconds=300) < life <= datetime.timedelta(seconds=330)
    point = cert_renewal.renewal_point(load_pem_certificate(join.node_cert_path(pki).read_bytes()))
    assert point == cert.not_valid_after_utc - life / 3
    assert cert_renewal.due(pki, point - datetime.timedelta(seconds=1))[:2] == (False, False)
    assert cert_renewal.due(pki, point + datetime.timedelta(seconds=1))[:2] == (True, True)


async def test_a_signer_renews_its_own_certificates_keeps_its_keys_and_reloads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIFETIME_ENV, "300")
    pki = NodePKI(tmp_path / "pki")
    join.prepare_pki(pki, "a", ["127.0.0.1"])
    old = {p: _cert(p) for p in (join.node_cert_path(pki), pki.server_cert)}
    keys = {p: p.read_bytes() for p in (join.node_key_path(pki), pki.server_key)}
    reloads: list[int] = []
    t = TlsTransport(join.node_identity(pki))
    try:
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=250)
        assert await cert_renewal.renew_due(pki, t, "a", ["127.0.0.1"],
                                            lambda: reloads.append(1), now=later)
    finally:
        await t.close()
    assert reloads == [1]
    for path, cert in old.items():
        new = _cert(path)
        assert new.serial_number != cert.serial_number
        assert new.subject == cert.subject and new.not_valid_after_utc >= cert.not_valid_after_utc
    assert {p: p.read_bytes() for p in keys} == keys


async def test_a_transport_presents_the_renewed_certificate_on_new_connections(
        tmp_path: Path) -> None:
    a_pki = NodePKI(tmp_path / "a" / "pki")
    join.prepare_pki(a_pki, "a", ["127.0.0.1"])
    a = TlsTransport(join.node_identity(a_pki))
    await a.start()
    a.set_control_handler(join.JoinService(a_pki, a).handle)
    b_pki = NodePKI(tmp_path / "b" / "pki")
    await join.join_cluster(b_pki, "b", ["127.0.0.1"], a.address, str(create_token(a_pki)))
    b = TlsTransport(join.node_identity(b_pki))
    await b.start()
    try:
        before = _cert(join.node_cert_path(b_pki))
        await join.renew_certificates(b_pki, b, "b", ["127.0.0.1"])
        b.reload_identity()
        after = _cert(join.node_cert_path(b_pki))
        assert after.serial_number != before.serial_number
        key = await a.peer_public_key("b", b.address, 5)  # a dials b: b's server side
        assert key == load_der_certificate(after.public_bytes(serialization.Encoding.DER)).spki_der
        host, port = b.address.rsplit(":", 1)
        assert await asyncio.to_thread(_served_serial, host, int(port)) == after.serial_number
    finally:
        await b.close()
        await a.close()


async def test_a_node_whose_certificate_expired_must_rejoin_and_keeps_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_pki = NodePKI(tmp_path / "a" / "pki")
    join.prepare_pki(a_pki, "a", ["127.0.0.1"])
    a = TlsTransport(join.node_identity(a_pki))
    await a.start()
    a.set_control_handler(join.JoinService(a_pki, a).handle)
    try:
        b_pki = NodePKI(tmp_path / "b" / "pki")
        monkeypatch.setenv(LIFETIME_ENV, "0.001")  # expired as soon as issued
        await join.join_cluster(b_pki, "b", ["127.0.0.1"], a.address, str(create_token(a_pki)))
        monkeypatch.delenv(LIFETIME_ENV)
        key = join.node_key_path(b_pki).read_bytes()
        assert join.node_cert_expired(b_pki) is not None
        with pytest.raises(join.JoinError, match=r"expired at .*rejoin with --join"):
            join.prepare_pki(b_pki, "b", ["127.0.0.1"])
        await join.join_cluster(b_pki, "b", ["127.0.0.1"], a.address, str(create_token(a_pki)))
        assert join.node_cert_expired(b_pki) is None
        assert join.node_key_path(b_pki).read_bytes() == key
        assert join.prepare_pki(b_pki, "b", ["127.0.0.1"]) is False
    finally:
        await a.close()


def _served_serial(host: str, port: int) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


# -- real processes ------------------------------------------------------------------------


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
       "spec": {"nodeName": "node-b",
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}


@pytest.mark.slow
def test_a_node_with_short_lived_certificates_renews_them_and_keeps_serving_and_its_pods(
        tmp_path: Path) -> None:
    env = {LIFETIME_ENV: str(LIFETIME)}
    a = ShoalProcess("node-a", tmp_path / "a", free_port(), tmp_path / "a.log", env=env)
    a.start()
    token = str(create_token(NodePKI(a.data_dir / "pki")))
    b = ShoalProcess("node-b", tmp_path / "b", free_port(), tmp_path / "b.log",
                     env={**env, "SHOAL_TOKEN": token})
    try:
        b.start(["--join", (a.data_dir / "peer-address").read_text().strip()])
        b.kubectl("apply", "-f", "-", input=json.dumps(POD))
        b.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
        pod = json.loads(b.kubectl("get", "pod", "sleeper", "-o", "json").stdout)
        started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        b_pki = NodePKI(b.data_dir / "pki")
        first = {p: _cert(p).serial_number for p in (join.node_cert_path(b_pki),
                                                     b_pki.server_cert)}
        first_expiry = _cert(b_pki.server_cert).not_valid_after_utc
        deadline = time.monotonic() + 3 * LIFETIME
        while time.monotonic() < deadline and any(
                _cert(p).serial_number == s for p, s in first.items()):
            time.sleep(0.5)
        assert all(_cert(p).serial_number != s for p, s in first.items()), b.log_path.read_text()
        # Wait past the first certificates' expiry: only renewed ones can still work.
        while datetime.datetime.now(datetime.UTC) < first_expiry + datetime.timedelta(seconds=1):
            time.sleep(0.5)
        assert "renewed node.crt and server.crt" in b.log_path.read_text()
        assert "renewed node.crt and server.crt" in a.log_path.read_text()  # locally, a signer
        # New API connections get a certificate that is valid now.
        served = _served_serial("127.0.0.1", b.port)
        assert served == _cert(b_pki.server_cert).serial_number
        assert served not in first.values()
        nodes = b.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert nodes == ["node/node-a", "node/node-b"]
        # The peers still replicate to each other.
        a.kubectl("create", "configmap", "after-renewal", "--from-literal=k=v")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and b.kubectl(
                "get", "configmap", "after-renewal", check=False).returncode != 0:
            time.sleep(0.5)
        b.kubectl("get", "configmap", "after-renewal")
        pod = json.loads(b.kubectl("get", "pod", "sleeper", "-o", "json").stdout)
        status = pod["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0 and status["state"]["running"]["startedAt"] == started
    finally:
        b.stop()
        a.stop()

