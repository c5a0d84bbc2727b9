"""NetworkPolicy for real: two runc nodes with the CNI pod network, a policy, and connections.

A web pod on node-a admits only pods labelled ``role: client`` on its named
port: such a pod on node-b connects (across nodes, matched by its pod IP),
an unlabelled pod beside the web pod on node-a does not (bridged traffic on one
node), and deleting the policy opens the web pod again. An egress-isolated pod
resolves names only once a policy allows DNS.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ShoalProcess
from tests.test_cluster import wait_for
from tests.test_pod_network_e2e import cluster, pod, running_pod
from tests.test_runtime_runc import runc_works

pytestmark = pytest.mark.slow

__all__ = ["cluster", "runc_works"]  # fixtures, used by name

POLICY = json.dumps({
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "web-from-clients"},
    "spec": {"podSelector": {"matchLabels": {"app": "web"}},
             "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                          "ports": [{"port": "http"}]}]}})


def labelled(manifest: str, labels: dict[str, str]) -> str:
    obj = json.loads(manifest)
    obj["metadata"]["labels"] = labels
    return json.dumps(obj)


def reaches(node: ShoalProcess, name: str, ip: str, port: int = 8080) -> bool:
    r = node.kubectl("exec", name, "--", "sh", "-c",
                     f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 1 {ip} {port}",
                     check=False)
    return r.returncode == 0 and "\n\n" in r.stdout


def test_a_policy_admits_the_selected_pod_of_another_node_and_drops_a_neighbour(
    cluster: list[ShoalProcess],
) -> None:
    a, _ = cluster
    a.kubectl("apply", "-f", "-", input=labelled(
        pod("web", "node-a", ports=[{"name": "http", "containerPort": 8080}]), {"app": "web"}))
    a.kubectl("apply", "-f", "-", input=labelled(pod("client", "node-b", "sleep 3600"),
                                                 {"role": "client"}))
    a.kubectl("apply", "-f", "-", input=pod("neighbour", "node-a", "sleep 3600"))
    ip = running_pod(a, "web")["status"]["podIP"]
    running_pod(a, "client")
    running_pod(a, "neighbour")
    wait_for(lambda: reaches(a, "client", ip) and reaches(a, "neighbour", ip), 20,
             "both pods to reach web before any policy")
    a.kubectl("apply", "-f", "-", input=POLICY)
    wait_for(lambda: not reaches(a, "neighbour", ip), 10, "the neighbour to be dropped")
    assert reaches(a, "client", ip)
    a.kubectl("delete", "networkpolicy", "web-from-clients")
    wait_for(lambda: reaches(a, "neighbour", ip), 10, "the neighbour to reach web again")
    # Egress: no implicit DNS, as in Kubernetes; a rule to kube-system port 53 allows it.
    a.kubectl("apply", "-f", "-", input=egress_policy("client-deny", []))
    wait_for(lambda: not reaches(a, "client", ip), 10, "the client's egress to be denied")
    assert not resolves(a, "client")
    a.kubectl("apply", "-f", "-", input=egress_policy("client-dns", [{
        "to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}]}]))
    wait_for(lambda: resolves(a, "client"), 10, "the client to resolve names")
    assert not reaches(a, "client", ip)


def egress_policy(name: str, rules: list[dict[str, object]]) -> str:
    return json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
        "spec": {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                 "egress": rules}})


def resolves(node: ShoalProcess, name: str) -> bool:
    r = node.kubectl("exec", name, "--", "busybox", "timeout", "2", "busybox", "nslookup",
                     "kubernetes.default.svc.cluster.local", check=False)
    # The kubernetes Service's address (not 10.96.0.10, the server's own, also printed).
    return r.returncode == 0 and re.search(r"10\.96\.0\.1\b", r.stdout) is not None
