"""Local health awareness (Lifeguard): a node that misses its own deadlines slows down.

A score in ``[0, max)`` rises when this node fails to get answers it should have got
(missed nacks, having to refute a suspicion about itself) and falls with each good
probe. Probe intervals and timeouts are multiplied by ``score + 1``, so an overloaded
or badly connected node stops declaring healthy peers dead.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self._max = max(1, max_multiplier)
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self._max - 1, max(0, self.score + delta))

    def scale(self, seconds: float) -> float:
        return seconds * (self.score + 1)
