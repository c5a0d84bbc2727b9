"""shoal install writes a unit systemd accepts, whose command runs a node; uninstall removes it."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shoal.cli.data_dir_lock import DataDirLock
from shoal.cli.main import main
from tests.conftest import ShoalProcess, admin_kubeconfig, free_port


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (starting the CLI costs seconds on a loaded machine)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (scripts/bootstrap-debian.sh installs systemd)")
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    return found


def test_install_writes_a_unit_systemd_accepts_and_uninstall_removes_it(tmp_path: Path) -> None:
    units, etc, data = tmp_path / "systemd", tmp_path / "etc", tmp_path / "data"
    token = tmp_path / "join.token"
    r = shoal("install", "--unit-dir", str(units), "--config-dir", str(etc), "--data-dir",
              str(data), "--name", "pi-2", "--join", "192.0.2.10:7443", "--token-file",
              str(token), "--", "--runtime", "process", "--mesh-preset=wan")
    assert r.returncode == 0, r.stderr
    unit = units / "shoal.service"
    assert (units / "multi-user.target.wants" / "shoal.service").resolve() == unit
    verify = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and "shoal.service" not in verify.stderr, verify.stderr
    config = etc / "config.yaml"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(config.read_text()) == {
        "data-dir": str(data), "name": "pi-2", "join": "192.0.2.10:7443",
        "token-file": str(token), "runtime": "process", "mesh-preset": "wan"}
    exec_start = next(line for line in unit.read_text().splitlines()
                      if line.startswith("ExecStart="))
    assert shlex.split(exec_start[len("ExecStart="):])[1:] == ["server", "--config",
                                                                str(config)]

    data.mkdir()
    lock = DataDirLock.acquire(data)  # a node still running on it
    r = shoal("uninstall", "--unit-dir", str(units), "--config-dir", str(etc), "--purge-data")
    lock.release()
    assert r.returncode == 1 and "in use by another shoal server" in r.stderr
    assert data.exists() and not unit.exists() and not config.exists()
    assert not (units / "multi-user.target.wants" / "shoal.service").is_symlink()


def test_purge_data_also_removes_the_pods_files_kept_outside_the_data_dir(tmp_path: Path) -> None:
    # Process pods' working dirs and local-path volumes live outside the data dir
    # (--pods-dir, or /var/lib/shoal-pods/<marker> as root): a purge leaves none behind.
    units, etc, data, pods = (tmp_path / "systemd", tmp_path / "etc", tmp_path / "data",
                              tmp_path / "pods")
    r = shoal("install", "--unit-dir", str(units), "--config-dir", str(etc), "--data-dir",
              str(data), "--", "--pods-dir", str(pods))
    assert r.returncode == 0, r.stderr
    for d in (data, pods / "0c2d", tmp_path / "pods-local-path" / "pvc-1"):
        d.mkdir(parents=True)
    (tmp_path / "pods-other").mkdir()  # not this node's
    r = shoal("uninstall", "--unit-dir", str(units), "--config-dir", str(etc), "--purge-data")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etc", "pods-other", "systemd"]
    assert f"removed {pods}\n" in r.stdout


def test_a_bad_server_flag_is_refused_at_install_time(tmp_path: Path) -> None:
    r = shoal("install", "--unit-dir", str(tmp_path), "--config-dir", str(tmp_path),
              "--", "--api-port", "70000")
    assert r.returncode == 1 and "key 'api-port': 70000 is not a port" in r.stderr
    assert not (tmp_path / "shoal.service").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no config left behind


def test_a_refused_reinstall_keeps_the_installed_config(tmp_path: Path) -> None:
    units, etc = tmp_path / "systemd", tmp_path / "etc"
    paths = ("--unit-dir", str(units), "--config-dir", str(etc))
    assert shoal("install", *paths, "--", "--api-port", "16450").returncode == 0
    before = (etc / "config.yaml").read_text()
    r = shoal("install", *paths, "--", "--api-port", "70000")
    assert r.returncode == 1
    # The service would read the refused file at its next restart and fail.
    assert (etc / "config.yaml").read_text() == before
    assert sorted(p.name for p in etc.iterdir()) == ["config.yaml"]


@pytest.mark.slow
def test_the_installed_units_command_runs_a_node(tmp_path: Path) -> None:
    units, etc = tmp_path / "systemd", tmp_path / "etc"
    port = free_port()
    r = shoal("install", "--unit-dir", str(units), "--config-dir", str(etc), "--data-dir",
              str(tmp_path / "data"), "--name", "svc", "--", "--api-port", str(port),
              "--peer-port", "0", "--runtime", "process", "--pod-network", "host",
              "--proxy-mode", "none", "--dns-port", "0", "--no-bus")
    assert r.returncode == 0, r.stderr
    exec_start = next(line for line in (units / "shoal.service").read_text().splitlines()
                      if line.startswith("ExecStart="))
    command = shlex.split(exec_start[len("ExecStart="):])
    node = ShoalProcess("svc", tmp_path / "data", port, tmp_path / "svc.log")
    with open(node.log_path, "wb") as log:
        node.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
    try:
        node.wait_ready()
        node.kubeconfig = admin_kubeconfig(node.data_dir, node.url, tmp_path / "kubeconfig")
        assert node.kubectl("get", "node", "svc", "-o", "name").stdout.strip() == "node/svc"
    finally:
        node.stop()
    r = shoal("uninstall", "--unit-dir", str(units), "--config-dir", str(etc), "--purge-data")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "data").exists()
