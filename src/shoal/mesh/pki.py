"""The cluster's certificates: a CA, serving certificates and client credentials.

On first start a node creates the cluster CA under its data dir. Serving
certificates cover the node's bind and advertise addresses. The admin
credential is a client certificate (``O=system:masters``) plus a bearer token,
so any kubeconfig style works; both exist only on the node that created the CA
(a joined node gets its own node credential, nothing more).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365

LIFETIME_ENV = "SHOAL_CERT_LIFETIME"
"""Seconds a node's own certificates (``node.crt``, ``server.crt``) stay valid, when set in
the signer's environment: tests use it to watch a renewal. Unset: :data:`LEAF_DAYS`."""


def node_cert_lifetime() -> datetime.timedelta:
    """How long the node and serving certificates this signer issues are valid."""
    raw = os.environ.get(LIFETIME_ENV, "")
    try:
        seconds = float(raw) if raw else 0.0
    except ValueError:
        seconds = 0.0
    return datetime.timedelta(seconds=seconds) if seconds > 0 else datetime.timedelta(
        days=LEAF_DAYS)


def validity(lifetime: datetime.timedelta) -> tuple[datetime.datetime, datetime.datetime]:
    """(not before, not after) of a certificate issued now: backdated a little for clocks
    that lag ours, but never by more than a tenth of its life (so that a short-lived one is
    not due for renewal the moment it is issued)."""
    now = datetime.datetime.now(datetime.UTC)
    backdate = min(datetime.timedelta(minutes=5), lifetime / 10)
    return now - backdate, now + lifetime


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically (a crash leaves the old one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def create_ca(common_name: str = "shoal-ca") -> KeyPair:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
    lifetime: datetime.timedelta | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> KeyPair:
    """Sign a leaf certificate with the CA (for ``key``, or a new one); valid
    :data:`LEAF_DAYS` unless ``lifetime`` says otherwise."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = ca.cert
    key = key or _key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    not_before, not_after = validity(lifetime or datetime.timedelta(days=LEAF_DAYS))
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def ca_hash(ca_cert_pem: bytes) -> str:
    """``sha256:<hex>`` of the CA's public key (as kubeadm join tokens pin it)."""
    cert = x509.load_pem_x509_certificate(ca_cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True)
class NodePKI:
    """The files a node keeps under ``DATA_DIR/pki``."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def admin_token(self) -> Path:
        return self.dir / "admin.token"

    def ca(self) -> KeyPair:
        return KeyPair(self.ca_cert.read_bytes(), self.ca_key.read_bytes())

    def ensure(self, node_name: str, hosts: list[str]) -> None:
        """Create whatever is missing; reissue the serving cert if its hosts changed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not self.ca_cert.exists():
            ca = create_ca()
            write_private(self.ca_key, ca.key_pem)
            write_private(self.ca_cert, ca.cert_pem)
        ca = self.ca()
        if not self.admin_cert.exists():
            admin = issue(ca, "shoal-admin", organizations=("system:masters",), client=True)
            write_private(self.admin_key, admin.key_pem)
            write_private(self.admin_cert, admin.cert_pem)
        if not self.admin_token.exists():
            write_private(self.admin_token, secrets.token_urlsafe(32).encode())
        self.ensure_server_cert(node_name, hosts)

    def ensure_server_cert(self, node_name: str, hosts: list[str]) -> None:
        dns, ips = _split_hosts([*hosts, "localhost", "127.0.0.1", "::1", node_name])
        if self.server_cert.exists():
            cert = x509.load_pem_x509_certificate(self.server_cert.read_bytes())
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                have_dns = set(san.get_values_for_type(x509.DNSName))
                have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
                if set(dns) <= have_dns and set(ips) <= have_ips:
                    return
            except x509.ExtensionNotFound:
                pass
        leaf = issue(self.ca(), node_name, dns_names=tuple(dns), ips=tuple(ips), server=True,
                     client=True, lifetime=node_cert_lifetime())
        write_private(self.server_key, leaf.key_pem)
        write_private(self.server_cert, leaf.cert_pem)


def _split_hosts(hosts: list[str]) -> tuple[list[str], list[str]]:
    dns: list[str] = []
    ips: list[str] = []
    for h in hosts:
        if not h or h in ("0.0.0.0", "::"):
            continue
        try:
            ip = str(ipaddress.ip_address(h))
            if ip not in ips:
                ips.append(ip)
        except ValueError:
            if h not in dns:
                dns.append(h)
    return dns, ips
