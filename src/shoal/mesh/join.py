"""Join tokens, node certificates, and the join exchange on the peer port.

A token reads ``SHOAL1::sha256:<ca key hash>::<id>.<secret>``. The node that
creates it (``shoal token create``) keeps only ``sha256(secret)`` and the expiry,
in ``DATA_DIR/pki/join-tokens.json``; the signer checks it, so a token made on
a signer works through any peer.

The joining node, which has no certificate yet, opens TLS to any peer without
verifying it, asks for the CA certificate, and trusts nothing until that CA's
key hash equals the token's and the peer's own certificate is issued by it.
It then sends two CSRs (its keys never leave it: one for its node identity on
the peer port, one for serving the API on its bind and advertise addresses)
with the token, and gets back both certificates, the CA certificate and the
cluster's admin credentials, so that one kubeconfig works against every peer.

A *signer* holds ``ca.key`` (the first node). A peer without it relays the
request over its authenticated connection to a signer it knows
(``pki/signers.json``, learnt from its own join), and vouches for the token
if the token was made on it. Everything is persisted under ``DATA_DIR/pki``,
so a restart needs no ``--join``.

Control requests (JSON): ``ca`` and ``join`` from anyone; ``renew`` (a new
serving certificate for the caller's own name) only from an authenticated node.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.mesh import pki as pkimod
from shoal.mesh.pki import KeyPair, NodePKI, ca_hash
from shoal.mesh.tls_transport import (
    NODE_ORG,
    JoinConnection,
    PeerIdentity,
    TlsIdentity,
    TlsTransport,
)
from shoal.mesh.transport import TransportError

log = logging.getLogger("shoal.mesh.join")

TOKEN_PREFIX = "SHOAL1"
DEFAULT_TTL = 24 * 3600.0
JOIN_TIMEOUT = 30.0


class JoinError(Exception):
    """A join (or a token) was refused; the message says why, for the operator."""


# -- files ---------------------------------------------------------------------------------


def node_cert_path(pki: NodePKI) -> Path:
    return pki.dir / "node.crt"


def node_key_path(pki: NodePKI) -> Path:
    return pki.dir / "node.key"


def tokens_path(pki: NodePKI) -> Path:
    return pki.dir / "join-tokens.json"


def signers_path(pki: NodePKI) -> Path:
    return pki.dir / "signers.json"


def node_identity(pki: NodePKI) -> TlsIdentity:
    """The files the peer transport authenticates with."""
    return TlsIdentity(node_cert_path(pki), node_key_path(pki), pki.ca_cert)


def is_signer(pki: NodePKI) -> bool:
    return pki.ca_key.exists()


def is_joined(pki: NodePKI) -> bool:
    """This data dir holds a node identity issued by a cluster CA it does not own."""
    return pki.ca_cert.exists() and not pki.ca_key.exists() and node_cert_path(pki).exists()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_signers(pki: NodePKI) -> list[str]:
    try:
        data = json.loads(signers_path(pki).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [str(a) for a in data] if isinstance(data, list) else []


def remember_signers(pki: NodePKI, addresses: list[str]) -> None:
    known = read_signers(pki)
    merged = known + [a for a in addresses if a and a not in known]
    if merged != known:
        _write(signers_path(pki), json.dumps(merged).encode())


# -- tokens --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    ca_hash: str
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}::{self.ca_hash}::{self.id}.{self.secret}"


def parse_token(text: str) -> Token:
    parts = text.strip().split("::")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1].startswith("sha256:"):
        raise JoinError(f"malformed join token (want {TOKEN_PREFIX}::sha256:<hash>::<id>.<secret>)")
    tid, dot, secret = parts[2].partition(".")
    if not dot or not tid or not secret:
        raise JoinError("malformed join token: the last part must be <id>.<secret>")
    return Token(parts[1], tid, secret)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@contextmanager
def _locked_tokens(pki: NodePKI) -> Iterator[dict[str, dict[str, Any]]]:
    """The token table, locked against concurrent ``token create`` runs, saved on exit."""
    pki.dir.mkdir(parents=True, exist_ok=True)
    with open(pki.dir / "join-tokens.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            table = _read_tokens(pki)
            yield table
            _write(tokens_path(pki), json.dumps(table, indent=1, sort_keys=True).encode())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_tokens(pki: NodePKI) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(tokens_path(pki).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def create_token(pki: NodePKI, ttl: float = DEFAULT_TTL, now: float | None = None) -> Token:
    """Make a join token for the cluster whose CA is in ``pki``; only its hash is stored."""
    if not pki.ca_cert.exists():
        raise JoinError(f"{pki.ca_cert} does not exist: start `shoal server` on this data dir "
                        "first")
    now = time.time() if now is None else now
    token = Token(ca_hash(pki.ca_cert.read_bytes()), secrets.token_hex(4),
                  secrets.token_urlsafe(24))
    with _locked_tokens(pki) as table:
        for tid in [t for t, v in table.items() if float(v.get("expires", 0)) < now]:
            del table[tid]  # expired ones are useless; keep the file small
        table[token.id] = {"sha256": _secret_hash(token.secret), "expires": now + ttl}
    return token


def check_token(pki: NodePKI, text: str, now: float | None = None) -> None:
    """Raise :class:`JoinError` unless the token is known here, matches and has not expired."""
    token = parse_token(text)
    if token.ca_hash != ca_hash(pki.ca_cert.read_bytes()):
        raise JoinError("the join token is for another cluster (its CA hash differs)")
    entry = _read_tokens(pki).get(token.id)
    if entry is None or not hmac.compare_digest(str(entry.get("sha256", "")),
                                                _secret_hash(token.secret)):
        raise JoinError("the join token is not valid (unknown id or wrong secret)")
    expires = float(entry.get("expires", 0))
    if (time.time() if now is None else now) > expires:
        when = datetime.datetime.fromtimestamp(expires, datetime.UTC).isoformat(timespec="seconds")
        raise JoinError(f"the join token expired at {when}")


# -- certificates --------------------------------------------------------------------------


def _hosts_sans(hosts: list[str], name: str) -> list[x509.GeneralName]:
    dns: list[str] = []
    ips: list[str] = []
    for h in [*hosts, "localhost", "127.0.0.1", "::1", name]:
        if not h or h in ("0.0.0.0", "::"):
            continue
        try:
            ip = str(ipaddress.ip_address(h))
            if ip not in ips:
                ips.append(ip)
        except ValueError:
            if h not in dns:
                dns.append(h)
    return [*(x509.DNSName(d) for d in dns),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]


def make_csr(key: ec.EllipticCurvePrivateKey, name: str, *, node: bool,
             hosts: list[str]) -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORG)] if node else []
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName(_hosts_sans(hosts, name)),
                            critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def sign_csr(ca: KeyPair, csr_pem: bytes, name: str, *, node: bool) -> bytes:
    """Issue a certificate for a CSR's key. The signer decides the subject and the usages;
    from the CSR it takes only the key and, for a serving certificate, the addresses."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise JoinError("the certificate request's signature is not valid")
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = ca.cert
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORG)] if node else []
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=pkimod.LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        b = b.add_extension(san, critical=False)
    except x509.ExtensionNotFound:
        pass
    return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _covers(cert_path: Path, hosts: list[str], name: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (FileNotFoundError, x509.ExtensionNotFound):
        return False
    return set(_hosts_sans(hosts, name)) <= set(san)


def prepare_pki(pki: NodePKI, name: str, hosts: list[str]) -> bool:
    """Make sure this node has its certificates; True if the serving one must be renewed.

    A signer (or a brand-new first node) creates and signs whatever is missing. A joined
    node cannot sign: if its addresses changed it asks a signer (:func:`renew_serving_cert`).
    """
    if is_joined(pki):
        cn = _cn(x509.load_pem_x509_certificate(node_cert_path(pki).read_bytes()).subject)
        if cn != name:
            raise JoinError(f"this data dir belongs to node {cn!r}, not {name!r}")
        return not _covers(pki.server_cert, hosts, name)
    if pki.ca_cert.exists() and not pki.ca_key.exists():
        raise JoinError(f"{pki.dir} has a CA certificate but neither the CA key nor a node "
                        "certificate: finish the join with --join and --token")
    pki.ensure(name, hosts)
    ncert = node_cert_path(pki)
    if not ncert.exists() or not _covers(ncert, hosts, name) or _cn(
            x509.load_pem_x509_certificate(ncert.read_bytes()).subject) != name:
        dns = [str(d.value) for d in _hosts_sans(hosts, name) if isinstance(d, x509.DNSName)]
        ips = [str(i.value) for i in _hosts_sans(hosts, name) if isinstance(i, x509.IPAddress)]
        leaf = pkimod.issue(pki.ca(), name, organizations=(NODE_ORG,), dns_names=tuple(dns),
                            ips=tuple(ips), server=True, client=True)
        _write(node_key_path(pki), leaf.key_pem)
        _write(ncert, leaf.cert_pem)
    return False


def _cn(subject: x509.Name) -> str:
    attrs = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _same_key(cert_pem: bytes, key: ec.EllipticCurvePrivateKey) -> bool:
    def spki(k: Any) -> bytes:
        return bytes(k.public_bytes(serialization.Encoding.DER,
                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return spki(x509.load_pem_x509_certificate(cert_pem).public_key()) == spki(key.public_key())


def _issued_by(cert: x509.Certificate, ca_pem: bytes) -> bool:
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except Exception:  # InvalidSignature, a wrong key type: either way, not issued by it
        return False
    return True


# -- the joining side ----------------------------------------------------------------------


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(raw)
    except ValueError:
        raise JoinError("the peer answered something that is not JSON") from None
    if not isinstance(msg, dict):
        raise JoinError("the peer answered something that is not a JSON object")
    if "error" in msg:
        raise JoinError(str(msg["error"]))
    return msg


async def join_cluster(pki: NodePKI, name: str, hosts: list[str], peer: str, token_text: str,
                       timeout: float = JOIN_TIMEOUT) -> None:
    """Get this node's certificates from the cluster through ``peer`` and persist them."""
    token = parse_token(token_text)
    conn = await JoinConnection.open(peer, timeout)
    try:
        ca_pem = _decode(await conn.request(b'{"op":"ca"}', timeout)).get("ca", "").encode()
        try:
            got = ca_hash(ca_pem)
        except ValueError:
            raise JoinError(f"{peer} sent no valid CA certificate") from None
        if not hmac.compare_digest(got, token.ca_hash):
            raise JoinError(f"{peer} belongs to another cluster: its CA hash {got} differs "
                            f"from the token's {token.ca_hash}")
        leaf = x509.load_der_x509_certificate(conn.peer_cert_der())
        if not _issued_by(leaf, ca_pem):
            raise JoinError(f"{peer}'s certificate is not issued by the pinned cluster CA")
        node_key, serving_key = _new_key(), _new_key()
        request = {
            "op": "join", "token": str(token), "name": name,
            "node_csr": make_csr(node_key, name, node=True, hosts=hosts).decode(),
            "serving_csr": make_csr(serving_key, name, node=False, hosts=hosts).decode(),
        }
        answer = _decode(await conn.request(json.dumps(request).encode(), timeout))
    finally:
        await conn.close()
    node_pem = str(answer["node_cert"]).encode()
    serving_pem = str(answer["serving_cert"]).encode()
    for pem, key in ((node_pem, node_key), (serving_pem, serving_key)):
        if not _same_key(pem, key) or not _issued_by(x509.load_pem_x509_certificate(pem), ca_pem):
            raise JoinError("the signer returned a certificate that does not match our request")
    pki.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.dir, 0o700)
    _write(pki.admin_cert, str(answer["admin_cert"]).encode())
    _write(pki.admin_key, str(answer["admin_key"]).encode())
    _write(pki.admin_token, str(answer["admin_token"]).encode())
    _write(pki.server_key, _key_pem(serving_key))
    _write(pki.server_cert, serving_pem)
    _write(node_key_path(pki), _key_pem(node_key))
    _write(node_cert_path(pki), node_pem)
    remember_signers(pki, [str(a) for a in answer.get("signers", [])])
    # The CA last: its presence with a node certificate is what marks the join as complete.
    _write(pki.ca_cert, ca_pem)
    log.info("joined the cluster through %s as %s", peer, name)


async def renew_serving_cert(pki: NodePKI, transport: TlsTransport, name: str,
                             hosts: list[str], timeout: float = JOIN_TIMEOUT) -> None:
    """Ask a known signer, over the authenticated transport, for a serving cert for ``hosts``."""
    key = _new_key()
    request = json.dumps({"op": "renew",
                          "serving_csr": make_csr(key, name, node=False, hosts=hosts).decode()})
    errors = []
    for signer in read_signers(pki):
        try:
            answer = _decode(await transport.request_control(signer, request.encode(), timeout))
        except (TransportError, JoinError) as e:
            errors.append(f"{signer}: {e}")
            continue
        pem = str(answer["serving_cert"]).encode()
        if not _same_key(pem, key):
            raise JoinError(f"{signer} returned a certificate for another key")
        _write(pki.server_key, _key_pem(key))
        _write(pki.server_cert, pem)
        return
    raise JoinError("no signer renewed the serving certificate: " + ("; ".join(errors) or
                                                                     "no signer is known"))


# -- the serving side ----------------------------------------------------------------------


class JoinService:
    """Answers control requests on the peer port: signs when it can, relays when it cannot."""

    def __init__(self, pki: NodePKI, transport: TlsTransport, timeout: float = JOIN_TIMEOUT) -> None:
        self.pki = pki
        self.transport = transport
        self.timeout = timeout

    async def handle(self, peer: PeerIdentity, raw: bytes) -> bytes:
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise JoinError("a control request must be a JSON object")
            op = msg.get("op")
            if op == "ca":
                answer: dict[str, Any] = {"ca": self.pki.ca_cert.read_text()}
            elif op == "join":
                answer = await self._join(peer, msg)
            elif op == "renew" and peer.name is not None:
                answer = self._renew(peer.name, msg)
            else:
                raise JoinError(f"unknown or unauthorised control request {op!r}")
        except JoinError as e:
            log.warning("join request from %s refused: %s", peer.address, e)
            answer = {"error": str(e)}
        except (ValueError, KeyError, TypeError) as e:
            log.warning("bad control request from %s: %r", peer.address, e)
            answer = {"error": f"bad request: {e}"}
        return json.dumps(answer).encode()

    def _signers(self) -> list[str]:
        own = [self.transport.address] if is_signer(self.pki) else []
        return own + [a for a in read_signers(self.pki) if a not in own]

    async def _join(self, peer: PeerIdentity, msg: dict[str, Any]) -> dict[str, Any]:
        name = str(msg["name"])
        if not name or len(name) > 253:
            raise JoinError("a node name must have 1 to 253 characters")
        vouched = bool(msg.get("vouched")) and peer.name is not None
        if not vouched:
            try:
                check_token(self.pki, str(msg["token"]))
                local_ok = True
            except JoinError:
                if is_signer(self.pki):
                    raise
                local_ok = False  # the signer may know the token even if we do not
        if not is_signer(self.pki):
            return await self._relay(peer, {**msg, "vouched": vouched or local_ok})
        ca = self.pki.ca()
        node_cert = sign_csr(ca, str(msg["node_csr"]).encode(), name, node=True)
        serving_cert = sign_csr(ca, str(msg["serving_csr"]).encode(), name, node=False)
        log.info("signed certificates for node %s (request from %s%s)", name, peer.address,
                 f", relayed by {peer.name}" if peer.name else "")
        return {
            "node_cert": node_cert.decode(), "serving_cert": serving_cert.decode(),
            "admin_cert": self.pki.admin_cert.read_text(),
            "admin_key": self.pki.admin_key.read_text(),
            "admin_token": self.pki.admin_token.read_text().strip(),
            "signers": self._signers(),
        }

    async def _relay(self, peer: PeerIdentity, msg: dict[str, Any]) -> dict[str, Any]:
        if peer.name is not None:
            raise JoinError("relayed join requests are not relayed again")
        errors = []
        for signer in read_signers(self.pki):
            try:
                raw = await self.transport.request_control(signer, json.dumps(msg).encode(),
                                                           self.timeout)
            except TransportError as e:
                errors.append(f"{signer}: {e}")
                continue
            answer = json.loads(raw)
            if isinstance(answer, dict) and "error" not in answer:
                log.info("relayed the join of %s to signer %s", msg.get("name"), signer)
                answer["signers"] = [*answer.get("signers", []), *self._signers()]
            return answer if isinstance(answer, dict) else {"error": "bad answer from signer"}
        raise JoinError("this peer cannot sign and reached no signer: " + ("; ".join(errors) or
                                                                          "none is known"))

    def _renew(self, name: str, msg: dict[str, Any]) -> dict[str, Any]:
        if not is_signer(self.pki):
            raise JoinError("this peer does not hold the CA key")
        cert = sign_csr(self.pki.ca(), str(msg["serving_csr"]).encode(), name, node=False)
        log.info("renewed the serving certificate of node %s", name)
        return {"serving_cert": cert.decode()}
