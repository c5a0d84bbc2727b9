"""Memory a burst freed goes back to the system once the burst is over (shoal.api.memory)."""

from __future__ import annotations

from shoal.api.memory import HeapTrimmer

MB = 2**20


class Process:
    """A fake process: its RSS, its CPU time, and what a trim gives back."""

    def __init__(self) -> None:
        self.rss = 80 * MB
        self.cpu = 0.0
        self.freed = 0  # freed inside the heap: a trim gives it back
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1
        self.rss -= self.freed
        self.freed = 0


def trimmer(p: Process) -> HeapTrimmer:
    t = HeapTrimmer(interval=5.0, growth=4 * MB, rss=lambda: p.rss, cpu=lambda: p.cpu,
                    trim=p.trim, collect=lambda: 0)
    t.check()  # the first look takes the mark
    return t


def test_an_idle_node_never_trims() -> None:
    p = Process()
    t = trimmer(p)
    for _ in range(20):
        p.cpu += 0.05
        assert not t.check()
    assert p.trims == 0


def test_memory_freed_by_a_burst_of_small_requests_is_given_back_when_it_ends() -> None:
    p = Process()
    t = trimmer(p)
    for _ in range(4):  # busy, the RSS flat: what each request frees is reused
        p.cpu += 4.0
        p.rss += MB // 4
        assert not t.check()
    p.freed = 3 * MB  # the burst is over: its buffers are free, but in the heap
    p.cpu += 0.1
    assert t.check(), "a busy interval then a quiet one"
    assert p.rss == 80 * MB - 2 * MB and t.given_back == 3 * MB
    assert t.collections == 1, "the burst's cyclic garbage collected first"
    p.cpu += 0.1
    assert not t.check(), "once per burst"


def test_growth_trims_once_per_growth_and_memory_in_use_is_not_trimmed_again() -> None:
    p = Process()
    t = trimmer(p)
    p.rss += 5 * MB  # 100 pods: memory in use, nothing free
    assert t.check()
    for _ in range(10):
        p.cpu += 0.05
        assert not t.check(), "the RSS after the trim is the new mark"
    p.rss += 5 * MB
    assert t.check() and p.trims == 2
    assert t.collections == 0, "no full collection while the memory grows (under load)"
