"""Secrets encrypted at rest, as Kubernetes' EncryptionConfiguration ``aesgcm`` provider.

A stored value is ``k8s:enc:aesgcm:v1:<key name>:`` + a random 12-byte nonce + the
AES-GCM ciphertext and tag. The key's name travels in the value, so a second key can
be added later and old values still read (rotation: write with the first key, read
with any). The row's identity (resource, namespace, name and column) is the
authenticated data, as the apiserver binds a value to its etcd key: a value moved to
another row does not decrypt.

The keys live in ``DATA_DIR/pki/secrets-encryption.key`` (0600), one ``name:base64``
line each, the first one used for writing; the file is created on first start with a
random 32-byte key. Each peer has its own: replication carries plaintext over mutual
TLS, and only the disk sees ciphertext. Losing the file loses this node's Secrets
(a peer still holds them, and they replicate back to a fresh data dir).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from shoal.store.system_crypto import CryptoError, aes_gcm_decrypt, aes_gcm_encrypt

KEY_FILE = "secrets-encryption.key"
PREFIX = b"k8s:enc:aesgcm:v1:"
NONCE_SIZE = 12
ENCRYPTED_RESOURCES = frozenset({"secrets"})
"""Storage resources whose rows are encrypted: Kubernetes' usual configuration."""


class DecryptError(Exception):
    """A stored value could not be decrypted (unknown key, or altered or moved)."""


def key_path(data_dir: Path) -> Path:
    return data_dir / "pki" / KEY_FILE


class SecretCipher:
    """AES-GCM with named keys: writes with the first, reads with whichever a value names."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = dict(keys)
        self.write_key = keys[0][0]
        self._prefix = PREFIX + self.write_key.encode() + b":"

    def encrypt(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return self._prefix + nonce + aes_gcm_encrypt(self._keys[self.write_key], nonce,
                                                      plaintext, context)

    def decrypt(self, stored: bytes, context: bytes) -> bytes:
        if not is_encrypted(stored):
            raise DecryptError("not an aesgcm envelope")
        name, sep, rest = stored[len(PREFIX):].partition(b":")
        key = self._keys.get(name.decode(errors="replace"))
        if not sep or key is None:
            raise DecryptError(f"no key named {name.decode(errors='replace')!r}")
        try:
            return aes_gcm_decrypt(key, rest[:NONCE_SIZE], rest[NONCE_SIZE:], context)
        except CryptoError as e:
            raise DecryptError("authentication failed (wrong key, or the value was altered "
                               "or moved)") from e


def is_encrypted(stored: bytes) -> bool:
    return stored.startswith(PREFIX)


def load_or_create(path: Path) -> SecretCipher:
    """The node's keys, creating the file (0600, in a 0700 directory) on first start."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        first = f"key1:{base64.b64encode(secrets.token_bytes(32)).decode()}\n".encode()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(first)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # never a half-written key file
    os.chmod(path, 0o600)
    keys: list[tuple[str, bytes]] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, encoded = line.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error as e:
            raise ValueError(f"{path}:{n}: the key is not base64") from e
        if not name or len(key) not in (16, 24, 32):
            raise ValueError(f"{path}:{n}: expected name:base64 of a 16, 24 or 32-byte key")
        keys.append((name, key))
    if not keys:
        raise ValueError(f"{path} holds no key")
    return SecretCipher(keys)
