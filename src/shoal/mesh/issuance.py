"""Making keys, certificate requests and certificates, with ``cryptography``.

Issuing is rare (a first start, a join, a renewal) and ``cryptography`` costs a node
10 to 16 MB of RSS once imported, so a running server never imports this module: it
sends a request to ``python -m shoal.mesh.issuance`` (:func:`shoal.mesh.pki.run_issuance`)
and reads the answer. The CLI and the tests, which load ``cryptography`` anyway, call
:func:`handle` in-process. A request is a JSON object with an ``op``; the CA key never
leaves the data dir (the child reads it there), and the keys made for a joiner's or a
renewal's requests come back as PEM on the pipe.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.mesh.pki import (
    CA_DAYS,
    LEAF_DAYS,
    IssuanceError,
    KeyPair,
    NodePKI,
    covers,
    host_names,
    node_cert_lifetime,
    subject_common_name,
    validity,
    write_private,
)
from shoal.mesh.tls_transport import NODE_ORG
from shoal.store.system_crypto import CryptoError


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IssuanceError("node keys are P-256 ECDSA keys")
    return key


def create_ca(common_name: str = "shoal-ca") -> KeyPair:
    key = new_key()
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
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def _sans(dns: list[str] | tuple[str, ...], ips: list[str] | tuple[str, ...]
          ) -> list[x509.GeneralName]:
    return [*(x509.DNSName(d) for d in dns),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]


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
    ca_key = _load_key(ca.key_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = key or new_key()
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
    sans = _sans(dns_names, ips)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def make_csr(key: ec.EllipticCurvePrivateKey, name: str, *, node: bool,
             hosts: list[str]) -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORG)] if node else []
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName(_sans(*host_names(hosts, name))),
                            critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def sign_csr(ca: KeyPair, csr_pem: bytes, name: str, *, node: bool) -> bytes:
    """Issue a certificate for a CSR's key. The signer decides the subject and the usages;
    from the CSR it takes only the key and, for a serving certificate, the addresses."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise IssuanceError(f"not a certificate request: {e}") from None
    if not csr.is_signature_valid:
        raise IssuanceError("the certificate request's signature is not valid")
    ca_key = _load_key(ca.key_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORG)] if node else []
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    not_before, not_after = validity(node_cert_lifetime())
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
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


def prepare_signer(pki: NodePKI, name: str, hosts: list[str]) -> None:
    """Create whatever a signer (or a brand-new first node) lacks: the CA, the admin
    credential and token, a serving certificate covering ``hosts``, a node certificate."""
    import secrets

    pki.dir.mkdir(parents=True, exist_ok=True)
    pki.dir.chmod(0o700)
    if not pki.ca_cert.exists():
        ca = create_ca()
        write_private(pki.ca_key, ca.key_pem)
        write_private(pki.ca_cert, ca.cert_pem)
    ca = pki.ca()
    if not pki.admin_cert.exists():
        admin = issue(ca, "shoal-admin", organizations=("system:masters",), client=True)
        write_private(pki.admin_key, admin.key_pem)
        write_private(pki.admin_cert, admin.cert_pem)
    if not pki.admin_token.exists():
        write_private(pki.admin_token, secrets.token_urlsafe(32).encode())
    dns, ips = host_names(hosts, name)
    if not covers(pki.server_cert, hosts, name):
        leaf = issue(ca, name, dns_names=tuple(dns), ips=tuple(ips), server=True, client=True,
                     lifetime=node_cert_lifetime())
        write_private(pki.server_key, leaf.key_pem)
        write_private(pki.server_cert, leaf.cert_pem)
    if not covers(pki.node_cert, hosts, name) or subject_common_name(pki.node_cert) != name:
        leaf = issue(ca, name, organizations=(NODE_ORG,), dns_names=tuple(dns), ips=tuple(ips),
                     server=True, client=True, lifetime=node_cert_lifetime())
        write_private(pki.node_key, leaf.key_pem)
        write_private(pki.node_cert, leaf.cert_pem)


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """One request (see the module's doc); :class:`IssuanceError` for a bad one.

    - ``prepare_signer`` {dir, name, hosts}: :func:`prepare_signer`; answers {}.
    - ``requests`` {name, requests: [{kind: node|serving, key_pem: PEM or null, hosts}]}:
      a CSR for each, with the key given or a new one; answers {kind: {key_pem, csr}}.
    - ``sign`` {dir, name, node_csr?, serving_csr?}: certificates from the CA in ``dir``
      for ``name``; answers {node_cert?, serving_cert?}.
    """
    op = request.get("op")
    if op == "prepare_signer":
        prepare_signer(NodePKI(Path(request["dir"])), str(request["name"]),
                       [str(h) for h in request["hosts"]])
        return {}
    if op == "requests":
        out: dict[str, Any] = {}
        for r in request["requests"]:
            key = _load_key(str(r["key_pem"]).encode()) if r.get("key_pem") else new_key()
            out[str(r["kind"])] = {
                "key_pem": key_pem(key).decode(),
                "csr": make_csr(key, str(request["name"]), node=r["kind"] == "node",
                                hosts=[str(h) for h in r["hosts"]]).decode()}
        return out
    if op == "sign":
        ca = NodePKI(Path(request["dir"])).ca()
        answer: dict[str, Any] = {}
        for kind in ("node", "serving"):
            csr = request.get(f"{kind}_csr")
            if csr:
                answer[f"{kind}_cert"] = sign_csr(ca, str(csr).encode(), str(request["name"]),
                                                  node=kind == "node").decode()
        return answer
    raise IssuanceError(f"unknown issuance request {op!r}")


def answer(request: object) -> dict[str, Any]:
    """:func:`handle`'s answer, or ``{"error": ...}`` for a request it refused."""
    try:
        if not isinstance(request, dict):
            raise IssuanceError("an issuance request is a JSON object")
        return handle(request)
    except (CryptoError, ValueError, KeyError, TypeError, OSError) as e:  # IssuanceError too
        return {"error": str(e) or type(e).__name__}


def main() -> int:
    """A request on stdin, its answer on stdout."""
    try:
        request = json.loads(sys.stdin.buffer.read())
    except ValueError as e:
        request = None
        sys.stderr.write(f"not JSON: {e}\n")
    sys.stdout.write(json.dumps(answer(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
