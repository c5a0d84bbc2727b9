"""After a heal, the trim keeps the pods that ran longest (docs/semantics.md, "The trim").

The checker judges what actually ran (the ``Timeline``) against what the controllers
decided after the heal:

- at the heal it notes every ready copy of the workload and when it turned ready;
- it watches every replica's change feed and notes, per pod uid, the first instant any
  peer saw that pod being deleted (``deletionTimestamp`` set, or gone): the deciding
  peer commits it first, so a deletion first seen after the heal was decided after it;
- at the end, a pod that was running at the heal and deleted after it must not have
  run longer than any copy that was running when it was deleted and still runs.

Deletions decided while apart are each side's own (Kubernetes' rule: a pod on a node
that side cannot reach is not ready, so it goes first) and are not judged here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shoal.sim.timeline import Timeline
from shoal.store.change_feed import Change
from shoal.store.replica import Replica

TOLERANCE = 1.0
"""Seconds: two copies that turned ready closer than this are of equal age (the peers'
clocks differ by up to ``SimCluster.clock_skew``, 0.05 s by default)."""


@dataclass
class LongestKeptChecker:
    labels: dict[str, str]
    """The workload's pods: copies whose labels include these."""
    heal: float | None = None
    running_at_heal: dict[str, tuple[str, float]] = field(default_factory=dict)
    """uid -> (namespace/name, virtual seconds it turned ready), for ready copies at the heal."""
    deleted_at: dict[str, float] = field(default_factory=dict)
    """uid -> virtual seconds a deletion of it was first seen on any peer."""
    ready_when_deleted: dict[str, float] = field(default_factory=dict)
    """uid -> since when its copy running at the deletion had been ready (a merge that
    gave a pod the other side's uid restarts the copy: it is young, whatever ran before)."""

    def watch(self, replica: Replica, timeline: Timeline, now: Callable[[], float]) -> None:
        """Note the deletions committed on ``replica``, at the instant of the commit, and
        since when the copy of that uid then running had been ready."""

        def seen(change: Change) -> bool:
            if change.resource == "pods":
                meta = change.obj.get("metadata") or {}
                uid = meta.get("uid")
                if isinstance(uid, str) and uid not in self.deleted_at and (
                        change.type == "DELETED" or meta.get("deletionTimestamp")):
                    self.deleted_at[uid] = now()
                    ages = [c.ready_at for c in timeline.copies.values()
                            if c.uid == uid and c.ready_at is not None and not c.terminating]
                    if ages:
                        self.ready_when_deleted[uid] = min(ages)
            return False  # an observer: nothing is queued

        replica.subscribe(seen)

    def healed(self, timeline: Timeline, now: float) -> None:
        self.heal = now
        for c in timeline.copies.values():
            if self._ours(c.labels) and c.ready and not c.terminating and c.ready_at is not None:
                prev = self.running_at_heal.get(c.uid)
                since = c.ready_at if prev is None else min(prev[1], c.ready_at)
                self.running_at_heal[c.uid] = (f"{c.namespace}/{c.name}", since)

    def _ours(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels.items())

    def trimmed(self) -> dict[str, tuple[str, float]]:
        """The pods running at the heal that a peer decided to delete after it, with since
        when the copy it stopped had been ready."""
        assert self.heal is not None
        return {uid: (name, self.ready_when_deleted[uid])
                for uid, (name, _) in self.running_at_heal.items()
                if self.deleted_at.get(uid, -1.0) >= self.heal
                and uid in self.ready_when_deleted}

    def check(self, timeline: Timeline) -> list[str]:
        """Run once the control plane has converged: each pod trimmed after the heal is
        compared with the copies that still run and already ran when it was deleted (a
        copy started later replaced something else, such as the pods of a node that died
        unnoticed: a peer learns of that only after the lease grace)."""
        if self.heal is None:
            return []
        kept = [(f"{c.namespace}/{c.name}", c.ready_at) for c in timeline.copies.values()
                if self._ours(c.labels) and c.ready_at is not None]
        problems = []
        for uid, (name, since) in sorted(self.trimmed().items(), key=lambda kv: kv[1]):
            deleted = self.deleted_at[uid]
            younger = [(k, k_since) for k, k_since in kept
                       if since + TOLERANCE < k_since <= deleted]
            if younger:
                k, k_since = max(younger, key=lambda kv: kv[1])
                problems.append(
                    f"{name} ran since {since:.1f}s and was trimmed at {deleted:.1f}s after "
                    f"the heal at {self.heal:.1f}s, but {k} (ready since {k_since:.1f}s) "
                    "was kept")
        return problems

    def created_after_heal(self, timeline: Timeline) -> int:
        """Copies running at the end that started after the heal (replacements, and the
        churn of a count seen mid-merge)."""
        assert self.heal is not None
        return sum(1 for c in timeline.copies.values()
                   if self._ours(c.labels) and c.started_at > self.heal)
