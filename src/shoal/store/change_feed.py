"""The change feed: recent changes by local revision, and the watchers that read it.

The feed keeps the last ``capacity`` changes, and of those only the ones published in the
last ``history_seconds`` beyond the last ``min_kept``. A watch from a revision older than
the oldest change still held cannot be served and gets 410 Gone (the client relists),
exactly as with a compacted etcd.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HISTORY_SECONDS = 300.0
"""How long a change stays in the feed for watches to resume from (beyond the last
``MIN_KEPT``): Kubernetes compacts etcd every 5 minutes, and its watch cache keeps less.
Held up to the capacity, the feed kept every version of every object written since the
start (each status write's pod, each Event, each deleted object): most of a node's memory
per pod."""
MIN_KEPT = 100


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change to one object."""

    type: str  # ADDED, MODIFIED or DELETED
    resource: str
    namespace: str
    name: str
    rv: int
    obj: dict[str, Any]  # the new value; for DELETED, the last value at the deletion's revision
    old: dict[str, Any] | None  # the value before, None for ADDED


class Expired(Exception):
    """The requested revision has been compacted away."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Subscription:
    """A watcher's queue. ``None`` in the queue means the feed dropped this watcher."""

    def __init__(self, feed: ChangeFeed, accept: Callable[[Change], bool], limit: int) -> None:
        self._feed = feed
        self.accept = accept
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self.limit = limit
        self.closed = False

    def offer(self, change: Change) -> None:
        if self.closed or not self.accept(change):
            return
        if self.queue.qsize() >= self.limit:
            log.warning("dropping a watcher that fell %d changes behind", self.limit)
            self.closed = True
            self.queue.put_nowait(None)
            self._feed.unsubscribe(self)
            return
        self.queue.put_nowait(change)

    def close(self) -> None:
        self.closed = True
        self._feed.unsubscribe(self)


class ChangeFeed:
    """Recent changes in revision order, and fan-out to subscribers."""

    def __init__(self, capacity: int = 50_000, watcher_queue_limit: int = 100_000,
                 history_seconds: float = HISTORY_SECONDS, min_kept: int = MIN_KEPT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._changes: deque[Change] = deque(maxlen=capacity)
        self._published: deque[float] = deque(maxlen=capacity)  # when each change came
        self.history_seconds = history_seconds
        self.min_kept = min_kept
        self._clock = clock
        # Insertion-ordered, so watchers wake in a deterministic order (the simulator replays).
        self._subs: dict[Subscription, None] = {}
        # Called with each change as it is published, local or merged from a peer, before
        # any watcher sees it: state that must follow every change (the kinds CRDs serve).
        self.listeners: list[Callable[[Change], None]] = []
        self.watcher_queue_limit = watcher_queue_limit
        # Revisions up to this one are fully reflected by the held changes.
        self.start_rv = 0

    @property
    def oldest_rv(self) -> int:
        """The oldest revision a watch may resume from."""
        if self._changes and self._changes.maxlen == len(self._changes):
            return self._changes[0].rv
        return self.start_rv

    def publish(self, change: Change) -> None:
        now = self._clock()
        self._changes.append(change)
        self._published.append(now)
        self._let_go(now - self.history_seconds)
        for listener in self.listeners:
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the feed
                log.exception("a change listener failed on %s %s/%s", change.resource,
                              change.namespace, change.name)
        for sub in list(self._subs):
            sub.offer(change)

    def _let_go(self, before: float) -> None:
        """Drop the changes published before ``before``, beyond the last ``min_kept``; a
        watch from their revisions is then too old."""
        while len(self._changes) > self.min_kept and self._published[0] < before:
            self._published.popleft()
            self.start_rv = max(self.start_rv, self._changes.popleft().rv)

    def since(self, rv: int, accept: Callable[[Change], bool]) -> list[Change]:
        """Changes after ``rv`` that ``accept`` takes; raises Expired if they are gone."""
        self._let_go(self._clock() - self.history_seconds)
        if rv < self.oldest_rv:
            raise Expired(rv, self.oldest_rv)
        return [c for c in self._changes if c.rv > rv and accept(c)]

    def subscribe(self, accept: Callable[[Change], bool]) -> Subscription:
        sub = Subscription(self, accept, self.watcher_queue_limit)
        self._subs[sub] = None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub, None)

    @property
    def watchers(self) -> int:
        return len(self._subs)
