"""Prometheus' text format (version 0.0.4), for ``GET /metrics``: counters and histograms
fed as things happen, metric families built at scrape time, and the text of a registry.

The few parts of ``prometheus_client`` that ``shoal.api.metrics`` used, written out: that
package imports its HTTP servers, WSGI and push-gateway clients as it is imported (about
1 MB of an idle node's RSS, issue 11). The text is what ``prometheus_client`` 0.26 writes
for the same metrics, less its ``_created`` series (kube-apiserver writes none either):
a counter's samples end in ``_total``, labels are sorted by name, values are written as
Go writes floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[str, dict[str, str], float]  # (name, labels, value)


class Metric:
    """One metric family: its name (a counter's without ``_total``), help, type, samples."""

    def __init__(self, name: str, documentation: str, typ: str) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.samples: list[Sample] = []


class _Family(Metric):
    def __init__(self, name: str, documentation: str, typ: str,
                 labels: Sequence[str] | None) -> None:
        super().__init__(name, documentation, typ)
        self._labels = tuple(labels or ())
        self._suffix = "_total" if typ == "counter" else ""

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.samples.append((self.name + self._suffix, dict(zip(self._labels, labels,
                                                               strict=True)), float(value)))


class CounterMetricFamily(_Family):
    """A counter read at scrape time: ``add_metric(label values, value)``."""

    def __init__(self, name: str, documentation: str,
                 labels: Sequence[str] | None = None) -> None:
        super().__init__(name.removesuffix("_total"), documentation, "counter", labels)


class GaugeMetricFamily(_Family):
    """A gauge read at scrape time: ``add_metric(label values, value)``."""

    def __init__(self, name: str, documentation: str,
                 labels: Sequence[str] | None = None) -> None:
        super().__init__(name, documentation, "gauge", labels)


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class CollectorRegistry:
    """Collectors, written in the order they were registered."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[Metric]:
        for c in self._collectors:
            yield from c.collect()


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class _HistogramChild:
    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        for i, bound in enumerate(self.buckets):
            if amount <= bound:
                self.counts[i] += 1
                return


class _Labelled:
    """What Counter and Histogram share: children by label values, in order of first use."""

    typ = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        if registry is not None:
            registry.register(self)

    def _child(self, values: tuple[str, ...]) -> object:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new()
        return child

    def _new(self) -> object:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        m = Metric(self.name, self.documentation, self.typ)
        for values, child in self._children.items():
            self._samples(m.samples, dict(zip(self.labelnames, values, strict=True)), child)
        yield m

    def _samples(self, out: list[Sample], labels: dict[str, str], child: object) -> None:
        raise NotImplementedError


class Counter(_Labelled):
    """A counter (``name`` may end in ``_total``); without labels it is its own child."""

    typ = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)
        if not self.labelnames:
            self._child(())

    def _new(self) -> _CounterChild:
        return _CounterChild()

    def labels(self, *values: str) -> _CounterChild:
        child = self._child(tuple(str(v) for v in values))
        assert isinstance(child, _CounterChild)
        return child

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def _samples(self, out: list[Sample], labels: dict[str, str], child: object) -> None:
        assert isinstance(child, _CounterChild)
        out.append((self.name + "_total", labels, child.value))


class Histogram(_Labelled):
    """A histogram over ``buckets`` (upper bounds; +Inf is added)."""

    typ = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = (), registry: CollectorRegistry | None = None
                 ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> _HistogramChild:
        return _HistogramChild(self.buckets)

    def labels(self, *values: str) -> _HistogramChild:
        child = self._child(tuple(str(v) for v in values))
        assert isinstance(child, _HistogramChild)
        return child

    def _samples(self, out: list[Sample], labels: dict[str, str], child: object) -> None:
        assert isinstance(child, _HistogramChild)
        total = 0
        for bound, n in zip(self.buckets, child.counts, strict=True):
            total += n
            out.append((self.name + "_bucket", {**labels, "le": go_float(bound)}, float(total)))
        out.append((self.name + "_count", labels, float(total)))
        out.append((self.name + "_sum", labels, child.sum))


def go_float(d: float) -> str:
    """A float as Go (and so Prometheus) writes it: ``+Inf``, ``1.0``, ``1.234567e+06``."""
    d = float(d)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _label_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def generate_latest(registry: CollectorRegistry) -> bytes:
    """The registry in the text format."""
    out: list[str] = []
    for metric in registry.collect():
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {metric.type}\n")
        for sample_name, labels, value in metric.samples:
            if labels:
                text = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels.items()))
                out.append(f"{sample_name}{{{text}}} {go_float(value)}\n")
            else:
                out.append(f"{sample_name} {go_float(value)}\n")
    return "".join(out).encode()
