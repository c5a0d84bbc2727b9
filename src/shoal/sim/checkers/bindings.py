"""No pod runs on two nodes at once after the merge, and every copy runs where its pod is bound.

While apart, two sides may bind one pod (one slot name) to different nodes; the
merge keeps one ``spec.nodeName`` (last writer wins) and the kubelet that lost
must stop its copy. This checker watches the timeline from the heal: it records
every interval in which one pod name has copies on two nodes, and at the end
compares each running copy with the pod in a converged replica.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from shoal.sim.timeline import Timeline
from shoal.store.replica import Replica


@dataclass
class BindingChecker:
    since: float | None = None
    """Virtual seconds of the heal; nothing before it is judged."""
    open: dict[tuple[str, str], tuple[float, frozenset[str]]] = field(default_factory=dict)
    """Pods running twice now: since when, on which nodes."""
    intervals: list[tuple[str, float, float, frozenset[str]]] = field(default_factory=list)
    """Closed double runs: (pod, from, to, nodes)."""

    def doubles(self, timeline: Timeline) -> dict[tuple[str, str], frozenset[str]]:
        nodes: dict[tuple[str, str], set[str]] = defaultdict(set)
        for c in timeline.copies.values():
            nodes[(c.namespace, c.name)].add(c.node)
        return {k: frozenset(v) for k, v in nodes.items() if len(v) > 1}

    def __call__(self, timeline: Timeline, now: float) -> None:
        if self.since is None:
            return
        now_doubles = self.doubles(timeline)
        for key in list(self.open):
            if key not in now_doubles:
                start, where = self.open.pop(key)
                self.intervals.append((f"{key[0]}/{key[1]}", start, now, where))
        for key, where in now_doubles.items():
            self.open.setdefault(key, (now, where))

    def longest(self, now: float) -> float:
        """The longest double run after the heal (open ones up to ``now``), in virtual seconds."""
        spans = [end - start for _, start, end, _ in self.intervals]
        spans += [now - start for start, _ in self.open.values()]
        return max(spans, default=0.0)

    def check(self, timeline: Timeline, replica: Replica) -> list[str]:
        """Run at the end, against a converged replica."""
        problems = [f"{ns}/{name} still runs on {sorted(where)}"
                    for (ns, name), (_, where) in sorted(self.open.items())]
        for c in sorted(timeline.copies.values(), key=lambda c: (c.namespace, c.name, c.node)):
            pod: dict[str, Any] | None = replica.get("pods", c.namespace, c.name)
            if pod is None:
                problems.append(f"{c.node} runs {c.namespace}/{c.name}, which no longer exists")
                continue
            bound = (pod.get("spec") or {}).get("nodeName")
            if bound != c.node:
                problems.append(f"{c.node} runs {c.namespace}/{c.name}, which is bound to {bound}")
            elif pod["metadata"].get("uid") != c.uid:
                problems.append(f"{c.node} runs an old uid of {c.namespace}/{c.name}")
        return problems
