"""The cluster's certificates: a CA, serving certificates and client credentials.

On first start a node creates the cluster CA under its data dir. Serving
certificates cover the node's bind and advertise addresses. The admin
credential is a client certificate (``O=system:masters``) plus a bearer token,
so any kubeconfig style works; both exist only on the node that created the CA
(a joined node gets its own node credential, nothing more).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.store.system_crypto import Certificate, CryptoError, load_pem_certificate

if TYPE_CHECKING:
    from cryptography import x509

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


class IssuanceError(ValueError):
    """An issuance request was refused (a bad certificate request, a missing CA key...)."""


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        """(Imports ``cryptography``: for tests and the CLI.)"""
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.cert_pem)


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
    """A new cluster CA (imports ``cryptography``: the CLI, tests and issuance only)."""
    from shoal.mesh import issuance

    return issuance.create_ca(common_name)


def issue(ca: KeyPair, common_name: str, **options: Any) -> KeyPair:
    """A leaf certificate signed by the CA: :func:`shoal.mesh.issuance.issue` (imports
    ``cryptography``: the CLI, tests and issuance only)."""
    from shoal.mesh import issuance

    return issuance.issue(ca, common_name, **options)


def run_issuance(request: dict[str, Any]) -> dict[str, Any]:
    """Answer a :mod:`shoal.mesh.issuance` request without loading ``cryptography`` here:
    in a child process, unless this process has loaded it already (the CLI, tests)."""
    if "cryptography" in sys.modules:
        from shoal.mesh import issuance

        return _issuance_answer(0, json.dumps(issuance.answer(request)).encode(), b"")
    proc = subprocess.run(_ISSUANCE_COMMAND, input=json.dumps(request).encode(),
                          capture_output=True, env=_issuance_env(), timeout=ISSUANCE_TIMEOUT,
                          check=False)
    return _issuance_answer(proc.returncode, proc.stdout, proc.stderr)


async def run_issuance_async(request: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_issuance` without blocking the event loop."""
    if "cryptography" in sys.modules:
        from shoal.mesh import issuance

        return _issuance_answer(0, json.dumps(issuance.answer(request)).encode(), b"")
    proc = await asyncio.create_subprocess_exec(
        *_ISSUANCE_COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_issuance_env())
    try:
        async with asyncio.timeout(ISSUANCE_TIMEOUT):
            out, err = await proc.communicate(json.dumps(request).encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise IssuanceError("the issuance process did not answer in time") from None
    return _issuance_answer(proc.returncode or 0, out, err)


ISSUANCE_TIMEOUT = 60.0
_ISSUANCE_COMMAND = (sys.executable, "-m", "shoal.mesh.issuance")


def _issuance_env() -> dict[str, str]:
    """This process's environment, with the directory ``shoal`` was imported from first on
    the path (a source tree run with PYTHONPATH, or an installed package)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _issuance_answer(code: int, out: bytes, err: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if code != 0 or not isinstance(answer, dict):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise IssuanceError(f"the issuance process failed (exit {code}): {tail[0]}")
    if "error" in answer:
        raise IssuanceError(str(answer["error"]))
    return answer


def host_names(hosts: list[str], name: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a node's certificates cover: its hosts, its name and
    the loopback names, each once, in order (wildcard binds left out)."""
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
    return dns, ips


def read_certificate(path: Path) -> Certificate | None:
    """The certificate in a PEM file, or None if there is none (or it does not parse)."""
    try:
        return load_pem_certificate(path.read_bytes())
    except (FileNotFoundError, CryptoError):
        return None


def covers(cert_path: Path, hosts: list[str], name: str) -> bool:
    """Whether the certificate exists and its SANs cover :func:`host_names`."""
    cert = read_certificate(cert_path)
    if cert is None:
        return False
    dns, ips = host_names(hosts, name)
    return set(dns) <= set(cert.dns_names) and set(ips) <= set(cert.ip_addresses)


def subject_common_name(cert_path: Path) -> str:
    """The CN of the certificate in a PEM file ("" if there is none)."""
    cert = read_certificate(cert_path)
    return cert.common_name if cert is not None else ""


def ca_hash(ca_cert_pem: bytes) -> str:
    """``sha256:<hex>`` of the CA's public key (as kubeadm join tokens pin it)."""
    return "sha256:" + hashlib.sha256(load_pem_certificate(ca_cert_pem).spki_der).hexdigest()


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

    @property
    def node_cert(self) -> Path:
        return self.dir / "node.crt"

    @property
    def node_key(self) -> Path:
        return self.dir / "node.key"

    def ca(self) -> KeyPair:
        return KeyPair(self.ca_cert.read_bytes(), self.ca_key.read_bytes())

    def signer_complete(self, node_name: str, hosts: list[str]) -> bool:
        """Whether a signer has every file :func:`shoal.mesh.issuance.prepare_signer`
        makes, for this name and these hosts."""
        return (all(p.exists() for p in (self.ca_cert, self.ca_key, self.admin_cert,
                                         self.admin_key, self.admin_token, self.server_key,
                                         self.node_key))
                and covers(self.server_cert, hosts, node_name)
                and covers(self.node_cert, hosts, node_name)
                and subject_common_name(self.node_cert) == node_name)
