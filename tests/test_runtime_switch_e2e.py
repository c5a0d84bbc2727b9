"""A node restarted on its data dir with another runtime leaves nothing of its earlier run.

One `shoal server --runtime runc --pod-network cni` in a NetnsLab namespace runs a pod
(its own network namespace, bind-mounted under the data dir) and wireguard-go (a daemon
that outlives the node). Then it is stopped:

- by SIGTERM to its pid alone (as `kill PID` does): its pods stop, their namespaces and
  wireguard-go stay (for a restart with the same runtime, which takes them back);
- by SIGKILL to its whole process group: wireguard-go (in that group) dies with it, the
  pod's container (runc, in a session of its own) keeps running, the namespace stays.

Started again on the same data dir with the process runtime, whose pods share the host's
network, the node releases the pod's namespace, stops its container and its
wireguard-go, and leaves another node's wireguard-go alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.net.wireguard import _daemon_of, interface_name
from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for
from tests.test_images import busybox_layer, write_docker_save
from tests.test_pod_network_e2e import (
    IMAGE,
    pod,
    require_cni,
    require_wireguard,
    running_pod,
    unmount_under,
)
from tests.test_runtime_runc import runc_works
from tests.tools import netns

pytestmark = pytest.mark.slow

__all__ = ["runc_works"]  # a fixture, used by name


def mounts_under(root: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(root) + "/")]


def runc_containers(data_dir: Path) -> list[str]:
    out = subprocess.run(["runc", "--root", str(data_dir / "runc" / "state"), "list",
                          "--quiet"], capture_output=True, text=True).stdout
    return out.split()


@pytest.fixture
def lab() -> Iterator[netns.NetnsLab]:
    netns.require()
    require_cni()
    require_wireguard()
    with netns.NetnsLab() as lab:
        yield lab


@pytest.mark.parametrize("stop", ["SIGTERM to its pid", "SIGKILL to its process group"])
def test_a_runc_node_restarted_with_the_process_runtime_releases_what_it_left(
        lab: netns.NetnsLab, tmp_path: Path, runc_works: str, stop: str) -> None:
    archive = tmp_path / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], IMAGE)
    ns = lab.add("a")
    node = ShoalProcess("node-a", tmp_path / "a", free_port(), tmp_path / "a.log", netns=ns,
                        host=ns.ip)
    subprocess.run([str(VENV_BIN / "shoal"), "image", "import", "--data-dir",
                    str(node.data_dir), str(archive)], check=True, capture_output=True)
    device = interface_name("node-a", node.data_dir)
    # Another node's wireguard-go on this host, which must be left alone.
    other_device = interface_name("node-a", tmp_path / "another")
    subprocess.run(ns.exec_args(["wireguard-go", other_device]), check=True,
                   capture_output=True)
    other = _daemon_of(other_device)
    assert other
    try:
        node.start(["--runtime", "runc", "--pod-network", "cni"])
        node.kubectl("apply", "-f", "-", input=pod("web", "node-a"))
        running_pod(node, "web", timeout=60)
        wait_for(lambda: bool(_daemon_of(device)), 20, "the node's wireguard-go")
        assert any(m.endswith("/netns") for m in mounts_under(node.data_dir))

        assert node.proc is not None
        if stop == "SIGTERM to its pid":
            os.kill(node.proc.pid, signal.SIGTERM)
            node.proc.wait(timeout=30)
            assert _daemon_of(device)
            assert runc_containers(node.data_dir) == []
        else:
            node.kill9()
            wait_for(lambda: not _daemon_of(device), 10, "wireguard-go to die with it")
            assert runc_containers(node.data_dir) != []
        assert any(m.endswith("/netns") for m in mounts_under(node.data_dir))

        node.start(["--runtime", "process", "--pod-network", "host"])
        wait_for(lambda: not _daemon_of(device), 10, "the node's wireguard-go to stop")
        assert mounts_under(node.data_dir) == []
        assert not (node.data_dir / "net" / "pods").exists() or \
            list((node.data_dir / "net" / "pods").iterdir()) == []
        assert runc_containers(node.data_dir) == []
        assert _daemon_of(other_device) == other, "another node's wireguard-go went too"
        log = node.log_path.read_text()
        assert "released 1 pod namespace(s)" in log, log[-3000:]
    finally:
        node.stop()
        for pid in _daemon_of(device) + _daemon_of(other_device):
            os.kill(pid, signal.SIGTERM)
        for cid in runc_containers(node.data_dir):  # a failure before the second start
            subprocess.run(["runc", "--root", str(node.data_dir / "runc" / "state"), "delete",
                            "--force", cid], capture_output=True, check=False)
        unmount_under(tmp_path)
