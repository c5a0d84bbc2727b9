"""Join tokens: made, listed, revoked and spent on a signer.

A token reads ``SHOAL1::sha256:<ca key hash>::<id>.<secret>``. Only a signer (a node
holding ``ca.key``) makes tokens, and only the signer checks them: a peer that cannot
sign relays the token with the request. The signer keeps ``sha256(secret)``, the
expiry, the creation time and the uses left in ``DATA_DIR/pki/join-tokens.json``;
a token is single use unless made with more uses, and one whose uses are spent is
removed (as a kubeadm bootstrap token is deleted when it expires).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.mesh.pki import NodePKI, ca_hash, write_private

TOKEN_PREFIX = "SHOAL1"
DEFAULT_TTL = 24 * 3600.0
DEFAULT_USES = 1


class TokenError(Exception):
    """A token was refused, or cannot be made here; the message says why, for the operator."""


def tokens_path(pki: NodePKI) -> Path:
    return pki.dir / "join-tokens.json"


@dataclass(frozen=True)
class Token:
    ca_hash: str
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}::{self.ca_hash}::{self.id}.{self.secret}"


@dataclass(frozen=True)
class TokenInfo:
    """What ``shoal token list`` shows of a token (never its secret)."""

    id: str
    uses_left: int
    expires: float
    created: float


def parse_token(text: str) -> Token:
    parts = text.strip().split("::")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1].startswith("sha256:"):
        raise TokenError(f"malformed join token (want {TOKEN_PREFIX}::sha256:<hash>::<id>.<secret>)")
    tid, dot, secret = parts[2].partition(".")
    if not dot or not tid or not secret:
        raise TokenError("malformed join token: the last part must be <id>.<secret>")
    return Token(parts[1], tid, secret)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@contextmanager
def _locked_tokens(pki: NodePKI) -> Iterator[dict[str, dict[str, Any]]]:
    """The token table, locked against concurrent writers (the CLI and the join service),
    saved on a normal exit; an exception leaves the file as it was."""
    pki.dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(pki.dir / "join-tokens.lock", os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            table = _read_tokens(pki)
            yield table
            write_private(tokens_path(pki),
                           json.dumps(table, indent=1, sort_keys=True).encode())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_tokens(pki: NodePKI) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(tokens_path(pki).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _uses_left(entry: dict[str, Any]) -> int:
    # Tokens made before uses were counted had none: they count as single use.
    return int(entry.get("uses", DEFAULT_USES))


def _prune(table: dict[str, dict[str, Any]], now: float) -> None:
    for tid in [t for t, v in table.items()
                if float(v.get("expires", 0)) < now or _uses_left(v) <= 0]:
        del table[tid]


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def _require_signer(pki: NodePKI) -> None:
    if not pki.ca_cert.exists():
        raise TokenError(f"{pki.ca_cert} does not exist: start `shoal server` on this data dir "
                         "first")
    if not pki.ca_key.exists():
        raise TokenError(f"{pki.dir} holds no CA key, so this node cannot check join tokens: "
                         "create tokens on a signer (the data dir of a node that holds "
                         "pki/ca.key, such as the first node); a join through any peer "
                         "reaches it")


def create_token(pki: NodePKI, ttl: float = DEFAULT_TTL, uses: int = DEFAULT_USES,
                 now: float | None = None) -> Token:
    """Make a join token on a signer; only a hash of its secret is stored."""
    _require_signer(pki)
    if uses < 1:
        raise TokenError("a token needs at least one use")
    now = time.time() if now is None else now
    token = Token(ca_hash(pki.ca_cert.read_bytes()), secrets.token_hex(4),
                  secrets.token_urlsafe(24))
    with _locked_tokens(pki) as table:
        _prune(table, now)  # expired and spent ones are useless; keep the file small
        table[token.id] = {"sha256": _secret_hash(token.secret), "expires": now + ttl,
                           "created": now, "uses": uses}
    return token


def list_tokens(pki: NodePKI, now: float | None = None) -> list[TokenInfo]:
    """The tokens that can still be used, oldest first."""
    now = time.time() if now is None else now
    table = _read_tokens(pki)
    _prune(table, now)
    infos = [TokenInfo(tid, _uses_left(v), float(v.get("expires", 0)),
                       float(v.get("created", 0))) for tid, v in table.items()]
    return sorted(infos, key=lambda i: (i.created, i.id))


def revoke_token(pki: NodePKI, token_id: str) -> None:
    """Forget a token (by its id, or the whole token); raise if there is none."""
    tid = parse_token(token_id).id if "::" in token_id else token_id
    with _locked_tokens(pki) as table:
        if table.pop(tid, None) is None:
            raise TokenError(f"no join token with id {tid!r}")


def _check(pki: NodePKI, table: dict[str, dict[str, Any]], text: str, now: float) -> Token:
    token = parse_token(text)
    if token.ca_hash != ca_hash(pki.ca_cert.read_bytes()):
        raise TokenError("the join token is for another cluster (its CA hash differs)")
    entry = table.get(token.id)
    if entry is None or not hmac.compare_digest(str(entry.get("sha256", "")),
                                                _secret_hash(token.secret)):
        raise TokenError("the join token is not valid (unknown id, wrong secret, revoked or "
                         "used up)")
    expires = float(entry.get("expires", 0))
    if now > expires:
        raise TokenError(f"the join token expired at {_when(expires)}")
    if _uses_left(entry) <= 0:
        raise TokenError("the join token has been used up")
    return token


def check_token(pki: NodePKI, text: str, now: float | None = None) -> None:
    """Raise :class:`TokenError` unless the token is known here, matches, has not expired
    and has a use left. Spends nothing (see :func:`spend_token`)."""
    _check(pki, _read_tokens(pki), text, time.time() if now is None else now)


def spend_token(pki: NodePKI, text: str, now: float | None = None) -> int:
    """Check the token and take one use, atomically; return the uses left.

    Two joins racing for a token's last use: one spends it, the other is refused."""
    now = time.time() if now is None else now
    with _locked_tokens(pki) as table:
        token = _check(pki, table, text, now)
        entry = table[token.id]
        entry["uses"] = _uses_left(entry) - 1
        left = int(entry["uses"])
        if left <= 0:
            del table[token.id]
    return left
