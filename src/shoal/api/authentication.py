"""Who is calling: a request's credential turned into a :class:`UserInfo`, as kube-apiserver's
union of authenticators does (the first that recognises the credential wins).

- A client certificate the cluster CA signed (the TLS handshake checked the signature):
  CN is the user name, each O a group. A peer's own identity (O=``shoal:nodes``, the
  certificate its mesh transport uses) is the node's user ``system:node:<CN>`` in
  ``system:nodes``, so that a node's files give only what Kubernetes gives a kubelet.
- The admin bearer token (``pki/admin.token``): ``shoal-admin`` in ``system:masters``.
- A bearer token that looks like a JWT: a ServiceAccount token, verified offline
  against the cluster CA and this replica (:mod:`shoal.authz.service_account_tokens`).

Any other bearer token, a certificate without a CN, or no credential at all is a 401:
Kubernetes answers an unknown credential with 401 rather than treating it as anonymous.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from shoal.api import web
from shoal.api.errors import ApiError
from shoal.authz import service_account_tokens
from shoal.authz.reader import ObjectReader
from shoal.authz.user import MASTERS, UserInfo, authenticated, node_user

PEER_ORG = "shoal:nodes"
"""The O of a node's peer certificate (shoal.mesh.tls_transport.NODE_ORG, a layer below)."""


@dataclass
class Credentials:
    """What the API accepts as proof of identity besides certificates the CA signed."""

    tokens: Mapping[str, str]
    """Static bearer token -> user name; every static token is an administrator's (today only
    the admin token)."""
    ca_cert_pem: bytes = b""
    """The cluster CA, which signs ServiceAccount tokens (empty: no ServiceAccount token is
    accepted)."""


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def user_from_certificate(cert: Mapping[str, object]) -> UserInfo | None:
    """The user a verified client certificate names (``ssl.getpeercert()``'s dict); None
    for one without a CN."""
    cn = ""
    orgs: list[str] = []
    for rdn in cert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                cn = str(value)
            elif key == "organizationName":
                orgs.append(str(value))
    if not cn:
        return None
    if PEER_ORG in orgs:
        return node_user(cn)
    # A certificate made the Kubernetes way (CN=system:node:<name>, O=system:nodes) is a node
    # too: UserInfo.node_name reads it from the name and the group.
    return authenticated(cn, tuple(orgs))


class Authenticator:
    """Turns a request's credential into the user it proves, or raises 401."""

    def __init__(self, credentials: Credentials, reader: ObjectReader) -> None:
        self.credentials = credentials
        self.reader = reader
        # A static token's user, made once: the same object for every request it sends, so
        # the request's attributes are reused too (api.authorization; issue 11).
        self._token_users: dict[str, UserInfo] = {}

    def authenticate(self, request: web.Request) -> UserInfo:
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if cert:
            user = user_from_certificate(cert)
            if user is None:
                raise unauthorized()
            return user
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized()
        return self.user_for_token(token)

    def user_for_token(self, token: str) -> UserInfo:
        for known, name in self.credentials.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                user = self._token_users.get(name)
                if user is None:
                    user = self._token_users[name] = authenticated(name, (MASTERS,))
                return user
        if self.credentials.ca_cert_pem and service_account_tokens.looks_like_jwt(token):
            user = service_account_tokens.verify(
                token, ca_cert_pem=self.credentials.ca_cert_pem, reader=self.reader,
                now=time.time())
            if user is not None:
                return user
        raise unauthorized()
