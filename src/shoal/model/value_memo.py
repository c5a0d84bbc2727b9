"""Results of pure functions of a JSON value, remembered by the value's JSON bytes.

The pods of a ReplicaSet, a Job or a DaemonSet share one spec, and so do the pods a client
creates from one manifest: a create's walks of its spec that depend on nothing else (whether
it is valid, the managed fields it gives its writer) are remembered by the spec's bytes,
which orjson writes in about a microsecond where the walks take tens (issue 11).

Bounded by count and by the size of a value: a large or rare spec is walked as before.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import orjson

T = TypeVar("T")

MEMO_ENTRIES = 64
"""Values remembered per memo; the oldest goes first (a cluster creates pods from few
templates at a time, and a node must fit a small device: issue 11's 60 MB)."""
MEMO_VALUE_BYTES = 16 * 1024
"""A value's JSON form larger than this is not remembered (at most 1 MiB of keys a memo)."""


class ValueMemo(Generic[T]):
    """What a pure function gave for a JSON value, by the value's bytes (:meth:`key`).

    The key is byte for byte: the same value with its keys in another order is another
    entry, which only costs a walk. A result must not be changed by whoever reads it."""

    def __init__(self, entries: int = MEMO_ENTRIES) -> None:
        self._entries = entries
        self._results: dict[bytes, T] = {}

    @staticmethod
    def key(value: Any) -> bytes | None:
        """The value's JSON bytes, or None when it is not to be remembered (too large, or
        no JSON form: a YAML body may hold bytes or dates)."""
        try:
            encoded = orjson.dumps(value)
        except (orjson.JSONEncodeError, TypeError):
            return None
        return encoded if len(encoded) <= MEMO_VALUE_BYTES else None

    def get(self, key: bytes) -> T | None:
        return self._results.get(key)

    def put(self, key: bytes, result: T) -> None:
        results = self._results
        if key not in results and len(results) >= self._entries:
            del results[next(iter(results))]
        results[key] = result
