"""ServiceAccount tokens: signed, expiring JWTs that every peer verifies offline.

A token is an ES256 JWT with Kubernetes' claims: ``iss`` (:data:`ISSUER`), ``sub``
(``system:serviceaccount:<ns>:<name>``), ``aud``, ``exp``, ``iat``, ``nbf``, ``jti`` and
``kubernetes.io`` ({namespace, serviceaccount{name,uid}, pod{name,uid}, node{name,uid}}).
Every peer checks it from its own replica, so it holds on a site cut off from the rest:
the signature, the time window, the audience, that the ServiceAccount still exists with
the token's uid (deleting it revokes its tokens) and, for a token bound to a pod, that the
pod still exists with the token's uid.

Who signs. There is no token controller with one key: each key is a device's key, and a
device can be stolen. So a key may sign only what its holder could legitimately ask for:

- A token bound to a pod (the projected volume, or a TokenRequest whose boundObjectRef is
  a Pod) is signed by the pod's node with its node key (``pki/node.key``), and carries the
  node certificate in the header (``x5c``). A verifier accepts it only if that certificate
  chains to the cluster CA, is a node certificate (O=``shoal:nodes``), is valid now, and
  the pod the token names is bound to that node (``spec.nodeName`` == the certificate's CN)
  and runs as that ServiceAccount. A stolen node therefore mints tokens only for the
  ServiceAccounts of pods already bound to it: the credentials a kubelet holds anyway.
  It cannot make a token for an arbitrary ServiceAccount, nor one that outlives the pod.
- A token bound to nothing (``kubectl create token NAME``) is signed with the cluster CA
  key (``kid`` = the base64url SHA-256 of the CA public key, as Kubernetes' key ids), so
  only a signer peer (one holding ``pki/ca.key``) issues it; whoever holds the CA key
  owns the cluster anyway. A CA-signed token may also be bound to a pod (a signer answers
  a TokenRequest for a pod of another node); then the pod is checked as above, except
  its node.
- A node key never signs an unbound token, and a verifier refuses one that it did.

Tokens are stateless: nothing is stored per token, so a peer that never saw it being
issued accepts it. Revocation is by deleting the ServiceAccount or the pod (their uid
changes when they are recreated), or by expiry. A token Secret's token
(``shoal.control.token_secrets``) is CA-signed and bound to that Secret: deleting the
Secret revokes it.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from shoal.authz.reader import ObjectReader
from shoal.authz.user import UserInfo, service_account_user
from shoal.store.system_crypto import (
    Certificate,
    CryptoError,
    PrivateKey,
    PublicKey,
    load_der_certificate,
    load_pem_certificate,
    load_private_key,
)

ISSUER = "https://kubernetes.default.svc.cluster.local"
"""``iss`` of every token and the API's own audience (kube-apiserver's default)."""
NODE_ORG = "shoal:nodes"
"""The O of a node certificate (shoal.mesh.tls_transport.NODE_ORG, a layer above)."""
ALGORITHM = "ES256"
MIN_EXPIRATION = 600
MAX_EXPIRATION = 48 * 3600
DEFAULT_EXPIRATION = 3600
LEEWAY = 60
"""Seconds of clock skew tolerated on nbf/iat and exp (peers' clocks are not in step)."""

# Keys of UserInfo.extra, as kube-apiserver's serviceaccount authenticator.
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
EXTRA_NODE_UID = "authentication.kubernetes.io/node-uid"
EXTRA_CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(spki_der: bytes) -> str:
    """Kubernetes' key id: base64url of the SHA-256 of the DER public key."""
    return _b64(hashlib.sha256(spki_der).digest())


@dataclass(frozen=True)
class Binding:
    """What a token is bound to besides its ServiceAccount (empty strings: nothing)."""

    pod_name: str = ""
    pod_uid: str = ""
    node_name: str = ""
    node_uid: str = ""
    secret_name: str = ""  # a token Secret's (shoal.control.token_secrets): CA-signed
    secret_uid: str = ""


@dataclass(frozen=True)
class Issued:
    token: str
    expires: int  # unix seconds


def claims(namespace: str, name: str, sa_uid: str, audiences: list[str], now: float,
           expiration_seconds: int, binding: Binding) -> dict[str, Any]:
    iat = int(now)
    k8s: dict[str, Any] = {"namespace": namespace,
                           "serviceaccount": {"name": name, "uid": sa_uid}}
    if binding.pod_name:
        k8s["pod"] = {"name": binding.pod_name, "uid": binding.pod_uid}
    if binding.node_name:
        k8s["node"] = {"name": binding.node_name, "uid": binding.node_uid}
    if binding.secret_name:
        k8s["secret"] = {"name": binding.secret_name, "uid": binding.secret_uid}
    return {"aud": audiences or [ISSUER], "exp": iat + expiration_seconds, "iat": iat,
            "iss": ISSUER, "jti": str(uuid.uuid4()), "kubernetes.io": k8s, "nbf": iat,
            "sub": f"system:serviceaccount:{namespace}:{name}"}


def sign(payload: dict[str, Any], key: PrivateKey, header: dict[str, Any]) -> str:
    head = _b64(orjson.dumps({"alg": ALGORITHM, "typ": "JWT", **header}))
    body = _b64(orjson.dumps(payload))
    return f"{head}.{body}.{_b64(key.sign_es256(f'{head}.{body}'.encode()))}"


class NotASigner(Exception):
    """This peer holds no key that may sign the token asked for."""


class TokenIssuer:
    """Signs tokens with what this peer holds: its node key and certificate, and the CA key
    on a signer peer."""

    def __init__(self, node_name: str, node_key_pem: bytes, node_cert_pem: bytes,
                 ca_key_pem: bytes | None = None) -> None:
        self.node_name = node_name
        self._node_key = _private_key(node_key_pem)
        self._x5c = [base64.b64encode(load_pem_certificate(node_cert_pem).der).decode()]
        self._ca_key = _private_key(ca_key_pem) if ca_key_pem else None
        self._ca_kid = key_id(self._ca_key.spki_der) if self._ca_key is not None else ""

    @property
    def is_signer(self) -> bool:
        return self._ca_key is not None

    def issue(self, namespace: str, name: str, sa_uid: str, *, now: float,
              audiences: list[str] | None = None,
              expiration_seconds: int = DEFAULT_EXPIRATION,
              binding: Binding = Binding()) -> Issued:
        """A token for the ServiceAccount: signed with the node key when it is bound to a pod
        of this node, else with the CA key; :class:`NotASigner` when neither applies."""
        payload = claims(namespace, name, sa_uid, list(audiences or []), now,
                         expiration_seconds, binding)
        if binding.pod_name and binding.node_name == self.node_name:
            token = sign(payload, self._node_key, {"x5c": self._x5c})
        elif self._ca_key is not None:
            token = sign(payload, self._ca_key, {"kid": self._ca_kid})
        else:
            raise NotASigner(name)
        return Issued(token, int(payload["exp"]))


def _private_key(pem: bytes) -> PrivateKey:
    key = load_private_key(pem)
    if not key.is_p256():
        raise ValueError("token signing keys are P-256 ECDSA keys")
    return key


@dataclass(frozen=True)
class _CA:
    certificate: Certificate
    key: PublicKey
    kid: str


@lru_cache(maxsize=4)
def _ca(ca_cert_pem: bytes) -> _CA:
    cert = load_pem_certificate(ca_cert_pem)
    key = cert.public_key()
    if not key.is_p256():
        raise ValueError("the cluster CA's key is not a P-256 ECDSA key")
    return _CA(cert, key, key_id(cert.spki_der))


@lru_cache(maxsize=256)
def _node_cert(der: bytes, ca_cert_pem: bytes) -> tuple[Certificate, PublicKey] | None:
    """The node certificate in a token's header (and its key), if the cluster CA issued it
    to a node."""
    try:
        cert = load_der_certificate(der)
        if not cert.issued_by(_ca(ca_cert_pem).certificate):
            return None
        key = cert.public_key()
    except CryptoError:
        return None
    return (cert, key) if NODE_ORG in cert.organizations and key.is_p256() else None


_FOREVER = (float("-inf"), float("inf"))


def _signer_node(header: dict[str, Any], signed: bytes, sig: bytes, ca_cert_pem: bytes
                 ) -> tuple[str, tuple[float, float]] | None:
    """("", always) for the CA; (the node's name, its certificate's validity) for a node
    certificate; None for a bad signature."""
    ca = _ca(ca_cert_pem)
    x5c = header.get("x5c")
    if x5c is None:
        ok = header.get("kid") in (None, ca.kid) and ca.key.verify_es256(signed, sig)
        return ("", _FOREVER) if ok else None
    if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
        return None
    node = _node_cert(base64.b64decode(x5c[0]), ca_cert_pem)
    if node is None:
        return None
    cert, key = node
    if not key.verify_es256(signed, sig) or not cert.common_name:
        return None
    return cert.common_name, (cert.not_before, cert.not_after)


@dataclass(frozen=True, slots=True)
class _Signed:
    payload: dict[str, Any]
    signer: str
    cert_window: tuple[float, float]
    exp: float
    nbf: float


_VERIFIED_MAX = 4096
_verified: OrderedDict[tuple[str, bytes], _Signed] = OrderedDict()
"""Tokens whose signature held, most recently used last: verifying an ES256 signature
costs more than the rest of a GET, and a pod sends the same token for up to an hour.
Only the signature is remembered; every use checks the time and the replica again."""


_USERS_KEPT = 4096
_users: dict[tuple[str, str, str, tuple[tuple[str, tuple[str, ...]], ...]], UserInfo] = {}
"""One user object per identity a token names (first in, first out): the authorization
attributes of a request are kept per user object (``api.authorization``), so a pod's
requests reuse them as the admin's do, instead of missing with a new user each time."""


def _signed(token: str, ca_cert_pem: bytes) -> _Signed | None:
    key = (token, ca_cert_pem)
    hit = _verified.get(key)
    if hit is not None:
        _verified.move_to_end(key)
        return hit
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = orjson.loads(_unb64(head_b64))
        payload = orjson.loads(_unb64(body_b64))
        sig = _unb64(sig_b64)
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    if header.get("alg") != ALGORITHM or payload.get("iss") != ISSUER:
        return None
    try:
        exp, nbf = float(payload["exp"]), float(payload.get("nbf") or payload.get("iat") or 0)
    except (KeyError, TypeError, ValueError):
        return None
    signer = _signer_node(header, f"{head_b64}.{body_b64}".encode(), sig, ca_cert_pem)
    if signer is None:
        return None
    out = _Signed(payload, signer[0], signer[1], exp, nbf)
    _verified[key] = out
    if len(_verified) > _VERIFIED_MAX:
        _verified.popitem(last=False)
    return out


def decode(token: str, *, ca_cert_pem: bytes, now: float
           ) -> tuple[dict[str, Any], str] | None:
    """(claims, signer) of a token whose signature and time window hold: the signer is ""
    for the CA, else the signing node's name. Nothing about the replica is checked."""
    signed = _signed(token, ca_cert_pem)
    if signed is None:
        return None
    if now > signed.exp + LEEWAY or now + LEEWAY < signed.nbf:
        return None
    if not signed.cert_window[0] <= now <= signed.cert_window[1]:
        return None
    return signed.payload, signed.signer


def verify(token: str, *, ca_cert_pem: bytes, reader: ObjectReader, now: float,
           audiences: tuple[str, ...] = (ISSUER,)) -> UserInfo | None:
    """The ServiceAccount user a valid token names; None for anything else (never raises)."""
    try:
        return _verify(token, ca_cert_pem, reader, now, audiences)
    except Exception:  # a malformed token is a refusal, whatever it breaks
        return None


def _verify(token: str, ca_cert_pem: bytes, reader: ObjectReader, now: float,
            audiences: tuple[str, ...]) -> UserInfo | None:
    decoded = decode(token, ca_cert_pem=ca_cert_pem, now=now)
    if decoded is None:
        return None
    payload, signer = decoded
    aud = payload.get("aud")
    aud_list = [aud] if isinstance(aud, str) else list(aud or [])
    if not set(aud_list) & set(audiences):
        return None
    k8s = payload.get("kubernetes.io") or {}
    ns = str(k8s.get("namespace") or "")
    sa_claim = k8s.get("serviceaccount") or {}
    name, sa_uid = str(sa_claim.get("name") or ""), str(sa_claim.get("uid") or "")
    if payload.get("sub") != f"system:serviceaccount:{ns}:{name}" or not ns or not name:
        return None
    sa = reader.get("serviceaccounts", ns, name)
    if sa is None or (sa.get("metadata") or {}).get("uid") != sa_uid:
        return None
    extra: dict[str, tuple[str, ...]] = {}
    if payload.get("jti"):
        extra[EXTRA_CREDENTIAL_ID] = (f"JTI={payload['jti']}",)
    pod_claim = k8s.get("pod") or {}
    if pod_claim:
        pod = reader.get("pods", ns, str(pod_claim.get("name") or ""))
        if pod is None or (pod.get("metadata") or {}).get("uid") != pod_claim.get("uid"):
            return None
        spec = pod.get("spec") or {}
        if (spec.get("serviceAccountName") or "default") != name:
            return None
        if signer and spec.get("nodeName") != signer:
            return None
        extra[EXTRA_POD_NAME] = (str(pod_claim["name"]),)
        extra[EXTRA_POD_UID] = (str(pod_claim["uid"]),)
    elif signer:
        return None  # a node key signs only tokens bound to its own pods
    secret_claim = k8s.get("secret") or {}
    if secret_claim:  # a token Secret's: deleting the Secret revokes it
        secret = reader.get("secrets", ns, str(secret_claim.get("name") or ""))
        if secret is None or (secret.get("metadata") or {}).get("uid") != secret_claim.get("uid"):
            return None
    node_claim = k8s.get("node") or {}
    if node_claim:
        if signer and node_claim.get("name") != signer:
            return None
        extra[EXTRA_NODE_NAME] = (str(node_claim.get("name") or ""),)
        if node_claim.get("uid"):
            extra[EXTRA_NODE_UID] = (str(node_claim["uid"]),)
    key = (ns, name, sa_uid, tuple(sorted(extra.items())))
    user = _users.get(key)
    if user is None:
        user = service_account_user(ns, name, sa_uid, extra)
        if len(_users) >= _USERS_KEPT:
            del _users[next(iter(_users))]
        _users[key] = user
    return user
