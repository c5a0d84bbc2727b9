"""Replica counts are met: each Deployment has exactly its desired active pods in its current
ReplicaSet, and none in the old ones, counted the way the ReplicaSet controller counts.

"Active" is ``pod_state.is_active`` (not terminal, not being deleted) on a node that is
not lost (``node_lifecycle.is_lost``: unreachable past its eviction timeout), with
labels matching the ReplicaSet's selector and a controller reference to its uid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.control.deployment import HASH_LABEL
from shoal.control.node_lifecycle import is_lost
from shoal.control.pod_state import controller_uid, is_active
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.replica import Replica

WATCHED = ("deployments.apps", "replicasets.apps", "pods")
"""What the replicas must agree on; Leases, Nodes and Events change every heartbeat."""


@dataclass(frozen=True, slots=True)
class Count:
    deployment: str
    desired: int
    current: int
    """Active pods of the ReplicaSet whose template is the Deployment's."""
    old: int
    """Active pods of every other ReplicaSet of the Deployment."""
    current_rs: str | None


def _template(t: dict[str, Any]) -> dict[str, Any]:
    labels = dict((t.get("metadata") or {}).get("labels") or {})
    labels.pop(HASH_LABEL, None)
    return {**t, "metadata": {**(t.get("metadata") or {}), "labels": labels}}


def _active_owned(rs: dict[str, Any], pods: list[dict[str, Any]], lost: set[str]) -> int:
    try:
        selector = LabelSelector.from_api((rs.get("spec") or {}).get("selector"))
    except SelectorError:
        return 0
    uid = rs["metadata"]["uid"]
    return sum(1 for p in pods
               if controller_uid(p) == uid
               and selector.matches((p.get("metadata") or {}).get("labels") or {})
               and is_active(p) and (p.get("spec") or {}).get("nodeName") not in lost)


def counts(replica: Replica, now: float, eviction_timeout: float) -> list[Count]:
    lost = {n["metadata"]["name"] for n in replica.list("nodes", None)
            if is_lost(n, now, eviction_timeout)}
    out = []
    for d in replica.list("deployments.apps", None):
        ns = d["metadata"].get("namespace", "default")
        pods = replica.list("pods", ns)
        owned = [rs for rs in replica.list("replicasets.apps", ns)
                 if controller_uid(rs) == d["metadata"]["uid"]]
        want = _template((d.get("spec") or {}).get("template") or {})
        current = [rs for rs in owned
                   if _template((rs.get("spec") or {}).get("template") or {}) == want]
        cur = current[0] if current else None
        out.append(Count(
            deployment=f"{ns}/{d['metadata']['name']}",
            desired=int((d.get("spec") or {}).get("replicas", 1)),
            current=_active_owned(cur, pods, lost) if cur is not None else 0,
            old=sum(_active_owned(rs, pods, lost) for rs in owned if rs is not cur),
            current_rs=cur["metadata"]["name"] if cur is not None else None,
        ))
    return out


def check(replica: Replica, now: float, eviction_timeout: float) -> list[str]:
    """Deployments whose replica count is not exactly met, as seen by this replica."""
    return [f"{replica.node_id}: {c.deployment} has {c.current} active pods in its current "
            f"ReplicaSet {c.current_rs} and {c.old} in old ones, wants {c.desired}"
            for c in counts(replica, now, eviction_timeout)
            if c.current != c.desired or c.old != 0]


def identical(replicas: Mapping[str, Replica], resources: tuple[str, ...] = WATCHED) -> list[str]:
    """Where the replicas differ on the given resources (documents, tombstones included)."""
    problems: list[str] = []
    states = {}
    for name, r in replicas.items():
        states[name] = {(res, ns, n): e.document().root
                        for res in resources for (ns, n), e in r.iter_entries(res)}
    items = list(states.items())
    for name, state in items[1:]:
        ref_name, ref = items[0]
        if state != ref:
            diff = sorted(k for k in set(state) | set(ref) if state.get(k) != ref.get(k))
            problems.append(f"{name} and {ref_name} differ on {'/'.join(diff[0])}")
    return problems
