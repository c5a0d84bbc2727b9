"""Join tokens and the join exchange: in process, then with real ``shoal server`` processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from shoal.mesh import join
from shoal.mesh.join import JoinError, JoinService
from shoal.mesh.join_tokens import TokenError, create_token
from shoal.mesh.pki import NodePKI
from shoal.mesh.tls_transport import NODE_ORG, TlsTransport, node_name_of
from tests.conftest import VENV_BIN, ShoalProcess, free_port


def signer_pki(dir: Path, name: str = "a") -> NodePKI:
    p = NodePKI(dir / "pki")
    join.prepare_pki(p, name, ["127.0.0.1"])
    return p


# -- the exchange, in process --------------------------------------------------------------


@pytest.fixture
async def signer(tmp_path: Path) -> AsyncIterator[tuple[NodePKI, TlsTransport]]:
    p = signer_pki(tmp_path / "a")
    t = TlsTransport(join.node_identity(p))
    await t.start()
    t.set_control_handler(JoinService(p, t).handle)
    try:
        yield p, t
    finally:
        await t.close()


async def test_a_node_joins_with_a_csr_and_gets_its_own_node_identity_and_nothing_more(
        tmp_path: Path, signer: tuple[NodePKI, TlsTransport]) -> None:
    a_pki, a = signer
    b_pki = NodePKI(tmp_path / "b" / "pki")
    await join.join_cluster(b_pki, "b", ["127.0.0.1", "10.9.8.7"], a.address,
                            str(create_token(a_pki)))
    assert join.is_joined(b_pki) and not b_pki.ca_key.exists()
    assert b_pki.ca_cert.read_bytes() == a_pki.ca_cert.read_bytes()
    assert sorted(f.name for f in b_pki.dir.iterdir()) == [
        "ca.crt", "node.crt", "node.key", "server.crt", "server.key", "signers.json"]
    node = x509.load_pem_x509_certificate(join.node_cert_path(b_pki).read_bytes())
    assert node.subject.rfc4514_string() == f"CN=b,O={NODE_ORG}"
    serving = x509.load_pem_x509_certificate(b_pki.server_cert.read_bytes())
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.9.8.7" in {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    assert join.read_signers(b_pki) == [a.address]
    # The joined identity is accepted on the peer port.
    b = TlsTransport(join.node_identity(b_pki))

    async def whoami(address: str, payload: bytes) -> bytes:
        from shoal.mesh.tls_transport import current_peer
        peer = current_peer()
        return (peer.name or "").encode() if peer else b""

    a.set_handler(whoami)
    try:
        assert await b.request(a.address, b"", 5) == b"b"
    finally:
        await b.close()
    assert join.prepare_pki(b_pki, "b", ["127.0.0.1", "10.9.8.7"]) is False
    assert join.prepare_pki(b_pki, "b", ["127.0.0.1", "10.1.1.1"]) is True


async def test_a_join_through_a_non_signer_is_relayed_with_its_token_to_the_signer(
        tmp_path: Path, signer: tuple[NodePKI, TlsTransport]) -> None:
    a_pki, a = signer
    token = str(create_token(a_pki, uses=2))
    b_pki = NodePKI(tmp_path / "b" / "pki")
    await join.join_cluster(b_pki, "b", ["127.0.0.1"], a.address, token)
    b = TlsTransport(join.node_identity(b_pki))
    await b.start()
    b.set_control_handler(JoinService(b_pki, b).handle)
    try:
        c_pki = NodePKI(tmp_path / "c" / "pki")
        await join.join_cluster(c_pki, "c", ["127.0.0.1"], b.address, token)
        assert join.is_joined(c_pki)
        assert a.address in join.read_signers(c_pki)
        # The relay spent the token's second use on the signer: a third join is refused.
        d_pki = NodePKI(tmp_path / "d" / "pki")
        with pytest.raises(JoinError, match="not valid"):
            await join.join_cluster(d_pki, "d", ["127.0.0.1"], b.address, token)
        assert not d_pki.ca_cert.exists()
        # A peer that cannot sign makes no tokens (it could not check them).
        with pytest.raises(TokenError, match="holds no CA key"):
            create_token(b_pki)
    finally:
        await b.close()


async def test_a_joined_node_renews_its_serving_certificate_from_a_signer(
        tmp_path: Path, signer: tuple[NodePKI, TlsTransport]) -> None:
    a_pki, a = signer
    b_pki = NodePKI(tmp_path / "b" / "pki")
    await join.join_cluster(b_pki, "b", ["127.0.0.1"], a.address, str(create_token(a_pki)))
    node_before = join.node_cert_path(b_pki).read_bytes()
    b = TlsTransport(join.node_identity(b_pki))
    try:
        await join.renew_serving_cert(b_pki, b, "b", ["127.0.0.1", "192.0.2.5"])
    finally:
        await b.close()
    assert join.prepare_pki(b_pki, "b", ["127.0.0.1", "192.0.2.5"]) is False
    assert join.node_cert_path(b_pki).read_bytes() == node_before


async def test_a_token_is_spent_by_a_join_and_a_second_join_with_it_is_refused(
        tmp_path: Path, signer: tuple[NodePKI, TlsTransport]) -> None:
    a_pki, a = signer
    token = str(create_token(a_pki))
    await join.join_cluster(NodePKI(tmp_path / "b" / "pki"), "b", ["127.0.0.1"], a.address,
                            token)
    with pytest.raises(JoinError, match="not valid"):
        await join.join_cluster(NodePKI(tmp_path / "c" / "pki"), "c", ["127.0.0.1"], a.address,
                                token)


async def test_a_join_with_a_wrong_token_fails_and_writes_nothing(
        tmp_path: Path, signer: tuple[NodePKI, TlsTransport]) -> None:
    a_pki, a = signer
    token = str(create_token(a_pki))
    b_pki = NodePKI(tmp_path / "b" / "pki")
    with pytest.raises(JoinError, match="not valid"):
        await join.join_cluster(b_pki, "b", ["127.0.0.1"], a.address, token[:-2] + "zz")
    assert not b_pki.ca_cert.exists()


async def test_a_joining_node_refuses_a_peer_whose_ca_does_not_match_the_token(
        tmp_path: Path, signer: tuple[NodePKI, TlsTransport]) -> None:
    _, a = signer
    other = signer_pki(tmp_path / "other")
    token = str(create_token(other))
    with pytest.raises(JoinError, match="another cluster"):
        await join.join_cluster(NodePKI(tmp_path / "b" / "pki"), "b", ["127.0.0.1"], a.address,
                                token)


async def test_renew_is_refused_without_a_node_certificate(
        signer: tuple[NodePKI, TlsTransport]) -> None:
    from shoal.mesh.tls_transport import JoinConnection

    _, a = signer
    conn = await JoinConnection.open(a.address, 5)
    try:
        answer = json.loads(await conn.request(b'{"op":"renew","serving_csr":""}', 5))
    finally:
        await conn.close()
    assert "unauthorised" in answer["error"]


def test_node_name_of_requires_the_node_organization() -> None:
    subject = ((("organizationName", NODE_ORG),), (("commonName", "n1"),))
    assert node_name_of({"subject": subject}) == "n1"
    assert node_name_of({"subject": ((("commonName", "n1"),),)}) is None
    assert node_name_of(None) is None


# -- real processes ------------------------------------------------------------------------


def shoal_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(VENV_BIN / "shoal"), *args], capture_output=True, text=True,
                       timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"shoal {' '.join(args)} failed: {r.stdout}{r.stderr}")
    return r


def start_node(tmp_path: Path, name: str, extra: list[str] | None = None) -> ShoalProcess:
    node = ShoalProcess(name, tmp_path / name, free_port(), tmp_path / f"{name}.log")
    node.start(["--peer-port", "0", *(extra or [])])
    return node


def peer_address(node: ShoalProcess) -> str:
    return (node.data_dir / "peer-address").read_text().strip()


@pytest.mark.slow
def test_a_joined_nodes_api_accepts_the_first_nodes_kubeconfig_and_it_restarts_without_join(
        tmp_path: Path) -> None:
    a = start_node(tmp_path, "node-a")
    b: ShoalProcess | None = None
    try:
        token = shoal_cli("token", "create", "--data-dir", str(a.data_dir), "--ttl", "10m")
        b = start_node(tmp_path, "node-b",
                       ["--join", peer_address(a), "--token", token.stdout.strip()])
        # A's kubeconfig with only the server URL changed.
        kc = tmp_path / "kubeconfig"
        shoal_cli("kubeconfig", "--data-dir", str(a.data_dir), "--server", b.url, "-o", str(kc))
        a_on_b = ShoalProcess("a-on-b", a.data_dir, b.port, a.log_path, kubeconfig=kc)
        assert "namespace/default" in a_on_b.kubectl("get", "namespaces", "-o", "name").stdout
        # The admin bearer token is the signer's alone: B never saw it and refuses it.
        kc_token = tmp_path / "kubeconfig-token"
        shoal_cli("kubeconfig", "--data-dir", str(a.data_dir), "--server", b.url, "--token",
                  "-o", str(kc_token))
        token_on_b = ShoalProcess("token-on-b", a.data_dir, b.port, a.log_path,
                                  kubeconfig=kc_token)
        r = token_on_b.kubectl("get", "namespaces", check=False)
        assert r.returncode != 0 and "Unauthorized" in r.stderr
        # B's data dir cannot make a kubeconfig, and says where to.
        r = shoal_cli("kubeconfig", "--data-dir", str(b.data_dir), check=False)
        assert r.returncode == 1 and "signer's data dir" in r.stderr and r.stdout == ""
        b.stop()
        b.start(["--peer-port", "0"])  # no --join: everything comes from DATA_DIR/pki
        assert "namespace/default" in a_on_b.kubectl("get", "namespaces", "-o", "name").stdout
        assert "joined the cluster" not in b.log_path.read_text().split("stopping")[-1]
    finally:
        if b is not None:
            b.stop()
        a.stop()


@pytest.mark.slow
def test_a_join_with_a_wrong_or_expired_token_fails_clearly(tmp_path: Path) -> None:
    a = start_node(tmp_path, "node-a")
    try:
        good = shoal_cli("token", "create", "--data-dir", str(a.data_dir)).stdout.strip()
        short = shoal_cli("token", "create", "--data-dir", str(a.data_dir), "--ttl",
                          "200ms").stdout.strip()
        time.sleep(0.5)
        for token, message in ((good[:-3] + "abc", "join token is not valid"),
                               (short, "join token expired at")):
            r = shoal_cli("server", "--name", "node-b", "--data-dir", str(tmp_path / "b"),
                          "--api-port", str(free_port()), "--peer-port", "0",
                          "--join", peer_address(a), "--token", token, check=False)
            assert r.returncode == 1
            assert message in r.stderr
            assert not (tmp_path / "b" / "pki" / "ca.crt").exists()
        assert "join request from 127.0.0.1" in a.log_path.read_text()
    finally:
        a.stop()


@pytest.mark.slow
def test_garbage_on_a_nodes_peer_port_is_refused_and_the_node_keeps_serving(
        tmp_path: Path) -> None:
    from tests.test_tls_transport import raw_exchange

    a = start_node(tmp_path, "node-a")
    try:
        address = peer_address(a)
        for data, tls in ((b"\xff" * 4096, False), (b"GET / HTTP/1.1\r\n\r\n", False),
                          (b"GET / HTTP/1.1\r\n\r\n", True)):
            asyncio.run(raw_exchange(address, data, tls))
        log = a.log_path.read_text()
        assert log.count("WARNING shoal.mesh.tls") >= 3
        assert "refused peer connection from 127.0.0.1:" in log
        a.kubectl("get", "namespaces")
        token = shoal_cli("token", "create", "--data-dir", str(a.data_dir)).stdout.strip()
        b_pki = NodePKI(tmp_path / "b" / "pki")
        asyncio.run(join.join_cluster(b_pki, "node-b", ["127.0.0.1"], address, token))
        assert join.is_joined(b_pki)
    finally:
        a.stop()
