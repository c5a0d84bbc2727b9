"""HorizontalPodAutoscaler: Kubernetes' algorithm on samples from an injected metrics source."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.horizontal_autoscaler import HISTORY_ANNOTATION, HorizontalPodAutoscaler
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import Invalid, ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import ManualClock

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


POD, DEPLOY, HPA = kind("v1", "Pod"), kind("apps/v1", "Deployment"), \
    kind("autoscaling/v2", "HorizontalPodAutoscaler")


class FakeReports:
    """Node reports: each pod of the deployment uses ``cpu`` millicores; ``silent`` nodes
    do not answer."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.cpu: dict[str, int] = {}
        self.silent: set[str] = set()

    async def reports(self, nodes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in nodes:
            pods = [p for p in self.store.list(POD, "default")
                    if p["spec"].get("nodeName") == node and p["metadata"]["name"] in self.cpu]
            out[node] = None if node in self.silent else {"pods": [
                {"uid": p["metadata"]["uid"], "containers": {"c": {
                    "cpu": self.cpu[p["metadata"]["name"]] * 1_000_000, "memory": 1 << 20}}}
                for p in pods]}
        return out


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1", clock=ManualClock()), REG)
    await s.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


async def deployment(store: ObjectStore, replicas: int) -> None:
    await store.create(DEPLOY, {"metadata": {"name": "web"}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "c", "image": "x"}]}}}}, "default")
    await pods(store, replicas)


async def pods(store: ObjectStore, n: int) -> None:
    """``n`` running, ready pods of the deployment (what its controller and nodes would do)."""
    for p in store.list(POD, "default"):
        await store.delete(POD, "default", p["metadata"]["name"], grace_period=0)
    for i in range(n):
        made = await store.create(POD, {"metadata": {"name": f"web-{i}", "labels": {"app": "web"}},
                                        "spec": {"nodeName": f"node-{i % 2}", "containers": [
                                            {"name": "c", "image": "x",
                                             "resources": {"requests": {"cpu": "200m"}}}]}},
                                  "default")
        ready = copy.deepcopy(made)
        ready["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        await store.update(POD, ready, "default", made["metadata"]["name"], "status")


async def autoscaler(store: ObjectStore, **spec: Any) -> None:
    await store.create(HPA, {"metadata": {"name": "web"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 10, "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
        **spec}}, "default")


def replicas(store: ObjectStore) -> int:
    return int(store.get(DEPLOY, "default", "web")["spec"]["replicas"])


async def test_scales_up_by_the_usage_ratio_and_reports_it(store: ObjectStore) -> None:
    await deployment(store, 2)
    await autoscaler(store)
    metrics = FakeReports(store)
    metrics.cpu = {"web-0": 200, "web-1": 200}  # 100 % of the request, target 50 %
    await HorizontalPodAutoscaler(store, metrics).sync()
    assert replicas(store) == 4
    st = store.get(HPA, "default", "web")["status"]
    assert (st["currentReplicas"], st["desiredReplicas"]) == (2, 4)
    assert st["currentMetrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 100, "averageValue": "200m"}}}]
    assert {c["type"]: c["reason"] for c in st["conditions"]} == {
        "AbleToScale": "SucceededRescale", "ScalingActive": "ValidMetricFound",
        "ScalingLimited": "DesiredWithinRange"}
    assert "lastScaleTime" in st
    (event,) = [e for e in store.list(kind("v1", "Event"), "default")
                if e["reason"] == "SuccessfulRescale"]
    assert event["message"] == "New size: 4; reason: All metrics above target"


async def test_within_the_tolerance_nothing_changes(store: ObjectStore) -> None:
    await deployment(store, 4)
    await autoscaler(store)
    metrics = FakeReports(store)
    metrics.cpu = {f"web-{i}": 108 for i in range(4)}  # 54 %: ratio 1.08
    await HorizontalPodAutoscaler(store, metrics).sync()
    assert replicas(store) == 4


async def test_scale_up_is_capped_by_max_replicas_and_the_default_rate(store: ObjectStore) -> None:
    await deployment(store, 1)
    await autoscaler(store, maxReplicas=20)
    metrics = FakeReports(store)
    metrics.cpu = {"web-0": 2000}  # 1000 %: 20 wanted; at most max(2 x 1, 1 + 4) = 5 at once
    await HorizontalPodAutoscaler(store, metrics).sync()
    assert replicas(store) == 5
    await autoscaler_limited(store)


async def autoscaler_limited(store: ObjectStore) -> None:
    await store.delete(HPA, "default", "web")
    await autoscaler(store, maxReplicas=3)
    metrics = FakeReports(store)
    await pods(store, 5)
    metrics.cpu = {f"web-{i}": 400 for i in range(5)}
    await HorizontalPodAutoscaler(store, metrics).sync()
    assert replicas(store) == 3
    limited = next(c for c in store.get(HPA, "default", "web")["status"]["conditions"]
                   if c["type"] == "ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "TooManyReplicas")


async def four_on_a_manual_clock(store: ObjectStore) -> tuple[ManualClock, FakeReports]:
    """Four replicas, the default autoscaler, the store's clock and fake samples."""
    clock = store.replica.wall
    assert isinstance(clock, ManualClock)
    await deployment(store, 4)
    await autoscaler(store)
    return clock, FakeReports(store)


async def test_scale_down_waits_for_the_stabilization_window(store: ObjectStore) -> None:
    clock, metrics = await four_on_a_manual_clock(store)
    hpa = HorizontalPodAutoscaler(store, metrics)
    metrics.cpu = {f"web-{i}": 100 for i in range(4)}  # on target
    await hpa.sync()
    metrics.cpu = {f"web-{i}": 20 for i in range(4)}  # 10 %: 1 replica would do
    clock.t += 60
    await hpa.sync()
    assert replicas(store) == 4  # the last 300 s recommended 4
    clock.t += 250
    await hpa.sync()
    assert replicas(store) == 1


async def test_pods_without_samples_count_at_their_request_when_scaling_down(
        store: ObjectStore) -> None:
    await deployment(store, 4)
    await autoscaler(store, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    metrics = FakeReports(store)
    metrics.cpu = {f"web-{i}": 20 for i in range(4)}
    metrics.silent = {"node-1"}  # web-1 and web-3 unmeasured (across a partition, say)
    await HorizontalPodAutoscaler(store, metrics).sync()
    # Measured 10 % on two pods; with the other two at 100 %: 55 % -> within tolerance.
    assert replicas(store) == 4


async def test_a_pod_without_a_cpu_request_stops_scaling_and_says_why(store: ObjectStore) -> None:
    await store.create(DEPLOY, {"metadata": {"name": "web"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "c", "image": "x"}]}}}}, "default")
    await store.create(POD, {"metadata": {"name": "bare", "labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}}, "default")
    await autoscaler(store)
    await HorizontalPodAutoscaler(store, FakeReports(store)).sync()
    active = next(c for c in store.get(HPA, "default", "web")["status"]["conditions"]
                  if c["type"] == "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "FailedGetResourceMetric")
    assert "missing request for cpu" in active["message"]


@pytest.mark.parametrize(("spec", "field"), [
    ({"minReplicas": 5, "maxReplicas": 2}, "spec.maxReplicas"),
    ({"minReplicas": 0}, "spec.minReplicas"),
    ({"metrics": [{"type": "Resource"}]}, "spec.metrics[0].resource"),
    ({"metrics": [{"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {
        "type": "Value", "value": "10"}}}]}, "spec.metrics[0].pods.target.averageValue"),
    ({"metrics": [{"type": "Object", "object": {"metric": {"name": "rps"}, "target": {
        "type": "Value", "value": "10"}, "describedObject": {"kind": "Ingress"}}}]},
     "spec.metrics[0].object.describedObject.name"),
    ({"metrics": [{"type": "External", "external": {"metric": {}, "target": {
        "type": "Value", "value": "10"}}}]}, "spec.metrics[0].external.metric.name"),
])
async def test_a_bad_autoscaler_is_a_422(store: ObjectStore, spec: dict[str, Any],
                                         field: str) -> None:
    with pytest.raises(Invalid) as e:
        await autoscaler(store, **spec)
    assert field in [c.field for c in e.value.causes]


async def test_memory_average_value_scales_down_when_the_window_allows(store: ObjectStore) -> None:
    await deployment(store, 4)
    await autoscaler(store, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}},
                     metrics=[{"type": "Resource", "resource": {
                         "name": "memory", "target": {"type": "AverageValue",
                                                      "averageValue": "2Mi"}}}])
    metrics = FakeReports(store)
    metrics.cpu = {f"web-{i}": 10 for i in range(4)}  # every pod holds 1Mi
    await HorizontalPodAutoscaler(store, metrics).sync()
    assert replicas(store) == 2
    st = store.get(HPA, "default", "web")["status"]
    assert st["currentMetrics"][0]["resource"] == {"name": "memory",
                                                   "current": {"averageValue": "1Mi"}}
    active = next(c for c in st["conditions"] if c["type"] == "ScalingActive")
    assert active["message"].endswith("replica count from memory resource usage")


PODS_METRIC = {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {
    "type": "AverageValue", "averageValue": "10"}}}
OBJECT_METRIC = {"type": "Object", "object": {
    "metric": {"name": "requests"}, "target": {"type": "Value", "value": "100"},
    "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                        "name": "main"}}}


async def test_pods_and_object_metrics_say_no_custom_metrics_api_is_there(
        store: ObjectStore) -> None:
    await deployment(store, 2)
    await autoscaler(store, metrics=[PODS_METRIC, OBJECT_METRIC])
    await HorizontalPodAutoscaler(store, FakeReports(store)).sync()
    assert replicas(store) == 2
    st = store.get(HPA, "default", "web")["status"]
    active = next(c for c in st["conditions"] if c["type"] == "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "FailedGetPodsMetric")
    assert active["message"] == (
        "the HPA was unable to compute the replica count: failed to get pods metric value: "
        "unable to get metric rps: unable to fetch metrics from custom metrics API: no custom "
        "metrics API (custom.metrics.k8s.io) registered")
    reasons = {e["reason"] for e in store.list(kind("v1", "Event"), "default")}
    assert {"FailedGetPodsMetric", "FailedGetObjectMetric"} <= reasons


async def test_a_valid_cpu_metric_still_scales_up_beside_an_unavailable_one(
        store: ObjectStore) -> None:
    await deployment(store, 2)
    await autoscaler(store, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}},
                     metrics=[PODS_METRIC, {"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": 50}}}])
    metrics = FakeReports(store)
    metrics.cpu = {"web-0": 200, "web-1": 200}
    await HorizontalPodAutoscaler(store, metrics).sync()
    assert replicas(store) == 4  # as Kubernetes: the valid metric scales up
    st = store.get(HPA, "default", "web")["status"]
    assert st["currentMetrics"][0] == {"type": ""}
    metrics.cpu = {f"web-{i}": 10 for i in range(4)}  # would scale down: held back
    await HorizontalPodAutoscaler(store, metrics).sync()
    assert replicas(store) == 4


async def test_an_actor_that_takes_over_goes_on_with_the_saved_window(store: ObjectStore) -> None:
    clock, metrics = await four_on_a_manual_clock(store)
    metrics.cpu = {f"web-{i}": 100 for i in range(4)}  # on target: 4 recommended
    first = HorizontalPodAutoscaler(store, metrics)
    await first.sync()
    t0 = clock.t
    metrics.cpu = {f"web-{i}": 20 for i in range(4)}  # 1 would do from now on
    saved = []
    for _ in range(8):  # two minutes of passes at a steady load
        clock.t += 15
        await first.sync()
        saved.append(store.get(HPA, "default", "web")["metadata"]["annotations"][
            HISTORY_ANNOTATION])
    assert len(set(saved)) <= 3  # about one write a minute, not one a pass
    # Another peer takes over (a restart, a move): it goes on with the saved window.
    second = HorizontalPodAutoscaler(store, metrics)
    await second.sync()
    assert replicas(store) == 4  # 4 was recommended less than 300 s ago
    clock.t = t0 + 60 + 300 + 10  # past the saved time (rounded up to the minute) + 300 s
    await second.sync()
    assert replicas(store) == 1  # a fresh window (Kubernetes' restart) would wait to t0+420
