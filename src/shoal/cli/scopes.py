"""``shoal scopes``: which scopes a node holds, whether it writes them, and how far behind it is.

It asks the node the kubeconfig points at (``GET /shoal/v1/scopes``, served by
:mod:`shoal.api.scope_status`) and prints ``SCOPE MEMBER WRITER OBJECTS BEHIND LAST
SYNC STRANDED`` (``BEHIND`` is ``?`` where the node cannot know: a writer of the scope
unreachable, from it or, on a weak peer, from every super-peer it pulls the scope from,
as they report; or no partner answering; ``STRANDED`` is ``yes`` where a weak peer has no
super-peer of its site in the scope, and so syncs it with no one; the reasons below the
table); ``-o json`` prints the answer as it came. Each node answers for itself: point
``--server`` at another peer to ask it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shoal.api.scope_status import PATH, format_table
from shoal.cli import node_endpoint


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scopes", help="show the scopes a node holds and how far behind it is in each",
        description="Ask one node which scopes it holds (member), which it accepts writes "
                    "for (writer), how many of their objects it has, how many revisions "
                    "it trails its replication partners by (behind; ? when it cannot know, "
                    "the reason below the table), "
                    "when a partner last answered it for the scope (last sync), and whether "
                    "it syncs the scope with no one (stranded: a weak peer none of whose "
                    "site's super-peers is a member of the scope).")
    p.add_argument("--kubeconfig", default=None,
                   help="the kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", default=None, help="the kubeconfig context to use")
    p.add_argument("--server", default=None,
                   help="the node to ask (https://HOST:PORT), instead of the kubeconfig's")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")


def fetch(kubeconfig: str | None, context: str | None, server: str | None) -> dict[str, Any]:
    return node_endpoint.get_json(PATH, kubeconfig, context, server)


def run(args: argparse.Namespace) -> int:
    try:
        report = fetch(args.kubeconfig, args.context, args.server)
    except Exception as e:  # the client raises several kinds; the message is what matters
        reason = getattr(e, "reason", None) or e
        print(f"shoal scopes: {reason}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"node {report.get('node', '?')}")
        sys.stdout.write(format_table(report))
    return 0
