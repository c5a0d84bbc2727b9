"""``shoal token create``: a join token for new nodes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shoal.mesh.join import DEFAULT_TTL, JoinError, create_token, is_signer
from shoal.mesh.pki import NodePKI


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from shoal.cli.main import parse_duration

    t = sub.add_parser("token", help="manage join tokens",
                       description="Join tokens let new nodes join the cluster.")
    tsub = t.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser(
        "create", help="print a new join token",
        description="Print a join token for `shoal server --join HOST:PORT --token TOKEN`. It "
                    "carries the cluster CA's hash (the joining node pins it) and a secret; "
                    "only a hash of the secret and its expiry are stored in the data dir. "
                    "Create it on a signer (a node holding the CA key, such as the first "
                    "node); a token made on another node is valid for joins through that node.")
    c.add_argument("--data-dir", type=Path, required=True,
                   help="the data dir of a running or previously started node")
    c.add_argument("--ttl", type=parse_duration, default=DEFAULT_TTL,
                   help="how long the token stays valid, e.g. 30m, 24h (default: 24h)")


def run(args: argparse.Namespace) -> int:
    pki = NodePKI(args.data_dir / "pki")
    try:
        token = create_token(pki, ttl=args.ttl)
    except JoinError as e:
        print(f"shoal token create: {e}", file=sys.stderr)
        return 1
    if not is_signer(pki):
        print("note: this node does not hold the CA key; the token works for joins through "
              "this node, which relays them to a signer", file=sys.stderr)
    print(token)
    return 0
