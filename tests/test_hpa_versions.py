"""autoscaling/v1 HorizontalPodAutoscaler, served beside v2 and stored as v2."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from shoal.model import hpa_versions
from tests.inprocess_api import AUTH, in_process_api

V1 = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"
V2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
TARGET = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def v1_hpa(name: str = "web", cpu: int | None = 60) -> dict[str, Any]:
    spec: dict[str, Any] = {"scaleTargetRef": TARGET, "minReplicas": 2, "maxReplicas": 5}
    if cpu is not None:
        spec["targetCPUUtilizationPercentage"] = cpu
    return {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name}, "spec": spec}


def test_a_v2_object_with_other_metrics_round_trips_through_v1() -> None:
    v2 = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
          "metadata": {"name": "x", "annotations": {"team": "a"}},
          "spec": {"scaleTargetRef": TARGET, "minReplicas": 1, "maxReplicas": 4,
                   "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
                   "metrics": [
                       {"type": "Pods", "pods": {"metric": {"name": "rps"},
                                                 "target": {"type": "AverageValue",
                                                            "averageValue": "10"}}},
                       {"type": "Resource", "resource": {"name": "cpu", "target": {
                           "type": "Utilization", "averageUtilization": 70}}}]},
          "status": {"currentReplicas": 2, "desiredReplicas": 2,
                     "currentMetrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "current": {"averageUtilization": 35}}}],
                     "conditions": [{"type": "AbleToScale", "status": "True"}]}}
    v1 = hpa_versions.to_v1(v2)
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 70
    assert "metrics" not in v1["spec"] and "behavior" not in v1["spec"]
    assert v1["status"]["currentCPUUtilizationPercentage"] == 35
    assert orjson.loads(v1["metadata"]["annotations"][hpa_versions.METRICS_ANNOTATION]) == [
        {"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "10"}}]
    back = hpa_versions.to_v2(v1)
    assert back["metadata"]["annotations"] == {"team": "a"}
    assert back["spec"]["behavior"] == v2["spec"]["behavior"]
    assert sorted(m["type"] for m in back["spec"]["metrics"]) == ["Pods", "Resource"]
    assert back["spec"]["metrics"][0] == v2["spec"]["metrics"][0]
    assert back["status"]["conditions"] == v2["status"]["conditions"]
    assert back["status"]["currentMetrics"] == v2["status"]["currentMetrics"]


async def test_v1_writes_are_stored_as_v2_and_read_back_in_either_version(tmp_path: Path) -> None:
    async with in_process_api(tmp_path) as api:
        c = api.client
        r = await c.post(V1, json=v1_hpa(), headers=AUTH)
        assert r.status == 201, await r.text()
        made = await r.json()
        assert made["apiVersion"] == "autoscaling/v1"
        assert made["spec"]["targetCPUUtilizationPercentage"] == 60
        v2 = await (await c.get(f"{V2}/web", headers=AUTH)).json()
        assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
        # a merge patch in v1 terms changes the v2 metric
        r = await c.patch(f"{V1}/web", data=b'{"spec":{"targetCPUUtilizationPercentage":75}}',
                          headers={**AUTH, "Content-Type": "application/merge-patch+json"})
        assert r.status == 200, await r.text()
        v2 = await (await c.get(f"{V2}/web", headers=AUTH)).json()
        assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 75
        # a v1 create without a target gets v2's default (80 % cpu), shown in v1 form
        r = await c.post(V1, json=v1_hpa("plain", cpu=None), headers=AUTH)
        assert (await r.json())["spec"]["targetCPUUtilizationPercentage"] == 80
        listed = await (await c.get(V1, headers=AUTH)).json()
        assert listed["apiVersion"] == "autoscaling/v1"
        assert {i["apiVersion"] for i in listed["items"]} == {"autoscaling/v1"}
        # PUT of the v1 object read back
        current = await (await c.get(f"{V1}/web", headers=AUTH)).json()
        current["spec"]["maxReplicas"] = 9
        r = await c.put(f"{V1}/web", json=current, headers=AUTH)
        assert r.status == 200, await r.text()
        assert (await r.json())["spec"]["maxReplicas"] == 9
        bad = v1_hpa("bad")
        bad["spec"]["maxReplicas"] = 0
        assert (await c.post(V1, json=bad, headers=AUTH)).status == 422
        r = await c.delete(f"{V1}/plain", headers=AUTH)
        assert r.status == 200


async def test_a_v1_watch_sees_v1_objects(tmp_path: Path) -> None:
    async with in_process_api(tmp_path) as api:
        c = api.client
        watch = await c.get(f"{V1}?watch=true&timeoutSeconds=5", headers=AUTH)
        await c.post(V2, json=hpa_versions.to_v2(v1_hpa()), headers=AUTH)
        line = await asyncio.wait_for(watch.content.readline(), 5)
        event = orjson.loads(line)
        assert event["type"] == "ADDED"
        assert event["object"]["apiVersion"] == "autoscaling/v1"
        assert event["object"]["spec"]["targetCPUUtilizationPercentage"] == 60
        watch.close()


async def test_a_v1_server_side_apply_is_stored_as_v2(tmp_path: Path) -> None:
    async with in_process_api(tmp_path) as api:
        applied = b"""apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 4
  targetCPUUtilizationPercentage: 45
"""
        r = await api.client.patch(f"{V1}/web?fieldManager=kubectl", data=applied, headers={
            **AUTH, "Content-Type": "application/apply-patch+yaml"})
        assert r.status == 201, await r.text()
        assert (await r.json())["spec"]["targetCPUUtilizationPercentage"] == 45
        v2 = await (await api.client.get(f"{V2}/web", headers=AUTH)).json()
        assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 45
