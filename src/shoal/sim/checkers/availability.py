"""No dip below ``maxUnavailable``: ready replicas, sampled from the timeline at every change.

Ready means a copy that a live kubelet runs, reports ready and has not started
to stop; each pod name counts once. The floor is what a RollingUpdate promises:
``replicas - maxUnavailable`` ready pods at every instant of the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.sim.timeline import Timeline


@dataclass
class AvailabilityChecker:
    labels: dict[str, str]
    """The Deployment's selector (matchLabels)."""
    floor: int
    """replicas - maxUnavailable."""
    lowest: int | None = None
    samples: int = 0
    dips: list[tuple[float, int]] = field(default_factory=list)
    """(virtual seconds, ready count) of every sample below the floor."""
    active: bool = False

    def ready(self, timeline: Timeline) -> int:
        names = {(c.namespace, c.name) for c in timeline.copies.values()
                 if c.ready and not c.terminating
                 and all(c.labels.get(k) == v for k, v in self.labels.items())}
        return len(names)

    def __call__(self, timeline: Timeline, now: float) -> None:
        if not self.active:
            return
        n = self.ready(timeline)
        self.samples += 1
        self.lowest = n if self.lowest is None else min(self.lowest, n)
        if n < self.floor:
            self.dips.append((now, n))

    def check(self) -> list[str]:
        if not self.dips:
            return []
        at, n = self.dips[0]
        return [f"{len(self.dips)} samples below the floor of {self.floor} ready replicas; "
                f"first at {at:.3f}s with {n} ready, lowest {self.lowest}"]
