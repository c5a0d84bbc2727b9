"""The horizontal pod autoscaler: a workload's replicas from its pods' CPU and memory.

As Kubernetes' HPA controller (``pkg/controller/podautoscaler``) for ``Resource``
and ``ContainerResource`` metrics with ``Utilization`` or ``AverageValue``
targets: the usage ratio over the ready pods that have a sample, nothing done
within a 10 % tolerance, pods without a sample counted at their request when
scaling down and at zero when scaling up (pods not yet ready at zero too), the
largest proposal of all metrics, then the behavior: stabilization windows
(scale-up 0 s, scale-down 300 s by default) and rate policies (by default up by
the larger of 100 % or 4 pods per 15 s, down by up to 100 % per 15 s), and
``minReplicas``/``maxReplicas``. Status: currentReplicas, desiredReplicas,
currentMetrics, lastScaleTime and the AbleToScale, ScalingActive and
ScalingLimited conditions.

Samples come from each node's own measurements (the ``metrics`` reports that
``kubectl top`` reads), through any :class:`NodeReports` (the API's
``ResourceMetricsApi`` on a node, a fake in tests), so this layer imports
nothing above it. A node that does not answer leaves its pods without a sample.

Leaderless: the preferred actor for the autoscaler (:mod:`ownership`) acts; across
a partition each side scales from the pods it can measure, and the merge keeps the
last ``spec.replicas`` written (docs/semantics.md). Its recommendation and scale
history is kept in memory and copied into the ``autoscaling.shoal.dev/history``
annotation (:func:`saved_history`), so an actor that takes over (a restart, a
membership change) goes on with the same windows and rate limits. The copy is
written only when it changes: a recommendation's time is kept rounded *up* to the
minute, so a steady load costs one write a minute per autoscaler, and a loaded
history can only delay a scale, never hasten it. With no usable copy a new actor
starts as Kubernetes' does: one recommendation, the current replicas, now.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.field_owner import updated_by
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_state import is_ready, parse_time
from shoal.control.quota_usage import format_amount
from shoal.control.scheduler.resources import quantity_value
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

RESOURCE = "horizontalpodautoscalers.autoscaling"
SYNC_PERIOD = 15.0
"""Seconds between passes (kube-controller-manager's --horizontal-pod-autoscaler-sync-period)."""
TOLERANCE = 0.1
DOWN_WINDOW = 300
MAX_POLICY_PERIOD = 1800
"""The longest periodSeconds a scaling policy may have: older scale events are forgotten."""
CPU_INITIALIZATION = 300.0
"""Seconds after a pod starts during which its CPU is not trusted unless it is ready."""
_TARGETS = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1",
            "ReplicationController": "v1"}
"""The kinds with a scale subresource this controller scales, and their apiVersion."""


class NodeReports(Protocol):
    """Each named node's ``metrics`` report (``{"pods": [{"uid", "containers": {name:
    {"cpu": nanocores, "memory": bytes}}}]}``), None for a node that did not answer."""

    async def reports(self, nodes: list[str]) -> dict[str, Any]: ...


def pod_usage(reports: Mapping[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """pod uid -> container -> {"cpu": millicores, "memory": bytes}, from node reports."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for report in reports.values():
        for sample in (report or {}).get("pods") or []:
            if not isinstance(sample, dict):
                continue
            containers = {str(name): {"cpu": int(u.get("cpu", 0)) // 1_000_000,
                                      "memory": int(u.get("memory", 0))}
                          for name, u in (sample.get("containers") or {}).items()
                          if isinstance(u, dict)}
            if containers:
                out[str(sample.get("uid"))] = containers
    return out


HISTORY_ANNOTATION = "autoscaling.shoal.dev/history"
HISTORY_ROUNDING = 60
"""Seconds a saved recommendation's time is rounded up to (see the module's docstring)."""
History = list[tuple[float, int]]


def saved_history(recommendations: History, scale_events: History) -> str:
    """The annotation's value: each recommendation once, at its latest time rounded up to
    the minute, and the scale events as they are (rare, and the rate policies need them)."""
    latest: dict[int, float] = {}
    for t, r in recommendations:
        latest[r] = max(latest.get(r, t), t)
    recs = sorted([math.ceil(t / HISTORY_ROUNDING) * HISTORY_ROUNDING, r]
                  for r, t in latest.items())
    return orjson.dumps({"recommendations": recs,
                         "scaleEvents": [[int(t), d] for t, d in scale_events]}).decode()


def load_history(hpa: Mapping[str, Any]) -> tuple[History, History]:
    """(recommendations, scale events) from the annotation; empty when absent or bad."""
    raw = ((hpa.get("metadata") or {}).get("annotations") or {}).get(HISTORY_ANNOTATION)
    try:
        saved = orjson.loads(raw) if isinstance(raw, str) else {}
        return ([(float(t), int(r)) for t, r in saved.get("recommendations") or []],
                [(float(t), int(d)) for t, d in saved.get("scaleEvents") or []])
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return [], []


NO_CUSTOM_METRICS = ("unable to fetch metrics from custom metrics API: no custom metrics API "
                     "(custom.metrics.k8s.io) registered")
NO_EXTERNAL_METRICS = ("unable to fetch metrics from external metrics API: no external metrics "
                       "API (external.metrics.k8s.io) registered")
_FAILED_REASON = {"Resource": "FailedGetResourceMetric",
                  "ContainerResource": "FailedGetContainerResourceMetric",
                  "Pods": "FailedGetPodsMetric", "Object": "FailedGetObjectMetric",
                  "External": "FailedGetExternalMetric"}


@dataclass
class _Failure:
    """A metric that gave no count: the ScalingActive reason and the error, as Kubernetes
    names them (``FailedGetPodsMetric``)."""

    reason: str
    error: str


def _unavailable(metric: Mapping[str, Any]) -> _Failure:
    """A Pods, Object or External metric: Shoal serves no custom or external metrics API."""
    kind = str(metric.get("type"))
    source = metric.get(kind[:1].lower() + kind[1:]) or {}
    name = (source.get("metric") or {}).get("name")
    if kind == "Pods":
        error = f"failed to get pods metric value: unable to get metric {name}: {NO_CUSTOM_METRICS}"
    elif kind == "Object":
        obj = source.get("describedObject") or {}
        error = (f"failed to get object metric value: unable to get metric {name}: "
                 f"{obj.get('kind')}/{obj.get('name')}: {NO_CUSTOM_METRICS}")
    else:
        error = (f"failed to get external metric value: unable to get external metric "
                 f"{name}: {NO_EXTERNAL_METRICS}")
    return _Failure(_FAILED_REASON.get(kind, "FailedGetExternalMetric"), error)


@dataclass
class _Proposal:
    replicas: int
    status: dict[str, Any]
    reason: str = ""
    """What the replica count came from, as Kubernetes words it (``cpu resource
    utilization (percentage of request)``)."""


def _requests(pod: Mapping[str, Any], resource: str, container: str | None) -> int | None:
    """The pod's request of ``resource`` (of one container), None if a container sets none."""
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        if container is not None and c.get("name") != container:
            continue
        raw = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if raw is None:
            return None
        total += quantity_value(resource, raw)
    return total


def _show(resource: str, value: int) -> str:
    """A sample as Kubernetes prints it: cpu in millicores (``185m``), memory in the
    largest binary unit that divides it (``12Mi``)."""
    return f"{value}m" if resource == "cpu" else format_amount(resource, value)


class HorizontalPodAutoscaler(Controller):
    name = "horizontal-pod-autoscaler"

    def __init__(self, store: ObjectStore, metrics: NodeReports, view: PeerView | None = None,
                 **kw: Any) -> None:
        kw.setdefault("resync", SYNC_PERIOD)
        super().__init__(store, **kw)
        self.metrics = metrics
        self.view = view or SinglePeer(store.replica.node_id)
        kind = store.registry.by_kind("autoscaling/v2", "HorizontalPodAutoscaler")
        assert kind is not None
        self.kind = kind
        # Per autoscaler uid: (time, recommendation) and (time, replicas change) history.
        self._recommendations: dict[str, list[tuple[float, int]]] = {}
        self._events: dict[str, list[tuple[float, int]]] = {}

    def relevant(self, change: Change) -> bool:
        return change.resource == RESOURCE

    async def sync(self) -> bool:
        hpas = self.store.replica.list(RESOURCE)
        live = {h["metadata"]["uid"] for h in hpas}
        for history in (self._recommendations, self._events):
            for uid in set(history) - live:
                del history[uid]
        scopes = self.scopes.current()
        for hpa in hpas:
            meta = hpa["metadata"]
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, meta["uid"], scope_of(scopes, RESOURCE, hpa), scopes):
                continue
            try:
                await self.reconcile(hpa)
            except StoreError as e:
                log.debug("hpa %s/%s: %s", meta.get("namespace"), meta["name"], e)
        return False

    async def reconcile(self, hpa: dict[str, Any]) -> None:
        meta, spec = hpa["metadata"], hpa.get("spec") or {}
        ns = meta.get("namespace") or "default"
        now = self.store.replica.wall.now()
        ref = spec.get("scaleTargetRef") or {}
        target_kind = self.store.registry.by_kind(_TARGETS.get(str(ref.get("kind")), ""),
                                                  str(ref.get("kind")))
        resource = target_kind.resource if target_kind is not None else None
        target = self.store.replica.get(resource, ns, str(ref.get("name"))) if resource else None
        low = int(spec.get("minReplicas") or 1)
        conditions: dict[str, tuple[str, str, str]] = {}
        status: dict[str, Any] = {"observedGeneration": meta.get("generation", 1)}
        old = hpa.get("status") or {}
        if target is None or target_kind is None:
            conditions["AbleToScale"] = ("False", "FailedGetScale",
                                         f"the HPA controller was unable to get the target's "
                                         f'current scale: {resource or ref.get("kind")} '
                                         f'"{ref.get("name")}" not found')
            await self._write(hpa, status | {"currentReplicas": 0, "desiredReplicas": 0},
                              conditions, now)
            return
        current = int((target.get("spec") or {}).get("replicas", 1))
        self._take_over(hpa, current, now)
        status["currentReplicas"] = int((target.get("status") or {}).get("replicas", current))
        conditions["AbleToScale"] = ("True", "SucceededGetScale",
                                     "the HPA controller was able to get the target's current "
                                     "scale")
        desired = current
        if current == 0 and low != 0:
            conditions["ScalingActive"] = ("False", "ScalingDisabled",
                                           "scaling is disabled since the replica count of the "
                                           "target is zero")
        else:
            proposal = await self._propose(hpa, target, ns, current, now)
            if isinstance(proposal, _Failure):
                conditions["ScalingActive"] = ("False", proposal.reason,
                                               "the HPA was unable to compute the replica "
                                               f"count: {proposal.error}")
                status["currentMetrics"] = old.get("currentMetrics")
            else:
                conditions["ScalingActive"] = ("True", "ValidMetricFound",
                                               "the HPA was able to successfully calculate a "
                                               f"replica count from {proposal.reason}")
                status["currentMetrics"] = proposal.status["currentMetrics"]
                desired = self._normalize(hpa, current, proposal.replicas, now, conditions)
        status["desiredReplicas"] = desired
        if status.get("currentMetrics") is None:
            status.pop("currentMetrics", None)
        status["lastScaleTime"] = old.get("lastScaleTime")
        if desired != current:
            new_target = copy.deepcopy(target)
            new_target["spec"]["replicas"] = desired
            # Kubernetes' autoscaler writes through the scale subresource: its entry says so,
            # and a later apply of replicas conflicts with it.
            await self.store.update(target_kind, new_target, ns, target["metadata"]["name"],
                                    managed_fields=updated_by(self.store, target_kind, "scale"))
            status["lastScaleTime"] = now_rfc3339(now)
            self._events.setdefault(meta["uid"], []).append((now, desired - current))
            conditions["AbleToScale"] = ("True", "SucceededRescale",
                                         f"the HPA controller was able to update the target "
                                         f"scale to {desired}")
            direction = "above" if desired > current else "below"
            await events.record(self.store, hpa, "Normal", "SuccessfulRescale",
                                f"New size: {desired}; reason: All metrics {direction} target",
                                "horizontal-pod-autoscaler")
        if status["lastScaleTime"] is None:
            status.pop("lastScaleTime")
        await self._write(hpa, status, conditions, now)
        await self._save_history(hpa)

    def _take_over(self, hpa: dict[str, Any], current: int, now: float) -> None:
        """First pass of this actor over the autoscaler: the saved history, else Kubernetes'
        initial recommendation (the current replicas, now)."""
        uid = hpa["metadata"]["uid"]
        if uid in self._recommendations:
            return
        recommendations, scale_events = load_history(hpa)
        keep = MAX_POLICY_PERIOD + DOWN_WINDOW + HISTORY_ROUNDING
        recommendations = [(t, r) for t, r in recommendations if now - t <= keep]
        # Recorded just before this pass's own, as Kubernetes records it before computing
        # (so a window of 0 s leaves it out).
        self._recommendations[uid] = recommendations or [(now - 0.001, current)]
        self._events[uid] = [(t, d) for t, d in scale_events if now - t <= MAX_POLICY_PERIOD]

    async def _save_history(self, hpa: dict[str, Any]) -> None:
        meta = hpa["metadata"]
        uid = meta["uid"]
        value = saved_history(self._recommendations.get(uid, []), self._events.get(uid, []))
        latest = self.store.find(self.kind, meta.get("namespace"), meta["name"])
        if latest is None or latest["metadata"].get("uid") != uid or \
                (latest["metadata"].get("annotations") or {}).get(HISTORY_ANNOTATION) == value:
            return
        new = copy.deepcopy(latest)
        new["metadata"].setdefault("annotations", {})[HISTORY_ANNOTATION] = value
        await self.store.update(self.kind, new, meta.get("namespace"), meta["name"])

    async def _propose(self, hpa: dict[str, Any], target: dict[str, Any], ns: str, current: int,
                       now: float) -> _Proposal | _Failure:
        selector_raw = (target.get("spec") or {}).get("selector") or {}
        try:
            selector = (LabelSelector.from_api(selector_raw) if "matchLabels" in selector_raw
                        or "matchExpressions" in selector_raw
                        else LabelSelector.from_api({"matchLabels": selector_raw}))
        except SelectorError as e:
            return _Failure("InvalidSelector", f"invalid selector: {e}")
        pods = [p for p in self.store.replica.list("pods", ns)
                if selector.matches((p.get("metadata") or {}).get("labels") or {})
                and not (p.get("metadata") or {}).get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") != "Failed"]
        if not pods:
            return _Failure("FailedGetResourceMetric", "no pods found for the target's selector")
        nodes = sorted({str((p.get("spec") or {}).get("nodeName")) for p in pods
                        if (p.get("spec") or {}).get("nodeName")})
        usage = pod_usage(await self.metrics.reports(nodes))
        best: _Proposal | None = None
        failed: list[_Failure] = []
        metrics_status: list[dict[str, Any]] = []
        for metric in (hpa.get("spec") or {}).get("metrics") or []:
            one = self._one_metric(metric, pods, usage, current, now)
            if isinstance(one, _Failure):
                failed.append(one)
                metrics_status.append({"type": ""})  # Kubernetes leaves it empty
                await events.record(self.store, hpa, "Warning", one.reason, one.error,
                                    "horizontal-pod-autoscaler")
                continue
            metrics_status.append(one.status)
            if best is None or one.replicas > best.replicas:
                best = one
        # As Kubernetes: the valid metrics decide, unless none is, or some failed and the
        # valid ones would scale down (a missing metric might have said otherwise).
        if failed and (best is None or best.replicas < current):
            return failed[0]
        if best is None:
            return _Failure("FailedGetResourceMetric", "no metrics to scale on")
        return _Proposal(best.replicas, {"currentMetrics": metrics_status}, best.reason)

    def _one_metric(self, metric: Mapping[str, Any], pods: list[dict[str, Any]],
                    usage: Mapping[str, Mapping[str, Mapping[str, int]]], current: int,
                    now: float) -> _Proposal | _Failure:
        kind = str(metric.get("type"))
        if kind not in ("Resource", "ContainerResource"):
            return _unavailable(metric)
        failure = _FAILED_REASON[kind]
        field = "resource" if kind == "Resource" else "containerResource"
        source = metric.get(field) or {}
        resource, container = str(source.get("name")), source.get("container")
        target = source.get("target") or {}
        ready_usage, ready_request, ready_count = 0, 0, 0
        missing: list[int] = []
        unready: list[int] = []
        for p in pods:
            uid = str(p["metadata"].get("uid"))
            request = _requests(p, resource, container)
            if target.get("type") == "Utilization" and request is None:
                return _Failure(failure, f"failed to get {resource} utilization: missing request "
                                         f"for {resource} in container of Pod "
                                         f"{p['metadata']['name']}")
            samples = usage.get(uid)
            if samples is None:
                missing.append(request or 0)
                continue
            used = sum(v[resource] for name, v in samples.items()
                       if container is None or name == container)
            if resource == "cpu" and not self._trusted(p, now):
                unready.append(request or 0)
                continue
            ready_usage += used
            ready_request += request or 0
            ready_count += 1
        if ready_count == 0:
            return _Failure(failure, "did not receive metrics for targeted pods (pods might be "
                                     "unready)")
        if target.get("type") == "Utilization":
            goal = float(target.get("averageUtilization") or 0)
            utilization = ready_usage * 100.0 / ready_request if ready_request else 0.0
            ratio = utilization / goal if goal else 1.0
            current_status = {"averageUtilization": int(utilization),
                              "averageValue": _show(resource, ready_usage // ready_count)}
        else:
            goal = float(quantity_value(resource, target.get("averageValue") or 0))
            ratio = (ready_usage / ready_count) / goal if goal else 1.0
            current_status = {"averageValue": _show(resource, ready_usage // ready_count)}
        replicas = self._replicas(ratio, ready_usage, ready_request, ready_count, missing,
                                  unready, current, target, goal)
        what = ("utilization (percentage of request)" if target.get("type") == "Utilization"
                else "usage")
        prefix = f"{resource} container resource" if container else f"{resource} resource"
        return _Proposal(replicas, {"type": kind, field: {
            "name": resource, **({"container": container} if container else {}),
            "current": current_status}}, f"{prefix} {what}")

    @staticmethod
    def _replicas(ratio: float, used: int, requested: int, count: int, missing: list[int],
                  unready: list[int], current: int, target: Mapping[str, Any],
                  goal: float) -> int:
        """GetResourceReplicas: the ratio over the measured pods, then again with the
        unmeasured pods at their request (scaling down) or zero (scaling up)."""
        if not missing and not unready:
            if abs(1.0 - ratio) <= TOLERANCE:
                return current
            return math.ceil(ratio * count)
        up = ratio > 1.0
        if up:
            count += len(missing) + len(unready)
            requested += sum(missing) + sum(unready)
        else:
            count += len(missing)
            used += sum(missing) if target.get("type") == "Utilization" else int(
                goal * len(missing))
            requested += sum(missing)
        if target.get("type") == "Utilization":
            new_ratio = (used * 100.0 / requested) / goal if requested and goal else 1.0
        else:
            new_ratio = (used / count) / goal if count and goal else 1.0
        if abs(1.0 - new_ratio) <= TOLERANCE or (up and new_ratio < 1.0) or (
                not up and new_ratio > 1.0):
            return current
        proposed = math.ceil(new_ratio * count)
        return current if (up and proposed < current) or (not up and proposed > current) \
            else proposed

    def _trusted(self, pod: Mapping[str, Any], now: float) -> bool:
        """A pod's CPU counts once it is ready, or after the initialization period."""
        if is_ready(dict(pod)):
            return True
        start = (pod.get("status") or {}).get("startTime")
        t = parse_time(start) if start else None
        return t is not None and now - t > CPU_INITIALIZATION

    def _normalize(self, hpa: dict[str, Any], current: int, proposed: int, now: float,
                   conditions: dict[str, tuple[str, str, str]]) -> int:
        """Stabilization windows, rate policies, then minReplicas/maxReplicas."""
        uid = hpa["metadata"]["uid"]
        spec = hpa.get("spec") or {}
        behavior = spec.get("behavior") or {}
        up_rules, down_rules = behavior.get("scaleUp") or {}, behavior.get("scaleDown") or {}
        up_window = int(up_rules.get("stabilizationWindowSeconds") or 0)
        down_window = down_rules.get("stabilizationWindowSeconds")
        down_window = DOWN_WINDOW if down_window is None else int(down_window)
        history = self._recommendations.setdefault(uid, [])
        history.append((now, proposed))
        keep = max(up_window, down_window)
        history[:] = [(t, r) for t, r in history if now - t <= keep]
        up_rec = min([r for t, r in history if now - t <= up_window] or [proposed])
        down_rec = max([r for t, r in history if now - t <= down_window] or [proposed])
        desired = min(max(current, up_rec), down_rec)
        scale_events = self._events.setdefault(uid, [])
        scale_events[:] = [(t, d) for t, d in scale_events if now - t <= MAX_POLICY_PERIOD]
        if desired > current:
            desired = min(desired, self._limit(up_rules, current, scale_events, now, up=True))
        elif desired < current:
            desired = max(desired, self._limit(down_rules, current, scale_events, now, up=False))
        low, high = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
        if desired > high:
            conditions["ScalingLimited"] = ("True", "TooManyReplicas",
                                            "the desired replica count is more than the maximum "
                                            "replica count")
            return high
        if desired < low:
            conditions["ScalingLimited"] = ("True", "TooFewReplicas",
                                            "the desired replica count is less than the minimum "
                                            "replica count")
            return low
        conditions["ScalingLimited"] = ("False", "DesiredWithinRange",
                                        "the desired count is within the acceptable range")
        return desired

    @staticmethod
    def _limit(rules: Mapping[str, Any], current: int, events: list[tuple[float, int]],
               now: float, *, up: bool) -> int:
        """The furthest the policies let the replicas go from ``current`` now."""
        policies = rules.get("policies") or (
            [{"type": "Percent", "value": 100, "periodSeconds": 15},
             {"type": "Pods", "value": 4, "periodSeconds": 15}] if up
            else [{"type": "Percent", "value": 100, "periodSeconds": 15}])
        select = rules.get("selectPolicy") or "Max"
        if select == "Disabled":
            return current
        limits = []
        for p in policies:
            period = int(p.get("periodSeconds") or 15)
            changed = sum(d for t, d in events if now - t <= period and (d > 0) == up)
            start = current - changed  # replicas at the start of the period
            value = int(p.get("value") or 0)
            if up:
                limits.append(start + value if p.get("type") == "Pods" else
                              math.ceil(start * (1 + value / 100)))
            else:
                limits.append(start - value if p.get("type") == "Pods" else
                              math.floor(start * (1 - value / 100)))
        pick = (max if up else min) if select == "Max" else (min if up else max)
        return pick(limits)

    async def _write(self, hpa: dict[str, Any], status: dict[str, Any],
                     conditions: dict[str, tuple[str, str, str]], now: float) -> None:
        old = hpa.get("status") or {}
        previous = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, dict)}
        stamp = now_rfc3339(now)
        status["conditions"] = [
            {"type": t, "status": s, "reason": r, "message": m,
             "lastTransitionTime": previous[t].get("lastTransitionTime", stamp)
             if t in previous and previous[t].get("status") == s else stamp}
            for t, (s, r, m) in conditions.items()]
        if status == old:
            return
        new = copy.deepcopy(hpa)
        new["status"] = status
        await self.store.update(self.kind, new, hpa["metadata"].get("namespace"),
                                hpa["metadata"]["name"], "status")
