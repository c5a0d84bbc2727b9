"""``shoal status``: the mesh as one node sees it.

It asks a node for ``GET /shoal/v1/status`` (:mod:`shoal.api.live_page`) and prints the
members and their state (with how long they have been in it, address, role and site),
pods per node, replication lag and traffic per peer, this node's scopes, the links that
are cut (from this node's membership and what each peer last reported), and the
recent membership transitions: the partitions and heals this node saw. A member with no
site shows ``-``, as ``shoal scopes`` shows what does not apply: it is in the mesh's
default site, which is not one named ``default`` (``--site default``; the bus alone
calls the unnamed site ``default``, ``bus.site_topology``).

``--data-dir`` asks the node whose data dir it is, with that node's own credential (the
admin token on a signer, else the node's certificate): it works on any node, even one cut
off from the rest. Otherwise the kubeconfig's server and user are used; ``--server``
asks another peer. ``-o json`` prints the answer as it came.
"""

from __future__ import annotations

import argparse
import datetime
import json
import ssl
import sys
import urllib.error
from pathlib import Path
from typing import Any

from shoal.api.live_page import PATH
from shoal.api.scope_status import age
from shoal.api.scope_status import format_table as scope_table
from shoal.cli import node_endpoint


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status", help="show the members, links, lag, pods and recent partitions as a node "
                       "sees them",
        description="Ask one node what it sees of the mesh: members and their state, pods "
                    "per node, replication lag per peer, its scopes, cut links and recent "
                    "partitions. Each node answers for itself, so on a site that is cut off "
                    "it shows what that site sees.")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="ask the node of this data dir, with its own credential")
    p.add_argument("--kubeconfig", default=None,
                   help="the kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", default=None, help="the kubeconfig context to use")
    p.add_argument("--server", default=None,
                   help="the node to ask (https://HOST:PORT), instead of the default")
    p.add_argument("--no-peers", action="store_true",
                   help="do not ask the other peers for their views (faster; links between "
                        "other peers then show what they last reported)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")


def fetch_with_data_dir(data_dir: Path, server: str | None, query: str) -> dict[str, Any]:
    # Here, not at the top: a running node loads no urllib.request (with http.client and
    # email); ``shoal server`` imports this module to build its parser.
    import urllib.request

    pki = data_dir / "pki"
    url = server or (data_dir / "server-url").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.check_hostname = False  # the serving certificate names the node's addresses
    headers = {"Accept": "application/json"}
    if (pki / "ca.key").exists() and (pki / "admin.token").exists():
        headers["Authorization"] = "Bearer " + (pki / "admin.token").read_text().strip()
    else:
        ctx.load_cert_chain(str(pki / "node.crt"), str(pki / "node.key"))
    req = urllib.request.Request(url.rstrip("/") + PATH + query, headers=headers)
    with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def fetch_with_kubeconfig(kubeconfig: str | None, context: str | None, server: str | None,
                          query: str) -> dict[str, Any]:
    return node_endpoint.get_json(PATH + query, kubeconfig, context, server)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def _clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows) + "\n"


def format_report(report: dict[str, Any]) -> str:
    me = report.get("node", "?")
    out = [f"node {me} (revision {report.get('revision', '?')}): the mesh as {me} sees it\n"]
    catch_up = report.get("catchUp")  # caught-up gating: controllers wait for it
    if catch_up:
        if catch_up.get("caughtUp"):
            # How it caught up, then: "alone" at start says nothing of the members now.
            out.append(f"caught up: yes, {catch_up.get('seconds')}s after start "
                       f"({catch_up.get('reason')})\n")
        else:
            out.append(f"caught up: NO (its controllers and /readyz wait): "
                       f"{catch_up.get('reason')} ({catch_up.get('seconds')}s after start)\n")
    pods = report.get("pods") or {}
    nodes = report.get("nodes") or {}
    repl = report.get("replication") or {}
    rows: list[tuple[str, ...]] = [("MEMBER", "STATE", "FOR", "ADDRESS", "ROLE", "SITE",
                                    "PODS", "READY", "BEHIND", "SENT", "RECEIVED")]
    for m in report.get("members") or []:
        name = m.get("name", "")
        r = repl.get(name) or {}
        behind, held = r.get("behind"), m.get("for_seconds")
        rows.append((
            name + (" *" if m.get("self") else ""), str(m.get("state", "")),
            "" if held is None else age(held), str(m.get("address", "")), str(m.get("role") or "full"),
            str(m.get("site") or "-"), str(sum((pods.get(name) or {}).values())),
            str((nodes.get(name) or {}).get("ready") or ""),
            "" if m.get("self") else ("?" if behind is None else str(behind)),
            _size(r.get("bytes_sent")) if r else "", _size(r.get("bytes_received")) if r else "",
        ))
    out.append(_table(rows))
    unscheduled = sum((pods.get("") or {}).values())
    if unscheduled:
        out.append(f"{unscheduled} pod(s) not scheduled to any node\n")
    cut = [link for link in report.get("links") or [] if link.get("state") == "cut"]
    out.append("\nLINKS\n")
    if cut:
        for link in cut:
            seen = ", ".join(f"{k} holds it {v}" for k, v in (link.get("seen_by") or {}).items()
                             if v != "alive")
            out.append(f"  cut: {link['a']} - {link['b']} ({seen})\n")
    else:
        out.append("  no link is cut\n")
    scopes = report.get("scopes")
    if scopes:
        out.append("\nSCOPES\n")
        out.append(scope_table(scopes))
    events = report.get("membership_events") or []
    partitions = [e for e in events if e.get("kind") in ("cut", "heal", "leave", "join")]
    out.append(f"\nRECENT PARTITIONS (membership transitions {me} saw)\n")
    if partitions:
        for e in partitions[-20:]:
            before = f"{e.get('previous')} -> " if e.get("previous") else ""
            out.append(f"  {_clock(e['time'])}  {e['member']:<16} {before}{e['state']}"
                       f"  ({e['kind']})\n")
    else:
        out.append("  none\n")
    timeline = report.get("timeline") or []
    if timeline:
        out.append("\nRECENT CLUSTER EVENTS\n")
        for e in timeline[-10:]:
            out.append(f"  {_clock(e['time'])}  {e['kind']:<10} {e['message']}\n")
    return "".join(out)


def run(args: argparse.Namespace) -> int:
    query = "?peers=false" if args.no_peers else ""
    try:
        if args.data_dir is not None:
            report = fetch_with_data_dir(args.data_dir, args.server, query)
        else:
            report = fetch_with_kubeconfig(args.kubeconfig, args.context, args.server, query)
    except urllib.error.HTTPError as e:
        print(f"shoal status: {e.code}: {e.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except Exception as e:  # the clients raise several kinds; the message is what matters
        reason = getattr(e, "reason", None) or e
        print(f"shoal status: {reason}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        sys.stdout.write(format_report(report))
    return 0
