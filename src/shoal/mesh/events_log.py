"""A small ring buffer of membership transitions, for operators (``shoal status``, the page).

:class:`MembershipLog` is a :class:`~shoal.mesh.membership.MembershipHooks` that records
each state change of a member (alive, suspect, dead, left) with the wall time, then passes
the call on to the hooks it wraps, so it can be slipped in front of the existing ones
without touching membership. Only changes of *state* are kept (an incarnation bump that
refutes nothing is not news), and the buffer is bounded: a flapping link cannot grow it.

A member that goes from alive to suspect or dead is a *cut* as this node sees it; back to
alive is a *heal*. Those are the partitions ``shoal status`` lists.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.mesh.membership import Member, MembershipHooks, NoHooks
from shoal.mesh.messages import State

CAPACITY = 256


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    time: float
    """Wall-clock seconds (Unix time)."""
    member: str
    address: str
    state: str
    """alive, suspect, dead or left."""
    previous: str | None
    """The state before (None: a member this node had not seen)."""
    incarnation: int

    @property
    def kind(self) -> str:
        """join, cut, heal, leave or change: what an operator calls it."""
        if self.state == "left":
            return "leave"
        if self.previous is None:
            return "join" if self.state == "alive" else "change"
        if self.state == "alive":
            # Back after a graceful stop is a restart, not the end of a cut.
            return "join" if self.previous == "left" else "heal"
        if self.previous == "alive" or (self.previous == "suspect" and self.state == "dead"):
            return "cut"
        return "change"

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "member": self.member, "address": self.address,
                "state": self.state, "previous": self.previous,
                "incarnation": self.incarnation, "kind": self.kind}


def state_name(state: State) -> str:
    return state.name.lower()


class MembershipLog:
    """Records state transitions, then calls the wrapped hooks."""

    def __init__(self, inner: MembershipHooks | None = None, *, capacity: int = CAPACITY,
                 clock: Callable[[], float] = time.time) -> None:
        self.inner: MembershipHooks = inner or NoHooks()
        self.clock = clock
        self.events: deque[MembershipEvent] = deque(maxlen=capacity)
        self._states: dict[str, str] = {}
        self.transitions = 0
        """Every state change seen, including those the ring buffer has dropped."""

    def _record(self, m: Member) -> None:
        state = state_name(m.state)
        previous = self._states.get(m.name)
        if previous == state:
            return
        self._states[m.name] = state
        self.transitions += 1
        self.events.append(MembershipEvent(self.clock(), m.name, m.address, state, previous,
                                           m.incarnation))

    def on_join(self, member: Member) -> None:
        self._record(member)
        self.inner.on_join(member)

    def on_leave(self, member: Member) -> None:
        self._record(member)
        self.inner.on_leave(member)

    def on_update(self, member: Member) -> None:
        self._record(member)
        self.inner.on_update(member)

    def recent(self, limit: int | None = None) -> list[MembershipEvent]:
        """The newest ``limit`` events (all kept when None), oldest first."""
        items = list(self.events)
        return items if limit is None else items[-limit:]
