"""NodeAffinity: nodeSelector, required node affinity (all operators, fields) and preferred scoring."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.control.scheduler import Code, Snapshot
from shoal.control.scheduler.plugins import node_affinity
from shoal.control.scheduler.testing import make_node, make_pod, run_filter, run_score

LABELS = {"zone": "a", "disk": "ssd", "cores": "8"}


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    e: dict[str, Any] = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return e


def term(*exprs: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"matchExpressions": list(exprs)}
    if fields:
        t["matchFields"] = fields
    return t


CASES = [
    pytest.param({}, True, id="a pod without selector or affinity fits every node"),
    pytest.param(
        {"nodeSelector": {"zone": "a"}},
        True,
        id="a nodeSelector that the node's labels satisfy fits",
    ),
    pytest.param(
        {"nodeSelector": {"zone": "a", "disk": "hdd"}},
        False,
        id="a nodeSelector needs every pair to match",
    ),
    pytest.param(
        {"nodeSelector": {"gpu": "true"}},
        False,
        id="a nodeSelector on a missing label does not fit",
    ),
    pytest.param(
        {"affinity": required(term(expr("zone", "In", "a", "b")))},
        True,
        id="In matches when the label has one of the values",
    ),
    pytest.param(
        {"affinity": required(term(expr("zone", "In", "b")))},
        False,
        id="In does not match another value",
    ),
    pytest.param(
        {"affinity": required(term(expr("zone", "NotIn", "b")))},
        True,
        id="NotIn matches when the label has none of the values",
    ),
    pytest.param(
        {"affinity": required(term(expr("gpu", "NotIn", "x")))},
        True,
        id="NotIn matches a node without the label",
    ),
    pytest.param(
        {"affinity": required(term(expr("disk", "Exists")))},
        True,
        id="Exists matches a present label",
    ),
    pytest.param(
        {"affinity": required(term(expr("gpu", "Exists")))},
        False,
        id="Exists does not match a missing label",
    ),
    pytest.param(
        {"affinity": required(term(expr("gpu", "DoesNotExist")))},
        True,
        id="DoesNotExist matches a missing label",
    ),
    pytest.param(
        {"affinity": required(term(expr("disk", "DoesNotExist")))},
        False,
        id="DoesNotExist does not match a present label",
    ),
    pytest.param(
        {"affinity": required(term(expr("cores", "Gt", "4")))},
        True,
        id="Gt matches an integer label greater than the value",
    ),
    pytest.param(
        {"affinity": required(term(expr("cores", "Gt", "8")))},
        False,
        id="Gt does not match an equal integer",
    ),
    pytest.param(
        {"affinity": required(term(expr("cores", "Lt", "16")))},
        True,
        id="Lt matches an integer label smaller than the value",
    ),
    pytest.param(
        {"affinity": required(term(expr("zone", "Lt", "16")))},
        False,
        id="Lt does not match a label that is not an integer",
    ),
    pytest.param(
        {"affinity": required(term(expr("cores", "Gt", "4", "5")))},
        False,
        id="Gt with more than one value matches nothing",
    ),
    pytest.param(
        {"affinity": required(term(expr("zone", "Near", "a")))},
        False,
        id="an unknown operator matches nothing",
    ),
    pytest.param(
        {"affinity": required(term(expr("zone", "In", "a"), expr("disk", "In", "hdd")))},
        False,
        id="the expressions of one term are ANDed",
    ),
    pytest.param(
        {"affinity": required(term(expr("zone", "In", "b")), term(expr("disk", "In", "ssd")))},
        True,
        id="the terms are ORed",
    ),
    pytest.param({"affinity": required({})}, False, id="an empty term matches nothing"),
    pytest.param(
        {"affinity": required()}, False, id="a required affinity with no terms matches nothing"
    ),
    pytest.param(
        {"affinity": required(term(fields=[expr("metadata.name", "In", "n1")]))},
        True,
        id="matchFields on metadata.name In selects the node by name",
    ),
    pytest.param(
        {"affinity": required(term(fields=[expr("metadata.name", "NotIn", "n1")]))},
        False,
        id="matchFields on metadata.name NotIn excludes the node by name",
    ),
    pytest.param(
        {"affinity": required(term(fields=[expr("metadata.name", "In", "n1", "n2")]))},
        False,
        id="matchFields with more than one value matches nothing",
    ),
    pytest.param(
        {"affinity": required(term(fields=[expr("metadata.uid", "In", "n1")]))},
        False,
        id="matchFields on a field other than metadata.name matches nothing",
    ),
    pytest.param(
        {
            "affinity": required(
                term(expr("zone", "In", "a"), fields=[expr("metadata.name", "In", "n2")])
            )
        },
        False,
        id="matchExpressions and matchFields of one term are ANDed",
    ),
    pytest.param(
        {"nodeSelector": {"zone": "b"}, "affinity": required(term(expr("zone", "In", "a")))},
        False,
        id="the nodeSelector and the required affinity must both match",
    ),
]


@pytest.mark.parametrize(("spec", "fits"), CASES)
def test_filter(spec: dict[str, Any], fits: bool) -> None:
    snap = Snapshot([make_node("n1", labels=LABELS)])
    st = run_filter(node_affinity.new({}), make_pod("p", **spec), snap, "n1")
    if fits:
        assert st is None
    else:
        assert st is not None and st.reasons == (node_affinity.ERR_REASON_POD,)
        assert st.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def preferred(*weighted: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": w, "preference": t} for w, t in weighted
            ]
        }
    }


@pytest.mark.parametrize(
    ("affinity", "want"),
    [
        pytest.param(
            None,
            {"a-ssd": 0, "a-hdd": 0, "b-ssd": 0},
            id="a pod without preferred terms scores every node zero",
        ),
        pytest.param(
            preferred((10, term(expr("zone", "In", "a")))),
            {"a-ssd": 100, "a-hdd": 100, "b-ssd": 0},
            id="nodes matching the only preferred term get the maximum and others zero",
        ),
        pytest.param(
            preferred((10, term(expr("zone", "In", "a"))), (30, term(expr("disk", "In", "ssd")))),
            {"a-ssd": 100, "a-hdd": 25, "b-ssd": 75},
            id="matched weights add up and are scaled so the best node gets the maximum",
        ),
        pytest.param(
            preferred((0, term(expr("zone", "In", "a")))),
            {"a-ssd": 0, "a-hdd": 0, "b-ssd": 0},
            id="a preferred term with zero weight changes nothing",
        ),
    ],
)
def test_score(affinity: dict[str, Any] | None, want: dict[str, int]) -> None:
    snap = Snapshot(
        [
            make_node("a-ssd", labels={"zone": "a", "disk": "ssd"}),
            make_node("a-hdd", labels={"zone": "a", "disk": "hdd"}),
            make_node("b-ssd", labels={"zone": "b", "disk": "ssd"}),
        ]
    )
    spec: dict[str, Any] = {"affinity": affinity} if affinity else {}
    assert run_score(node_affinity.new({}), make_pod("p", **spec), snap) == want
