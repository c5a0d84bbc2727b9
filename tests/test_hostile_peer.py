"""A hostile peer: a stolen node's files (a valid node certificate and key) used against the
rest of the cluster. Every attempt is refused and logged, and the cluster is unchanged."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from shoal.mesh import join
from shoal.mesh.issuance import make_csr, new_key
from shoal.mesh.join import JoinService
from shoal.mesh.join_tokens import check_token, create_token
from shoal.mesh.pki import NodePKI
from shoal.mesh.tls_transport import TlsTransport
from tests.conftest import ShoalProcess, free_port


@dataclass
class Cluster:
    a_pki: NodePKI
    a: TlsTransport
    b_pki: NodePKI
    b: TlsTransport
    """The hostile peer: node b, whose files were stolen."""
    c_pki: NodePKI
    c: TlsTransport
    """The victim: a live member."""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    a_pki = NodePKI(tmp_path / "a" / "pki")
    join.prepare_pki(a_pki, "a", ["127.0.0.1"])
    a = TlsTransport(join.node_identity(a_pki))
    await a.start()
    live: dict[str, str] = {}
    a.set_control_handler(JoinService(a_pki, a, live_member=live.get).handle)
    transports = [a]
    try:
        peers: dict[str, tuple[NodePKI, TlsTransport]] = {}
        for name in ("b", "c"):
            pki = NodePKI(tmp_path / name / "pki")
            await join.join_cluster(pki, name, ["127.0.0.1"], a.address,
                                    str(create_token(a_pki)))
            t = TlsTransport(join.node_identity(pki))
            await t.start()
            transports.append(t)
            live[name] = t.address
            peers[name] = (pki, t)
        yield Cluster(a_pki, a, *peers["b"], *peers["c"])
    finally:
        for t in transports:
            await t.close()


async def ask(cluster: Cluster, request: dict[str, Any]) -> dict[str, Any]:
    """Send a control request to the signer over the hostile peer's authenticated link."""
    raw = await cluster.b.request_control(cluster.a.address, json.dumps(request).encode(), 5)
    answer = json.loads(raw)
    assert isinstance(answer, dict)
    return answer


def csrs_for(name: str) -> dict[str, str]:
    key = new_key()
    return {"node_csr": make_csr(key, name, node=True, hosts=["127.0.0.1"]).decode(),
            "serving_csr": make_csr(new_key(), name, node=False,
                                    hosts=["127.0.0.1"]).decode()}


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "shoal.mesh.join" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("extra, reason", [
    ({}, "malformed join token"),
    ({"vouched": True}, "malformed join token"),
    ({"token": "SHOAL1::sha256:00::abc.def"}, "another cluster"),
], ids=["no-token", "vouched", "forged-token"])
async def test_a_node_certificate_without_a_valid_token_gets_no_certificate_for_another_name(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, extra: dict[str, Any],
        reason: str) -> None:
    caplog.set_level(logging.INFO, "shoal.mesh.join")
    answer = await ask(cluster, {"op": "join", "name": "c", **csrs_for("c"), **extra})
    assert reason in answer["error"] and "node_cert" not in answer
    assert any("(node b) refused: " in m and reason in m for m in refusals(caplog))


async def test_a_valid_token_does_not_buy_a_live_members_name_nor_the_signers(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "shoal.mesh.join")
    token = str(create_token(cluster.a_pki))
    for victim in ("c", "a"):
        answer = await ask(cluster, {"op": "join", "name": victim, "token": token,
                                     **csrs_for(victim)})
        assert f"node {victim} is a live member" in answer["error"]
        assert "node_cert" not in answer
    assert sum("must prove possession of its key" in m for m in refusals(caplog)) == 2
    check_token(cluster.a_pki, token)  # a refused join does not spend the token


async def test_a_live_member_rejoins_under_its_name_by_proving_it_holds_its_key(
        cluster: Cluster) -> None:
    # Node c's data dir keeps node.key; the join reuses it, and the signer sees c's own key.
    join.node_cert_path(cluster.c_pki).unlink()
    cluster.c_pki.ca_cert.unlink()
    await join.join_cluster(cluster.c_pki, "c", ["127.0.0.1"], cluster.a.address,
                            str(create_token(cluster.a_pki)))
    assert join.is_joined(cluster.c_pki)


async def test_renew_signs_only_the_callers_own_name(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "shoal.mesh.join")
    answer = await ask(cluster, {"op": "renew", "name": "c", **csrs_for("c")})
    assert "node b may renew only its own certificates" in answer["error"]
    assert any("(node b) refused: node b may renew only" in m for m in refusals(caplog))
    # A CSR that names c, without saying so in the request: the certificate says b.
    answer = await ask(cluster, {"op": "renew", **csrs_for("c")})
    for kind in ("node_cert", "serving_cert"):
        cert = x509.load_pem_x509_certificate(answer[kind].encode())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "b"


# -- real processes: the same refusals, and the API's, with the stolen files --------------


def _request(node: ShoalProcess, pki: NodePKI, method: str, path: str,
             body: dict[str, Any] | None = None, content_type: str = "application/json"
             ) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(join.node_cert_path(pki), join.node_key_path(pki))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", node.port, context=ctx, timeout=15)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": content_type, "Accept": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.slow
def test_a_stolen_node_certificate_reads_no_secret_writes_no_status_takes_no_name(
        tmp_path: Path) -> None:
    a = ShoalProcess("node-a", tmp_path / "a", free_port(), tmp_path / "a.log")
    a.start()
    b: ShoalProcess | None = None
    try:
        token = str(create_token(NodePKI(a.data_dir / "pki")))
        b = ShoalProcess("node-b", tmp_path / "b", free_port(), tmp_path / "b.log",
                         env={"SHOAL_TOKEN": token})
        b.start(["--join", (a.data_dir / "peer-address").read_text().strip()])
        # A Secret used by a pod bound to node-a.
        a.kubectl("create", "secret", "generic", "a-only", "--from-literal=password=hunter2")
        a.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-a"},
            "spec": {"nodeName": "node-a", "containers": [{
                "name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {
                    "name": "a-only", "key": "password"}}}]}]}}))
        stolen = NodePKI(b.data_dir / "pki")
        secret_before = a.kubectl("get", "secret", "a-only", "-o", "json").stdout
        for node in (a, b):  # every peer refuses, from its own replica
            status, body = _request(node, stolen, "GET",
                                    "/api/v1/namespaces/default/secrets/a-only")
            assert status == 403, body
            assert body["reason"] == "Forbidden"
            assert 'User "system:node:node-b" cannot get resource "secrets"' in body["message"]
            status, body = _request(
                node, stolen, "PATCH", "/api/v1/nodes/node-a/status",
                {"metadata": {"labels": {"hacked": "yes"}},
                 "status": {"conditions": [{"type": "Ready", "status": "False",
                                            "reason": "Hacked"}]}},
                "application/merge-patch+json")
            assert status == 403, body
            assert "node-b" in body["message"]
        node_a = json.loads(a.kubectl("get", "node", "node-a", "-o", "json").stdout)
        assert "hacked" not in node_a["metadata"].get("labels", {})
        assert all(c.get("reason") != "Hacked" for c in node_a["status"]["conditions"])
        assert json.loads(a.kubectl("get", "secret", "a-only", "-o", "json").stdout)[
            "data"] == json.loads(secret_before)["data"]

        # The join service, over the stolen identity's mutual-TLS link to the signer.
        async def take_a_name() -> dict[str, Any]:
            t = TlsTransport(join.node_identity(stolen))
            try:
                fresh = str(create_token(NodePKI(a.data_dir / "pki")))
                raw = await t.request_control(
                    (a.data_dir / "peer-address").read_text().strip(),
                    json.dumps({"op": "join", "name": "node-a", "token": fresh,
                                **csrs_for("node-a")}).encode(), 10)
                return dict(json.loads(raw))
            finally:
                await t.close()

        answer = asyncio.run(take_a_name())
        assert "node node-a is a live member" in answer["error"]
        log = a.log_path.read_text()
        assert "(node node-b) refused: node node-a is a live member" in log
    finally:
        if b is not None:
            b.stop()
        a.stop()
