"""The pod network's parts: CNI configuration, pods' files, the overlay's plan, the runc
bundle, the pod worker's sandbox, and (as root, in a namespace of their own) real CNI
plugins and VXLAN entries."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.model.kinds import KindRegistry
from shoal.net import cni, masquerade, overlay, wireguard
from shoal.net.node_pod_network import choose_mode
from shoal.net.pod_etc import hosts_file, resolv_conf
from shoal.node.agent import AgentConfig, NodeAgent
from shoal.node.images import ImageConfig
from shoal.node.node_status import NodeStatusReporter
from shoal.node.pod_network import PodNetworkError, PodSandbox
from shoal.node.pod_worker import WorkerConfig
from shoal.node.runtime import ContainerConfig, Mount
from shoal.node.runtime_process import ProcessRuntime
from shoal.node.runtime_runc import bundle_config
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools import netns as lab_netns


def a_pod(**spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "c", "image": "busybox"}])
    return {"metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"containers": containers, **spec}}


# -- CNI configuration -------------------------------------------------------


def test_the_conflist_is_a_bridge_with_host_local_addresses_from_the_pod_cidr_then_portmap(
        tmp_path: Path) -> None:
    conf = cni.pod_conflist("10.42.3.0/24", tmp_path / "ipam")
    bridge, portmap = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "shoal0"
    assert bridge["isGateway"] is True and bridge["ipMasq"] is False
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.42.3.0/24", "gateway": "10.42.3.1"}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")
    assert bridge["mtu"] == 1420  # room for WireGuard's (and VXLAN's) header on a 1500 underlay
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def test_only_container_ports_with_a_host_port_are_mapped() -> None:
    pod = a_pod(containers=[{"name": "c", "ports": [
        {"containerPort": 80, "hostPort": 8080},
        {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.0.0.1"},
        {"containerPort": 9090}]}])
    assert cni.port_mappings(pod) == [cni.PortMapping(8080, 80, "tcp"),
                                      cni.PortMapping(5353, 53, "udp", "10.0.0.1")]


def test_pod_ips_drop_the_prefix_length() -> None:
    assert cni.pod_ips({"ips": [{"address": "10.42.3.7/24", "gateway": "10.42.3.1"}]}) == [
        "10.42.3.7"]


# -- resolv.conf and hosts -----------------------------------------------------


def test_cluster_first_points_at_the_cluster_dns_with_the_namespace_search_path() -> None:
    assert resolv_conf(a_pod()) == (
        "nameserver 10.96.0.10\n"
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n")


def test_dns_policy_default_is_the_nodes_resolver_plus_the_pods_dns_config() -> None:
    host = "# generated\nnameserver 192.0.2.53\nsearch example.org\noptions edns0\n"
    pod = a_pod(dnsPolicy="Default", dnsConfig={"nameservers": ["192.0.2.54"],
                                                "options": [{"name": "ndots", "value": "2"}]})
    assert resolv_conf(pod, host) == ("nameserver 192.0.2.53\nnameserver 192.0.2.54\n"
                                      "search example.org\noptions edns0 ndots:2\n")


def test_dns_policy_none_is_only_the_pods_dns_config() -> None:
    pod = a_pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"], "searches": ["x.y"]})
    assert resolv_conf(pod) == "nameserver 1.1.1.1\nsearch x.y\n"


def test_the_hosts_file_names_the_pod_at_its_address_and_keeps_host_aliases() -> None:
    pod = a_pod(hostname="db-0", subdomain="db",
                hostAliases=[{"ip": "10.1.2.3", "hostnames": ["legacy", "legacy.local"]}])
    text = hosts_file(pod, ["10.42.3.7"])
    assert "127.0.0.1\tlocalhost\n" in text
    assert "10.42.3.7\tdb-0.db.shop.svc.cluster.local db-0\n" in text
    assert "10.1.2.3\tlegacy legacy.local\n" in text


# -- overlay plan and masquerade ------------------------------------------------


def node(name: str, cidr: str | None, ip: str | None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}] if ip else []}}


def test_a_vtep_mac_is_a_stable_locally_administered_unicast_address_per_node() -> None:
    mac = overlay.vtep_mac("pi-1")
    assert mac == overlay.vtep_mac("pi-1") != overlay.vtep_mac("pi-2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x01 == 0 and first & 0x02 == 2


def test_the_overlay_routes_to_every_other_node_with_a_pod_cidr_and_an_internal_ip() -> None:
    nodes = [node("me", "10.42.1.0/24", "192.0.2.1"), node("b", "10.42.2.0/24", "192.0.2.2"),
             node("no-cidr", None, "192.0.2.3"), node("no-ip", "10.42.4.0/24", None)]
    (b,) = overlay.remote_nodes(nodes, "me")
    assert (b.name, b.underlay, b.pod_cidr, b.gateway) == ("b", "192.0.2.2", "10.42.2.0/24",
                                                           "10.42.2.0")


def test_other_sites_go_over_wireguard_to_nodes_that_published_a_key() -> None:
    def in_zone(n: dict[str, Any], zone: str, key: str | None = None) -> dict[str, Any]:
        n["metadata"]["labels"] = {"topology.kubernetes.io/zone": zone}
        if key:
            n["metadata"]["annotations"] = {wireguard.KEY_ANNOTATION: key}
        return n

    nodes = [in_zone(node("me", "10.42.1.0/24", "192.0.2.1"), "edge", "k-me"),
             in_zone(node("near", "10.42.2.0/24", "192.0.2.2"), "edge", "k-near"),
             in_zone(node("far", "10.42.3.0/24", "198.51.100.3"), "cloud", "k-far"),
             in_zone(node("no-key", "10.42.4.0/24", "198.51.100.4"), "cloud")]
    assert {r.name for r in overlay.remote_nodes(nodes, "me")} == {"near"}
    assert wireguard.site_peers(nodes, "me") == {
        wireguard.SitePeer("far", "k-far", "198.51.100.3", "10.42.3.0/24")}
    here = Path("/var/lib/shoal")
    assert wireguard.interface_name("me", here) != wireguard.interface_name("near", here)
    assert wireguard.interface_name("me", here) == wireguard.interface_name("me", here)
    assert len(wireguard.interface_name("a-very-long-node-name-indeed", here)) <= 15


def test_two_nodes_of_one_name_on_one_host_get_different_wireguard_devices() -> None:
    # Their UAPI sockets share the host's /var/run/wireguard: two test runs (or the demo and
    # a test) with a node-a each must not reach each other's device.
    assert (wireguard.interface_name("node-a", Path("/tmp/run-1/a"))
            != wireguard.interface_name("node-a", Path("/tmp/run-2/a")))


def test_only_pod_traffic_leaving_the_cluster_is_masqueraded() -> None:
    rules = masquerade.ruleset("10.42.0.0/16", "10.96.0.0/12")
    assert ("ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 ip daddr != 10.96.0.0/12 "
            "masquerade") in rules
    assert rules.startswith("table ip shoal-podnet\ndelete table ip shoal-podnet\n")


@pytest.mark.parametrize(("mode", "runtime", "plugins", "want"), [
    ("auto", "runc", True, "cni"),
    ("auto", "runc", False, "host"),
    ("auto", "process", True, "host"),
    ("cni", "process", True, "host"),  # the process runtime cannot enter a namespace
    ("host", "runc", True, "host"),
    ("cni", "runc", True, "cni"),
])
def test_the_pod_network_mode_follows_the_runtime_and_the_installed_plugins(
        mode: str, runtime: str, plugins: bool, want: str, tmp_path: Path) -> None:
    plugin_dir = tmp_path / "cni"
    plugin_dir.mkdir()
    if plugins:
        for p in ("bridge", "host-local", "portmap", "loopback"):
            (plugin_dir / p).write_text("#!/bin/sh\n")
            (plugin_dir / p).chmod(0o755)
    assert choose_mode(mode, runtime, cni.CniRunner(plugin_dir))[0] == want


def test_asking_for_cni_without_the_plugins_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="containernetworking-plugins"):
        choose_mode("cni", "runc", cni.CniRunner(tmp_path))


# -- the runc bundle -------------------------------------------------------------


def container(netns: Path | None, mounts: tuple[Mount, ...] = ()) -> ContainerConfig:
    return ContainerConfig(pod_uid="u", pod_namespace="default", pod_name="web", name="c",
                           attempt=0, image="busybox", argv=["sh"], env={}, working_dir=None,
                           log_path=Path("/tmp/x.log"), mounts=mounts, netns=netns)


def test_a_container_with_a_pod_network_joins_its_namespace_and_sees_the_pods_files(
        tmp_path: Path) -> None:
    files = (Mount(tmp_path / "resolv.conf", "/etc/resolv.conf"),
             Mount(tmp_path / "hosts", "/etc/hosts"))
    spec = bundle_config(container(tmp_path / "netns", files), ImageConfig(), tmp_path, "id",
                         files)
    assert {"type": "network", "path": str(tmp_path / "netns")} in spec["linux"]["namespaces"]
    sources = {m["destination"]: m["source"] for m in spec["mounts"]}
    assert sources["/etc/resolv.conf"] == str(tmp_path / "resolv.conf")
    assert sources["/etc/hosts"] == str(tmp_path / "hosts")


def test_a_container_without_a_pod_network_shares_the_nodes_network(tmp_path: Path) -> None:
    spec = bundle_config(container(None), ImageConfig(), tmp_path, "id")
    assert all(ns["type"] != "network" for ns in spec["linux"]["namespaces"])


# -- the pod worker's sandbox ------------------------------------------------------


class FakeNetwork:
    """Hands out 10.42.9.x once ``ready``; records teardowns."""

    name = "cni"

    def __init__(self) -> None:
        self.ready = False
        self.torn_down: list[str] = []
        self.setups = 0

    async def setup(self, pod: dict[str, Any]) -> PodSandbox:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return PodSandbox(ips=("127.0.0.1",))
        if not self.ready:
            raise PodNetworkError("the node has no spec.podCIDR yet")
        self.setups += 1
        return PodSandbox(ips=(f"10.42.9.{self.setups + 1}",), netns=Path("/nonexistent"))

    async def teardown(self, uid: str, namespace: str, name: str) -> None:
        self.torn_down.append(name)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[NodeAgent, FakeNetwork]]:
    store = ObjectStore(Replica(None, "node-1"), KindRegistry())
    await NodeStatusReporter(store, "node-1", "127.0.0.1").register()
    fast = WorkerConfig(config_retry=0.05)
    the_agent = NodeAgent(store, "node-1", "127.0.0.1", tmp_path, ProcessRuntime(tmp_path),
                          AgentConfig(worker=fast, status_interval=0.02))
    network = FakeNetwork()
    the_agent.pod_network = network
    await the_agent.start()
    try:
        yield the_agent, network
    finally:
        await the_agent.stop()


async def until_status(a: NodeAgent, name: str, pred: Any) -> dict[str, Any]:
    kind = a.store.registry.by_kind("v1", "Pod")
    assert kind is not None
    for _ in range(200):
        pod = a.store.find(kind, "default", name)
        if pod is not None and pred(pod.get("status") or {}):
            return pod
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out: {a.store.find(kind, 'default', name)}")


async def test_a_pod_waits_for_its_network_then_reports_the_sandbox_address(
        agent: tuple[NodeAgent, FakeNetwork]) -> None:
    a, network = agent
    kind = a.store.registry.by_kind("v1", "Pod")
    assert kind is not None
    await a.store.create(kind, {"metadata": {"name": "p"}, "spec": {
        "nodeName": "node-1", "containers": [{"name": "c", "image": "x",
                                              "command": ["sleep", "30"]}]}}, "default")
    waiting = await until_status(a, "p", lambda st: "FailedCreatePodSandBox" in
                                 st.get("message", ""))
    assert "podIP" not in waiting["status"] and waiting["status"]["phase"] == "Pending"
    network.ready = True
    running = await until_status(a, "p", lambda st: st.get("phase") == "Running")
    assert running["status"]["podIP"] == "10.42.9.2"
    assert running["status"]["podIPs"] == [{"ip": "10.42.9.2"}]
    assert running["status"]["hostIP"] == "127.0.0.1"
    assert "message" not in running["status"]

    await a.store.delete(kind, "default", "p")
    for _ in range(200):
        if network.torn_down:
            break
        await asyncio.sleep(0.02)
    assert network.torn_down == ["p"]


async def test_a_node_stopping_keeps_its_pods_networks_for_the_restart(
        agent: tuple[NodeAgent, FakeNetwork]) -> None:
    a, network = agent
    network.ready = True
    kind = a.store.registry.by_kind("v1", "Pod")
    assert kind is not None
    await a.store.create(kind, {"metadata": {"name": "p"}, "spec": {
        "nodeName": "node-1", "containers": [{"name": "c", "image": "x",
                                              "command": ["sleep", "30"]}]}}, "default")
    await until_status(a, "p", lambda st: st.get("phase") == "Running")
    await a.stop()
    assert network.torn_down == []


# -- real plugins and VXLAN, in a namespace of their own -------------------------------


@pytest.fixture
def node_ns() -> Iterator[str]:
    """A fresh network namespace standing for a node; removed with all it holds."""
    lab_netns.require()
    if not cni.CniRunner().available():
        if lab_netns._in_ci():
            pytest.fail("the CNI plugins are missing (containernetworking-plugins; CI=true)")
        pytest.skip("the CNI plugins are missing (containernetworking-plugins)")
    name = f"shoalpn{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"
    lab_netns.sh("ip", "netns", "add", name)
    try:
        lab_netns.sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        lab_netns.sh("ip", "netns", "del", name, check=False)


def in_ns(ns: str, code: str, tmp_path: Path) -> Any:
    """Run ``code`` (an async body that sets ``result``) in the namespace; ``result``."""
    script = tmp_path / "script.py"
    script.write_text("import asyncio, json, sys\nfrom pathlib import Path\n"
                      "async def main():\n" + textwrap.indent(textwrap.dedent(code), "    ")
                      + "\n    return result\nprint(json.dumps(asyncio.run(main())))\n")
    r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, str(script),
                        str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def unmount_under(root: Path) -> None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4]
        if target.startswith(str(root) + "/"):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


@pytest.mark.slow
def test_a_sandbox_is_reused_while_it_lives_new_pods_follow_the_pod_cidr_and_all_are_released(
        node_ns: str, tmp_path: Path) -> None:
    try:
        out = in_ns(node_ns, """
            from shoal.net.cni_network import CniPodNetwork
            cidr = ["10.42.7.0/24"]
            net = CniPodNetwork(Path(sys.argv[1]), "192.0.2.1", lambda: cidr[0])
            pods = [{"metadata": {"uid": f"uid-{i}", "name": f"p{i}", "namespace": "default"},
                     "spec": {"containers": [{"name": "c"}]}} for i in range(3)]
            first = await asyncio.gather(*(net.setup(p) for p in pods[:2]))
            cidr[0] = "10.42.8.0/24"  # the node's podCIDR changed: new pods use the new one
            again = await net.setup(pods[0])
            moved = await net.setup(pods[2])
            import subprocess
            bridge = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "shoal0"],
                                    capture_output=True, text=True).stdout
            await net.teardown("uid-2", "default", "p2")
            import subprocess
            ping = [subprocess.run(["nsenter", f"--net={first[0].netns}", "busybox", "ping",
                                    "-c1", "-W2", to]).returncode
                    for to in (first[1].ips[0], "10.42.7.1")]  # a pod; its (old) gateway
            await net.teardown("uid-0", "default", "p0")
            # uid-1's pod went while the node was down: the sweep releases it.
            swept = await net.collect_garbage(lambda: {"uid-0"})
            result = {"first": [s.ips[0] for s in first], "again": again.ips[0], "ping": ping,
                      "moved": moved.ips[0], "bridge": bridge,
                      "swept": swept, "left": net.sandboxes()}
        """, tmp_path)
    finally:
        unmount_under(tmp_path)
    ips = out["first"]
    assert len(set(ips)) == 2
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.42.7.0/24") for ip in ips)
    assert out["again"] == ips[0]  # the live namespace passed CNI CHECK: same address
    assert ipaddress.ip_address(out["moved"]) in ipaddress.ip_network("10.42.8.0/24")
    # Both gateways on the bridge: the new range's and the old one, for the pods still in it.
    assert "10.42.8.1/24" in out["bridge"] and "10.42.7.1/24" in out["bridge"]
    assert out["ping"] == [0, 0]  # two pods on one bridge; the old range's gateway
    assert out["swept"] == 1 and out["left"] == []
    leases = tmp_path / "data" / "net" / "ipam" / "shoal"
    assert not any((leases / ip).exists() for ip in ips)


@pytest.mark.slow
def test_the_overlay_programs_one_route_neighbour_and_fdb_entry_per_node_and_removes_them(
        node_ns: str, tmp_path: Path) -> None:
    out = in_ns(node_ns, """
        import subprocess
        from shoal.net.overlay import Overlay
        def node(name, cidr, ip):
            return {"metadata": {"name": name}, "spec": {"podCIDR": cidr},
                    "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
        nodes = [node("me", "10.42.1.0/24", "127.0.0.1"), node("b", "10.42.2.0/24", "192.0.2.2")]
        ov = Overlay("me", "127.0.0.1", lambda: nodes)
        def show():
            return {k: subprocess.run(cmd, capture_output=True, text=True).stdout for k, cmd in {
                "route": ["ip", "route", "show", "dev", "shoal.vxlan"],
                "neigh": ["ip", "neigh", "show", "dev", "shoal.vxlan"],
                "fdb": ["bridge", "fdb", "show", "dev", "shoal.vxlan"],
                "addr": ["ip", "-o", "-4", "addr", "show", "dev", "shoal.vxlan"]}.items()}
        await ov.sync()
        with_b = show()
        del nodes[1]
        await ov.sync()
        result = {"with_b": with_b, "without_b": show()}
    """, tmp_path)
    mac = overlay.vtep_mac("b")
    with_b, without_b = out["with_b"], out["without_b"]
    assert "10.42.2.0/24 via 10.42.2.0 onlink" in with_b["route"]
    assert f"10.42.2.0 lladdr {mac} PERMANENT" in with_b["neigh"]
    assert f"{mac} dst 192.0.2.2 self permanent" in with_b["fdb"]
    assert "10.42.1.0/32" in with_b["addr"]
    assert "10.42.2.0" not in without_b["route"] + without_b["neigh"]
    assert mac not in without_b["fdb"]


@pytest.mark.slow
def test_a_start_with_the_host_network_releases_the_namespaces_a_cni_run_left(
        node_ns: str, tmp_path: Path) -> None:
    """Switching a node to the process runtime: its pods share the host's network, so the
    namespaces and addresses its runc pods had are released (CNI DEL, unmount)."""
    try:
        out = in_ns(node_ns, """
            from shoal.model.kinds import KindRegistry
            from shoal.net.cni_network import CniPodNetwork
            from shoal.net.node_pod_network import NodePodNetwork
            from shoal.store.objects import ObjectStore
            from shoal.store.replica import Replica
            data = Path(sys.argv[1])
            earlier = CniPodNetwork(data, "192.0.2.1", lambda: "10.42.7.0/24")
            sandbox = await earlier.setup({"metadata": {"uid": "uid-0", "name": "p0",
                                                        "namespace": "default"},
                                           "spec": {"containers": [{"name": "c"}]}})
            replica = Replica(data / "replica", "node-1")
            now = NodePodNetwork("auto", "process", ObjectStore(replica, KindRegistry()),
                                 "node-1", "192.0.2.1", data)
            await now.start()
            await now.stop()
            replica.close()
            result = {"ip": sandbox.ips[0], "mode": now.mode, "left": earlier.sandboxes()}
        """, tmp_path)
        mounted = [line.split()[4] for line in
                   Path("/proc/self/mountinfo").read_text().splitlines()
                   if line.split()[4].startswith(str(tmp_path) + "/")]
    finally:
        unmount_under(tmp_path)
    assert out["mode"] == "host" and out["left"] == []
    assert mounted == []
    assert not (tmp_path / "data" / "net" / "ipam" / "shoal" / out["ip"]).exists()


def test_setup_fails_clearly_until_the_node_has_a_pod_cidr(tmp_path: Path) -> None:
    from shoal.net.cni_network import CniPodNetwork

    net = CniPodNetwork(tmp_path, "192.0.2.1", lambda: None)
    with pytest.raises(PodNetworkError, match="podCIDR"):
        asyncio.run(net.setup(a_pod()))
    host = asyncio.run(net.setup(a_pod(hostNetwork=True)))
    assert host == PodSandbox(ips=("192.0.2.1",))


# -- port-forward reaches the pod where it listens -----------------------------------


async def test_port_forward_connects_to_a_pods_own_address_and_to_the_node_for_host_network(
        agent: tuple[NodeAgent, FakeNetwork]) -> None:
    a, network = agent
    network.ready = True
    kind = a.store.registry.by_kind("v1", "Pod")
    assert kind is not None
    for name, host in (("own", False), ("host", True)):
        await a.store.create(kind, {"metadata": {"name": name}, "spec": {
            "nodeName": "node-1", "hostNetwork": host,
            "containers": [{"name": "c", "image": "x", "command": ["sleep", "30"]}]}},
            "default")
        await until_status(a, name, lambda st: st.get("phase") == "Running")
    # Connecting to the node's address reached nothing for a pod in its own namespace.
    assert a.pod_address("default", "own") == "10.42.9.2"
    assert a.pod_address("default", "host") == "127.0.0.1"
    assert a.pod_address("default", "gone") == "127.0.0.1"
