"""CPU and memory of this node and of the containers it runs, for ``kubectl top``.

Every ``interval`` (15 s by default, as metrics-server's resolution) the sampler reads:

- for each running container, its cgroup v2 when it has one of its own (runc puts a
  container in ``/shoal/<id>``, the process runtime in ``/sys/fs/cgroup/shoal/...``
  when the hierarchy is writable): ``cpu.stat`` ``usage_usec`` and ``memory.current``
  less ``inactive_file`` (the working set, as the kubelet reports it);
- otherwise the container's process tree in ``/proc``: user and system time of every
  process (and of the children they reaped) and their resident set;
- the node from ``/proc/stat`` and ``/proc/meminfo`` (total less available memory).

CPU is a rate: the usage between two readings over the time between them, in
nanocores. A container seen once has no rate yet and is left out of that sample
(metrics-server does the same), so ``kubectl top`` shows it one interval later.

Samples stay on this node and are never written to the replica (they would churn every
peer's replica every few seconds); other peers ask for them over the peer link
(:mod:`shoal.api.resource_metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INTERVAL = 15.0
QUICK = 1.0
"""Seconds to the second reading of something new, which gives its first rate."""
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


ProcessTable = dict[int, tuple[int, int, int]]
"""(ppid, CPU ticks, RSS pages) by pid."""


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative CPU (nanoseconds) and current memory (bytes) at a wall time."""

    cpu_ns: int
    memory: int
    at: float


@dataclass(frozen=True, slots=True)
class Usage:
    """A rate between two readings."""

    cpu_nanocores: int
    memory: int
    timestamp: float
    window: float

    def to_json(self) -> dict[str, Any]:
        return {"cpu": self.cpu_nanocores, "memory": self.memory,
                "timestamp": self.timestamp, "window": self.window}


def usage(before: Reading | None, now: Reading) -> Usage | None:
    if before is None or now.at <= before.at or now.cpu_ns < before.cpu_ns:
        return None  # no rate yet, or the counter went back (a restarted container)
    window = now.at - before.at
    return Usage(int((now.cpu_ns - before.cpu_ns) / window), now.memory, now.at, window)


class Proc:
    """Reads of ``/proc`` and ``/sys/fs/cgroup`` (rooted elsewhere in tests)."""

    def __init__(self, proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> None:
        self.proc = proc
        self._proc_dir = str(proc)
        self.cgroup = cgroup
        self._own_cgroup = self.cgroup_of(os.getpid())

    def cgroup_of(self, pid: int) -> str | None:
        """The cgroup v2 path of ``pid`` (``0::/path``), None without one."""
        try:
            for line in (self.proc / str(pid) / "cgroup").read_text().splitlines():
                if line.startswith("0::"):
                    return line[3:] or "/"
        except OSError:
            return None
        return None

    def own_cgroup(self, pid: int) -> Path | None:
        """The cgroup directory of ``pid`` if it is the container's own: not the root and
        not the one Shoal runs in (a process pod without cgroups shares the server's)."""
        path = self.cgroup_of(pid)
        if path is None or path in ("/", self._own_cgroup) or "shoal" not in path:
            return None
        d = self.cgroup / path.lstrip("/")
        return d if (d / "cpu.stat").exists() else None

    def cgroup_reading(self, d: Path, at: float) -> Reading | None:
        try:
            cpu_us = 0
            for line in (d / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    cpu_us = int(value)
            memory = int((d / "memory.current").read_text())
            with contextlib.suppress(OSError, ValueError):
                for line in (d / "memory.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "inactive_file":
                        memory = max(0, memory - int(value))
            return Reading(cpu_us * 1000, memory, at)
        except (OSError, ValueError):
            return None

    def _stat(self, pid: str) -> tuple[int, int, int] | None:
        """(ppid, utime+stime+cutime+cstime ticks, rss pages) from ``/proc/<pid>/stat``."""
        try:
            # A string path: pathlib interns every part, and a pass reads every process.
            with open(f"{self._proc_dir}/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            return None
        fields = raw[raw.rfind(")") + 2:].split()
        try:
            # After the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15) ...
            # rss(22), counting from state as 1 (fields[0]).
            ppid = int(fields[1])
            ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
            rss = int(fields[21])
        except (IndexError, ValueError):
            return None
        return ppid, ticks, rss

    def processes(self) -> ProcessTable:
        """(ppid, ticks, rss pages) of every process, by pid: one pass over ``/proc``."""
        stats: ProcessTable = {}
        try:
            pids = [p for p in os.listdir(self._proc_dir) if p.isdigit()]
        except OSError:
            return stats
        for pid in pids:
            st = self._stat(pid)
            if st is not None:
                stats[int(pid)] = st
        return stats

    def tree_reading(self, root: int, at: float,
                     table: ProcessTable | None = None) -> Reading | None:
        """The process tree under ``root``: the sum of its processes' CPU and RSS, from
        ``table`` (a sample reads the process table once for all its containers)."""
        stats = self.processes() if table is None else table
        if root not in stats:
            return None
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        ticks = rss = 0
        todo = [root]
        seen: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            _, t, r = stats[pid]
            ticks += t
            rss += r
            todo.extend(children.get(pid, ()))
        return Reading(ticks * 1_000_000_000 // _TICKS, rss * _PAGE, at)

    def container_reading(self, pid: int, at: float,
                          table: Callable[[], ProcessTable] | None = None) -> Reading | None:
        """From the container's own cgroup, else its process tree (``table`` gives the
        process table, read once per sample and only if a container needs it)."""
        d = self.own_cgroup(pid)
        if d is not None:
            reading = self.cgroup_reading(d, at)
            if reading is not None:
                return reading
        return self.tree_reading(pid, at, table() if table is not None else None)

    def node_reading(self, at: float) -> Reading | None:
        try:
            first = (self.proc / "stat").read_text().split("\n", 1)[0].split()
            # cpu user nice system idle iowait irq softirq steal: busy is all but idle, iowait
            values = [int(v) for v in first[1:9]]
            busy = sum(values) - values[3] - values[4]
            mem: dict[str, int] = {}
            for line in (self.proc / "meminfo").read_text().splitlines():
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    mem[key] = int(parts[0]) * 1024
            used = mem.get("MemTotal", 0) - mem.get("MemAvailable", mem.get("MemFree", 0))
        except (OSError, ValueError, IndexError):
            return None
        return Reading(busy * 1_000_000_000 // _TICKS, max(0, used), at)


@dataclass
class PodSample:
    namespace: str
    name: str
    uid: str
    containers: dict[str, Usage] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid,
                "containers": {n: u.to_json() for n, u in sorted(self.containers.items())}}


class PodMetricsSampler:
    """Keeps the last reading of the node and of each running container, and the rates."""

    def __init__(self, workers: Callable[[], Iterable[Any]], *, proc: Proc | None = None,
                 interval: float = INTERVAL, clock: Callable[[], float] = time.time) -> None:
        self.workers = workers
        self.proc = proc or Proc()
        self.interval = interval
        self.clock = clock
        self._node_last: Reading | None = None
        self._last: dict[tuple[str, str, int], Reading] = {}
        self.node: Usage | None = None
        self.pods: dict[str, PodSample] = {}
        self.samples = 0

    def targets(self) -> list[tuple[str, str, str, str, int]]:
        """(uid, namespace, pod, container, pid) of every running container, read on the
        event loop (the workers change there) before the files are read off it."""
        out = []
        for worker in list(self.workers()):
            for rec in list(getattr(worker, "records", ())):
                handle = worker.running_handle(rec.name)
                if handle is not None:
                    out.append((worker.uid, worker.namespace, worker.name, rec.name,
                                int(handle.pid)))
        return out

    def sample(self, targets: list[tuple[str, str, str, str, int]] | None = None) -> None:
        at = self.clock()
        node_now = self.proc.node_reading(at)
        if node_now is not None:
            self.node = usage(self._node_last, node_now) or self.node
            self._node_last = node_now
        seen: dict[tuple[str, str, int], Reading] = {}
        pods: dict[str, PodSample] = {}
        table: ProcessTable | None = None

        def processes() -> ProcessTable:
            # Once per sample: a pass per container read all of /proc once per pod.
            nonlocal table
            if table is None:
                table = self.proc.processes()
            return table

        for uid, namespace, pod, container, pid in (self.targets() if targets is None
                                                    else targets):
            key = (uid, container, pid)
            now = self.proc.container_reading(pid, at, processes)
            if now is None:
                continue
            seen[key] = now
            rate = usage(self._last.get(key), now)
            if rate is not None:
                pods.setdefault(uid, PodSample(namespace, pod, uid)).containers[container] = rate
        self._last = seen
        self.pods = pods
        self.samples += 1

    @property
    def waiting(self) -> bool:
        """Whether a container (or the node) was read once and has no rate yet."""
        return self.node is None or len(self._last) > sum(
            len(p.containers) for p in self.pods.values())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self.sample, self.targets())
            except Exception:  # a diagnostic must not take the node down
                log.exception("sampling pod metrics failed")
            # A new container gets its first rate a second later, not a whole interval.
            await asyncio.sleep(min(QUICK, self.interval) if self.waiting else self.interval)

    def report(self, visible: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """What this node answers a peer's ``metrics`` stream with; ``visible`` says which
        namespaces' pods the asker may see (all when None)."""
        return {"node": None if self.node is None else self.node.to_json(),
                "pods": [p.to_json() for p in self.pods.values()
                         if visible is None or visible(p.namespace)]}
