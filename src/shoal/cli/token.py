"""``shoal token create|list|revoke``: join tokens, kept on a signer."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from shoal.cli.private_output import write_private
from shoal.mesh.join_tokens import (
    DEFAULT_TTL,
    DEFAULT_USES,
    TokenError,
    create_token,
    list_tokens,
    revoke_token,
)
from shoal.mesh.pki import NodePKI


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from shoal.cli.main import parse_duration

    t = sub.add_parser("token", help="manage join tokens",
                       description="Join tokens let new nodes join the cluster. They live on "
                                   "a signer (a node whose data dir holds pki/ca.key, such "
                                   "as the first node), which checks and spends them; a join "
                                   "through any other peer is relayed to it.")
    tsub = t.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser(
        "create", help="print a new join token",
        description="Print a join token for `shoal server --join HOST:PORT --token-file "
                    "FILE` (or SHOAL_TOKEN). It carries the cluster CA's hash (the joining "
                    "node pins it) and a secret; only a hash of the secret, its expiry and "
                    "its uses left are stored in the data dir. It must be made on a signer.")
    c.add_argument("--ttl", type=parse_duration, default=DEFAULT_TTL,
                   help="how long the token stays valid, e.g. 30m, 1h (default: 24h)")
    c.add_argument("--uses", type=int, default=DEFAULT_USES,
                   help="how many nodes may join with it (default: 1)")
    tsub.add_parser("list", help="list the join tokens that can still be used",
                    description="List the join tokens that can still be used (never their "
                                "secrets).")
    r = tsub.add_parser("revoke", help="revoke a join token",
                        description="Revoke a join token, by its id or the whole token.")
    r.add_argument("id", metavar="ID", help="the token id (the TOKEN ID column of "
                                           "`shoal token list`) or the token")
    for p in (c, *(tsub.choices[n] for n in ("list", "revoke"))):
        p.add_argument("--data-dir", type=Path, required=True,
                       help="the data dir of a signer (running or stopped)")


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace) -> int:
    pki = NodePKI(args.data_dir / "pki")
    try:
        if args.token_command == "create":
            token = create_token(pki, ttl=args.ttl, uses=args.uses)
            write_private(f"{token}\n", None, "shoal token create")
        elif args.token_command == "list":
            rows = [("TOKEN ID", "USES LEFT", "EXPIRES", "CREATED")]
            rows += [(t.id, str(t.uses_left), _when(t.expires), _when(t.created))
                     for t in list_tokens(pki, time.time())]
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
            for row in rows:
                print("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        else:
            revoke_token(pki, args.id)
            print(f"join token {args.id.split('::')[-1].split('.')[0]} revoked")
    except TokenError as e:
        print(f"shoal token {args.token_command}: {e}", file=sys.stderr)
        return 1
    return 0
