"""The pod network for real: two runc nodes, each in its own network namespace.

Each node runs ``shoal server --runtime runc --pod-network cni`` inside a
NetnsLab namespace, so its bridge ``shoal0``, its ``shoal.vxlan`` device, its
pods' namespaces and its nftables table all live (and die) with that namespace.
The image is busybox-static's busybox (tests/test_images.py), which has httpd,
wget and ip.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for
from tests.test_images import busybox_layer, write_docker_save
from tests.test_runtime_runc import runc_works
from tests.tools import netns

pytestmark = pytest.mark.slow

__all__ = ["runc_works"]  # a fixture, used by name

IMAGE = "shoal.test/busybox:v1"
NODE_ARGS = ["--runtime", "runc", "--pod-network", "cni", "--peer-port", "7443"]
HTTPD = ("mkdir -p /www && echo \"$HOSTNAME\" > /www/index.html && "
         "exec busybox httpd -f -p 8080 -h /www")


def require_cni() -> None:
    if not Path("/usr/lib/cni/bridge").exists():
        if netns._in_ci():
            pytest.fail("the CNI plugins are missing (containernetworking-plugins; CI=true)")
        pytest.skip("the CNI plugins are missing (Debian package containernetworking-plugins)")


def require_wireguard() -> None:
    if not (shutil.which("wireguard-go") and shutil.which("wg")):
        if netns._in_ci():
            pytest.fail("wireguard-go or wg is missing (CI=true)")
        pytest.skip("wireguard-go or wg is missing (Debian packages wireguard-go, "
                    "wireguard-tools)")


def unmount_under(root: Path) -> None:
    """The pods' namespace mounts a node left in the host's mount table."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4]
        if target.startswith(str(root) + "/"):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def pod(name: str, node: str, command: str = HTTPD, **spec: Any) -> str:
    container: dict[str, Any] = {"name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", command]}
    if "ports" in spec:
        container["ports"] = spec.pop("ports")
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                                "containers": [container], **spec}})


def get(node: ShoalProcess, kind: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(node.kubectl("get", kind, name, "-o", "json").stdout)
    return out


def running_pod(node: ShoalProcess, name: str, timeout: float = 40,
                after: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pod Running with a podIP; with ``after`` (the pod as read before its node
    restarted), Running in another container: until the restarted node's agent writes the
    pod's status, the store holds that of the run before, Running with no restart counted."""
    seen: dict[str, Any] = {}
    before = ((after or {}).get("status", {}).get("containerStatuses") or [{}])[0]

    def check() -> bool:
        nonlocal seen
        r = node.kubectl("get", "pod", name, "-o", "json", check=False)
        seen = json.loads(r.stdout) if r.returncode == 0 else {}
        st = seen.get("status") or {}
        cs = (st.get("containerStatuses") or [{}])[0]
        return st.get("phase") == "Running" and "running" in (cs.get("state") or {}) \
            and bool(st.get("podIP")) \
            and (after is None or cs.get("containerID") != before.get("containerID"))

    try:
        wait_for(check, timeout, f"pod {name} Running with a podIP")
    except AssertionError:
        raise AssertionError(json.dumps(seen.get("status"), indent=1) + "\n"
                             + node.log_path.read_text()[-4000:]) from None
    return seen


def exec_in(node: ShoalProcess, name: str, *argv: str) -> str:
    return node.kubectl("exec", name, "--", *argv).stdout


def fetch(node: ShoalProcess, name: str, ip: str, port: int = 8080) -> str:
    """An HTTP GET from inside a pod (busybox nc: the static busybox's wget crashes resolving),
    retried briefly (a route may be a moment behind the pod). The body."""
    last = None
    for _ in range(30):
        last = node.kubectl("exec", name, "--", "sh", "-c",
                            f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {ip} {port}",
                            check=False)
        if last.returncode == 0 and "\n\n" in last.stdout:  # text mode: \r\n read as \n
            return str(last.stdout.split("\n\n", 1)[1])
        time.sleep(0.3)
    assert last is not None
    raise AssertionError(f"GET {ip}:{port} from {name}: {last.stdout} {last.stderr}")


@pytest.fixture
def cluster(tmp_path: Path, runc_works: str) -> Iterator[list[ShoalProcess]]:
    netns.require()
    require_cni()
    archive = tmp_path / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], IMAGE)
    with netns.NetnsLab() as lab:
        nodes: list[ShoalProcess] = []
        try:
            token = ""
            for letter in "ab":
                ns = lab.add(letter)
                node = ShoalProcess(f"node-{letter}", tmp_path / letter, free_port(),
                                    tmp_path / f"{letter}.log", netns=ns, host=ns.ip)
                subprocess.run([str(VENV_BIN / "shoal"), "image", "import", "--data-dir",
                                str(node.data_dir), str(archive)], check=True,
                               capture_output=True)
                extra = list(NODE_ARGS)
                if nodes:
                    extra += ["--join", f"{nodes[0].host}:7443", "--token", token]
                node.start(extra)
                if not nodes:
                    token = subprocess.run(
                        [str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir",
                         str(node.data_dir)], check=True, capture_output=True, text=True,
                    ).stdout.strip()
                nodes.append(node)
            yield nodes
        finally:
            for n in nodes:
                n.stop()
            unmount_under(tmp_path)


def pod_cidr(node: ShoalProcess, name: str) -> str:
    cidr = ""

    def assigned() -> bool:
        nonlocal cidr
        cidr = (get(node, "node", name).get("spec") or {}).get("podCIDR") or ""
        return bool(cidr)

    wait_for(assigned, 30, f"{name} to get a podCIDR")
    return cidr


def test_pods_get_their_own_addresses_and_reach_each_other_across_nodes(
        cluster: list[ShoalProcess]) -> None:
    a, b = cluster
    cidr_a, cidr_b = pod_cidr(a, "node-a"), pod_cidr(a, "node-b")
    for cidr in (cidr_a, cidr_b):
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network("10.42.0.0/16"))
    assert cidr_a != cidr_b

    # Two pods on one node both listen on 8080; one pod on the other node, with a hostPort.
    a.kubectl("apply", "-f", "-", input=pod("web-a1", "node-a"))
    a.kubectl("apply", "-f", "-", input=pod("web-a2", "node-a"))
    a.kubectl("apply", "-f", "-", input=pod(
        "web-b", "node-b", ports=[{"containerPort": 8080, "hostPort": 9090}]))
    a.kubectl("apply", "-f", "-", input=pod("on-host", "node-a", "exec sleep 600",
                                            hostNetwork=True))
    a1, a2 = running_pod(a, "web-a1"), running_pod(a, "web-a2")
    wb = running_pod(b, "web-b")
    host = running_pod(a, "on-host")

    ip_a1, ip_a2, ip_b = (p["status"]["podIP"] for p in (a1, a2, wb))
    assert ipaddress.ip_address(ip_a1) in ipaddress.ip_network(cidr_a)
    assert ipaddress.ip_address(ip_a2) in ipaddress.ip_network(cidr_a)
    assert ipaddress.ip_address(ip_b) in ipaddress.ip_network(cidr_b)
    assert ip_a1 != ip_a2
    assert a1["status"]["podIPs"] == [{"ip": ip_a1}]
    assert a1["status"]["hostIP"] == a.host
    # The pod sees its own address on its own eth0, not the node's.
    addrs = exec_in(a, "web-a1", "busybox", "ip", "-o", "-4", "addr")
    assert ip_a1 in addrs and a.host not in addrs

    # Same node, same port, by pod IP; then across nodes over VXLAN.
    assert fetch(a, "web-a1", ip_a2) == "web-a2\n"
    assert fetch(a, "web-a1", ip_b) == "web-b\n"
    assert fetch(b, "web-b", ip_a1) == "web-a1\n"

    # hostPort: node-b's address, port 9090, from outside the cluster (the lab's root side).
    with urllib.request.urlopen(f"http://{b.host}:9090/", timeout=5) as r:
        assert r.read() == b"web-b\n"

    # hostNetwork: the node's address, in the pod and in its status.
    assert host["status"]["podIP"] == a.host
    assert a.host in exec_in(a, "on-host", "busybox", "ip", "-o", "-4", "addr")

    # Cluster DNS settings in the pod's resolv.conf.
    resolv = exec_in(a, "web-a1", "cat", "/etc/resolv.conf")
    assert "nameserver 10.96.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    assert f"{ip_a1}\tweb-a1" in exec_in(a, "web-a1", "cat", "/etc/hosts")

    # Deleting a pod releases its address and its namespace.
    uid_a2 = a2["metadata"]["uid"]
    a.kubectl("delete", "pod", "web-a2", "--wait=true")
    sandbox = a.data_dir / "net" / "pods" / uid_a2
    leases = a.data_dir / "net" / "ipam" / "shoal"
    wait_for(lambda: not sandbox.exists() and not (leases / ip_a2).exists(), 15,
             "web-a2's sandbox and address to be released")
    assert (leases / ip_a1).exists()

    # A restart of node-a: its pod comes back in the namespace it had, with the same address.
    # (The status read right after the start may still be the last run's: wait for a new
    # container, as the CI at 8c790a5 did not, reading restartCount 0.)
    a.stop()
    a.start(NODE_ARGS)
    a1 = running_pod(a, "web-a1", timeout=60, after=a1)
    assert a1["status"]["podIP"] == ip_a1
    assert a1["status"]["containerStatuses"][0]["restartCount"] == 1
    assert fetch(b, "web-b", ip_a1) == "web-a1\n"

    # kill -9 of node-a: the same again, the namespace outlived the process.
    a.kill9()
    a.start(NODE_ARGS)
    a1 = running_pod(a, "web-a1", timeout=60, after=a1)
    assert a1["status"]["podIP"] == ip_a1
    assert a1["status"]["containerStatuses"][0]["restartCount"] == 2
    assert fetch(b, "web-b", ip_a1) == "web-a1\n"


def wg_transfer(node: ShoalProcess) -> int:
    """Bytes received over the node's WireGuard device, from inside its namespace."""
    out = subprocess.run(node.netns.exec_args(["wg", "show", "all", "transfer"]),
                         capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if line.strip())


def test_pods_of_another_site_are_reached_over_wireguard(cluster: list[ShoalProcess]) -> None:
    require_wireguard()
    a, b = cluster
    keys = {}
    for name in ("node-a", "node-b"):
        wait_for(lambda name=name: bool((get(a, "node", name)["metadata"].get("annotations")
                                          or {}).get("shoal.dev/wireguard-public-key")),
                 20, f"{name}'s WireGuard key on its Node")
        keys[name] = get(a, "node", name)["metadata"]["annotations"][
            "shoal.dev/wireguard-public-key"]
    assert keys["node-a"] != keys["node-b"]
    pod_cidr(a, "node-a")
    pod_cidr(a, "node-b")
    a.kubectl("apply", "-f", "-", input=pod("web-a", "node-a"))
    b.kubectl("apply", "-f", "-", input=pod("web-b", "node-b"))
    ip_a = running_pod(a, "web-a")["status"]["podIP"]
    ip_b = running_pod(b, "web-b")["status"]["podIP"]
    assert fetch(a, "web-a", ip_b) == "web-b\n"  # one site: VXLAN
    assert wg_transfer(a) == 0

    # node-b is now another site: its pods are reached through WireGuard, both ways.
    a.kubectl("label", "node", "node-b", "topology.kubernetes.io/zone=site-b")
    assert fetch(a, "web-a", ip_b) == "web-b\n"
    assert fetch(b, "web-b", ip_a) == "web-a\n"
    assert wg_transfer(a) > 0 and wg_transfer(b) > 0
