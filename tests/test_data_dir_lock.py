"""One `shoal server` per data dir: a second one exits at once and touches nothing."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from shoal.cli.data_dir_lock import LOCK_FILE, DataDirInUse, DataDirLock
from tests.conftest import VENV_BIN, ShoalProcess, free_port


def test_a_second_hold_on_a_locked_data_dir_is_refused_naming_the_holders_pid(
        tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path)
    try:
        with pytest.raises(DataDirInUse, match=f"in use by another shoal server \\(pid "
                                               f"{os.getpid()}\\)"):
            DataDirLock.acquire(tmp_path)
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    finally:
        first.release()
    DataDirLock.acquire(tmp_path).release()  # released: free again


def test_the_lock_descriptor_is_not_inherited_by_child_processes(tmp_path: Path) -> None:
    lock = DataDirLock.acquire(tmp_path)
    try:
        assert fcntl.fcntl(lock._fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        lock.release()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _open_files(pid: int) -> set[str]:
    files = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                files.add(os.readlink(fd))
            except OSError:
                continue
    except OSError:
        pass
    return files


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
       "spec": {"containers": [{"name": "c", "image": "busybox",
                                "command": ["sleep", "3600"]}]}}


def _pod_state(node: ShoalProcess) -> tuple[str, str, int]:
    pod = json.loads(node.kubectl("get", "pod", "sleeper", "-o", "json").stdout)
    status = pod["status"]["containerStatuses"][0]
    return (status.get("containerID", ""), status["state"]["running"]["startedAt"],
            status["restartCount"])


@pytest.mark.slow
def test_a_second_server_on_a_data_dir_in_use_exits_at_once_and_the_first_is_untouched(
        tmp_path: Path) -> None:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start()
    try:
        node.kubectl("apply", "-f", "-", input=json.dumps(POD))
        node.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
        before = _pod_state(node)
        files = {p: p.read_bytes() for p in (node.data_dir / "server-url",
                                             node.data_dir / "peer-address",
                                             node.data_dir / LOCK_FILE)}
        listing = sorted(str(p.relative_to(node.data_dir)) for p in node.data_dir.rglob("*"))
        node_addresses = json.loads(node.kubectl("get", "node", "node-1", "-o",
                                                 "json").stdout)["status"]["addresses"]

        second = subprocess.run(
            [str(VENV_BIN / "shoal"), "server", "--name", "node-1", "--data-dir",
             str(node.data_dir), "--api-port", str(free_port()), "--peer-port", "0",
             "--advertise", "127.0.0.9", "--runtime", "process", "--pod-network", "host",
             "--proxy-mode", "none"],
            capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert node.proc is not None
        assert (f"data dir {node.data_dir} is in use by another shoal server "
                f"(pid {node.proc.pid})") in second.stderr

        assert _pod_state(node) == before
        assert {p: p.read_bytes() for p in files} == files
        assert sorted(str(p.relative_to(node.data_dir))
                      for p in node.data_dir.rglob("*")) == listing
        assert json.loads(node.kubectl("get", "node", "node-1", "-o", "json").stdout)[
            "status"]["addresses"] == node_addresses
        # Neither the pod nor any helper holds the lock: only the server does.
        lock_path = str(node.data_dir / LOCK_FILE)
        descendants = _descendants(node.proc.pid)
        assert descendants, "the pod's process should be a descendant of the server"
        assert lock_path in _open_files(node.proc.pid)
        assert not [p for p in descendants if lock_path in _open_files(p)]
    finally:
        node.stop()
