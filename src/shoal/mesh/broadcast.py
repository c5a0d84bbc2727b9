"""The piggyback queue: membership updates waiting to ride on outgoing messages.

Each update is sent ``retransmit_limit`` times (RetransmitMult × ceil(log10(N + 1))),
the least-sent first, so a new fact spreads before old ones are repeated. A newer
update about a member replaces any queued one about the same member.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.mesh.messages import Update


class BroadcastQueue:
    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        # Buckets by times sent; each keeps insertion order, so ties go oldest first.
        # Taking n updates costs O(n), not a sort of the whole queue.
        self._buckets: dict[int, dict[str, Update]] = {}
        self._sent: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sent)

    def names(self) -> list[str]:
        """The members that queued updates are about."""
        return list(self._sent)

    def queue(self, update: Update) -> None:
        old = self._sent.pop(update.name, None)
        if old is not None:
            del self._buckets[old][update.name]
        self._buckets.setdefault(0, {})[update.name] = update
        self._sent[update.name] = 0

    def take(self, n: int, keep: Callable[[Update], bool] | None = None) -> tuple[Update, ...]:
        """Up to ``n`` updates to piggyback now, each counted as one more transmission;
        with ``keep``, only those it accepts (a weak peer is sent only what concerns it,
        and the others wait for the next message)."""
        if not self._sent or n <= 0:
            return ()
        limit = self._limit()
        chosen: list[tuple[int, Update]] = []
        for count in sorted(self._buckets):
            bucket = self._buckets[count]
            for update in bucket.values():
                if keep is not None and not keep(update):
                    continue
                chosen.append((count, update))
                if len(chosen) >= n:
                    break
            if len(chosen) >= n:
                break
        for count, update in chosen:
            del self._buckets[count][update.name]
            if not self._buckets[count]:
                del self._buckets[count]
            if count + 1 >= limit:
                del self._sent[update.name]
            else:
                self._buckets.setdefault(count + 1, {})[update.name] = update
                self._sent[update.name] = count + 1
        return tuple(u for _, u in chosen)

    def clear(self) -> None:
        self._buckets.clear()
        self._sent.clear()
