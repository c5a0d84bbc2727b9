"""Cluster DNS on real ``shoal server`` processes, queried with dnspython."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for

pytestmark = pytest.mark.slow


def query(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=2)


def addresses(port: int, name: str) -> list[str]:
    try:
        reply = query(port, name)
    except dns.exception.Timeout:
        return []
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset
                  if rrset.rdtype == dns.rdatatype.A)


def start(tmp: Path, name: str, extra: list[str] | None = None) -> tuple[ShoalProcess, int]:
    dns_port = free_port()
    node = ShoalProcess(name, tmp / name, free_port(), tmp / f"{name}.log")
    node.start(["--dns-port", str(dns_port), *(extra or [])])
    return node, dns_port


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[ShoalProcess, int]]:
    n, port = start(tmp_path, "node-1")
    try:
        yield n, port
    finally:
        n.stop()


def test_a_node_creates_kube_dns_and_answers_for_a_service_made_with_kubectl(
        node: tuple[ShoalProcess, int]) -> None:
    shoal, port = node
    svc = json.loads(shoal.kubectl("get", "service", "kube-dns", "-n", "kube-system",
                                   "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    assert [(p["name"], p["protocol"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]
    assert addresses(port, "kube-dns.kube-system.svc.cluster.local") == ["10.96.0.10"]

    shoal.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
    ip = json.loads(shoal.kubectl("get", "service", "web", "-o", "json").stdout)["spec"][
        "clusterIP"]
    wait_for(lambda: addresses(port, "web.default.svc.cluster.local") == [ip], 10,
             "the new Service's A record")
    srv = query(port, "_80-8080._tcp.web.default.svc.cluster.local", "SRV")
    assert [(rd.port, rd.target.to_text()) for rrset in srv.answer for rd in rrset] == [
        (80, "web.default.svc.cluster.local.")]

    shoal.kubectl("delete", "service", "web")
    wait_for(lambda: query(port, "web.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN,
             10, "NXDOMAIN once the Service is deleted")


def test_a_peer_cut_off_from_the_rest_keeps_answering_for_every_service_it_knows(
        tmp_path: Path) -> None:
    a, _ = start(tmp_path, "node-a")
    b: ShoalProcess | None = None
    try:
        token = subprocess.run([str(VENV_BIN / "shoal"), "token", "create", "--data-dir",
                                str(a.data_dir)], check=True, capture_output=True,
                               text=True).stdout.strip()
        seed = (a.data_dir / "peer-address").read_text().strip()
        b, b_port = start(tmp_path, "node-b", ["--join", seed, "--token", token,
                                               "--node-monitor-grace-period", "3s"])
        a.kubectl("create", "service", "clusterip", "shop", "--tcp=443")
        ip = json.loads(a.kubectl("get", "service", "shop", "-o", "json").stdout)["spec"][
            "clusterIP"]
        wait_for(lambda: addresses(b_port, "shop.default.svc.cluster.local") == [ip], 20,
                 "node-b to learn the Service created on node-a")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)  # node-a stops answering its peers
        try:
            time.sleep(5)  # past the failure detection: node-b sees node-a unreachable
            assert addresses(b_port, "shop.default.svc.cluster.local") == [ip]
            assert query(b_port, "nope.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
    finally:
        if b is not None:
            b.stop()
        a.stop()
