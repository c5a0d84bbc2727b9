"""A node's crypto through the system libcrypto against ``cryptography`` (issue 11).

CPU time per operation (``time.process_time``, so a loaded machine inflates it less than
wall time), each done the way the node does it now (``shoal.store.system_crypto``
through ctypes) and the way it did before (``cryptography``, the same formats):

- a Secret written and read: the ``k8s:enc:aesgcm:v1`` envelope of a 1 KB document;
- a ServiceAccount token verified: signature only (a new token from a node whose
  certificate is known), and cold (the ``x5c`` certificate parsed and checked against
  the CA first); a token signed by a node key;
- the RSS a fresh interpreter that has imported ``ssl`` gains by importing the
  ``cryptography`` modules the node used (``/proc/self/status`` VmRSS, in a child).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal.authz import service_account_tokens as tokens
from shoal.mesh import pki
from shoal.store import system_crypto
from shoal.store.secret_encryption import PREFIX, SecretCipher

_RSS_PROBE = """
import ssl
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
before = rss()
if {load}:
    import cryptography.x509, cryptography.hazmat.primitives.ciphers.aead
    import cryptography.hazmat.primitives.asymmetric.ec, cryptography.hazmat.primitives.serialization
print(round(rss() - before, 1))
"""


def _cpu_us(op: Callable[[], object], n: int) -> float:
    op()
    t0 = time.process_time()
    for _ in range(n):
        op()
    return round((time.process_time() - t0) * 1e6 / n, 1)


def _rss_added_by_cryptography() -> float:
    def probe(load: bool) -> float:
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE.format(load=load)],
                             capture_output=True, text=True, check=True)
        return float(out.stdout)
    return round(min(probe(True) for _ in range(3)) - min(probe(False) for _ in range(3)), 1)


def run(quick: bool = False) -> dict[str, Any]:
    n = 300 if quick else 2000
    key = os.urandom(32)
    cipher, aes = SecretCipher([("key1", key)]), AESGCM(key)
    document = os.urandom(1024)
    context = b"secrets/default/s1/doc"

    def old_seal() -> bytes:
        nonce = os.urandom(12)
        return PREFIX + b"key1:" + nonce + aes.encrypt(nonce, document, context)

    sealed = cipher.encrypt(document, context)
    body = sealed[len(PREFIX + b"key1:"):]

    ca = pki.create_ca()
    node = pki.issue(ca, "pi-1", organizations=(tokens.NODE_ORG,), client=True, server=True)
    issuer = tokens.TokenIssuer("pi-1", node.key_pem, node.cert_pem)
    token = issuer.issue("default", "default", "uid", now=time.time(),
                         binding=tokens.Binding("web", "pod-uid", "pi-1", "")).token
    head, claims, sig = token.split(".")
    signed = f"{head}.{claims}".encode()
    raw = base64.urlsafe_b64decode(sig + "==")
    der_sig = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                   int.from_bytes(raw[32:], "big"))
    cert_der = system_crypto.load_pem_certificate(node.cert_pem).der
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    old_cert = x509.load_pem_x509_certificate(node.cert_pem)
    old_key = serialization.load_pem_private_key(node.key_pem, password=None)
    assert isinstance(old_key, ec.EllipticCurvePrivateKey)

    def new_verify_cold() -> object:
        tokens._verified.clear()
        tokens._node_cert.cache_clear()
        return tokens.decode(token, ca_cert_pem=ca.cert_pem, now=time.time())

    def new_verify_signature() -> object:
        tokens._verified.clear()
        return tokens.decode(token, ca_cert_pem=ca.cert_pem, now=time.time())

    def old_verify_signature() -> None:
        old_cert.public_key().verify(der_sig, signed, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg, arg-type, union-attr]

    def old_verify_cold() -> None:
        cert = x509.load_der_x509_certificate(cert_der)
        cert.verify_directly_issued_by(ca_cert)
        cert.public_key().verify(der_sig, signed, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg, arg-type, union-attr]

    def old_sign() -> bytes:
        r, s = decode_dss_signature(old_key.sign(signed, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    new_key = system_crypto.load_private_key(node.key_pem)
    pairs = {
        "secret_write_us": (lambda: cipher.encrypt(document, context), old_seal),
        "secret_read_us": (lambda: cipher.decrypt(sealed, context),
                           lambda: aes.decrypt(body[:12], body[12:], context)),
        "token_verify_signature_us": (new_verify_signature, old_verify_signature),
        "token_verify_cold_us": (new_verify_cold, old_verify_cold),
        "token_sign_us": (lambda: new_key.sign_es256(signed), old_sign),
    }
    result: dict[str, Any] = {"ops": n, "load_avg": os.getloadavg()[0]}
    for name, (new, old) in pairs.items():
        ops = n if name.startswith("secret") else max(50, n // 10)
        result[name] = {"system_libcrypto": _cpu_us(new, ops), "cryptography": _cpu_us(old, ops)}
    result["rss_added_by_importing_cryptography_mb"] = _rss_added_by_cryptography()
    result["load_avg_after"] = os.getloadavg()[0]
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=2))
