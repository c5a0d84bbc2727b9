"""``GET /shoal/v1/scopes``: which scopes the serving node holds, and how far behind it is.

Computed on the node that answers, from its own replica and mesh, and never stored: each
peer has its own answer, and a Scope's status written by every peer would be a stream of
writes that replicate everywhere. ``kubectl get --raw /shoal/v1/scopes`` prints the JSON;
``shoal scopes`` prints it as a table.

The body::

    {"kind": "ScopeStatus", "apiVersion": "shoal.dev/v1alpha1", "node": "n3",
     "scopes": [{"scope": "", "member": true, "writer": true, "objects": 120,
                 "behind": 0, "replication": {...}}, ...]}

``scope`` is ``""`` for the cluster scope. ``objects`` counts the live objects of the
scope in this replica (0 on a peer that is not a member). ``behind`` is the largest
number of revisions this node's cursors trail its partners' for the scope (as the mesh
reports it: ``AntiEntropy.scope_status()``), or null when the mesh does not say.
``lastSync`` is how many seconds ago a partner last answered a pull of the scope (null:
never, or no other peer holds it). ``stranded``, only on a weak peer none of whose
site's super-peers is a member of the scope, says so (``ReplicationPolicy.stranded``): it
syncs that scope with no one, and ``behind`` is null. ``replication`` is the mesh's own
entry for the scope, as it gives it.

*What a cut-off peer can say.* A peer cannot know what it has not received: its cursors
trail only what its partners last reported, so a peer cut off from a scope's writers
would read ``behind: 0`` while they hold newer objects. So ``behind`` is null, with
``unknownWhy`` saying why, when a writer of the scope is unreachable from this peer
(suspect, dead or left to it: it may hold writes this peer lacks; a weak peer, which
knows no writer beyond its site's super-peers, takes a writer as unreachable when every
super-peer that answered it for the scope in the last two pull cycles says it cannot
reach that writer: ``unreachable_via`` names them), or when other peers hold
the scope and none has answered a pull of it for ``STALE_PULLS`` pull intervals and
``STALE_CYCLES`` pull cycles (or ever). The cluster scope, which every peer writes, is judged by the second rule only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from shoal.authz.scopes import CLUSTER, ScopeMap, shown
from shoal.store.replica import Replica

MeshScopeStatus = Callable[[], Mapping[str, Any]]
"""The mesh's report, by scope name (``""`` for the cluster scope)."""

PATH = "/shoal/v1/scopes"
STALE_PULLS = 3
STALE_CYCLES = 2
"""Without an answer for a scope for the longer of ``STALE_PULLS`` pull intervals and
``STALE_CYCLES`` pull cycles (a peer asks one partner a round, so each partner once a
cycle), ``behind`` is unknown."""


def _counts(replica: Replica, scopes: ScopeMap) -> Counter[str]:
    out: Counter[str] = Counter()
    for resource in replica.resources():
        for (ns, _name), entry in replica.iter_entries(resource):
            if entry.value is not None:
                out[scopes.scope_of(resource, ns)] += 1
    return out


def _behind(entry: Any) -> int | None:
    """The largest ``behind`` of the partners the mesh pulls the scope from (None: none
    reported). The mesh gives ``{"partners": {name: {"cursor": c, "behind": n}}}``."""
    if not isinstance(entry, Mapping):
        return None
    partners = entry.get("partners")
    if isinstance(partners, Mapping):
        partners = list(partners.values())
    if not isinstance(partners, list):
        return None
    lags = [p.get("behind") for p in partners if isinstance(p, Mapping)]
    known = [n for n in lags if isinstance(n, int) and not isinstance(n, bool)]
    return max(known) if known else None


def _stranded(entry: Any) -> str | None:
    """Why this (weak) peer syncs the scope with no one, as the mesh says (None: it does)."""
    why = entry.get("stranded") if isinstance(entry, Mapping) else None
    return why if isinstance(why, str) and why else None


def _unknown_why(entry: Any) -> str | None:
    """Why the mesh's ``behind`` cannot be trusted for a scope (None: it can)."""
    if not isinstance(entry, Mapping):
        return None
    stranded = _stranded(entry)
    if stranded:
        return f"stranded: {stranded}"
    unreachable = entry.get("unreachable_writers")
    if isinstance(unreachable, list) and unreachable:
        via = entry.get("unreachable_via")
        relayed = sorted({s for w in unreachable if isinstance(via, Mapping)
                          and isinstance(via.get(w), list) for s in via[w]})
        why = f"writers unreachable: {', '.join(str(w) for w in unreachable)}"
        return f"{why} (as super-peers {', '.join(relayed)} report)" if relayed else why
    last, interval = entry.get("last_answer"), entry.get("pull_interval")
    if not entry.get("holders") or not isinstance(interval, int | float):
        return None  # held here only, or a mesh that does not say
    if last is None:
        return "no partner has answered a pull of it yet"
    cycle = entry.get("pull_cycle")
    if last > max(STALE_PULLS * interval,
                  STALE_CYCLES * cycle if isinstance(cycle, int | float) else 0):
        return f"no partner has answered a pull of it for {age(last)}"
    return None


def age(seconds: float) -> str:
    """A duration for a person: ``45s``, ``2m5s``, ``3h4m`` (``shoal scopes``, ``shoal status``)."""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60}s"
    return f"{s // 3600}h{s % 3600 // 60}m"


def _plain(value: Any) -> Any:
    """JSON-friendly: sets and tuples become sorted lists, keys strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def scope_report(node: str, replica: Replica, scopes: ScopeMap,
                 mesh: MeshScopeStatus | None) -> dict[str, Any]:
    counts = _counts(replica, scopes)
    try:
        reported: Mapping[str, Any] = mesh() if mesh is not None else {}
    except Exception:  # a diagnostic must answer even if the mesh cannot say now
        reported = {}
    rows = []
    for scope in [CLUSTER, *scopes.names()]:
        entry = reported.get(scope)
        why = _unknown_why(entry)
        last = entry.get("last_answer") if isinstance(entry, Mapping) else None
        row: dict[str, Any] = {
            "scope": scope,
            "member": scopes.is_member(scope, node),
            "writer": scopes.is_writer(scope, node),
            "objects": counts.get(scope, 0),
            "behind": None if why else _behind(entry),
            "lastSync": last if isinstance(last, int | float) else None,
        }
        if why:
            row["unknownWhy"] = why
        stranded = _stranded(entry)
        if stranded:
            row["stranded"] = stranded
        if entry is not None:
            row["replication"] = _plain(entry)
        rows.append(row)
    return {"kind": "ScopeStatus", "apiVersion": "shoal.dev/v1alpha1", "node": node,
            "scopes": rows}


def format_table(report: Mapping[str, Any]) -> str:
    """``SCOPE MEMBER WRITER OBJECTS BEHIND LAST SYNC STRANDED``, as ``shoal scopes`` prints
    it: ``BEHIND`` ``?`` when unknown (``-``: no member, nothing to be behind in), ``LAST SYNC`` the age of the last answer of a partner
    for the scope (``never``; ``-`` where the node is no member or holds it alone),
    ``STRANDED`` ``yes`` where a weak peer syncs the scope with no one (``-``: no member);
    under the table, why each ``?`` is one (``stranded: ...``, ``behind unknown: ...``)."""
    header = ("SCOPE", "MEMBER", "WRITER", "OBJECTS", "BEHIND", "LAST SYNC", "STRANDED")
    lines = [header]
    reasons = []
    for row in report.get("scopes") or []:
        behind, last = row.get("behind"), row.get("lastSync")
        replication = row.get("replication") or {}
        if isinstance(last, int | float):
            sync = f"{age(last)} ago"
        elif row.get("member") and replication.get("holders"):
            sync = "never"
        else:
            sync = "-"
        lines.append((
            shown(str(row.get("scope") or "")),
            "yes" if row.get("member") else "no",
            "yes" if row.get("writer") else "no",
            str(row.get("objects", 0)),
            "-" if not row.get("member") else "?" if behind is None else str(behind),
            sync,
            "yes" if row.get("stranded") else "no" if row.get("member") else "-",
        ))
        if row.get("stranded"):
            reasons.append(f"{lines[-1][0]}: stranded: {row['stranded']}\n")
        elif row.get("unknownWhy"):
            reasons.append(f"{lines[-1][0]}: behind unknown: {row['unknownWhy']}\n")
        elif row.get("member") and behind is None:  # every "?" says why
            reasons.append(f"{lines[-1][0]}: behind unknown: no partner has said yet\n")
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines) + "\n" + "".join(reasons)
