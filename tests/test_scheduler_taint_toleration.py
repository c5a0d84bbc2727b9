"""TaintToleration: filter on NoSchedule/NoExecute, score on PreferNoSchedule, eviction grace."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.control.scheduler import Code, Snapshot
from shoal.control.scheduler.plugins import taint_toleration
from shoal.control.scheduler.plugins.taint_toleration import no_execute_grace, tolerates
from shoal.control.scheduler.testing import make_node, make_pod, run_filter, run_score

NO_SCHEDULE = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
NO_EXECUTE = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
PREFER = {"key": "flaky", "value": "yes", "effect": "PreferNoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "taint", "want"),
    [
        pytest.param(
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            NO_SCHEDULE,
            True,
            id="an Equal toleration with the same key, value and effect tolerates the taint",
        ),
        pytest.param(
            {"key": "dedicated", "operator": "Equal", "value": "cpu"},
            NO_SCHEDULE,
            False,
            id="an Equal toleration with another value does not tolerate the taint",
        ),
        pytest.param(
            {"key": "dedicated", "operator": "Exists"},
            NO_SCHEDULE,
            True,
            id="an Exists toleration with the key and no effect tolerates any value and effect",
        ),
        pytest.param(
            {"operator": "Exists"},
            NO_EXECUTE,
            True,
            id="an Exists toleration with an empty key tolerates every taint",
        ),
        pytest.param(
            {"operator": "Exists", "effect": "NoExecute"},
            NO_SCHEDULE,
            False,
            id="an empty-key toleration limited to NoExecute does not tolerate NoSchedule",
        ),
        pytest.param(
            {"key": "other", "operator": "Exists"},
            NO_SCHEDULE,
            False,
            id="a toleration of another key does not tolerate the taint",
        ),
        pytest.param(
            {"key": "node.kubernetes.io/unreachable"},
            NO_EXECUTE,
            True,
            id="an Equal toleration with no value tolerates a taint with no value",
        ),
        pytest.param(
            {"key": "dedicated", "operator": "Lt", "value": "gpu"},
            NO_SCHEDULE,
            False,
            id="an unknown operator tolerates nothing",
        ),
    ],
)
def test_tolerates(toleration: dict[str, Any], taint: dict[str, Any], want: bool) -> None:
    assert tolerates(toleration, taint) is want


@pytest.mark.parametrize(
    ("taints", "tolerations", "want"),
    [
        pytest.param([], [], None, id="a node without taints takes any pod"),
        pytest.param(
            [NO_SCHEDULE],
            [],
            "node(s) had untolerated taint {dedicated: gpu}",
            id="a pod without tolerations is kept off a NoSchedule taint, naming key and value",
        ),
        pytest.param(
            [NO_SCHEDULE],
            [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
            None,
            id="a pod that tolerates the NoSchedule taint may land on the tainted node",
        ),
        pytest.param(
            [NO_EXECUTE],
            [],
            "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
            id="a NoExecute taint without a value is printed with an empty value",
        ),
        pytest.param(
            [NO_EXECUTE],
            [
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
            None,
            id="a NoExecute toleration with tolerationSeconds still lets the pod be scheduled",
        ),
        pytest.param([PREFER], [], None, id="a PreferNoSchedule taint never filters a node out"),
        pytest.param(
            [NO_SCHEDULE, NO_EXECUTE],
            [{"key": "dedicated", "operator": "Exists"}],
            "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
            id="the first untolerated taint is the one reported",
        ),
    ],
)
def test_filter(
    taints: list[dict[str, Any]], tolerations: list[dict[str, Any]], want: str | None
) -> None:
    snap = Snapshot([make_node("n1", taints=taints)])
    st = run_filter(taint_toleration.new({}), make_pod("p", tolerations=tolerations), snap, "n1")
    if want is None:
        assert st is None
    else:
        assert st is not None and st.reasons == (want,)
        assert st.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


@pytest.mark.parametrize(
    ("tolerations", "want"),
    [
        pytest.param(
            [],
            {"clean": 100, "one": 50, "two": 0},
            id="nodes with fewer untolerated PreferNoSchedule taints score higher",
        ),
        pytest.param(
            [{"key": "flaky", "operator": "Exists", "effect": "PreferNoSchedule"}],
            {"clean": 100, "one": 100, "two": 0},
            id="a tolerated PreferNoSchedule taint does not lower the score",
        ),
        pytest.param(
            [{"key": "flaky", "operator": "Exists", "effect": "NoSchedule"}],
            {"clean": 100, "one": 50, "two": 0},
            id="a NoSchedule toleration does not count against PreferNoSchedule taints",
        ),
        pytest.param(
            [{"operator": "Exists"}],
            {"clean": 100, "one": 100, "two": 100},
            id="when the pod tolerates every taint all nodes score the maximum",
        ),
    ],
)
def test_score(tolerations: list[dict[str, Any]], want: dict[str, int]) -> None:
    other = {"key": "old", "value": "", "effect": "PreferNoSchedule"}
    snap = Snapshot(
        [
            make_node("clean"),
            make_node("one", taints=[PREFER]),
            make_node("two", taints=[PREFER, other, NO_SCHEDULE]),
        ]
    )
    assert run_score(taint_toleration.new({}), make_pod("p", tolerations=tolerations), snap) == want


@pytest.mark.parametrize(
    ("tolerations", "want"),
    [
        pytest.param([], 0, id="a pod that does not tolerate a NoExecute taint is evicted at once"),
        pytest.param(
            [
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                }
            ],
            None,
            id="a toleration without tolerationSeconds tolerates the taint for ever",
        ),
        pytest.param(
            [
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "tolerationSeconds": 300,
                },
                {"operator": "Exists", "tolerationSeconds": 60},
            ],
            60,
            id="the smallest tolerationSeconds among matching tolerations wins",
        ),
        pytest.param(
            [{"operator": "Exists", "tolerationSeconds": -5}],
            0,
            id="a negative tolerationSeconds counts as zero",
        ),
    ],
)
def test_no_execute_grace(tolerations: list[dict[str, Any]], want: float | None) -> None:
    assert no_execute_grace(tolerations, [NO_EXECUTE, NO_SCHEDULE]) == want


def test_no_execute_grace_ignores_other_effects() -> None:
    assert no_execute_grace([], [NO_SCHEDULE, PREFER]) is None
