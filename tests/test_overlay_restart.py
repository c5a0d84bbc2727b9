"""The VXLAN device follows the node's address across restarts (shoal.net.overlay)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.tools import netns as lab_netns

pytestmark = pytest.mark.slow


@pytest.fixture
def node_ns() -> Iterator[str]:
    """A namespace standing for a node, with two addresses it may be started on."""
    lab_netns.require()
    name = f"shoalov{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"
    lab_netns.sh("ip", "netns", "add", name)
    try:
        for args in (("link", "set", "lo", "up"), ("link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer"),
                     ("addr", "add", "10.250.0.2/24", "dev", "uplink"),
                     ("addr", "add", "10.250.0.3/24", "dev", "uplink"),
                     ("link", "set", "uplink", "up")):
            lab_netns.sh("ip", "-n", name, *args)
        yield name
    finally:
        lab_netns.sh("ip", "netns", "del", name, check=False)


def sync_in(ns: str, local_ip: str) -> Any:
    """One Overlay sync in the namespace, as a node started on ``local_ip``; what it left."""
    code = textwrap.dedent(f"""
        import asyncio, json, subprocess
        from shoal.net.overlay import Overlay
        def node(name, cidr, ip):
            return {{"metadata": {{"name": name}}, "spec": {{"podCIDR": cidr}},
                    "status": {{"addresses": [{{"type": "InternalIP", "address": ip}}]}}}}
        nodes = [node("me", "10.42.1.0/24", "{local_ip}"), node("b", "10.42.2.0/24", "10.250.0.9")]
        asyncio.run(Overlay("me", "{local_ip}", lambda: nodes).sync())
        link = json.loads(subprocess.run(["ip", "-d", "-j", "link", "show", "shoal.vxlan"],
                                         capture_output=True, text=True).stdout)[0]
        route = subprocess.run(["ip", "route", "show", "dev", "shoal.vxlan"],
                               capture_output=True, text=True).stdout
        print(json.dumps({{"local": link["linkinfo"]["info_data"].get("local"),
                          "route": route}}))
    """)
    r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_a_node_restarted_on_another_address_sends_vxlan_from_the_new_one(
        node_ns: str) -> None:
    first = sync_in(node_ns, "10.250.0.2")
    assert first["local"] == "10.250.0.2"
    # The device outlives the process; the next start binds elsewhere (--bind changed).
    again = sync_in(node_ns, "10.250.0.3")
    assert again["local"] == "10.250.0.3"
    assert "10.42.2.0/24 via 10.42.2.0 onlink" in again["route"]


def test_a_node_restarted_on_the_same_address_keeps_its_device(node_ns: str) -> None:
    sync_in(node_ns, "10.250.0.2")
    before = lab_netns.sh("ip", "-n", node_ns, "-j", "link", "show", "shoal.vxlan").stdout
    after_sync = sync_in(node_ns, "10.250.0.2")
    after = lab_netns.sh("ip", "-n", node_ns, "-j", "link", "show", "shoal.vxlan").stdout
    assert after_sync["local"] == "10.250.0.2"
    assert json.loads(before)[0]["ifindex"] == json.loads(after)[0]["ifindex"]
