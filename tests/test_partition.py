"""A real partition: each node in its own network namespace, one side cut off, then healed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for
from tests.tools import netns

pytestmark = pytest.mark.slow


def cm(name: str, data: dict[str, str] | None = None,
       labels: dict[str, str] | None = None) -> str:
    obj = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, **({"labels": labels} if labels else {})},
           "data": data or {}}
    return json.dumps(obj)


def state(node: ShoalProcess) -> dict[str, dict[str, object]]:
    r = node.kubectl("get", "configmaps", "-o", "json", check=False)
    if r.returncode != 0:
        return {"<unreachable>": {}}
    return {
        i["metadata"]["name"]: {"uid": i["metadata"]["uid"], "data": i.get("data") or {},
                                "labels": i["metadata"].get("labels") or {}}
        for i in json.loads(r.stdout)["items"]
    }


@pytest.fixture
def lab() -> Iterator[netns.NetnsLab]:
    netns.require(need_iptables=True)
    with netns.NetnsLab() as the_lab:
        yield the_lab


def test_writes_on_both_sides_of_a_partition_survive_the_merge(
    lab: netns.NetnsLab, tmp_path: Path,
) -> None:
    spaces = [lab.add(x) for x in ("a", "b", "c")]
    nodes: list[ShoalProcess] = []
    try:
        for i, ns in enumerate(spaces):
            name = f"node-{'abc'[i]}"
            node = ShoalProcess(name, tmp_path / name, free_port(), tmp_path / f"{name}.log",
                                netns=ns, host=ns.ip)
            if i == 0:
                node.start(["--peer-port", "7443"])
                token = subprocess.run(
                    [str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir",
                     str(node.data_dir)], check=True, capture_output=True, text=True,
                ).stdout.strip()
            else:
                node.start(["--peer-port", "7443", "--join", f"{spaces[0].ip}:7443",
                            "--token", token])
            nodes.append(node)
        a, b, c = nodes
        names = {n.name for n in nodes}
        for n in nodes:
            wait_for(lambda n=n: {
                i["metadata"]["name"] for i in json.loads(
                    n.kubectl("get", "nodes", "-o", "json").stdout)["items"]} == names,
                30, f"{n.name} to see every node")
        # Before the cut: objects both sides will change.
        for name in ("shared", "contested", "doomed-left", "doomed-right"):
            a.kubectl("apply", "-f", "-", input=cm(name, {"v": "0"}))
        wait_for(lambda: all("doomed-right" in state(n) for n in nodes), 20, "replication")

        lab.cut(spaces[2], mode="drop")  # c alone on one side; a and b on the other

        a.kubectl("apply", "-f", "-", input=cm("left-only", {"side": "left"}))
        a.kubectl("apply", "-f", "-", input=cm("same-name", {"side": "left"}))
        a.kubectl("label", "configmap", "shared", "left=yes")
        a.kubectl("delete", "configmap", "contested", "doomed-left")
        c.kubectl("apply", "-f", "-", input=cm("right-only", {"side": "right"}))
        c.kubectl("apply", "-f", "-", input=cm("same-name", {"side": "right"}))
        c.kubectl("patch", "configmap", "shared", "--type=merge", "-p",
                  '{"data":{"right":"yes"}}')
        c.kubectl("patch", "configmap", "contested", "--type=merge", "-p",
                  '{"data":{"updated":"while-deleted"}}')
        c.kubectl("delete", "configmap", "doomed-right")
        # Each side serves what it wrote while apart, and nothing crosses the cut.
        time.sleep(3)
        assert "right-only" not in state(a) and "left-only" not in state(c)
        assert "right-only" in state(c) and "left-only" in state(b)

        lab.heal(spaces[2])

        wait_for(lambda: len({json.dumps(state(n), sort_keys=True) for n in nodes}) == 1, 45,
                 "every replica to be identical after the heal")
        final = state(a)
        assert {"left-only", "right-only", "same-name", "shared"} <= set(final)
        assert "doomed-left" not in final and "doomed-right" not in final
        assert "contested" not in final, "an update concurrent with a delete does not revive it"
        assert final["shared"]["labels"] == {"left": "yes"}
        assert final["shared"]["data"] == {"v": "0", "right": "yes"}
        assert final["same-name"]["data"]["side"] in ("left", "right")
    finally:
        for n in nodes:
            n.stop()
