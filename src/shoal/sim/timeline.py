"""What actually runs where: the pod copies the simulated kubelets run, and every change to them.

The store says what peers *believe*; the timeline says what *is*, which is what
the availability and binding checkers must judge. Every change (a copy starts,
turns ready, starts terminating, stops) notifies the listeners at that virtual
instant, so a checker samples the timeline at every change and misses no dip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Copy:
    """One pod running on one node."""

    node: str
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    started_at: float = 0.0
    ready_at: float | None = None
    """Virtual seconds when it turned ready; None while starting."""
    ready_at_wall: float = 0.0
    """The node's own wall clock then (what it writes in the Ready condition)."""
    ready: bool = False
    terminating: bool = False


Listener = Callable[["Timeline", float], None]


@dataclass
class Timeline:
    copies: dict[tuple[str, str, str], Copy] = field(default_factory=dict)
    """By (node, namespace, name)."""
    listeners: list[Listener] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    """(virtual seconds, what happened), for the trace and for debugging a seed."""

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _changed(self, what: str) -> None:
        now = self._now()
        self.events.append((now, what))
        for listener in list(self.listeners):
            listener(self, now)

    def copy(self, node: str, namespace: str, name: str) -> Copy | None:
        return self.copies.get((node, namespace, name))

    def copies_on(self, node: str) -> list[Copy]:
        return [c for c in self.copies.values() if c.node == node]

    def start(self, c: Copy) -> None:
        c.started_at = self._now()
        self.copies[(c.node, c.namespace, c.name)] = c
        self._changed(f"{c.node} start {c.namespace}/{c.name} {c.uid[:8]}")

    def set_ready(self, c: Copy, ready: bool, terminating: bool = False,
                  wall: float | None = None) -> None:
        if self.copies.get((c.node, c.namespace, c.name)) is not c:
            return
        if ready and c.ready_at is None:
            c.ready_at = self._now()
            c.ready_at_wall = wall if wall is not None else c.ready_at
        c.ready = ready
        c.terminating = c.terminating or terminating
        state = "terminating" if c.terminating else ("ready" if ready else "not-ready")
        self._changed(f"{c.node} {state} {c.namespace}/{c.name}")

    def stop(self, c: Copy, why: str) -> None:
        if self.copies.get((c.node, c.namespace, c.name)) is c:
            del self.copies[(c.node, c.namespace, c.name)]
            self._changed(f"{c.node} stop {c.namespace}/{c.name} ({why})")

    def drop_node(self, node: str) -> None:
        """The node died: all its copies are gone at this instant."""
        gone = self.copies_on(node)
        for c in gone:
            del self.copies[(c.node, c.namespace, c.name)]
        if gone:
            self._changed(f"{node} killed with {len(gone)} pods")
