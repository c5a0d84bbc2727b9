"""When the trim may delete: once what it would act on has settled.

A trim deletes running pods, which cannot be undone, so it waits for two things
that a merge can show half-done:

- *No peer came back in the last ``settle`` seconds* (a heal, a restart): none
  joined this peer's live set, no node's Lease turned fresh again, and no pod new
  to this peer appeared on a node it cannot reach (the other side's pods can
  arrive before their node's Lease). Then the other side's state arrives over several messages,
  in any order: a ReplicaSet scaled by a peer whose Deployment was still the old
  one, Nodes carrying the other side's taints before their renewed Leases. A
  count seen for an instant mid-merge is as often wrong as right. Only then:
  ordinary scale-downs and rollouts in a steady mesh are not delayed (a delayed
  trim would leave the Deployment counting pods about to go). Creating pods is
  never held back: under-replication is worse than a few seconds of
  over-replication.
- *Every counted pod's status is its own node's word* (``hearsay``). A pod that
  a peer marked not ready while its node was unreachable, or that both sides
  created and ran while apart (the merge mixes their statuses field by field: a
  create's ``phase: Pending`` can win over the other side's ``Running``), on a
  node that renews its Lease again, has an unknown status until its agent
  re-asserts it; ranked as it stands it would go first, though it may have run
  longest. Kubernetes' controllers wait for their expectations the same way.
  The wait is bounded by ``status_wait``: if the agent has not spoken by then,
  the mark stands and the pod ranks as not ready.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shoal.store.replica import Replica


def hearsay(replica: Replica, pod: dict[str, Any]) -> bool:
    """Whether a node has reported the pod (it has a startTime) but its phase, startTime
    or Ready condition was last written by another peer than the node it is bound to
    (the ages the trim ranks by come from them). The CRDT
    records who wrote each field, so this needs no marker in the pod."""
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or not (pod.get("status") or {}).get("startTime"):
        return False
    meta = pod.get("metadata") or {}
    entry = replica.entry("pods", meta.get("namespace", ""), meta.get("name", ""))
    if entry is None or entry.value is None:
        return False
    doc = entry.document()
    writers = {doc.writer_at("status", field) for field in ("phase", "startTime")} | {
        doc.writer_at("status", "conditions", "Ready", field)
        for field in ("status", "lastTransitionTime")}
    return bool(writers - {node, None})


class TrimGate:
    def __init__(self, settle: float, status_wait: float) -> None:
        self.settle = settle
        self.status_wait = status_wait
        self._live: set[str] | None = None
        self._returned_at: float | None = None
        """When a peer last joined this peer's live set."""
        self._unknown_since: dict[str, dict[str, float]] = {}
        """Owner uid -> pod uid -> when this peer first saw that pod's status unknown."""

    def peers(self, seen: Iterable[str], now: float) -> None:
        """Note what signals a return (reachable peers and nodes, pods of unreachable
        ones); anything new starts a settle (the first call only sets what was there)."""
        current = set(seen)
        if self._live is not None and current - self._live:
            self._returned_at = now
        self._live = current

    def hold(self, owner: str, unknown: Iterable[str], now: float) -> float:
        """Seconds to hold back the trim of ``owner`` (0: trim now), given the uids of
        its counted pods whose status is unknown now."""
        left = 0.0 if self._returned_at is None else self._returned_at + self.settle - now
        before = self._unknown_since.get(owner, {})
        current = {uid: before.get(uid, now) for uid in unknown}
        self._unknown_since[owner] = current
        for first in current.values():
            left = max(left, first + self.status_wait - now)
        return max(0.0, left)

    def keep_only(self, owners: set[str]) -> None:
        """Forget the owners this peer no longer acts on: if it acts on one again, what it
        sees of its pods is new to it."""
        for owner in [o for o in self._unknown_since if o not in owners]:
            del self._unknown_since[owner]

    def settled(self, owner: str) -> None:
        """``owner`` has no surplus: a later one starts new waits for unknown statuses."""
        self._unknown_since.pop(owner, None)
