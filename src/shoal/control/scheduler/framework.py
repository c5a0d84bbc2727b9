"""The scheduling cycle: filter every node, score the feasible ones, pick one.

This follows kube-scheduler's framework (``pkg/scheduler/framework``) with the
parts Shoal needs: PreFilter, Filter, PreScore, Score and NormalizeScore. Two
things differ on purpose:

* Every node is filtered (no ``percentageOfNodesToScore`` sampling), and ties
  between the best nodes are broken by a stable hash of (pod uid, node name)
  instead of at random. Two peers that schedule the same pod while
  partitioned, seeing the same nodes, choose the same node, so their bindings
  agree when they merge.
* Preemption is not part of the cycle: the scheduler loop runs
  ``plugins.default_preemption.preempt`` after a failure (issue 12). The
  message of an unschedulable pod carries the ``preemption:`` part that
  Kubernetes writes, computed as DefaultPreemption would find it with no
  lower-priority victims.

Plugins are plain objects over plain dicts (Kubernetes objects as parsed
JSON), with no clock, randomness or I/O, so the server and the simulator run
the same code.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from shoal.control.scheduler.pod_info import PodInfo
from shoal.control.scheduler.snapshot import NodeInfo, Snapshot
from shoal.control.scheduler.status import Code, Status

__all__ = [
    "MAX_NODE_SCORE",
    "MIN_NODE_SCORE",
    "NO_NODES_MESSAGE",
    "Code",
    "CycleState",
    "FilterPlugin",
    "NodeInfo",
    "NormalizeScorePlugin",
    "Plugin",
    "PluginFactory",
    "PreFilterPlugin",
    "PreScorePlugin",
    "Profile",
    "Registry",
    "ScheduleResult",
    "ScorePlugin",
    "Snapshot",
    "Status",
    "default_normalize_score",
    "fit_error_message",
    "schedule",
    "tie_break_key",
]

Obj = Mapping[str, Any]

MAX_NODE_SCORE = 100
MIN_NODE_SCORE = 0

NO_NODES_MESSAGE = "no nodes available to schedule pods"
_NO_NODE_AVAILABLE = "0/{} nodes are available"
_PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
_NO_VICTIMS = "No preemption victims found for incoming pod"
_PREEMPTION_NEVER = "not eligible due to preemptionPolicy=Never."

_T = TypeVar("_T")


class CycleState:
    """What plugins compute in PreFilter/PreScore and read back per node, for one pod."""

    __slots__ = ("_data", "pod_info", "snapshot")

    def __init__(self, snapshot: Snapshot, pod_info: PodInfo) -> None:
        self.snapshot = snapshot
        self.pod_info = pod_info
        self._data: dict[str, object] = {}

    def write(self, key: str, value: object) -> None:
        self._data[key] = value

    def read(self, key: str, kind: type[_T]) -> _T:
        value = self._data.get(key)
        if not isinstance(value, kind):
            raise KeyError(f"{key!r} was not written in this cycle")
        return value


# --- plugin interfaces ------------------------------------------------------------------------


class Plugin(Protocol):
    @property
    def name(self) -> str: ...


@runtime_checkable
class PreFilterPlugin(Plugin, Protocol):
    """Runs once per pod before Filter. Returning ``Status.skip()`` skips its Filter."""

    def pre_filter(self, state: CycleState, pod: Obj) -> Status | None: ...


@runtime_checkable
class FilterPlugin(Plugin, Protocol):
    """Says whether ``pod`` may run on ``node``: ``None`` for yes, else a rejection."""

    def filter(self, state: CycleState, pod: Obj, node: NodeInfo) -> Status | None: ...


@runtime_checkable
class PreScorePlugin(Plugin, Protocol):
    """Runs once per pod over the feasible nodes. Returning ``Status.skip()`` skips its Score."""

    def pre_score(
        self, state: CycleState, pod: Obj, nodes: Sequence[NodeInfo]
    ) -> Status | None: ...


@runtime_checkable
class ScorePlugin(Plugin, Protocol):
    """Ranks a feasible node; after NormalizeScore the score is in 0..MAX_NODE_SCORE."""

    def score(self, state: CycleState, pod: Obj, node: NodeInfo) -> int: ...


@runtime_checkable
class NormalizeScorePlugin(Plugin, Protocol):
    def normalize_score(
        self, state: CycleState, pod: Obj, scores: dict[str, int]
    ) -> Status | None: ...


PluginFactory = Callable[[Mapping[str, Any]], Plugin]


class Registry:
    """Plugin factories by name; a factory takes the plugin's args (``pluginConfig``)."""

    def __init__(self, factories: Mapping[str, PluginFactory] | None = None) -> None:
        self._factories: dict[str, PluginFactory] = dict(factories or {})

    def register(self, name: str, factory: PluginFactory) -> None:
        if name in self._factories:
            raise ValueError(f"a plugin named {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(self, name: str, args: Mapping[str, Any] | None = None) -> Plugin:
        try:
            factory = self._factories[name]
        except KeyError:
            raise ValueError(f"no plugin named {name!r} is registered") from None
        return factory(args or {})


@dataclass(frozen=True)
class Profile:
    """A scheduler profile: the filters in order and the scorers with their weights."""

    scheduler_name: str
    filters: tuple[Plugin, ...]
    scores: tuple[tuple[Plugin, int], ...]

    @classmethod
    def build(
        cls,
        registry: Registry,
        *,
        scheduler_name: str = "default-scheduler",
        filters: Iterable[str],
        scores: Mapping[str, int] | Iterable[tuple[str, int]],
        args: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Profile:
        """Instantiate each named plugin once; a plugin may both filter and score."""
        args = args or {}
        built: dict[str, Plugin] = {}

        def get(name: str) -> Plugin:
            if name not in built:
                built[name] = registry.build(name, args.get(name))
            return built[name]

        score_items = scores.items() if isinstance(scores, Mapping) else scores
        filter_plugins = tuple(get(n) for n in filters)
        score_plugins = tuple((get(n), w) for n, w in score_items)
        for p in filter_plugins:
            if not isinstance(p, FilterPlugin):
                raise ValueError(f"plugin {p.name!r} does not implement Filter")
        for p, w in score_plugins:
            if not isinstance(p, ScorePlugin):
                raise ValueError(f"plugin {p.name!r} does not implement Score")
            if w <= 0:
                raise ValueError(f"plugin {p.name!r} needs a positive weight, not {w}")
        return cls(scheduler_name, filter_plugins, score_plugins)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleResult:
    """The chosen node, or why there is none.

    ``statuses`` holds the rejection of every node that was filtered out, and
    ``scores`` the weighted total of every feasible node. ``message`` is what
    Kubernetes writes in the PodScheduled=False condition and the
    FailedScheduling event; it is empty when a node was chosen.
    """

    node_name: str | None
    evaluated_nodes: int
    feasible_nodes: int
    statuses: Mapping[str, Status] = field(default_factory=dict)
    scores: Mapping[str, int] = field(default_factory=dict)
    message: str = ""
    code: Code = Code.SUCCESS
    unschedulable_plugins: frozenset[str] = frozenset()

    @property
    def scheduled(self) -> bool:
        return self.node_name is not None


def _histogram(reasons: Iterable[str]) -> str:
    # sortReasonsHistogram: "<count> <reason>", sorted as strings, joined by ", ".
    return ", ".join(sorted(f"{n} {r}" for r, n in Counter(reasons).items()))


def fit_error_message(
    num_nodes: int,
    statuses: Mapping[str, Status],
    *,
    pre_filter_message: str = "",
    post_filter_message: str = "",
) -> str:
    """``FitError.Error()``: ``0/N nodes are available: <reasons>. <post-filter message>``."""
    msg = _NO_NODE_AVAILABLE.format(num_nodes) + ":"
    if pre_filter_message:
        msg += f" {pre_filter_message}."
    else:
        hist = _histogram(r for s in statuses.values() for r in s.reasons)
        if hist:
            msg += f" {hist}."
    if post_filter_message:
        msg += f" {post_filter_message}"
    return msg


def _preemption_message(pod: Obj, num_nodes: int, statuses: Mapping[str, Status]) -> str:
    # What DefaultPreemption reports when it finds no victims; Shoal never preempts.
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
        return "preemption: " + _PREEMPTION_NEVER
    reasons = [
        _NO_VICTIMS if s.code is Code.UNSCHEDULABLE else _PREEMPTION_NOT_HELPFUL
        for s in statuses.values()
    ]
    return "preemption: " + _NO_NODE_AVAILABLE.format(num_nodes) + f": {_histogram(reasons)}."


def tie_break_key(pod_uid: str, node_name: str) -> bytes:
    """A stable pseudo-random rank of a node for a pod, the same on every peer."""
    return hashlib.blake2b(f"{pod_uid}\x00{node_name}".encode(), digest_size=8).digest()


def default_normalize_score(scores: dict[str, int], *, reverse: bool = False) -> None:
    """``helper.DefaultNormalizeScore``: scale to 0..MAX_NODE_SCORE by the highest score."""
    top = max(scores.values(), default=0)
    if top == 0:
        if reverse:
            for k in scores:
                scores[k] = MAX_NODE_SCORE
        return
    for k, v in scores.items():
        s = MAX_NODE_SCORE * v // top
        scores[k] = MAX_NODE_SCORE - s if reverse else s


def _pod_key(info: PodInfo) -> str:
    return info.uid or f"{info.namespace}/{info.name}"


def _failure(
    pod: Obj,
    n: int,
    statuses: dict[str, Status],
    code: Code = Code.UNSCHEDULABLE,
    pre_filter_message: str = "",
) -> ScheduleResult:
    message = fit_error_message(
        n,
        statuses,
        pre_filter_message=pre_filter_message,
        post_filter_message=_preemption_message(pod, n, statuses),
    )
    return ScheduleResult(
        node_name=None,
        evaluated_nodes=n,
        feasible_nodes=0,
        statuses=statuses,
        message=message,
        code=code,
        unschedulable_plugins=frozenset(s.plugin for s in statuses.values() if s.plugin),
    )


def _error(n: int, status: Status) -> ScheduleResult:
    return ScheduleResult(
        node_name=None,
        evaluated_nodes=n,
        feasible_nodes=0,
        message=f"running {status.plugin} plugin: {status.message}",
        code=Code.ERROR,
    )


def schedule(pod: Obj, snapshot: Snapshot, profile: Profile) -> ScheduleResult:
    """Choose a node for ``pod`` among ``snapshot``'s nodes; pure and deterministic."""
    n = len(snapshot.nodes)
    if n == 0:
        return ScheduleResult(None, 0, 0, message=NO_NODES_MESSAGE, code=Code.UNSCHEDULABLE)
    info = PodInfo(pod)
    state = CycleState(snapshot, info)

    # PreFilter: a plugin may skip its Filter, or reject the pod on every node at once.
    filters: list[FilterPlugin] = []
    for plugin in profile.filters:
        assert isinstance(plugin, FilterPlugin)
        if isinstance(plugin, PreFilterPlugin):
            st = plugin.pre_filter(state, pod)
            if st is not None:
                if st.is_skip:
                    continue
                st = st.with_plugin(plugin.name)
                if st.code is Code.ERROR:
                    return _error(n, st)
                if st.is_rejected:
                    everywhere = {node.name: st for node in snapshot.nodes}
                    return _failure(pod, n, everywhere, st.code, st.message)
        filters.append(plugin)

    # Filter: the first plugin that rejects a node decides its reasons, as in Kubernetes.
    feasible: list[NodeInfo] = []
    statuses: dict[str, Status] = {}
    for node in snapshot.nodes:
        for f in filters:
            st = f.filter(state, pod, node)
            if st is not None and not st.is_success:
                st = st.with_plugin(f.name)
                if st.code is Code.ERROR:
                    return _error(n, st)
                statuses[node.name] = st
                break
        else:
            feasible.append(node)
    if not feasible:
        return _failure(pod, n, statuses)
    if len(feasible) == 1:
        return ScheduleResult(feasible[0].name, n, 1, statuses)

    totals = _score(state, pod, profile, feasible)
    if isinstance(totals, Status):
        return _error(n, totals)
    key = _pod_key(info)
    best = max(feasible, key=lambda nd: (totals[nd.name], tie_break_key(key, nd.name)))
    return ScheduleResult(best.name, n, len(feasible), statuses, totals)


def _score(
    state: CycleState, pod: Obj, profile: Profile, feasible: list[NodeInfo]
) -> dict[str, int] | Status:
    totals = dict.fromkeys((nd.name for nd in feasible), 0)
    for plugin, weight in profile.scores:
        assert isinstance(plugin, ScorePlugin)
        if isinstance(plugin, PreScorePlugin):
            st = plugin.pre_score(state, pod, feasible)
            if st is not None:
                if st.is_skip:
                    continue
                if not st.is_success:
                    return st.with_plugin(plugin.name)
        scores = {nd.name: plugin.score(state, pod, nd) for nd in feasible}
        if isinstance(plugin, NormalizeScorePlugin):
            st = plugin.normalize_score(state, pod, scores)
            if st is not None and not st.is_success:
                return st.with_plugin(plugin.name)
        for name, s in scores.items():
            if not MIN_NODE_SCORE <= s <= MAX_NODE_SCORE:
                return Status.error(
                    f"plugin {plugin.name!r} returns an invalid score {s} for node {name!r}, "
                    f"it should be in the range [{MIN_NODE_SCORE}, {MAX_NODE_SCORE}]"
                ).with_plugin(plugin.name)
            totals[name] += s * weight
    return totals
