"""The bus's configuration as a pure function of Node objects (no nats-server needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shoal.bus import nats_config, site_topology
from shoal.bus.nats_config import BusSettings, TlsFiles
from shoal.bus.site_topology import BusPeer, peer_of_node, topology


def node(name: str, zone: str | None, hub: bool = False, port: int = 6222,
         bus: bool = True, pin: bool = True) -> dict[str, Any]:
    labels: dict[str, str] = {}
    if zone is not None:
        labels[site_topology.ZONE_LABEL] = zone
    if hub:
        labels[site_topology.HUB_LABEL] = "true"
    annotations = {
        site_topology.CLIENT_ANNOTATION: f"{name}:4222",
        site_topology.CLUSTER_ANNOTATION: f"{name}:{port}",
        site_topology.LEAF_ANNOTATION: f"{name}:7422",
        **({site_topology.PIN_ANNOTATION: f"pin-{name}"} if pin else {}),
    } if bus else {}
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations}}


def me(n: dict[str, Any]) -> BusPeer:
    p = peer_of_node(n)
    assert p is not None
    return p


NODES = [node("hub-1", "cloud", hub=True), node("hub-2", "cloud"), node("hub-3", "cloud"),
         node("farm-1", "farm-a"), node("farm-2", "farm-a"),
         node("shop-1", "shop/b"), node("idle", "farm-a", bus=False)]


def test_a_node_without_the_bus_annotations_is_not_a_bus_peer() -> None:
    assert peer_of_node(node("x", "a", bus=False)) is None
    assert me(node("x", None)).site == site_topology.DEFAULT_SITE


def test_a_zone_becomes_a_site_name_nats_accepts_as_a_domain() -> None:
    assert me(node("x", "shop/b")).site == "shop_b"
    assert site_topology.site_name("eu-west-1a") == "eu-west-1a"


def test_hub_site_peers_route_to_each_other_and_listen_for_leaf_links() -> None:
    t = topology(me(NODES[0]), NODES)
    assert t.is_hub and t.listen_leafnodes
    assert t.site_peers == ("hub-1", "hub-2", "hub-3")
    assert t.routes == ("hub-2:6222", "hub-3:6222")
    assert t.leaf_remotes == ()
    assert t.jetstream_clustered


def test_edge_peers_route_within_their_site_and_dial_every_hub_peer() -> None:
    t = topology(me(NODES[3]), NODES)
    assert t.site == "farm-a" and t.hub_site == "cloud" and not t.is_hub
    assert t.routes == ("farm-2:6222",)  # "idle" runs no bus
    assert t.leaf_remotes == ("hub-1:7422", "hub-2:7422", "hub-3:7422")
    assert not t.listen_leafnodes


def test_a_site_of_one_peer_runs_jetstream_standalone_with_no_cluster() -> None:
    t = topology(me(NODES[5]), NODES)
    assert t.site_peers == ("shop-1",) and not t.jetstream_clustered
    conf = nats_config.render(BusSettings("shop-1", Path("/d/js")), t)
    assert "cluster" not in conf
    assert conf["jetstream"] == {"store_dir": "/d/js", "domain": "shop_b"}


def test_members_that_left_are_not_routed_to() -> None:
    t = topology(me(NODES[0]), NODES, gone={"hub-3"})
    assert t.routes == ("hub-2:6222",)


def test_without_a_hub_label_sites_stay_apart() -> None:
    plain = [node("a", "x"), node("b", "y")]
    t = topology(me(plain[0]), plain)
    assert t.hub_site is None and t.leaf_remotes == () and not t.listen_leafnodes


def test_a_peer_counts_in_its_own_site_before_its_node_shows_the_bus() -> None:
    t = topology(me(node("new", "farm-a")), NODES)
    assert t.site_peers == ("farm-1", "farm-2", "new")


TLS = TlsFiles(Path("/p/server.crt"), Path("/p/server.key"), Path("/p/ca.crt"))


def settings(name: str) -> BusSettings:
    return BusSettings(name, Path(f"/d/{name}/js"), bind="0.0.0.0", advertise="10.0.0.1",
                       client_port=4222, cluster_port=6222, leafnode_port=7422, tls=TLS)


def test_routes_and_leaf_links_are_tls_with_the_cluster_ca_and_verified() -> None:
    hub = nats_config.render(settings("hub-1"), topology(me(NODES[0]), NODES))
    assert hub["server_name"] == "hub-1" and hub["port"] == 4222
    assert hub["cluster"]["name"] == "cloud"
    assert hub["cluster"]["routes"] == ["nats-route://hub-2:6222", "nats-route://hub-3:6222"]
    assert hub["cluster"]["tls"]["verify"] is True
    assert hub["cluster"]["tls"]["ca_file"] == "/p/ca.crt"
    assert hub["cluster"]["advertise"] == "10.0.0.1:6222"
    assert hub["leafnodes"]["port"] == 7422 and hub["leafnodes"]["tls"]["verify"] is True
    edge = nats_config.render(settings("farm-1"), topology(me(NODES[3]), NODES))
    remote = edge["leafnodes"]["remotes"][0]
    assert remote["urls"][0] == "tls://hub-1:7422"
    assert remote["tls"]["cert_file"] == "/p/server.crt"
    assert "port" not in edge["leafnodes"]  # an edge listens for no leaf link


def test_a_change_of_routes_is_a_reload_and_a_change_of_hub_peers_a_restart() -> None:
    s = settings("farm-1")
    before = nats_config.render(s, topology(me(NODES[3]), NODES))
    more_routes = nats_config.render(s, topology(me(NODES[3]), [*NODES, node("farm-3", "farm-a")]))
    assert more_routes != before
    assert nats_config.restart_key(more_routes) == nats_config.restart_key(before)
    more_hubs = nats_config.render(s, topology(me(NODES[3]), [*NODES, node("hub-4", "cloud")]))
    assert nats_config.restart_key(more_hubs) != nats_config.restart_key(before)
    alone = nats_config.render(s, topology(me(NODES[3]), NODES, gone={"farm-2"}))
    assert nats_config.restart_key(alone) != nats_config.restart_key(before)


def test_the_config_text_is_json_nats_server_reads_and_is_stable() -> None:
    conf = nats_config.render(settings("hub-1"), topology(me(NODES[0]), NODES))
    text = nats_config.config_text(conf)
    assert text == nats_config.config_text(dict(reversed(list(conf.items()))))
    assert '"ping_interval": "2s"' in text


def test_ipv6_advertise_addresses_are_bracketed() -> None:
    s = BusSettings("a", Path("/d"), advertise="fd00::1")
    assert s.endpoint(6222) == "[fd00::1]:6222"


def test_every_container_gets_its_nodes_bus_url_and_a_pod_may_override_it() -> None:
    from shoal.node.env import bus_env, container_env

    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    service_env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", **bus_env("nats://10.0.0.1:4222")}
    env = container_env(pod, {"name": "c"}, lambda *a: None, "10.0.0.1",
                        service_env=service_env)
    assert env["NATS_URL"] == "nats://10.0.0.1:4222"
    own = {"name": "c", "env": [{"name": "NATS_URL", "value": "nats://elsewhere:4222"},
                                {"name": "UPLINK", "value": "$(NATS_URL)"}]}
    env = container_env(pod, own, lambda *a: None, "10.0.0.1", service_env=service_env)
    assert env["NATS_URL"] == "nats://elsewhere:4222" and env["UPLINK"] == env["NATS_URL"]


def test_the_bus_is_on_by_default_only_where_nats_server_is_installed(
        monkeypatch: Any) -> None:
    from shoal.bus import service, supervisor

    assert service.bus_wanted(True) and not service.bus_wanted(False)
    monkeypatch.setattr(service, "nats_server_path", lambda: None)
    assert not service.bus_wanted(None)
    monkeypatch.setattr(service, "nats_server_path", lambda: "/usr/sbin/nats-server")
    assert service.bus_wanted(None)
    assert supervisor.BINARY == "nats-server"


def test_nats_py_is_loaded_only_by_a_bus_or_a_device_and_never_with_aiohttp() -> None:
    """A node without the bus imports no nats-py (1.4 MB of RSS); the bus's streams and the
    device mappers load it, hiding aiohttp (~10 MB) as they do."""
    code = ("import sys, shoal.cli.node, shoal.cli.main, shoal.devices.service\n"
            "print('nats' in sys.modules)\n"
            "import shoal.bus.streams\n"
            "print('nats' in sys.modules, 'aiohttp' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_HTTP_SERVER"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "False"]


def test_routes_accept_only_the_sites_keys_and_a_hub_only_the_other_sites_keys() -> None:
    hub = nats_config.render(settings("hub-1"), topology(me(NODES[0]), NODES))
    assert hub["cluster"]["tls"]["pinned_certs"] == ["pin-hub-1", "pin-hub-2", "pin-hub-3"]
    assert hub["leafnodes"]["tls"]["pinned_certs"] == [
        "pin-farm-1", "pin-farm-2", "pin-shop-1"]
    left = nats_config.render(settings("hub-1"), topology(me(NODES[0]), NODES,
                                                          gone={"farm-2"}))
    assert "pin-farm-2" not in left["leafnodes"]["tls"]["pinned_certs"]
    # 2.9 reloads the routes' pins but not the leaf listener's.
    gone_hub = nats_config.render(settings("hub-1"), topology(me(NODES[0]), NODES,
                                                              gone={"hub-3"}))
    assert nats_config.restart_key(gone_hub) == nats_config.restart_key(hub)
    assert nats_config.restart_key(left) != nats_config.restart_key(hub)
    edge = nats_config.render(settings("farm-1"), topology(me(NODES[3]), NODES))
    assert "pinned_certs" not in edge["leafnodes"]["remotes"][0]["tls"]


def test_a_peer_that_announces_no_key_turns_pinning_off_rather_than_locking_it_out() -> None:
    nodes = [*NODES, node("old", "cloud", pin=False)]
    hub = nats_config.render(settings("hub-1"), topology(me(NODES[0]), nodes))
    assert "pinned_certs" not in hub["cluster"]["tls"]
    assert "pinned_certs" in hub["leafnodes"]["tls"]


def test_the_pin_is_the_sha256_of_the_public_key_and_survives_a_new_certificate() -> None:
    from shoal.mesh import pki

    ca = pki.create_ca()
    first = pki.issue(ca, "n1", server=True)
    key = serialization.load_pem_private_key(first.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    renewed = pki.issue(ca, "n1", server=True, key=key)
    pin = nats_config.spki_sha256(first.cert_pem)
    assert len(pin) == 64 and pin == nats_config.spki_sha256(renewed.cert_pem)
    assert pin != nats_config.spki_sha256(pki.issue(ca, "n1", server=True).cert_pem)


def test_only_members_that_left_lose_their_routes_and_keys_not_dead_ones() -> None:
    from shoal.bus.service import left_members
    from shoal.mesh.membership import Member
    from shoal.mesh.messages import State

    members = [Member(n, f"{n}:7443", 1, s, 0.0) for n, s in (
        ("a", State.ALIVE), ("b", State.SUSPECT), ("c", State.DEAD), ("d", State.LEFT))]
    assert left_members(members) == {"d"}
