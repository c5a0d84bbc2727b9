"""NodeResourcesFit: requests against allocatable, and the LeastAllocated score."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.control.scheduler import Code, Snapshot
from shoal.control.scheduler.plugins import node_resources_fit
from shoal.control.scheduler.resources import pod_requests
from shoal.control.scheduler.testing import make_node, make_pod, run_filter, run_score

ALLOC: dict[str, str | int] = {
    "cpu": "2",
    "memory": "4Gi",
    "pods": 3,
    "ephemeral-storage": "10Gi",
    "example.com/gpu": 2,
}


def container(cpu: str | None = None, memory: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "resources": {"requests": requests}, **extra}


def bound(name: str, **requests: str) -> dict[str, Any]:
    return make_pod(name, node_name="n1", requests=requests)


@pytest.mark.parametrize(
    ("pod", "existing", "want"),
    [
        pytest.param(
            make_pod("p", requests={"cpu": "1", "memory": "1Gi"}),
            [],
            (),
            id="a pod whose requests fit in the free allocatable fits",
        ),
        pytest.param(
            make_pod("p"), [], (), id="a pod that requests nothing fits while pods are allowed"
        ),
        pytest.param(
            make_pod("p", requests={"cpu": "1500m"}),
            [bound("a", cpu="1")],
            ("Insufficient cpu",),
            id="a pod asking for more cpu than is left is rejected for cpu",
        ),
        pytest.param(
            make_pod("p", requests={"cpu": "1", "memory": "4Gi"}),
            [bound("a", cpu="1", memory="1")],
            ("Insufficient memory",),
            id="memory already requested by bound pods counts",
        ),
        pytest.param(
            make_pod("p", requests={"cpu": "3", "memory": "5Gi"}),
            [],
            ("Insufficient cpu", "Insufficient memory"),
            id="every insufficient resource is its own reason, cpu before memory",
        ),
        pytest.param(
            make_pod("p"),
            [bound("a"), bound("b"), bound("c")],
            ("Too many pods",),
            id="a node at its pod limit rejects even a pod that requests nothing",
        ),
        pytest.param(
            make_pod("p", requests={"ephemeral-storage": "11Gi"}),
            [],
            ("Insufficient ephemeral-storage",),
            id="ephemeral storage is checked",
        ),
        pytest.param(
            make_pod("p", requests={"example.com/gpu": 3}),
            [],
            ("Insufficient example.com/gpu",),
            id="an extended resource beyond the node's allocatable is insufficient",
        ),
        pytest.param(
            make_pod("p", requests={"example.com/fpga": 1}),
            [],
            ("Insufficient example.com/fpga",),
            id="an extended resource the node does not have is insufficient",
        ),
        pytest.param(
            make_pod("p", requests={"example.com/fpga": 0}),
            [],
            (),
            id="an extended resource requested at zero is not checked",
        ),
        pytest.param(
            make_pod("p", requests={"cpu": "2"}),
            [bound("done", cpu="2") | {"status": {"phase": "Succeeded"}}],
            (),
            id="a finished pod holds no resources",
        ),
    ],
)
def test_filter(pod: dict[str, Any], existing: list[dict[str, Any]], want: tuple[str, ...]) -> None:
    snap = Snapshot([make_node("n1", allocatable=ALLOC)], existing)
    st = run_filter(node_resources_fit.new({}), pod, snap, "n1")
    if not want:
        assert st is None
    else:
        assert st is not None and st.reasons == want and st.code is Code.UNSCHEDULABLE


def test_ignored_resources_are_not_checked() -> None:
    snap = Snapshot([make_node("n1", allocatable=ALLOC)])
    pod = make_pod("p", requests={"example.com/fpga": 1, "other.io/x": 1})
    plugin = node_resources_fit.new(
        {"ignoredResources": ["example.com/fpga"], "ignoredResourceGroups": ["other.io"]}
    )
    assert run_filter(plugin, pod, snap, "n1") is None


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        pytest.param(
            {"containers": [container("1", "1Gi"), container("500m", "1Gi")]},
            {"cpu": 1500, "memory": 2 << 30},
            id="the requests of the containers add up",
        ),
        pytest.param(
            {"containers": [container("1")], "initContainers": [container("3"), container("2")]},
            {"cpu": 3000},
            id="the largest init container raises the pod's request",
        ),
        pytest.param(
            {"containers": [container("2")], "initContainers": [container("1")]},
            {"cpu": 2000},
            id="an init container smaller than the containers changes nothing",
        ),
        pytest.param(
            {
                "containers": [container("1")],
                "initContainers": [container("500m", restartPolicy="Always"), container("2")],
            },
            {"cpu": 2500},
            id="a sidecar init container adds to the containers and to later init containers",
        ),
        pytest.param(
            {"containers": [container("1")], "overhead": {"cpu": "250m", "memory": "64Mi"}},
            {"cpu": 1250, "memory": 64 << 20},
            id="the pod overhead is added",
        ),
        pytest.param(
            {"containers": [container("0.1m")]},
            {"cpu": 1},
            id="a fraction of a millicore rounds up as Kubernetes rounds it",
        ),
    ],
)
def test_pod_requests(spec: dict[str, Any], want: dict[str, int]) -> None:
    assert pod_requests({"spec": spec}) == want


def test_non_zero_requests_default_containers_without_requests() -> None:
    pod = {"spec": {"containers": [container(), container("1")]}}
    assert pod_requests(pod, non_zero=True) == {"cpu": 1100, "memory": 2 * 200 * 1024 * 1024}


@pytest.mark.parametrize(
    ("pod", "want"),
    [
        pytest.param(
            make_pod("p", requests={"cpu": "1", "memory": "2Gi"}),
            # empty: cpu (4-1)/4=75, mem (8-2)/8=75 -> 75; half: cpu (4-3)/4=25, mem (8-6)/8=25 -> 25
            {"empty": 75, "half": 25},
            id="least allocated prefers the node with more room left after placing the pod",
        ),
        pytest.param(
            make_pod("p"),
            # Defaults 100m and 200Mi: empty cpu 97, mem 97 -> 97; half cpu (4000-2100)/4000=47, mem 47 -> 47
            {"empty": 97, "half": 47},
            id="a pod without requests is scored with the default non-zero requests",
        ),
        pytest.param(
            make_pod("p", requests={"cpu": "5"}),
            {"empty": 48, "half": 23},
            id="a resource requested beyond capacity scores zero for that resource",
        ),
    ],
)
def test_least_allocated_score(pod: dict[str, Any], want: dict[str, int]) -> None:
    snap = Snapshot(
        [make_node("empty"), make_node("half")],
        [make_pod("x", node_name="half", requests={"cpu": "2", "memory": "4Gi"})],
    )
    assert run_score(node_resources_fit.new({}), pod, snap) == want


def test_scoring_strategy_resources_and_weights() -> None:
    plugin = node_resources_fit.new(
        {
            "scoringStrategy": {
                "type": "LeastAllocated",
                "resources": [
                    {"name": "cpu", "weight": 3},
                    {"name": "example.com/gpu", "weight": 1},
                ],
            }
        }
    )
    snap = Snapshot(
        [
            make_node(
                "n1", allocatable={"cpu": "4", "memory": "8Gi", "pods": 10, "example.com/gpu": 4}
            )
        ]
    )
    # cpu (4000-1000)/4000 = 75 weighted 3, gpu (4-1)/4 = 75 weighted 1 -> 75
    assert run_score(
        plugin, make_pod("p", requests={"cpu": "1", "example.com/gpu": 1}), snap, normalize=False
    ) == {"n1": 75}
    # a pod that does not use the gpu is scored on cpu alone
    assert run_score(plugin, make_pod("q", requests={"cpu": "2"}), snap, normalize=False) == {
        "n1": 50
    }


def test_an_unsupported_scoring_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="MostAllocated"):
        node_resources_fit.new({"scoringStrategy": {"type": "MostAllocated"}})
