"""The built wheel, installed into a fresh venv, gives a `shoal` that runs a node."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, admin_kubeconfig, free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # builds and installs a wheel
def test_the_wheel_in_a_fresh_venv_runs_a_node(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([str(VENV_BIN / "pip"), "wheel", "--quiet", "--no-deps", str(ROOT), "-w",
                    str(dist)], check=True, timeout=300, capture_output=True)
    wheel = next(dist.glob("shoal-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    subprocess.run([str(VENV_BIN / "pip"), "--python", str(venv / "bin" / "python"), "install",
                    "--quiet", "--no-deps", str(wheel)], check=True, timeout=120,
                   capture_output=True)
    # The dependencies from the dev venv (installing them from the index takes a minute);
    # shoal itself only from the wheel: the dev venv's editable install is not on the path.
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv)})["purelib"])
    dev_site = Path(sysconfig.get_paths()["purelib"])
    (purelib / "dev-deps.pth").write_text(f"{dev_site}\n")
    shoal = venv / "bin" / "shoal"
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import shoal, sys; print(shoal.__file__)"],
                           capture_output=True, text=True, check=True, timeout=60)
    assert where.stdout.startswith(str(venv)), where.stdout
    node = ShoalProcess("wheel", tmp_path / "data", free_port(), tmp_path / "wheel.log")
    with open(node.log_path, "wb") as log:
        node.proc = subprocess.Popen(
            [str(shoal), "server", "--name", "wheel", "--data-dir", str(node.data_dir),
             "--api-port", str(node.port), "--peer-port", "0", "--runtime", "process",
             "--pod-network", "host", "--proxy-mode", "none", "--dns-port", "0", "--no-bus"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        node.wait_ready()
        kubeconfig = admin_kubeconfig(node.data_dir, node.url, tmp_path / "kubeconfig")
        got = subprocess.run([str(shoal), "kubectl", "--kubeconfig", str(kubeconfig), "get",
                              "nodes", "-o", "name"], capture_output=True, text=True,
                             timeout=60)
        assert got.stdout.split() == ["node/wheel"], got.stderr
        page = subprocess.run([str(shoal), "kubectl", "--kubeconfig", str(kubeconfig), "get",
                               "--raw", "/ui/"], capture_output=True, text=True, timeout=60)
        assert "<html" in page.stdout.lower()  # the page's files are in the wheel
    finally:
        node.stop()
