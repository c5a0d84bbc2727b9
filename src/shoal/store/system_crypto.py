"""AES-GCM, ECDSA P-256 and certificate reading through the libcrypto ``ssl`` has loaded.

A running node needs only these few operations, and importing ``cryptography`` for them
costs 10 to 16 MB of RSS: it links its own copy of OpenSSL, while Python's ``ssl`` has
already mapped the system's. So they go through ``ctypes`` to that same library (the
symbols are looked up through ``_ssl``'s own handle, so it is the exact libcrypto the
TLS connections use). OpenSSL 3 is required. Issuing certificates stays with
``cryptography``, in processes that are not the server (``shoal.mesh.issuance``).

Every OpenSSL object is freed in a ``finally`` (or by its owner's finaliser), every
return code is checked, and bad input (a garbage key, certificate or signature) raises
:class:`CryptoError`, a ``ValueError``, and clears OpenSSL's per-thread error queue so
that ``ssl`` never reports a stale error of ours.
"""

from __future__ import annotations

import calendar
import ctypes
import ctypes.util
import ipaddress
import struct
import weakref
from typing import Any

GCM_TAG_SIZE = 16
_EVP_CTRL_GCM_SET_IVLEN = 0x9
_EVP_CTRL_GCM_GET_TAG = 0x10
_EVP_CTRL_GCM_SET_TAG = 0x11
_EVP_PKEY_EC = 408
_NID_COMMON_NAME = 13
_NID_ORGANIZATION = 17
_NID_SUBJECT_ALT_NAME = 85
_GEN_DNS = 2
_GEN_IPADD = 7
P256_GROUP = "prime256v1"


class CryptoError(ValueError):
    """Bad input (a key, certificate, signature or ciphertext that does not hold)."""


def _library() -> ctypes.CDLL:
    import _ssl  # the extension module links libcrypto: its handle resolves its symbols

    for candidate in (_ssl.__file__, None, ctypes.util.find_library("crypto")):
        try:
            lib = ctypes.CDLL(candidate)
            lib.EVP_PKEY_get_base_id  # noqa: B018 (OpenSSL 3's name: fail here, not later)
            return lib
        except (OSError, AttributeError, TypeError):
            continue
    raise ImportError("no OpenSSL 3 libcrypto found (the one Python's ssl module uses)")


_lib = _library()
_P = ctypes.c_void_p
_I = ctypes.c_int
_S = ctypes.c_size_t
_B = ctypes.c_char_p


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_ERR_clear_error = _fn("ERR_clear_error", None)
_CRYPTO_free = _fn("CRYPTO_free", None, _P, _B, _I)
_BIO_new_mem_buf = _fn("BIO_new_mem_buf", _P, _B, _I)
_BIO_free = _fn("BIO_free", _I, _P)
# ciphers
_EVP_CIPHER_fetch = _fn("EVP_CIPHER_fetch", _P, _P, _B, _B)
_EVP_MD_fetch = _fn("EVP_MD_fetch", _P, _P, _B, _B)
_EVP_CIPHER_CTX_new = _fn("EVP_CIPHER_CTX_new", _P)
_EVP_CIPHER_CTX_free = _fn("EVP_CIPHER_CTX_free", None, _P)
_EVP_CIPHER_CTX_ctrl = _fn("EVP_CIPHER_CTX_ctrl", _I, _P, _I, _I, _P)
_EVP_CipherInit_ex = _fn("EVP_CipherInit_ex", _I, _P, _P, _P, _B, _B, _I)
_EVP_CipherUpdate = _fn("EVP_CipherUpdate", _I, _P, _P, ctypes.POINTER(_I), _B, _I)
_EVP_CipherFinal_ex = _fn("EVP_CipherFinal_ex", _I, _P, _P, ctypes.POINTER(_I))
# keys and signatures
_EVP_MD_CTX_new = _fn("EVP_MD_CTX_new", _P)
_EVP_MD_CTX_free = _fn("EVP_MD_CTX_free", None, _P)
_EVP_DigestSignInit = _fn("EVP_DigestSignInit", _I, _P, _P, _P, _P, _P)
_EVP_DigestSign = _fn("EVP_DigestSign", _I, _P, _P, ctypes.POINTER(_S), _B, _S)
_EVP_DigestVerifyInit = _fn("EVP_DigestVerifyInit", _I, _P, _P, _P, _P, _P)
_EVP_DigestVerify = _fn("EVP_DigestVerify", _I, _P, _B, _S, _B, _S)
_EVP_PKEY_free = _fn("EVP_PKEY_free", None, _P)
_EVP_PKEY_get_base_id = _fn("EVP_PKEY_get_base_id", _I, _P)
_EVP_PKEY_get_group_name = _fn("EVP_PKEY_get_group_name", _I, _P, _P, _S, ctypes.POINTER(_S))
_PEM_read_bio_PrivateKey = _fn("PEM_read_bio_PrivateKey", _P, _P, _P, _P, _B)
_d2i_PUBKEY = _fn("d2i_PUBKEY", _P, _P, ctypes.POINTER(_P), ctypes.c_long)
_i2d_PUBKEY = _fn("i2d_PUBKEY", _I, _P, ctypes.POINTER(_P))
# certificates and requests
_PEM_read_bio_X509 = _fn("PEM_read_bio_X509", _P, _P, _P, _P, _B)
_d2i_X509 = _fn("d2i_X509", _P, _P, ctypes.POINTER(_P), ctypes.c_long)
_i2d_X509 = _fn("i2d_X509", _I, _P, ctypes.POINTER(_P))
_X509_free = _fn("X509_free", None, _P)
_X509_get_pubkey = _fn("X509_get_pubkey", _P, _P)
_X509_get_X509_PUBKEY = _fn("X509_get_X509_PUBKEY", _P, _P)
_i2d_X509_PUBKEY = _fn("i2d_X509_PUBKEY", _I, _P, ctypes.POINTER(_P))
_X509_get_subject_name = _fn("X509_get_subject_name", _P, _P)
_X509_get_issuer_name = _fn("X509_get_issuer_name", _P, _P)
_X509_NAME_cmp = _fn("X509_NAME_cmp", _I, _P, _P)
_X509_NAME_entry_count = _fn("X509_NAME_entry_count", _I, _P)
_X509_NAME_get_entry = _fn("X509_NAME_get_entry", _P, _P, _I)
_X509_NAME_ENTRY_get_object = _fn("X509_NAME_ENTRY_get_object", _P, _P)
_X509_NAME_ENTRY_get_data = _fn("X509_NAME_ENTRY_get_data", _P, _P)
_OBJ_obj2nid = _fn("OBJ_obj2nid", _I, _P)
_ASN1_STRING_to_UTF8 = _fn("ASN1_STRING_to_UTF8", _I, ctypes.POINTER(_P), _P)
_ASN1_STRING_get0_data = _fn("ASN1_STRING_get0_data", _P, _P)
_ASN1_STRING_length = _fn("ASN1_STRING_length", _I, _P)
_ASN1_TIME_to_tm = _fn("ASN1_TIME_to_tm", _I, _P, _P)
_X509_get0_notBefore = _fn("X509_get0_notBefore", _P, _P)
_X509_get0_notAfter = _fn("X509_get0_notAfter", _P, _P)
_X509_verify = _fn("X509_verify", _I, _P, _P)
_X509_get_ext_d2i = _fn("X509_get_ext_d2i", _P, _P, _I, _P, _P)
_GENERAL_NAMES_free = _fn("GENERAL_NAMES_free", None, _P)
_OPENSSL_sk_num = _fn("OPENSSL_sk_num", _I, _P)
_OPENSSL_sk_value = _fn("OPENSSL_sk_value", _P, _P, _I)
_PEM_read_bio_X509_REQ = _fn("PEM_read_bio_X509_REQ", _P, _P, _P, _P, _B)
_X509_REQ_free = _fn("X509_REQ_free", None, _P)
_X509_REQ_get0_pubkey = _fn("X509_REQ_get0_pubkey", _P, _P)
_X509_REQ_verify = _fn("X509_REQ_verify", _I, _P, _P)

_NO_PASSPHRASE = b""
"""Given as the passphrase so that an encrypted PEM fails instead of prompting a tty."""


def _fetched(fetch: Any, name: bytes) -> int:
    """An algorithm fetched once: OpenSSL 3 fetches it again on every init otherwise, which
    cost more than the AES-GCM of a Secret itself."""
    algorithm = fetch(None, name, None)
    if not algorithm:
        _ERR_clear_error()
        raise ImportError(f"the system libcrypto has no {name.decode()}")
    return int(algorithm)


_AES_GCM = {16: _fetched(_EVP_CIPHER_fetch, b"AES-128-GCM"),
            24: _fetched(_EVP_CIPHER_fetch, b"AES-192-GCM"),
            32: _fetched(_EVP_CIPHER_fetch, b"AES-256-GCM")}
_SHA256 = _fetched(_EVP_MD_fetch, b"SHA256")


class _GeneralName(ctypes.Structure):
    _fields_ = [("type", _I), ("d", _P)]


def _fail(what: str) -> CryptoError:
    _ERR_clear_error()
    return CryptoError(what)


# -- AES-GCM ---------------------------------------------------------------------------------


def _gcm(encrypt: bool, key: bytes, nonce: bytes, data: bytes, aad: bytes,
         tag: bytes = b"") -> bytes:
    # ctypes passes only bytes as a char pointer (SQLite or a caller may hand a memoryview).
    key, nonce, data, aad, tag = (bytes(b) for b in (key, nonce, data, aad, tag))
    cipher = _AES_GCM.get(len(key))
    if cipher is None:
        raise CryptoError("AES-GCM keys are 16, 24 or 32 bytes")
    if not 8 <= len(nonce) <= 128:
        raise CryptoError("AES-GCM nonces are 8 to 128 bytes")
    if max(len(data), len(aad)) >= 2**31:
        raise CryptoError("too long for one AES-GCM call")
    ctx = _EVP_CIPHER_CTX_new()
    if not ctx:
        raise MemoryError("EVP_CIPHER_CTX_new")
    try:
        n = _I(0)
        out = ctypes.create_string_buffer(len(data) + 16)
        ok = (_EVP_CipherInit_ex(ctx, cipher, None, None, None, int(encrypt)) == 1
              and _EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_SET_IVLEN, len(nonce), None) == 1
              and _EVP_CipherInit_ex(ctx, None, None, key, nonce, int(encrypt)) == 1
              and (not aad or _EVP_CipherUpdate(ctx, None, ctypes.byref(n), aad, len(aad)) == 1)
              and _EVP_CipherUpdate(ctx, out, ctypes.byref(n), data, len(data)) == 1)
        if not ok:
            raise _fail("AES-GCM setup failed")
        written = n.value
        if not encrypt:
            tag_buf = ctypes.create_string_buffer(tag, GCM_TAG_SIZE)
            if _EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_SET_TAG, GCM_TAG_SIZE, tag_buf) != 1:
                raise _fail("AES-GCM setup failed")
        tail = _I(0)
        if _EVP_CipherFinal_ex(ctx, ctypes.byref(out, written), ctypes.byref(tail)) != 1:
            raise _fail("authentication failed")
        written += tail.value
        if not encrypt:
            return out.raw[:written]
        tag_out = ctypes.create_string_buffer(GCM_TAG_SIZE)
        if _EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_GET_TAG, GCM_TAG_SIZE, tag_out) != 1:
            raise _fail("AES-GCM tag failed")
        return out.raw[:written] + tag_out.raw
    finally:
        _EVP_CIPHER_CTX_free(ctx)


def aes_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """The ciphertext followed by the 16-byte tag (as ``cryptography``'s ``AESGCM``)."""
    return _gcm(True, key, nonce, plaintext, aad)


def aes_gcm_decrypt(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext; :class:`CryptoError` if the key, nonce, data or ``aad`` differ."""
    if len(sealed) < GCM_TAG_SIZE:
        raise CryptoError("authentication failed")
    return _gcm(False, key, nonce, sealed[:-GCM_TAG_SIZE], aad, sealed[-GCM_TAG_SIZE:])


# -- keys ------------------------------------------------------------------------------------


class _Key:
    """An ``EVP_PKEY`` this object owns (freed with it)."""

    def __init__(self, pkey: int) -> None:
        self._pkey = pkey
        weakref.finalize(self, _EVP_PKEY_free, pkey)

    @property
    def spki_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo."""
        return _public_der(self._pkey)

    def is_p256(self) -> bool:
        if _EVP_PKEY_get_base_id(self._pkey) != _EVP_PKEY_EC:
            return False
        name = ctypes.create_string_buffer(64)
        size = _S(0)
        if _EVP_PKEY_get_group_name(self._pkey, name, len(name), ctypes.byref(size)) != 1:
            _ERR_clear_error()
            return False
        return bool(name.value.decode() == P256_GROUP)


class PublicKey(_Key):
    def verify_es256(self, signed: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (JOSE's 64 bytes, r then s) signs ``signed`` with SHA-256."""
        if len(signature) != 64:
            return False
        der = _der_signature(signature)
        md = _EVP_MD_CTX_new()
        if not md:
            raise MemoryError("EVP_MD_CTX_new")
        try:
            if _EVP_DigestVerifyInit(md, None, _SHA256, None, self._pkey) != 1:
                raise _fail("this key cannot verify ECDSA signatures")
            ok = bool(_EVP_DigestVerify(md, der, len(der), signed, len(signed)) == 1)
            if not ok:
                _ERR_clear_error()
            return ok
        finally:
            _EVP_MD_CTX_free(md)


class PrivateKey(_Key):
    def sign_es256(self, data: bytes) -> bytes:
        """An ECDSA P-256 SHA-256 signature of ``data`` in JOSE's form (r then s, 64 bytes)."""
        md = _EVP_MD_CTX_new()
        if not md:
            raise MemoryError("EVP_MD_CTX_new")
        try:
            size = _S(0)
            if (_EVP_DigestSignInit(md, None, _SHA256, None, self._pkey) != 1
                    or _EVP_DigestSign(md, None, ctypes.byref(size), data, len(data)) != 1):
                raise _fail("this key cannot sign")
            sig = ctypes.create_string_buffer(size.value)
            if _EVP_DigestSign(md, sig, ctypes.byref(size), data, len(data)) != 1:
                raise _fail("signing failed")
            return _raw_signature(sig.raw[:size.value])
        finally:
            _EVP_MD_CTX_free(md)


def _from_pem(read: Any, pem: bytes, what: str) -> int:
    """The first object a ``PEM_read_bio_*`` function finds in ``pem`` (the caller frees)."""
    if len(pem) >= 2**31:
        raise CryptoError("too long")
    bio = _BIO_new_mem_buf(pem, len(pem))
    if not bio:
        raise MemoryError("BIO_new_mem_buf")
    try:
        obj = read(bio, None, None, _NO_PASSPHRASE)
    finally:
        _BIO_free(bio)
    if not obj:
        raise _fail(f"not a PEM {what}")
    return int(obj)


def _from_der(decode: Any, der: bytes, what: str) -> int:
    """The object a ``d2i_*`` function decodes from ``der`` (the caller frees)."""
    buf = ctypes.create_string_buffer(der, len(der))
    p = _P(ctypes.addressof(buf))
    obj = decode(None, ctypes.byref(p), len(der))
    if not obj:
        raise _fail(f"not a DER {what}")
    return int(obj)


def load_private_key(pem: bytes) -> PrivateKey:
    """A PEM private key (PKCS#8 or traditional; encrypted ones are refused)."""
    return PrivateKey(_from_pem(_PEM_read_bio_PrivateKey, pem, "private key"))


def load_public_key(spki_der: bytes) -> PublicKey:
    """A public key from DER SubjectPublicKeyInfo."""
    return PublicKey(_from_der(_d2i_PUBKEY, spki_der, "public key"))


def _public_der(pkey: int) -> bytes:
    return _i2d(_i2d_PUBKEY, pkey, "public key")


def _i2d(encode: Any, obj: int, what: str) -> bytes:
    size = encode(obj, None)
    if size <= 0:
        raise _fail(f"cannot encode the {what}")
    buf = ctypes.create_string_buffer(size)
    p = _P(ctypes.addressof(buf))
    if encode(obj, ctypes.byref(p)) != size:
        raise _fail(f"cannot encode the {what}")
    return buf.raw


def _der_int(value: bytes) -> bytes:
    value = value.lstrip(b"\0") or b"\0"
    if value[0] & 0x80:
        value = b"\0" + value
    return b"\x02" + bytes([len(value)]) + value


def _der_signature(raw: bytes) -> bytes:
    """JOSE's r||s as the DER ``ECDSA-Sig-Value`` OpenSSL verifies."""
    body = _der_int(raw[:32]) + _der_int(raw[32:])
    return b"\x30" + bytes([len(body)]) + body


def _raw_signature(der: bytes) -> bytes:
    """OpenSSL's DER ``ECDSA-Sig-Value`` as JOSE's r||s (32 bytes each, for P-256)."""
    def integer(at: int) -> tuple[bytes, int]:
        if der[at] != 0x02 or der[at + 1] > 33:
            raise CryptoError("unexpected ECDSA signature encoding")
        end = at + 2 + der[at + 1]
        return der[at + 2:end].lstrip(b"\0"), end

    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise CryptoError("unexpected ECDSA signature encoding")
    r, at = integer(2)
    s, end = integer(at)
    if end != len(der) or len(r) > 32 or len(s) > 32:
        raise CryptoError("unexpected ECDSA signature encoding")
    return r.rjust(32, b"\0") + s.rjust(32, b"\0")


# -- certificates ----------------------------------------------------------------------------


class Certificate:
    """An X.509 certificate: what a node reads from it, read once, and the OpenSSL object
    (freed with this one) for checking who issued it."""

    def __init__(self, x509: int) -> None:
        """Takes ``x509`` over: it is freed with this object, even if this raises."""
        self._x509 = x509
        weakref.finalize(self, _X509_free, x509)
        pkey = _X509_get_pubkey(x509)  # a reference of our own, freed by PublicKey
        if not pkey:
            raise _fail("a certificate without a readable public key")
        self._key = PublicKey(pkey)
        self.der = _i2d(_i2d_X509, x509, "certificate")
        self.common_name, self.organizations = _subject(x509)
        self.not_before = _time(_X509_get0_notBefore(x509))  # unix seconds
        self.not_after = _time(_X509_get0_notAfter(x509))
        # The X509_PUBKEY as it stands in the certificate: encoding the EVP_PKEY again
        # (i2d_PUBKEY) goes through OpenSSL 3's encoders, 100 us.
        self.spki_der = _i2d(_i2d_X509_PUBKEY, _X509_get_X509_PUBKEY(x509), "public key")
        self.dns_names, self.ip_addresses = _sans(x509)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def public_key(self) -> PublicKey:
        return self._key

    def issued_by(self, ca: Certificate) -> bool:
        """Whether ``ca`` signed this certificate: its issuer is the CA's subject and the CA's
        key verifies its signature (as ``cryptography``'s ``verify_directly_issued_by``)."""
        ok = bool(_X509_NAME_cmp(_X509_get_issuer_name(self._x509),
                                 _X509_get_subject_name(ca._x509)) == 0
                  and _X509_verify(self._x509, ca._key._pkey) == 1)
        if not ok:
            _ERR_clear_error()
        return ok


def _text(asn1_string: int) -> str:
    out = _P()
    n = _ASN1_STRING_to_UTF8(ctypes.byref(out), asn1_string)
    if n < 0 or not out.value:
        raise _fail("a name that is not text")
    try:
        return ctypes.string_at(out.value, n).decode("utf-8", errors="replace")
    finally:
        _CRYPTO_free(out.value, b"", 0)


def _subject(x: int) -> tuple[str, tuple[str, ...]]:
    name = _X509_get_subject_name(x)
    cn = ""
    orgs: list[str] = []
    for i in range(_X509_NAME_entry_count(name)):
        entry = _X509_NAME_get_entry(name, i)
        nid = _OBJ_obj2nid(_X509_NAME_ENTRY_get_object(entry))
        if nid == _NID_COMMON_NAME and not cn:
            cn = _text(_X509_NAME_ENTRY_get_data(entry))
        elif nid == _NID_ORGANIZATION:
            orgs.append(_text(_X509_NAME_ENTRY_get_data(entry)))
    return cn, tuple(orgs)


def _time(asn1_time: int) -> float:
    tm = ctypes.create_string_buffer(128)  # struct tm, with room for any libc's tail
    if not asn1_time or _ASN1_TIME_to_tm(asn1_time, tm) != 1:
        raise _fail("a certificate with an unreadable validity")
    sec, minute, hour, mday, mon, year = struct.unpack_from("6i", tm.raw)
    return float(calendar.timegm((year + 1900, mon + 1, mday, hour, minute, sec)))


def _sans(x: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = _X509_get_ext_d2i(x, _NID_SUBJECT_ALT_NAME, None, None)
    if not names:
        _ERR_clear_error()
        return (), ()
    dns: list[str] = []
    ips: list[str] = []
    try:
        for i in range(_OPENSSL_sk_num(names)):
            gn = ctypes.cast(_OPENSSL_sk_value(names, i), ctypes.POINTER(_GeneralName))
            if not gn or gn.contents.type not in (_GEN_DNS, _GEN_IPADD) or not gn.contents.d:
                continue
            data = ctypes.string_at(_ASN1_STRING_get0_data(gn.contents.d),
                                    _ASN1_STRING_length(gn.contents.d))
            if gn.contents.type == _GEN_DNS:
                dns.append(data.decode("ascii", errors="replace"))
            elif len(data) in (4, 16):
                ips.append(str(ipaddress.ip_address(data)))
    finally:
        _GENERAL_NAMES_free(names)
    return tuple(dns), tuple(ips)


def load_pem_certificate(pem: bytes) -> Certificate:
    """The first certificate of a PEM file."""
    return Certificate(_from_pem(_PEM_read_bio_X509, pem, "certificate"))


def load_der_certificate(der: bytes) -> Certificate:
    return Certificate(_from_der(_d2i_X509, der, "certificate"))


def csr_public_key(pem: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a PEM certificate request whose signature holds."""
    req = _from_pem(_PEM_read_bio_X509_REQ, pem, "certificate request")
    try:
        key = _X509_REQ_get0_pubkey(req)
        if not key or _X509_REQ_verify(req, key) != 1:
            raise _fail("the certificate request's signature is not valid")
        return _public_der(key)
    finally:
        _X509_REQ_free(req)
