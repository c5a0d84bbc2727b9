"""Services through real ``shoal server`` processes, each node in its own network namespace.

Two peers run one process-runtime pod each (host network: the pod answers on
its node's address) behind one NodePort Service. Every node's Service proxy
programs its own namespace's nftables from its replica.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.net import service_proxy as sp
from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for
from tests.tools import netns
from tests.tools.service_lab import CLIENT, SERVER

pytestmark = pytest.mark.slow

NODE_PORT = 30080


def pod(node: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"web-{node}", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{
            "name": "web", "image": "python", "command": [sys.executable, "-c", SERVER],
            "args": [node, "8080"], "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}})


SERVICE = json.dumps({
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
    "spec": {"type": "NodePort", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": "http",
                        "nodePort": NODE_PORT}]}})


def answers(ns: netns.Namespace, host: str, port: int, n: int) -> list[str]:
    r = ns.run([sys.executable, "-c", CLIENT, host, str(port), str(n)], capture_output=True,
               text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [body.split(" ")[0] for body, _ in json.loads(r.stdout)]


def answers_from_here(host: str, port: int, n: int) -> list[str]:
    out = []
    for _ in range(n):
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            out.append(data.split(b"\r\n\r\n", 1)[-1].decode().split(" ")[0])
        except OSError as e:
            out.append(type(e).__name__)
    return out


def rules(ns: netns.Namespace) -> str:
    return ns.run(["nft", "list", "table", "ip", "shoal-services"], capture_output=True,
                  text=True).stdout


@pytest.fixture
def lab() -> Iterator[netns.NetnsLab]:
    netns.require()
    if sp.nft_usable() is not None:
        if netns._in_ci():
            pytest.fail(f"{sp.nft_usable()} (CI=true: the bootstrap installs nftables)")
        pytest.skip(str(sp.nft_usable()))
    with netns.NetnsLab() as the_lab:
        yield the_lab


def test_a_node_port_and_a_cluster_ip_reach_both_nodes_and_a_cut_off_node_drops_out(
    lab: netns.NetnsLab, tmp_path: Path,
) -> None:
    spaces = [lab.add(x) for x in ("a", "b")]
    nodes: list[ShoalProcess] = []
    try:
        for i, ns in enumerate(spaces):
            name = f"node-{'ab'[i]}"
            node = ShoalProcess(name, tmp_path / name, free_port(), tmp_path / f"{name}.log",
                                netns=ns, host=ns.ip)
            extra = ["--peer-port", "7443", "--runtime", "process", "--proxy-mode", "nftables"]
            if i == 0:
                node.start(extra)
                token = subprocess.run(
                    [str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir",
                     str(node.data_dir)], check=True, capture_output=True, text=True,
                ).stdout.strip()
            else:
                node.start([*extra, "--join", f"{spaces[0].ip}:7443", "--token", token])
            nodes.append(node)
        a, _ = nodes
        for ns in spaces:  # a host reaches cluster IPs through its routes: give it a default
            ns.run(["ip", "route", "add", "default", "via", lab.gateway], check=True)
        wait_for(lambda: len(json.loads(a.kubectl("get", "nodes", "-o", "json").stdout)
                             ["items"]) == 2, 30, "both nodes")
        a.kubectl("apply", "-f", "-", input=SERVICE)
        for n in ("node-a", "node-b"):
            a.kubectl("apply", "-f", "-", input=pod(n))
        cluster_ip = json.loads(a.kubectl("get", "service", "web", "-o", "json").stdout)[
            "spec"]["clusterIP"]

        def both_answer() -> bool:
            return set(answers(spaces[0], cluster_ip, 80, 20)) == {"node-a", "node-b"}

        wait_for(both_answer, 60, "the cluster IP to reach both pods from node-a")
        # A node port, from outside the cluster (the lab's bridge), on either node.
        assert set(answers_from_here(spaces[1].ip, NODE_PORT, 20)) == {"node-a", "node-b"}

        # Pull node-b's cable (iptables DROP on its interface would also drop its own
        # DNATed packets to itself: OUTPUT's -o is fixed before the DNAT reroutes them).
        lab.cut(spaces[1], mode="link")
        cut = time.monotonic()
        wait_for(lambda: spaces[1].ip not in rules(spaces[0]), 60,
                 "node-a to leave the cut-off node's endpoint out")
        print(f"\ncut to node-a's rules without node-b's endpoint: {time.monotonic() - cut:.1f} s")
        assert set(answers(spaces[0], cluster_ip, 80, 30)) == {"node-a"}
        # The cut-off side keeps serving the Service from its own pod.
        wait_for(lambda: spaces[0].ip not in rules(spaces[1]), 60,
                 "node-b to leave node-a's endpoint out")
        assert set(answers(spaces[1], cluster_ip, 80, 10)) == {"node-b"}

        lab.heal(spaces[1])
        wait_for(both_answer, 60, "both pods back after the heal")
    finally:
        for n in nodes:
            n.stop()
