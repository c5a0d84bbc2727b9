"""InterPodAffinity: required affinity and anti-affinity (both directions) and preferred scoring."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.control.scheduler import Code, Snapshot, Status
from shoal.control.scheduler.plugins import inter_pod_affinity as ipa
from shoal.control.scheduler.testing import filter_all, make_node, make_pod, run_score

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
AFFINITY = ipa.ERR_REASON_AFFINITY_RULES_NOT_MATCH
ANTI = ipa.ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH
EXISTING = ipa.ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH


def nodes() -> list[dict[str, Any]]:
    return [
        make_node("a1", labels={ZONE: "a"}),
        make_node("a2", labels={ZONE: "a"}),
        make_node("b1", labels={ZONE: "b"}),
        make_node("nozone"),
    ]


def term(key: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": labels or {}}, "topologyKey": key, **extra}


def affinity(kind: str, *terms: dict[str, Any]) -> dict[str, Any]:
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


def preferred(kind: str, *weighted: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    return {
        kind: {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": w, "podAffinityTerm": t} for w, t in weighted
            ]
        }
    }


WEB_ON_A1 = make_pod("web", labels={"app": "web"}, node_name="a1")
DB_IN_OTHER_NS = make_pod("db", namespace="data", labels={"app": "db"}, node_name="b1")


def verdicts(result: dict[str, Status | None]) -> dict[str, str]:
    return {k: (v.reasons[0] if v is not None else "") for k, v in result.items()}


CASES = [
    pytest.param(
        make_pod("p"),
        [WEB_ON_A1],
        {"a1": "", "a2": "", "b1": "", "nozone": ""},
        id="a pod without pod affinity fits everywhere when no pod has anti-affinity",
    ),
    pytest.param(
        make_pod("p", affinity=affinity("podAffinity", term(ZONE, {"app": "web"}))),
        [WEB_ON_A1],
        {"a1": "", "a2": "", "b1": AFFINITY, "nozone": AFFINITY},
        id="required affinity by zone admits every node of the zone that runs a matching pod",
    ),
    pytest.param(
        make_pod("p", affinity=affinity("podAffinity", term(HOST, {"app": "web"}))),
        [WEB_ON_A1],
        {"a1": "", "a2": AFFINITY, "b1": AFFINITY, "nozone": AFFINITY},
        id="required affinity by hostname admits only the node that runs a matching pod",
    ),
    pytest.param(
        make_pod(
            "p",
            affinity=affinity(
                "podAffinity", term(ZONE, {"app": "web"}), term(HOST, {"app": "web"})
            ),
        ),
        [WEB_ON_A1],
        {"a1": "", "a2": AFFINITY, "b1": AFFINITY, "nozone": AFFINITY},
        id="every required affinity term must be met on the node",
    ),
    pytest.param(
        make_pod(
            "p",
            labels={"app": "cache"},
            affinity=affinity("podAffinity", term(ZONE, {"app": "cache"})),
        ),
        [WEB_ON_A1],
        {"a1": "", "a2": "", "b1": "", "nozone": AFFINITY},
        id="the first pod of a group with affinity to itself may go to any node with the topology label",
    ),
    pytest.param(
        make_pod("p", affinity=affinity("podAffinity", term(ZONE, {"app": "cache"}))),
        [WEB_ON_A1],
        {"a1": AFFINITY, "a2": AFFINITY, "b1": AFFINITY, "nozone": AFFINITY},
        id="affinity to pods that do not exist and do not include the pod itself fits nowhere",
    ),
    pytest.param(
        make_pod("p", affinity=affinity("podAffinity", term(ZONE, {"app": "db"}))),
        [DB_IN_OTHER_NS],
        {"a1": AFFINITY, "a2": AFFINITY, "b1": AFFINITY, "nozone": AFFINITY},
        id="by default a term only selects pods in the pod's own namespace, so a pod elsewhere does not count",
    ),
    pytest.param(
        make_pod(
            "p", affinity=affinity("podAffinity", term(ZONE, {"app": "db"}, namespaces=["data"]))
        ),
        [DB_IN_OTHER_NS],
        {"a1": AFFINITY, "a2": AFFINITY, "b1": "", "nozone": AFFINITY},
        id="a term with namespaces selects pods in those namespaces",
    ),
    pytest.param(
        make_pod(
            "p",
            affinity=affinity(
                "podAffinity",
                term(ZONE, {"app": "db"}, namespaceSelector={"matchLabels": {"team": "data"}}),
            ),
        ),
        [DB_IN_OTHER_NS],
        {"a1": AFFINITY, "a2": AFFINITY, "b1": "", "nozone": AFFINITY},
        id="a term with a namespaceSelector selects pods in namespaces whose labels match",
    ),
    pytest.param(
        make_pod(
            "p", affinity=affinity("podAffinity", term(ZONE, {"app": "db"}, namespaceSelector={}))
        ),
        [DB_IN_OTHER_NS],
        {"a1": AFFINITY, "a2": AFFINITY, "b1": "", "nozone": AFFINITY},
        id="an empty namespaceSelector selects pods in every namespace",
    ),
    pytest.param(
        make_pod("p", affinity=affinity("podAntiAffinity", term(ZONE, {"app": "web"}))),
        [WEB_ON_A1],
        {"a1": ANTI, "a2": ANTI, "b1": "", "nozone": ""},
        id="required anti-affinity by zone keeps the pod out of the zone of a matching pod",
    ),
    pytest.param(
        make_pod("p", affinity=affinity("podAntiAffinity", term(HOST, {"app": "web"}))),
        [WEB_ON_A1],
        {"a1": ANTI, "a2": "", "b1": "", "nozone": ""},
        id="required anti-affinity by hostname keeps the pod off the node of a matching pod",
    ),
    pytest.param(
        make_pod("p", labels={"app": "web"}),
        [
            make_pod(
                "guard",
                labels={"app": "guard"},
                node_name="a1",
                affinity=affinity("podAntiAffinity", term(ZONE, {"app": "web"})),
            )
        ],
        {"a1": EXISTING, "a2": EXISTING, "b1": "", "nozone": ""},
        id="an existing pod's anti-affinity keeps a matching incoming pod out of its zone",
    ),
    pytest.param(
        make_pod("p", namespace="other", labels={"app": "web"}),
        [
            make_pod(
                "guard",
                node_name="a1",
                affinity=affinity("podAntiAffinity", term(ZONE, {"app": "web"})),
            )
        ],
        {"a1": "", "a2": "", "b1": "", "nozone": ""},
        id="an existing pod's anti-affinity ignores pods of other namespaces",
    ),
    pytest.param(
        make_pod(
            "p", labels={"app": "web"}, affinity=affinity("podAffinity", term(ZONE, {"app": "web"}))
        ),
        [
            WEB_ON_A1,
            make_pod(
                "guard",
                node_name="b1",
                affinity=affinity("podAntiAffinity", term(HOST, {"app": "web"})),
            ),
        ],
        {"a1": "", "a2": "", "b1": AFFINITY, "nozone": AFFINITY},
        id="affinity is checked before the existing pods' anti-affinity",
    ),
]


@pytest.mark.parametrize(("pod", "existing", "want"), CASES)
def test_filter(pod: dict[str, Any], existing: list[dict[str, Any]], want: dict[str, str]) -> None:
    snap = Snapshot(
        nodes(),
        existing,
        namespaces=[{"metadata": {"name": "data", "labels": {"team": "data"}}}],
    )
    assert verdicts(filter_all(ipa.new({}), pod, snap)) == want


def test_affinity_rejections_are_unresolvable_and_anti_affinity_ones_are_not() -> None:
    snap = Snapshot(nodes(), [WEB_ON_A1])
    aff = filter_all(
        ipa.new({}),
        make_pod("p", affinity=affinity("podAffinity", term(ZONE, {"app": "web"}))),
        snap,
    )
    anti = filter_all(
        ipa.new({}),
        make_pod("p", affinity=affinity("podAntiAffinity", term(ZONE, {"app": "web"}))),
        snap,
    )
    assert aff["b1"] is not None and aff["b1"].code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert anti["a1"] is not None and anti["a1"].code is Code.UNSCHEDULABLE


def test_a_malformed_selector_is_an_error() -> None:
    bad = term(ZONE)
    bad["labelSelector"] = {"matchExpressions": [{"key": "app", "operator": "Near"}]}
    result = filter_all(
        ipa.new({}), make_pod("p", affinity=affinity("podAffinity", bad)), Snapshot(nodes())
    )
    assert all(s is not None and s.code is Code.ERROR for s in result.values())


SCORE_CASES = [
    pytest.param(
        make_pod("p", affinity=preferred("podAffinity", (10, term(ZONE, {"app": "web"})))),
        [WEB_ON_A1],
        {"a1": 100, "a2": 100, "b1": 0, "nozone": 0},
        id="preferred affinity favours the zone of matching pods",
    ),
    pytest.param(
        make_pod("p", affinity=preferred("podAntiAffinity", (10, term(ZONE, {"app": "web"})))),
        [WEB_ON_A1],
        {"a1": 0, "a2": 0, "b1": 100, "nozone": 100},
        id="preferred anti-affinity disfavours the zone of matching pods",
    ),
    pytest.param(
        make_pod(
            "p",
            affinity=preferred(
                "podAffinity", (10, term(ZONE, {"app": "web"})), (30, term(HOST, {"app": "web"}))
            ),
        ),
        [WEB_ON_A1],
        {"a1": 100, "a2": 25, "b1": 0, "nozone": 0},
        id="the weights of the preferred terms add up per topology domain",
    ),
    pytest.param(
        make_pod("p", labels={"app": "client"}),
        [
            make_pod(
                "srv",
                node_name="b1",
                affinity=affinity("podAffinity", term(ZONE, {"app": "client"})),
            )
        ],
        {"a1": 0, "a2": 0, "b1": 100, "nozone": 0},
        id="an existing pod's required affinity to the incoming pod attracts it with the hard weight",
    ),
    pytest.param(
        make_pod("p", labels={"app": "noisy"}),
        [
            make_pod(
                "quiet",
                node_name="a2",
                affinity=preferred("podAntiAffinity", (50, term(HOST, {"app": "noisy"}))),
            )
        ],
        {"a1": 100, "a2": 0, "b1": 100, "nozone": 100},
        id="an existing pod's preferred anti-affinity repels the incoming pod",
    ),
    pytest.param(
        make_pod("p"),
        [WEB_ON_A1],
        {"a1": 0, "a2": 0, "b1": 0, "nozone": 0},
        id="with no affinity on either side every node scores zero",
    ),
]


@pytest.mark.parametrize(("pod", "existing", "want"), SCORE_CASES)
def test_score(pod: dict[str, Any], existing: list[dict[str, Any]], want: dict[str, int]) -> None:
    assert run_score(ipa.new({}), pod, Snapshot(nodes(), existing)) == want


def test_hard_pod_affinity_weight_zero_ignores_existing_required_affinity() -> None:
    existing = [
        make_pod(
            "srv", node_name="b1", affinity=affinity("podAffinity", term(ZONE, {"app": "client"}))
        )
    ]
    plugin = ipa.new({"hardPodAffinityWeight": 0})
    scores = run_score(plugin, make_pod("p", labels={"app": "client"}), Snapshot(nodes(), existing))
    assert set(scores.values()) == {0}
