"""shoal status: the members, links and partitions as one node sees them, during a real cut."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.cli.status import format_report
from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for
from tests.tools import netns


def start_three(lab: netns.NetnsLab, tmp_path: Path, nodes: list[ShoalProcess],
                extra: list[str] | None = None) -> None:
    """node-a, node-b and node-c, each in its own namespace, joined through node-a; each is
    added to ``nodes`` before it starts, so the caller stops whichever started."""
    spaces = [lab.add(x) for x in ("a", "b", "c")]
    token = ""
    for i, ns in enumerate(spaces):
        name = f"node-{'abc'[i]}"
        node = ShoalProcess(name, tmp_path / name, free_port(), tmp_path / f"{name}.log",
                            netns=ns, host=ns.ip)
        nodes.append(node)
        if i == 0:
            node.start(["--peer-port", "7443", *(extra or [])])
            token = subprocess.run(
                [str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir",
                 str(node.data_dir)], check=True, capture_output=True, text=True,
            ).stdout.strip()
        else:
            node.start(["--peer-port", "7443", "--join", f"{spaces[0].ip}:7443",
                        "--token", token, *(extra or [])])


def status(node: ShoalProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    """``shoal status --data-dir`` run inside the node's namespace (works while cut off)."""
    args = [str(VENV_BIN / "shoal"), "status", "--data-dir", str(node.data_dir),
            "--server", f"https://127.0.0.1:{node.port}", *extra]
    assert node.netns is not None
    return subprocess.run(node.netns.exec_args(args), capture_output=True, text=True,
                          timeout=60, check=False)


def report(node: ShoalProcess) -> dict[str, Any]:
    r = status(node, "-o", "json")
    assert r.returncode == 0, r.stderr
    body: dict[str, Any] = json.loads(r.stdout)
    return body


def states(node: ShoalProcess) -> dict[str, str]:
    return {m["name"]: m["state"] for m in report(node)["members"]}


@pytest.fixture
def lab() -> Iterator[netns.NetnsLab]:
    netns.require(need_iptables=True)
    with netns.NetnsLab() as the_lab:
        yield the_lab


def test_format_lists_members_cut_links_and_partitions() -> None:
    body = {
        "node": "a", "revision": 7,
        "members": [{"name": "a", "state": "alive", "self": True, "address": "x:1",
                     "for_seconds": 3.0},
                    {"name": "c", "state": "dead", "for_seconds": 12.0, "address": "y:1",
                     "site": "shed"}],
        "pods": {"a": {"Running": 2}, "c": {"Running": 1, "Pending": 1}},
        "nodes": {"a": {"ready": "True"}, "c": {"ready": "Unknown"}},
        "replication": {"c": {"cursor": 40, "behind": 3, "bytes_sent": 2048,
                              "bytes_received": 10}},
        "links": [{"a": "a", "b": "c", "state": "cut", "seen_by": {"a": "dead"}}],
        "membership_events": [{"time": 0.0, "member": "c", "state": "suspect",
                               "previous": "alive", "kind": "cut"}],
    }
    text = format_report(body)
    row = next(line for line in text.splitlines() if line.startswith("c "))
    assert row.split() == ["c", "dead", "12s", "y:1", "full", "shed", "2", "Unknown", "3",
                           "2.0KiB", "10B"]
    mine = next(line for line in text.splitlines() if line.startswith("a *"))
    assert mine.split() == ["a", "*", "alive", "3s", "x:1", "full", "-", "2", "True"]
    assert "cut: a - c (a holds it dead)" in text
    assert "alive -> suspect  (cut)" in text


@pytest.mark.slow
def test_status_during_a_partition_shows_each_side_what_it_sees(
        lab: netns.NetnsLab, tmp_path: Path) -> None:
    nodes: list[ShoalProcess] = []
    try:
        start_three(lab, tmp_path, nodes)
        a, _, c = nodes
        for n in nodes:
            wait_for(lambda n=n: set(states(n).values()) == {"alive"} and len(states(n)) == 3,
                     30, f"{n.name} to see three alive members")
        text = status(a).stdout
        assert "no link is cut" in text and "node-c" in text

        lab.cut(lab.namespaces[2], mode="drop")
        cut_at = time.monotonic()
        wait_for(lambda: states(a)["node-c"] in ("suspect", "dead"), 30, "a to suspect c")
        detected = time.monotonic() - cut_at
        wait_for(lambda: states(c)["node-a"] in ("suspect", "dead")
                 and states(c)["node-b"] in ("suspect", "dead"), 30, "c to suspect both")
        on_a = status(a).stdout
        assert "cut: node-a - node-c" in on_a
        assert "node-c" in on_a.split("RECENT PARTITIONS")[1] and "(cut)" in on_a
        on_c = status(c).stdout  # the cut-off side answers for itself
        assert "cut: node-a - node-c" in on_c and "cut: node-b - node-c" in on_c

        lab.heal(lab.namespaces[2])
        wait_for(lambda: all(set(states(n).values()) == {"alive"} for n in nodes), 45,
                 "every node to see every member alive again")
        # node-b's report of its own view follows within a few seconds.
        wait_for(lambda: "no link is cut" in status(a).stdout, 20, "no cut link on node-a")
        assert "(heal)" in status(a).stdout.split("RECENT PARTITIONS")[1]
        print(f"a suspected c {detected:.1f}s after the cut")
    finally:
        for n in nodes:
            n.stop()


def test_status_with_a_kubeconfig_and_who_may_read_it(shoal: ShoalProcess) -> None:
    r = subprocess.run([str(VENV_BIN / "shoal"), "status", "--kubeconfig", str(shoal.kubeconfig),
                        "-o", "json"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["node"] == "node-1" and body["members"][0]["self"] is True
    assert body["nodes"]["node-1"]["ready"] == "True"
    text = subprocess.run([str(VENV_BIN / "shoal"), "status", "--data-dir", str(shoal.data_dir)],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert text.startswith("node node-1 ") and "no link is cut" in text
    # A ServiceAccount with neither get on the path nor list on nodes is refused.
    shoal.kubectl("create", "serviceaccount", "nobody")
    token = shoal.kubectl("create", "token", "nobody").stdout.strip()
    assert _code(shoal, token) == 403
    assert _code(shoal, "garbage") == 401
    assert _code(shoal, None) == 401


def _code(node: ShoalProcess, token: str | None) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(node.url + "/shoal/v1/status", headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
