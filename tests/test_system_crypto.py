"""The system-libcrypto bindings agree with ``cryptography`` byte for byte, so Secrets sealed
and tokens signed before the switch still open and verify, and the other way round; and
no malformed key, certificate, signature or ciphertext crashes the process."""

from __future__ import annotations

import base64
import datetime
import os
import subprocess
import sys

import orjson
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.authz import service_account_tokens as tokens
from shoal.mesh import pki
from shoal.store import system_crypto as sc
from shoal.store.secret_encryption import PREFIX, DecryptError, SecretCipher

CA = pki.create_ca()
OTHER_CA = pki.create_ca("another-ca")
NODE = pki.issue(CA, "pi-1", organizations=("shoal:nodes", "team"), dns_names=("pi-1.lan",),
                 ips=("10.1.2.3", "fd00::7"), server=True, client=True)


def _ec_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


NODE_KEY = _ec_key(NODE.key_pem)
FAST = settings(max_examples=40, deadline=None)

keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
nonces = st.binary(min_size=12, max_size=12)


@FAST
@given(keys, nonces, st.binary(max_size=2048), st.binary(max_size=64))
def test_aes_gcm_sealed_here_opens_with_cryptography_and_back(
        key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> None:
    ours = sc.aes_gcm_encrypt(key, nonce, plaintext, aad)
    assert ours == AESGCM(key).encrypt(nonce, plaintext, aad)
    assert AESGCM(key).decrypt(nonce, ours, aad) == plaintext
    assert sc.aes_gcm_decrypt(key, nonce, AESGCM(key).encrypt(nonce, plaintext, aad),
                              aad) == plaintext


@FAST
@given(keys, nonces, st.binary(max_size=256), st.binary(max_size=32), st.data())
def test_an_altered_ciphertext_or_context_is_refused_by_both(
        key: bytes, nonce: bytes, plaintext: bytes, aad: bytes, data: st.DataObject) -> None:
    sealed = bytearray(AESGCM(key).encrypt(nonce, plaintext, aad))
    at = data.draw(st.integers(0, len(sealed) - 1))
    sealed[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(sc.CryptoError):
        sc.aes_gcm_decrypt(key, nonce, bytes(sealed), aad)
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(nonce, bytes(sealed), aad)
    with pytest.raises(sc.CryptoError):
        sc.aes_gcm_decrypt(key, nonce, AESGCM(key).encrypt(nonce, plaintext, aad), aad + b"x")


@FAST
@given(st.binary(max_size=512), st.binary(max_size=64))
def test_a_secret_sealed_by_the_old_code_opens_and_one_sealed_now_opens_with_the_old(
        plaintext: bytes, context: bytes) -> None:
    key = os.urandom(32)
    cipher = SecretCipher([("key1", key)])
    nonce = os.urandom(12)
    # The envelope the cryptography-based SecretCipher wrote (unchanged format).
    old = PREFIX + b"key1:" + nonce + AESGCM(key).encrypt(nonce, plaintext, context)
    assert cipher.decrypt(old, context) == plaintext
    new = cipher.encrypt(plaintext, context)
    body = new[len(PREFIX + b"key1:"):]
    assert AESGCM(key).decrypt(body[:12], body[12:], context) == plaintext


@FAST
@given(st.binary(max_size=80))
def test_a_truncated_or_garbage_envelope_is_a_decrypt_error(tail: bytes) -> None:
    cipher = SecretCipher([("key1", os.urandom(32))])
    with pytest.raises(DecryptError):
        cipher.decrypt(PREFIX + b"key1:" + tail, b"ctx")


@FAST
@given(st.binary(max_size=512))
def test_es256_signatures_made_here_verify_with_cryptography_and_back(data: bytes) -> None:
    ours = sc.load_private_key(NODE.key_pem).sign_es256(data)
    assert len(ours) == 64
    der = encode_dss_signature(int.from_bytes(ours[:32], "big"), int.from_bytes(ours[32:], "big"))
    NODE_KEY.public_key().verify(der, data, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(NODE_KEY.sign(data, ec.ECDSA(hashes.SHA256())))
    theirs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    public = sc.load_pem_certificate(NODE.cert_pem).public_key()
    assert public.verify_es256(data, theirs)
    assert not public.verify_es256(data + b"!", theirs)


@FAST
@given(st.binary(max_size=80), st.binary(max_size=64))
def test_a_garbage_signature_is_refused_by_both(signature: bytes, data: bytes) -> None:
    public = sc.load_pem_certificate(NODE.cert_pem).public_key()
    assert not public.verify_es256(data, signature)
    if len(signature) == 64:
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                   int.from_bytes(signature[32:], "big"))
        with pytest.raises(InvalidSignature):
            NODE_KEY.public_key().verify(der, data, ec.ECDSA(hashes.SHA256()))


def test_a_certificate_reads_as_cryptography_reads_it() -> None:
    ours = sc.load_pem_certificate(NODE.cert_pem)
    theirs = x509.load_pem_x509_certificate(NODE.cert_pem)
    assert ours.der == theirs.public_bytes(serialization.Encoding.DER)
    assert ours == sc.load_der_certificate(ours.der)
    assert ours.common_name == "pi-1" and ours.organizations == ("shoal:nodes", "team")
    assert ours.not_before == theirs.not_valid_before_utc.timestamp()
    assert ours.not_after == theirs.not_valid_after_utc.timestamp()
    assert ours.spki_der == theirs.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ours.dns_names == ("pi-1.lan",)
    assert ours.ip_addresses == ("10.1.2.3", "fd00::7")
    assert sc.load_private_key(NODE.key_pem).spki_der == ours.spki_der
    assert sc.load_pem_certificate(CA.cert_pem).dns_names == ()


def test_issued_by_agrees_with_cryptography() -> None:
    cert = sc.load_pem_certificate(NODE.cert_pem)
    ca, other = sc.load_pem_certificate(CA.cert_pem), sc.load_pem_certificate(OTHER_CA.cert_pem)
    theirs = x509.load_pem_x509_certificate(NODE.cert_pem)
    assert cert.issued_by(ca)
    theirs.verify_directly_issued_by(x509.load_pem_x509_certificate(CA.cert_pem))
    assert not cert.issued_by(other) and not ca.issued_by(cert)
    with pytest.raises(ValueError):  # the issuer's name differs
        theirs.verify_directly_issued_by(x509.load_pem_x509_certificate(OTHER_CA.cert_pem))
    impostor = _same_name_other_key_ca()
    assert not cert.issued_by(sc.load_der_certificate(
        impostor.public_bytes(serialization.Encoding.DER)))
    with pytest.raises(InvalidSignature):
        theirs.verify_directly_issued_by(impostor)


def _same_name_other_key_ca() -> x509.Certificate:
    """A CA with our CA's name and another key: the name matches, the signature does not."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.load_pem_x509_certificate(CA.cert_pem).subject
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))


@FAST
@given(st.binary(max_size=600))
def test_garbage_keys_certificates_and_requests_are_errors_never_crashes(blob: bytes) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(blob) + b"-----END CERTIFICATE-----\n"
    for load, arg in ((sc.load_pem_certificate, pem), (sc.load_pem_certificate, blob),
                      (sc.load_der_certificate, blob), (sc.load_private_key, blob),
                      (sc.load_private_key, pem.replace(b"CERTIFICATE", b"PRIVATE KEY")),
                      (sc.load_public_key, blob),
                      (sc.csr_public_key, pem.replace(b"CERTIFICATE", b"CERTIFICATE REQUEST"))):
        with pytest.raises(sc.CryptoError):
            load(arg)


def test_an_encrypted_private_key_is_refused_without_asking_for_a_passphrase() -> None:
    encrypted = NODE_KEY.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret"))
    with pytest.raises(sc.CryptoError):
        sc.load_private_key(encrypted)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _old_sign(payload: dict[str, object], key_pem: bytes, header: dict[str, object]) -> str:
    """How the cryptography-based code signed a token."""
    key = _ec_key(key_pem)
    head = _b64(orjson.dumps({"alg": "ES256", "typ": "JWT", **header}))
    body = _b64(orjson.dumps(payload))
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _old_verify(token: str, cert_pem: bytes) -> bool:
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        key.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def test_tokens_signed_by_the_old_code_decode_now_and_new_ones_verify_with_the_old() -> None:
    now = datetime.datetime.now(datetime.UTC).timestamp()
    payload = tokens.claims("team", "default", "sa-uid", [], now, 3600,
                            tokens.Binding("web", "pod-uid", "pi-1", ""))
    x5c = [base64.b64encode(sc.load_pem_certificate(NODE.cert_pem).der).decode()]
    old_node = _old_sign(payload, NODE.key_pem, {"x5c": x5c})
    old_ca = _old_sign(payload, CA.key_pem, {})
    assert tokens.decode(old_node, ca_cert_pem=CA.cert_pem, now=now) == (payload, "pi-1")
    assert tokens.decode(old_ca, ca_cert_pem=CA.cert_pem, now=now) == (payload, "")
    issuer = tokens.TokenIssuer("pi-1", NODE.key_pem, NODE.cert_pem, CA.key_pem)
    by_node = issuer.issue("team", "default", "sa-uid", now=now,
                           binding=tokens.Binding("web", "pod-uid", "pi-1", "")).token
    by_ca = issuer.issue("team", "default", "sa-uid", now=now).token
    assert _old_verify(by_node, NODE.cert_pem) and _old_verify(by_ca, CA.cert_pem)
    assert not _old_verify(by_node, CA.cert_pem)
    kid = orjson.loads(base64.urlsafe_b64decode(by_ca.split(".")[0] + "=="))["kid"]
    ca_spki = x509.load_pem_x509_certificate(CA.cert_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kid == tokens.key_id(ca_spki)


@FAST
@given(st.text(max_size=300), st.binary(max_size=200))
def test_a_garbage_token_or_header_certificate_is_refused_never_a_crash(
        text: str, blob: bytes) -> None:
    now = datetime.datetime.now(datetime.UTC).timestamp()
    forged_head = _b64(orjson.dumps({"alg": "ES256", "x5c": [base64.b64encode(blob).decode()]}))
    body = _b64(orjson.dumps({"iss": tokens.ISSUER, "exp": now + 60}))
    for token in (text, f"{text}.{text}.{text}", f"{forged_head}.{body}.{_b64(blob)}"):
        assert tokens.decode(token, ca_cert_pem=CA.cert_pem, now=now) is None


def test_the_server_and_everything_it_imports_leave_cryptography_unloaded() -> None:
    # A child interpreter: this one has loaded cryptography for the cross-checks.
    probe = ("import sys, shoal.cli.main, shoal.cli.node, shoal.mesh.join, "
             "shoal.mesh.cert_renewal\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
