"""PodTopologySpread: DoNotSchedule filtering, ScheduleAnyway scoring and the system defaults."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.control.scheduler import Snapshot, Status
from shoal.control.scheduler.plugins import pod_topology_spread as pts
from shoal.control.scheduler.testing import filter_all, make_node, make_pod, run_score

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
SKEW = pts.ERR_REASON_CONSTRAINTS_NOT_MATCH
LABEL = pts.ERR_REASON_NODE_LABEL_NOT_MATCH
APP = {"app": "web"}


def nodes() -> list[dict[str, Any]]:
    return [
        make_node("a1", labels={ZONE: "a"}),
        make_node("a2", labels={ZONE: "a"}),
        make_node("b1", labels={ZONE: "b"}),
        make_node(
            "c1", labels={ZONE: "c"}, taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]
        ),
        make_node("nozone"),
    ]


def web(name: str, node: str, **kw: Any) -> dict[str, Any]:
    return make_pod(name, labels=APP, node_name=node, **kw)


def constraint(
    key: str, skew: int = 1, when: str = "DoNotSchedule", **extra: Any
) -> dict[str, Any]:
    return {
        "maxSkew": skew,
        "topologyKey": key,
        "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": APP},
        **extra,
    }


def pod(*constraints: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return make_pod("p", labels=APP, topologySpreadConstraints=list(constraints), **kw)


def verdicts(result: dict[str, Status | None]) -> dict[str, str]:
    return {k: (v.reasons[0] if v is not None else "") for k, v in result.items()}


CASES = [
    pytest.param(
        pod(constraint(ZONE)),
        [web("w1", "a1"), web("w2", "b1")],
        # a:1 b:1 c:0 -> min 0; a and b would reach skew 2
        {"a1": SKEW, "a2": SKEW, "b1": SKEW, "c1": "", "nozone": LABEL},
        id="a node whose zone would exceed maxSkew over the emptiest zone is rejected",
    ),
    pytest.param(
        pod(constraint(ZONE, skew=2)),
        [web("w1", "a1"), web("w2", "b1")],
        {"a1": "", "a2": "", "b1": "", "c1": "", "nozone": LABEL},
        id="a larger maxSkew tolerates the imbalance",
    ),
    pytest.param(
        pod(constraint(ZONE, nodeTaintsPolicy="Honor")),
        [web("w1", "a1"), web("w2", "b1")],
        {"a1": "", "a2": "", "b1": "", "c1": "", "nozone": LABEL},
        id="with nodeTaintsPolicy Honor a zone made only of untolerated tainted nodes is not a domain",
    ),
    pytest.param(
        pod(constraint(ZONE), nodeSelector={ZONE: "a"}),
        [web("w1", "a1"), web("w2", "a2"), web("w3", "b1")],
        {"a1": "", "a2": "", "b1": "", "c1": "", "nozone": LABEL},
        id="by default nodes outside the pod's node selector are not domains, so their emptier zones do not lower the minimum",
    ),
    pytest.param(
        pod(constraint(ZONE, nodeAffinityPolicy="Ignore"), nodeSelector={ZONE: "a"}),
        [web("w1", "a1"), web("w2", "a2"), web("w3", "b1")],
        {"a1": SKEW, "a2": SKEW, "b1": SKEW, "c1": "", "nozone": LABEL},
        id="with nodeAffinityPolicy Ignore every labelled node is a domain",
    ),
    pytest.param(
        pod(constraint(ZONE), nodeSelector={ZONE: "a"}),
        [web("w1", "a1"), web("w2", "a2")],
        {"a1": "", "a2": "", "b1": "", "c1": "", "nozone": LABEL},
        id="a lone eligible zone never has skew against itself",
    ),
    pytest.param(
        pod(constraint(HOST)),
        [web("w1", "a1")],
        {"a1": SKEW, "a2": "", "b1": "", "c1": "", "nozone": ""},
        id="spreading by hostname rejects the node that already runs a matching pod",
    ),
    pytest.param(
        pod(constraint(ZONE)),
        [web("w1", "a1"), make_pod("other", labels={"app": "db"}, node_name="b1")],
        {"a1": SKEW, "a2": SKEW, "b1": "", "c1": "", "nozone": LABEL},
        id="only pods matching the label selector are counted",
    ),
    pytest.param(
        pod(constraint(ZONE)),
        [web("w1", "a1", namespace="other")],
        {"a1": "", "a2": "", "b1": "", "c1": "", "nozone": LABEL},
        id="pods in other namespaces are not counted",
    ),
    pytest.param(
        pod(constraint(ZONE)),
        [
            web("w1", "a1")
            | {
                "metadata": {
                    **web("w1", "a1")["metadata"],
                    "deletionTimestamp": "2024-01-01T00:00:00Z",
                }
            }
        ],
        {"a1": "", "a2": "", "b1": "", "c1": "", "nozone": LABEL},
        id="terminating pods are not counted",
    ),
    pytest.param(
        pod(constraint(ZONE, minDomains=5), nodeSelector={ZONE: "a"}),
        [web("w1", "a1")],
        {"a1": SKEW, "a2": SKEW, "b1": "", "c1": "", "nozone": LABEL},
        id="with fewer domains than minDomains the global minimum is taken as zero",
    ),
    pytest.param(
        make_pod(
            "p",
            labels={"app": "web", "rev": "2"},
            topologySpreadConstraints=[
                {
                    "maxSkew": 1,
                    "topologyKey": HOST,
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": APP},
                    "matchLabelKeys": ["rev"],
                }
            ],
        ),
        [
            make_pod("old", labels={"app": "web", "rev": "1"}, node_name="a1"),
            make_pod("new", labels={"app": "web", "rev": "2"}, node_name="a2"),
        ],
        {"a1": "", "a2": SKEW, "b1": "", "c1": "", "nozone": ""},
        id="matchLabelKeys narrows the selector to pods with the same values of those labels",
    ),
    pytest.param(
        pod(constraint(ZONE, when="ScheduleAnyway")),
        [web("w1", "a1"), web("w2", "a2")],
        {"a1": "", "a2": "", "b1": "", "c1": "", "nozone": ""},
        id="ScheduleAnyway constraints never filter",
    ),
]


@pytest.mark.parametrize(("incoming", "existing", "want"), CASES)
def test_filter(
    incoming: dict[str, Any], existing: list[dict[str, Any]], want: dict[str, str]
) -> None:
    assert verdicts(filter_all(pts.new({}), incoming, Snapshot(nodes(), existing))) == want


def test_a_pod_that_does_not_match_its_own_selector_adds_no_skew() -> None:
    incoming = make_pod("p", labels={"app": "other"}, topologySpreadConstraints=[constraint(HOST)])
    result = filter_all(pts.new({}), incoming, Snapshot(nodes(), [web("w1", "a1")]))
    assert result["a1"] is None


def test_schedule_anyway_prefers_the_emptier_zone() -> None:
    snap = Snapshot(nodes()[:3], [web("w1", "a1"), web("w2", "a2"), web("w3", "b1")])
    scores = run_score(pts.new({}), pod(constraint(ZONE, when="ScheduleAnyway")), snap)
    assert scores["b1"] > scores["a1"] == scores["a2"]
    assert scores["b1"] == 100


def test_schedule_anyway_ignores_nodes_without_the_topology_label() -> None:
    snap = Snapshot(nodes(), [web("w1", "a1")])
    scores = run_score(pts.new({}), pod(constraint(ZONE, when="ScheduleAnyway")), snap)
    assert scores["nozone"] == 0
    assert scores["b1"] == 100 and scores["a1"] < 100


def test_system_default_spreading_applies_to_pods_owned_by_a_replica_set() -> None:
    owner = ("ReplicaSet", "rs-1")
    snap = Snapshot(
        nodes()[:3],
        [
            make_pod("r1", node_name="a1", owner=owner),
            make_pod("r2", node_name="a1", owner=owner),
            make_pod("x", node_name="b1", owner=("ReplicaSet", "rs-2")),
        ],
    )
    scores = run_score(pts.new({}), make_pod("r3", owner=owner), snap)
    # a1 holds two siblings (zone a and host), a2 shares their zone, b1 has none of them.
    assert scores["b1"] > scores["a2"] > scores["a1"]


def test_system_default_spreading_needs_a_workload_owner() -> None:
    snap = Snapshot(nodes()[:3], [make_pod("r1", node_name="a1", owner=("Job", "j"))])
    assert set(run_score(pts.new({}), make_pod("r2", owner=("Job", "j")), snap).values()) == {0}
    assert set(run_score(pts.new({}), make_pod("free"), snap).values()) == {0}


def test_system_default_spreading_still_spreads_by_host_without_zone_labels() -> None:
    owner = ("StatefulSet", "ss")
    snap = Snapshot(
        [make_node("h1"), make_node("h2")], [make_pod("s0", node_name="h1", owner=owner)]
    )
    scores = run_score(pts.new({}), make_pod("s1", owner=owner), snap)
    assert scores["h2"] > scores["h1"]
