"""An application as a new user would run it: three runc peers, Services found by name.

Three ``shoal server`` processes (runc, the CNI pod network, nftables Services), each
in its own network namespace of one NetnsLab. The application is applied with real
kubectl:

- ``backend``: a Deployment of three busybox httpd pods, one per peer (a topology
  spread constraint), each answering ``<pod> <node>``; the ClusterIP Service
  ``backend``, the NodePort Service ``backend-nodeport`` and the headless Service
  ``backend-headless``;
- ``frontend``: a Deployment of three pods, one per peer, that resolve
  ``backend.shop.svc.cluster.local`` through their ``/etc/resolv.conf`` (the kube-dns
  cluster IP, answered by their own node) and fetch it in a loop, logging
  ``<uptime> <answer>`` per request, where uptime is the kernel's /proc/uptime, the same
  clock as the test's CLOCK_BOOTTIME, so the test can tell lines before and after a cut.

The cases share the cluster and run in order: everything answers; one peer is cut
off and healed; one peer is killed with SIGKILL. Figures (printed, never asserted):
pod start with the pod network, the time a cut-off peer's frontend takes to stop
failing, the time the others take to drop its endpoints, the time to get them back
after the heal, and the time from kill -9 to the endpoints removed.

The nodes run with the default timers (a 10 s heartbeat, a 40 s Lease grace), so that
the cut shows routing following the mesh's failure detection (a peer suspect for a
few seconds, ``MeshConfig.routing_unreachable_after``), not the Lease grace: both
sides stop routing across the cut while their replicas still hold the other side's
pods ready.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.net import service_proxy
from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for
from tests.test_images import busybox_layer, write_docker_save
from tests.test_pod_network_e2e import require_cni, unmount_under
from tests.test_runtime_runc import runc_works
from tests.tools import netns

pytestmark = pytest.mark.slow

__all__ = ["runc_works"]  # a fixture, used by name

IMAGE = "shoal.test/busybox:v1"
NS = "shop"
NODES = ("node-a", "node-b", "node-c")
NODE_PORT = 30080
GRACE = 40.0
"""The default --node-monitor-grace-period."""
NODE_ARGS = ["--runtime", "runc", "--pod-network", "cni", "--proxy-mode", "nftables",
             "--peer-port", "7443"]
BACKEND_NAME = f"backend.{NS}.svc.cluster.local"
GOTO = re.compile(r'goto\s+"?([^\s",}]+)')

BACKEND_SH = ('mkdir -p /www && echo "$POD_NAME $NODE_NAME $POD_IP" > /www/index.html && '
              "exec busybox httpd -f -p 8080 -h /www")
# One request per line: resolve the name (busybox nslookup: the static busybox's libc
# resolver crashes), then GET through the address it got. The line starts with the
# kernel's uptime, so that the test can place it before or after a cut.
FRONTEND_SH = f"""
while true; do
  read up _ < /proc/uptime
  ip=$(busybox nslookup {BACKEND_NAME} 2>/dev/null \\
       | busybox awk '/^Name:/ {{n=1}} n && /^Address/ {{print $2; exit}}')
  if [ -z "$ip" ]; then echo "$up dns-failed"; sleep 0.3; continue; fi
  body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 "$ip" 80 2>/dev/null | busybox tail -n 1)
  echo "$up ${{body:-http-failed}}"
  sleep 0.3
done
"""


def spread(app: str) -> list[dict[str, Any]]:
    return [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}}}]


def deployment(app: str, script: str, **container: Any) -> dict[str, Any]:
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": NS},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": {
                     "terminationGracePeriodSeconds": 1, "topologySpreadConstraints": spread(app),
                     "containers": [{"name": app, "image": IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sh", "-c", script], "env": env,
                                     **container}]}}}}


def service(name: str, **spec: Any) -> dict[str, Any]:
    port = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    if spec.get("type") == "NodePort":
        port["nodePort"] = NODE_PORT
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": "backend"}, "ports": [port], **spec}}


APPLICATION = {"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    deployment("backend", BACKEND_SH,
               ports=[{"name": "http", "containerPort": 8080}],
               readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}),
    service("backend"),
    service("backend-nodeport", type="NodePort"),
    service("backend-headless", clusterIP="None"),
    deployment("frontend", FRONTEND_SH),
]}


@dataclass
class Cluster:
    lab: netns.NetnsLab
    nodes: dict[str, ShoalProcess]

    def ns(self, node: str) -> netns.Namespace:
        spaces: netns.Namespace = self.nodes[node].netns
        return spaces

    def kubectl_json(self, via: str, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.nodes[via].kubectl(*args, "-o", "json").stdout)
        return out

    def pods(self, via: str, app: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kubectl_json(
            via, "get", "pods", "-n", NS, "-l", f"app={app}")["items"]
        return items

    def pod_on(self, via: str, app: str, node: str) -> dict[str, Any]:
        (pod,) = [p for p in self.pods(via, app) if p["spec"].get("nodeName") == node]
        return pod

    def rules(self, node: str) -> str:
        return self.ns(node).run(["nft", "list", "table", "ip", "shoal-services"],
                                 capture_output=True, text=True).stdout

    def routes_to(self, node: str, ip: str) -> bool:
        """Whether ``node``'s Service rules send traffic to ``ip`` (a chain of an endpoint
        left out may stay in the table; what counts is whether any rule jumps to it)."""
        return any(ip in chain for chain in GOTO.findall(self.rules(node)))

    def dns_listener(self, node: str) -> str:
        cidr = self.kubectl_json(node, "get", "node", node)["spec"]["podCIDR"]
        return str(ipaddress.ip_network(cidr).network_address + 1)


def uptime() -> float:
    """The clock of the frontends' log lines (/proc/uptime is CLOCK_BOOTTIME)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def frontend_log(cluster: Cluster, node: str, since: float = 0.0) -> list[tuple[float, str]]:
    """The frontend on ``node``: (uptime, answering node or the failure) per request."""
    pod = cluster.pod_on(node, "frontend", node)["metadata"]["name"]
    out = cluster.nodes[node].kubectl("logs", "-n", NS, pod).stdout
    lines = []
    for line in out.splitlines():
        parts = line.split()  # uptime, then "<pod> <node> <ip>" or "dns-failed"/"http-failed"
        if len(parts) >= 2 and float(parts[0]) >= since:
            lines.append((float(parts[0]), parts[2] if len(parts) == 4 else parts[1]))
    return lines


def answered_by(cluster: Cluster, node: str, since: float) -> set[str]:
    return {who for _, who in frontend_log(cluster, node, since)}


def stop_containers(data_dir: Path) -> None:
    """runc containers outlive a node killed with SIGKILL (runc runs in its own session)."""
    root = data_dir / "runc" / "state"
    if not root.exists():
        return
    runc = ["runc", "--root", str(root)]
    for hexid in subprocess.run([*runc, "list", "--quiet"], capture_output=True, text=True,
                                check=False).stdout.split():
        subprocess.run([*runc, "kill", "--all", hexid, "KILL"], capture_output=True, check=False)
        subprocess.run([*runc, "delete", "--force", hexid], capture_output=True, check=False)


def start_nodes(lab: netns.NetnsLab, tmp: Path, archive: Path) -> dict[str, ShoalProcess]:
    nodes: dict[str, ShoalProcess] = {}
    token = ""
    for name in NODES:
        ns = lab.add(name.removeprefix("node-"))
        node = ShoalProcess(name, tmp / name, free_port(), tmp / f"{name}.log", netns=ns,
                            host=ns.ip)
        nodes[name] = node  # before start, so the teardown stops it
        subprocess.run([str(VENV_BIN / "shoal"), "image", "import", "--data-dir",
                        str(node.data_dir), str(archive)], check=True, capture_output=True)
        first = nodes[NODES[0]]
        node.start(NODE_ARGS if node is first
                   else [*NODE_ARGS, "--join", f"{first.host}:7443", "--token", token])
        if node is first:
            token = subprocess.run(
                [str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir", str(node.data_dir)],
                check=True, capture_output=True, text=True).stdout.strip()
    return nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, runc_works: str) -> Iterator[Cluster]:
    netns.require()
    require_cni()
    if (why := service_proxy.nft_usable()) is not None:
        if netns._in_ci():
            pytest.fail(f"{why} (CI=true: the bootstrap installs nftables)")
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("apps")
    archive = tmp / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], IMAGE)
    with netns.NetnsLab() as lab:
        nodes: dict[str, ShoalProcess] = {}
        try:
            nodes = start_nodes(lab, tmp, archive)
            yield Cluster(lab, nodes)
        finally:
            for node in nodes.values():
                node.stop()
                stop_containers(node.data_dir)
            unmount_under(tmp)


def wait_running(cluster: Cluster, started: float) -> dict[str, float]:
    """Each pod's name -> seconds from ``started`` to first seen Running and Ready."""
    seen: dict[str, float] = {}
    last: list[dict[str, Any]] = []

    def all_ready() -> bool:
        nonlocal last
        last = cluster.kubectl_json("node-a", "get", "pods", "-n", NS)["items"]
        for p in last:
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions") or [])
            if ready and p["status"].get("podIP"):
                seen.setdefault(p["metadata"]["name"], time.monotonic() - started)
        return len(last) == 6 and len(seen) >= 6

    try:
        wait_for(all_ready, 120, "six pods Running and Ready")
    except AssertionError:
        status = {p["metadata"]["name"]: (p["spec"].get("nodeName"), p["status"].get("phase"),
                                          p["status"].get("conditions"),
                                          p["status"].get("containerStatuses"))
                  for p in last}
        raise AssertionError(json.dumps(status)) from None
    return seen


def test_frontends_reach_backends_on_all_three_peers_by_service_name(cluster: Cluster) -> None:
    wait_for(lambda: all(cluster.kubectl_json("node-a", "get", "node", n)["spec"].get("podCIDR")
                         for n in NODES), 60, "a podCIDR on every node")
    started = time.monotonic()
    cluster.nodes["node-a"].kubectl("apply", "-f", "-", input=json.dumps(APPLICATION))
    seen = wait_running(cluster, started)
    took = sorted(seen.values())
    print(f"\npod start with the pod network, 6 runc pods from apply to Ready: "
          f"p50 {took[len(took) // 2]:.2f} s, max {took[-1]:.2f} s")

    for app in ("backend", "frontend"):
        on = sorted(p["spec"]["nodeName"] for p in cluster.pods("node-a", app))
        assert on == list(NODES), f"{app} pods are not one per peer: {on}"

    since = uptime()
    for node in NODES:
        wait_for(lambda node=node: set(NODES) <= answered_by(cluster, node, since), 60,
                 f"{node}'s frontend to get answers from backends on all three peers")


def test_a_node_port_answers_from_outside_the_cluster(cluster: Cluster) -> None:
    # The test process is in the root namespace, on the lab's bridge: outside every node.
    ips = {p["spec"]["nodeName"]: p["status"]["podIP"] for p in cluster.pods("node-a", "backend")}
    answers = set()
    for i in range(30):
        node = cluster.nodes[NODES[i % 3]]
        _, on, ip = http_get(f"http://{node.host}:{NODE_PORT}/").split()
        assert ip == ips[on]  # the downward API's status.podIP is the pod's own address
        answers.add(on)
        if answers == set(NODES):
            break
    assert answers == set(NODES)


def test_the_headless_services_srv_records_list_the_backend_pods(cluster: Cluster) -> None:
    ips = sorted(p["status"]["podIP"] for p in cluster.pods("node-b", "backend"))
    name = f"_http._tcp.backend-headless.{NS}.svc.cluster.local"
    answer = srv_query(cluster, "node-b", name)
    assert sorted(answer["addresses"]) == ips
    assert answer["ports"] == [8080, 8080, 8080]
    # The ClusterIP Service's name resolves to its cluster IP on every node.
    cluster_ip = cluster.kubectl_json("node-a", "get", "service", "-n", NS, "backend")[
        "spec"]["clusterIP"]
    for node in NODES:
        assert a_query(cluster, node, BACKEND_NAME) == [cluster_ip]


# -- DNS and HTTP from the test process ------------------------------------------------------

DNS_QUERY = """
import json, sys
import dns.message, dns.query, dns.rdatatype
server, name, rdtype = sys.argv[1:4]
reply = dns.query.udp(dns.message.make_query(name, rdtype), server, timeout=2)
out = {"rcode": reply.rcode(), "answer": [], "additional": []}
for section, rrsets in (("answer", reply.answer), ("additional", reply.additional)):
    for rrset in rrsets:
        out[section] += [r.to_text() for r in rrset]
json.dump(out, sys.stdout)
"""


def dns_query(cluster: Cluster, node: str, name: str, rdtype: str) -> dict[str, Any]:
    """A query to ``node``'s own DNS listener, sent from inside its namespace."""
    r = cluster.ns(node).run([sys.executable, "-c", DNS_QUERY, cluster.dns_listener(node), name,
                              rdtype], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert out["rcode"] == 0, out
    return out


def a_query(cluster: Cluster, node: str, name: str) -> list[str]:
    return sorted(dns_query(cluster, node, name, "A")["answer"])


def srv_query(cluster: Cluster, node: str, name: str) -> dict[str, Any]:
    out = dns_query(cluster, node, name, "SRV")
    ports = sorted(int(r.split()[2]) for r in out["answer"])  # priority weight port target
    addresses = [r for r in out["additional"] if r.count(".") == 3]
    return {"ports": ports, "addresses": addresses}


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def backend_ips(cluster: Cluster) -> dict[str, str]:
    """Each node's backend pod's address."""
    return {p["spec"]["nodeName"]: p["status"]["podIP"] for p in cluster.pods("node-a", "backend")}


def first_times(checks: dict[str, Callable[[], bool]], since: float, what: str,
                timeout: float = 60) -> dict[str, float]:
    """Polls every check in turn until all have held once: seconds from ``since`` (uptime)
    to the first poll at which each held. Polled together, so each time is its own."""
    took: dict[str, float] = {}

    def all_held() -> bool:
        for name, check in checks.items():
            if name not in took and check():
                took[name] = uptime() - since
        return len(took) == len(checks)

    wait_for(all_held, timeout, f"{what} (held so far: {sorted(took)})")
    return took


def not_routing(cluster: Cluster, node: str, ip: str) -> Callable[[], bool]:
    return lambda: not cluster.routes_to(node, ip)


def routing_to_all(cluster: Cluster, node: str, ips: list[str]) -> Callable[[], bool]:
    return lambda: all(cluster.routes_to(node, ip) for ip in ips)


def not_ready_in_slices(cluster: Cluster, node: str, ip: str) -> Callable[[], bool]:
    return lambda: ip not in ready_endpoints(cluster, node)


def last_streak(lines: list[tuple[float, str]], ok: set[str]) -> list[tuple[float, str]]:
    """The lines after the last one answered by something outside ``ok``."""
    streak: list[tuple[float, str]] = []
    for line in lines:
        streak = [*streak, line] if line[1] in ok else []
    return streak


def test_a_cut_off_peer_serves_itself_and_the_others_stop_routing_to_it(cluster: Cluster) -> None:
    ips = backend_ips(cluster)
    cluster_ip = cluster.kubectl_json("node-a", "get", "service", "-n", NS, "backend")[
        "spec"]["clusterIP"]
    rest = ("node-a", "node-b")
    assert all(cluster.routes_to(node, ip) for node in NODES for ip in ips.values())
    cut_at = uptime()
    cluster.lab.cut(cluster.ns("node-c"), mode="link")

    # node-c's frontend: after the failure detection, every request is answered, by node-c;
    # the others drop node-c's backend from their rules.
    def c_serves_itself() -> bool:
        return len(last_streak(frontend_log(cluster, "node-c", cut_at), {"node-c"})) >= 10

    checks = {"node-c": c_serves_itself}
    for node in rest:
        checks[node] = not_routing(cluster, node, ips["node-c"])
    took = first_times(checks, cut_at, "each side to route to its own backends only")
    # Neither side waited for the Lease grace: each replica still holds the other side's
    # backends ready (the node lifecycle has not marked them), yet nobody routes to them.
    assert {ips["node-a"], ips["node-b"]} <= ready_endpoints(cluster, "node-c")
    for node in rest:
        assert ips["node-c"] in ready_endpoints(cluster, node)
    lines = frontend_log(cluster, "node-c", cut_at)
    assert {who for _, who in lines} <= {"node-c", "http-failed"}, lines
    recovered = last_streak(lines, {"node-c"})[0][0] - cut_at
    failed = sum(who == "http-failed" for _, who in lines)
    print(f"\ncut to node-c's frontend no longer failing: {recovered:.1f} s "
          f"({failed} failed requests)")
    for node in rest:
        print(f"cut to {node}'s rules without node-c's backend: {took[node]:.1f} s")
    # node-c's DNS never failed (no dns-failed line above), and still answers.
    assert a_query(cluster, "node-c", BACKEND_NAME) == [cluster_ip]
    # The others' frontends are answered by node-a and node-b alone.
    dropped_at = uptime()
    for node in rest:
        wait_for(lambda node=node: len(last_streak(frontend_log(cluster, node, dropped_at),
                                                   set(rest))) >= 10, 30,
                 f"{node}'s frontend to be answered by node-a and node-b")
        assert {who for _, who in frontend_log(cluster, node, dropped_at)} <= set(rest)

    healed_at = uptime()
    cluster.lab.heal(cluster.ns("node-c"))
    back = first_times({node: routing_to_all(cluster, node, list(ips.values()))
                        for node in NODES}, healed_at, "every node to route to every backend")
    for node in NODES:
        print(f"heal to every backend back in {node}'s rules: {back[node]:.1f} s")
    for node in NODES:
        wait_for(lambda node=node: set(NODES) <= answered_by(cluster, node, healed_at), 60,
                 f"{node}'s frontend to be answered from all three peers after the heal")
    # Each side marked the other's pods not ready while apart; every replica ends up with
    # the agents' word: every backend ready, in every node's EndpointSlices too.
    for node in NODES:
        wait_for(lambda node=node: ready_pods(cluster, node) == set(ips.values()), 30,
                 f"{node}'s replica to hold every backend pod ready")
        wait_for(lambda node=node: ready_endpoints(cluster, node) == set(ips.values()), 30,
                 f"{node}'s EndpointSlices to list every backend ready")


def ready_endpoints(cluster: Cluster, via: str) -> set[str]:
    """The addresses of the ready endpoints of ``backend`` in ``via``'s replica."""
    slices = cluster.kubectl_json(via, "get", "endpointslices", "-n", NS, "-l",
                                  "kubernetes.io/service-name=backend")["items"]
    return {addr for s in slices for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") is not False
            for addr in e.get("addresses") or []}


def ready_pods(cluster: Cluster, via: str) -> set[str]:
    """The addresses of the backend pods Ready in ``via``'s replica."""
    return {p["status"]["podIP"] for p in cluster.pods(via, "backend")
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in p["status"].get("conditions") or [])}


def test_a_killed_peers_pods_leave_every_endpoint_list(cluster: Cluster) -> None:
    ips = backend_ips(cluster)
    rest = ("node-a", "node-c")
    assert all(cluster.routes_to(node, ips["node-b"]) for node in rest)
    killed_at = uptime()
    cluster.nodes["node-b"].kill9()
    # Its containers run on (runc is their parent, in a session of its own), so only the
    # others' endpoint lists can keep traffic away from them.
    checks: dict[str, Callable[[], bool]] = {}
    for node in rest:
        checks[f"{node}'s rules"] = not_routing(cluster, node, ips["node-b"])
        checks[f"{node}'s EndpointSlice"] = not_ready_in_slices(cluster, node, ips["node-b"])
    took = first_times(checks, killed_at, "node-b's backend to leave every endpoint list",
                       GRACE + 30)
    print()
    for what, seconds in sorted(took.items()):
        print(f"kill -9 to node-b's backend out of {what}: {seconds:.1f} s")
    for node in rest:
        assert ready_endpoints(cluster, node) == {ips["node-a"], ips["node-c"]}, \
            f"{node}'s replica: ready pods {ready_pods(cluster, node)}"
