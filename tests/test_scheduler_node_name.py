"""NodeName and NodeUnschedulable filters."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.control.scheduler import Code, Snapshot
from shoal.control.scheduler.plugins import node_name, node_unschedulable
from shoal.control.scheduler.testing import make_node, make_pod, run_filter


@pytest.mark.parametrize(
    ("pod", "node", "want"),
    [
        pytest.param(make_pod("p"), "n1", None, id="a pod that names no node fits any node"),
        pytest.param(
            make_pod("p", nodeName="n1"), "n1", None, id="a pod that names this node fits it"
        ),
        pytest.param(
            make_pod("p", nodeName="n2"),
            "n1",
            node_name.ERR_REASON,
            id="a pod that names another node is rejected with the requested node name reason",
        ),
    ],
)
def test_node_name_filter(pod: dict[str, Any], node: str, want: str | None) -> None:
    snap = Snapshot([make_node("n1"), make_node("n2")])
    st = run_filter(node_name.new({}), pod, snap, node)
    if want is None:
        assert st is None
    else:
        assert st is not None and st.reasons == (want,)
        assert st.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


@pytest.mark.parametrize(
    ("pod", "unschedulable", "fits"),
    [
        pytest.param(make_pod("p"), False, True, id="a schedulable node takes any pod"),
        pytest.param(
            make_pod("p"), True, False, id="a cordoned node rejects a pod without tolerations"
        ),
        pytest.param(
            make_pod(
                "p",
                tolerations=[
                    {
                        "key": node_unschedulable.TAINT_NODE_UNSCHEDULABLE,
                        "operator": "Exists",
                        "effect": "NoSchedule",
                    }
                ],
            ),
            True,
            True,
            id="a pod that tolerates the unschedulable taint may land on a cordoned node",
        ),
        pytest.param(
            make_pod("p", tolerations=[{"operator": "Exists"}]),
            True,
            True,
            id="a pod that tolerates everything may land on a cordoned node",
        ),
        pytest.param(
            make_pod(
                "p",
                tolerations=[
                    {
                        "key": node_unschedulable.TAINT_NODE_UNSCHEDULABLE,
                        "operator": "Exists",
                        "effect": "NoExecute",
                    }
                ],
            ),
            True,
            False,
            id="a toleration of the unschedulable key with the NoExecute effect does not help",
        ),
    ],
)
def test_node_unschedulable_filter(pod: dict[str, Any], unschedulable: bool, fits: bool) -> None:
    snap = Snapshot([make_node("n1", unschedulable=unschedulable)])
    st = run_filter(node_unschedulable.new({}), pod, snap, "n1")
    if fits:
        assert st is None
    else:
        assert st is not None
        assert st.reasons == (node_unschedulable.ERR_REASON_UNSCHEDULABLE,)
        assert st.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
