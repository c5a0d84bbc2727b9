"""The scheduling cycle: failure messages, deterministic choice, registry and profiles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from shoal.control.scheduler import (
    NO_NODES_MESSAGE,
    Code,
    CycleState,
    NodeInfo,
    Profile,
    Registry,
    Snapshot,
    Status,
    default_profile,
    default_registry,
    schedule,
)
from shoal.control.scheduler.testing import make_node, make_pod

CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def test_the_failure_message_aggregates_reasons_like_kubernetes() -> None:
    snap = Snapshot(
        [make_node("cp", taints=[CONTROL_PLANE]), make_node("w1"), make_node("w2")],
        [
            make_pod("hog1", node_name="w1", requests={"cpu": "3500m"}),
            make_pod("hog2", node_name="w2", requests={"cpu": "3500m"}),
        ],
    )
    result = schedule(make_pod("p", requests={"cpu": "1"}), snap, default_profile())
    assert not result.scheduled and result.code is Code.UNSCHEDULABLE
    assert result.message == (
        "0/3 nodes are available: 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. "
        "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )
    assert result.unschedulable_plugins == {"TaintToleration", "NodeResourcesFit"}
    assert result.statuses["cp"].plugin == "TaintToleration"


def test_a_node_with_several_missing_resources_counts_each_reason() -> None:
    snap = Snapshot([make_node("n1"), make_node("n2")])
    result = schedule(
        make_pod("p", requests={"cpu": "8", "memory": "16Gi"}), snap, default_profile()
    )
    assert result.message.startswith(
        "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory. "
    )


def test_a_pod_that_may_not_preempt_says_so() -> None:
    snap = Snapshot([make_node("n1", unschedulable=True)])
    result = schedule(make_pod("p", preemptionPolicy="Never"), snap, default_profile())
    assert result.message == (
        "0/1 nodes are available: 1 node(s) were unschedulable. "
        "preemption: not eligible due to preemptionPolicy=Never."
    )


def test_an_empty_cluster_has_no_nodes_available() -> None:
    result = schedule(make_pod("p"), Snapshot([]), default_profile())
    assert not result.scheduled and result.message == NO_NODES_MESSAGE


def test_the_only_feasible_node_is_chosen() -> None:
    snap = Snapshot(
        [make_node("a", taints=[CONTROL_PLANE]), make_node("b"), make_node("c", unschedulable=True)]
    )
    result = schedule(make_pod("p"), snap, default_profile())
    assert result.node_name == "b" and result.feasible_nodes == 1 and result.evaluated_nodes == 3


def test_the_highest_weighted_score_wins() -> None:
    snap = Snapshot(
        [make_node(f"n{i}", labels={"disk": "ssd" if i == 3 else "hdd"}) for i in range(5)]
    )
    pod = make_pod(
        "p",
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [
                                {"key": "disk", "operator": "In", "values": ["ssd"]}
                            ]
                        },
                    }
                ]
            }
        },
    )
    result = schedule(pod, snap, default_profile())
    assert result.node_name == "n3"
    assert result.scores["n3"] > max(v for k, v in result.scores.items() if k != "n3")


def test_ties_are_broken_the_same_way_whatever_the_order_of_the_nodes() -> None:
    nodes = [make_node(f"n{i}") for i in range(10)]
    for i in range(20):
        pod = make_pod(f"p{i}")
        forward = schedule(pod, Snapshot(nodes), default_profile())
        backward = schedule(pod, Snapshot(list(reversed(nodes))), default_profile())
        assert forward.node_name == backward.node_name
        assert len(set(forward.scores.values())) == 1  # a real tie


def test_ties_between_equal_nodes_spread_different_pods() -> None:
    snap = Snapshot([make_node(f"n{i}") for i in range(4)])
    chosen = Counter(
        schedule(make_pod(f"p{i}"), snap, default_profile()).node_name for i in range(200)
    )
    assert set(chosen) == {"n0", "n1", "n2", "n3"}


def test_binding_each_choice_spreads_a_replica_set_over_zones_and_hosts() -> None:
    zones = ["a", "b", "c"]
    snap = Snapshot(
        [make_node(f"n{i}", labels={"topology.kubernetes.io/zone": zones[i % 3]}) for i in range(6)]
    )
    owner = ("ReplicaSet", "rs-web")
    placed = []
    for i in range(6):
        pod = make_pod(f"web-{i}", owner=owner, requests={"cpu": "100m"})
        result = schedule(pod, snap, default_profile())
        assert result.node_name is not None
        snap.bind(pod, result.node_name)
        placed.append(result.node_name)
    assert sorted(placed) == [f"n{i}" for i in range(6)]


def test_a_pre_filter_error_fails_the_cycle_with_the_plugin_named() -> None:
    bad = {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
                    "topologyKey": "x",
                }
            ]
        }
    }
    result = schedule(make_pod("p", affinity=bad), Snapshot([make_node("n1")]), default_profile())
    assert result.code is Code.ERROR and result.message.startswith(
        "running InterPodAffinity plugin: "
    )


class _AlwaysNo:
    name = "AlwaysNo"

    def pre_filter(self, state: CycleState, pod: Mapping[str, Any]) -> Status | None:
        return Status.unresolvable("the pod is not welcome")

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        raise AssertionError("Filter must not run after PreFilter rejected the pod")


class _TooHigh:
    name = "TooHigh"

    def score(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> int:
        return 101


def test_a_pre_filter_rejection_is_reported_once_for_every_node() -> None:
    registry = Registry({"AlwaysNo": lambda args: _AlwaysNo()})
    profile = Profile.build(registry, filters=["AlwaysNo"], scores={})
    result = schedule(make_pod("p"), Snapshot([make_node("n1"), make_node("n2")]), profile)
    assert result.message == (
        "0/2 nodes are available: the pod is not welcome. "
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    )


def test_a_score_outside_the_range_is_an_error() -> None:
    registry = Registry({"TooHigh": lambda args: _TooHigh()})
    profile = Profile.build(registry, filters=[], scores={"TooHigh": 1})
    result = schedule(make_pod("p"), Snapshot([make_node("n1"), make_node("n2")]), profile)
    assert result.code is Code.ERROR and "invalid score 101" in result.message


def test_the_registry_refuses_unknown_and_duplicate_names() -> None:
    registry = default_registry()
    with pytest.raises(ValueError, match="no plugin named 'Nope'"):
        registry.build("Nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("NodeName", lambda args: _TooHigh())


def test_a_profile_refuses_a_filter_without_filter_and_a_zero_weight() -> None:
    registry = Registry({"TooHigh": lambda args: _TooHigh(), "AlwaysNo": lambda args: _AlwaysNo()})
    with pytest.raises(ValueError, match="does not implement Filter"):
        Profile.build(registry, filters=["TooHigh"], scores={})
    with pytest.raises(ValueError, match="does not implement Score"):
        Profile.build(registry, filters=[], scores={"AlwaysNo": 1})
    with pytest.raises(ValueError, match="positive weight"):
        Profile.build(registry, filters=[], scores={"TooHigh": 0})


def test_the_default_profile_uses_kubernetes_weights_and_one_instance_per_plugin() -> None:
    profile = default_profile()
    weights = {p.name: w for p, w in profile.scores}
    assert weights == {
        "TaintToleration": 3,
        "NodeAffinity": 2,
        "NodeResourcesFit": 1,
        "PodTopologySpread": 2,
        "InterPodAffinity": 2,
    }
    by_name = {p.name: p for p in profile.filters}
    assert all(by_name[p.name] is p for p, _ in profile.scores)
    assert [p.name for p in profile.filters][:3] == [
        "NodeUnschedulable",
        "NodeName",
        "TaintToleration",
    ]


def test_finished_pods_and_pods_on_unknown_nodes_are_left_out_of_the_snapshot() -> None:
    snap = Snapshot(
        [make_node("n1")],
        [
            make_pod("done", node_name="n1") | {"status": {"phase": "Failed"}},
            make_pod("elsewhere", node_name="gone"),
            make_pod("pending"),
            make_pod("running", node_name="n1"),
        ],
    )
    node = snap.get("n1")
    assert node is not None and [p.name for p in node.pods] == ["running"]
    removed = snap.remove_pod(make_pod("running", node_name="n1"))
    assert removed is not None and node.pods == [] and node.requested.milli_cpu == 0
