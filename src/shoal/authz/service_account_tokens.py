"""ServiceAccount tokens: signed, expiring JWTs that every peer verifies offline (a stub:
nothing is issued or accepted yet)."""

from __future__ import annotations

from shoal.authz.reader import ObjectReader
from shoal.authz.user import UserInfo


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def verify(token: str, *, ca_cert_pem: bytes, reader: ObjectReader, now: float
           ) -> UserInfo | None:
    """The ServiceAccount user a valid token names; None for anything else (never raises)."""
    return None
