"""Process-runtime pods run as an unprivileged user and cannot reach the node's files.

The node runs as root here (as on a device); its pods run as 65534 unless they ask for
a user, uid 0 only where the node allows it (shoal.node.pod_user).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ShoalProcess, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs the node to be root"),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShoalProcess]:
    d = tmp_path_factory.mktemp("isolation")
    n = ShoalProcess("node-1", d / "data", free_port(), d / "shoal.log")
    n.start()
    try:
        yield n
    finally:
        n.stop()


def run_pod(node: ShoalProcess, name: str, script: str, pod_sc: dict[str, Any] | None = None,
            sc: dict[str, Any] | None = None, volumes: list[dict[str, Any]] | None = None,
            mounts: list[dict[str, Any]] | None = None) -> None:
    container: dict[str, Any] = {"name": "main", "image": "busybox",
                                 "command": ["sh", "-c", script]}
    if sc:
        container["securityContext"] = sc
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict[str, Any] = {"nodeName": "node-1", "restartPolicy": "Never",
                            "terminationGracePeriodSeconds": 1, "containers": [container]}
    if pod_sc:
        spec["securityContext"] = pod_sc
    if volumes:
        spec["volumes"] = volumes
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    node.kubectl("apply", "-f", "-", input=json.dumps(pod))


def wait_for(node: ShoalProcess, name: str, pred: Any, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = json.loads(node.kubectl("get", "pod", name, "-o", "json").stdout)
        if pred(pod):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"timed out: {json.dumps(pod.get('status'), indent=1)}")


def finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def waiting_reason(pod: dict[str, Any]) -> tuple[str, str]:
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        w = (c.get("state") or {}).get("waiting") or {}
        if w.get("reason") == "CreateContainerConfigError":
            return w["reason"], w.get("message", "")
    return "", ""


def test_a_pod_cannot_read_the_nodes_keys_or_replica(node: ShoalProcess) -> None:
    targets = [p for p in sorted((node.data_dir / "pki").iterdir()) if p.is_file()]
    targets += [node.data_dir / "state.db", node.data_dir / "state.db-wal"]
    names = {p.name for p in targets}
    assert {"ca.key", "admin.key", "state.db"} <= names
    checks = "; ".join(f"if cat {p} >/dev/null 2>&1; then echo READ {p.name}; "
                       f"elif cat {p} 2>&1 | grep -q 'Permission denied'; "
                       f"then echo DENIED {p.name}; else echo MISSING {p.name}; fi"
                       for p in targets)
    run_pod(node, "thief", f"id -u; ls {node.data_dir} >/dev/null 2>&1 || echo NOLIST; {checks}")
    pod = wait_for(node, "thief", finished)
    assert pod["status"]["phase"] == "Succeeded"
    lines = node.kubectl("logs", "thief").stdout.splitlines()
    assert lines[0] == "65534"
    assert "NOLIST" in lines
    assert sorted(line for line in lines if line.startswith("READ")) == []
    assert {line.split()[1] for line in lines if line.startswith("DENIED")} == names


def test_a_pod_is_not_told_where_the_data_dir_is(node: ShoalProcess) -> None:
    run_pod(node, "nosy", "env; pwd")
    wait_for(node, "nosy", finished)
    out = node.kubectl("logs", "nosy").stdout
    assert "SHOAL_DATA_DIR" not in out
    assert str(node.data_dir.resolve()) not in out
    assert "SHOAL_NODE_MARKER=" in out  # how a restarted agent still finds its orphans


def test_volumes_working_dir_and_exec_work_for_the_pods_user(node: ShoalProcess) -> None:
    node.kubectl("create", "configmap", "settings", "--from-literal=mode=fast")
    node.kubectl("create", "secret", "generic", "creds", "--from-literal=password=hunter2")
    script = ('echo hi > here && cat here; echo scratch > "$SHOAL_VOLUME_SCRATCH/f" && '
              'cat "$SHOAL_VOLUME_SCRATCH/f"; cat "$SHOAL_VOLUME_SETTINGS/mode"; echo; '
              'cat "$SHOAL_VOLUME_CREDS/password"; echo; sleep 30')
    run_pod(node, "worker", script,
            volumes=[{"name": "scratch", "emptyDir": {}},
                     {"name": "settings", "configMap": {"name": "settings"}},
                     {"name": "creds", "secret": {"secretName": "creds"}}],
            mounts=[{"name": v, "mountPath": f"/nonexistent-{v}"}
                    for v in ("scratch", "settings", "creds")])
    wait_for(node, "worker", lambda p: (p.get("status") or {}).get("phase") == "Running")
    deadline = time.monotonic() + 10
    while "hunter2" not in (out := node.kubectl("logs", "worker").stdout) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.splitlines() == ["hi", "scratch", "fast", "hunter2"]
    assert node.kubectl("exec", "worker", "--", "id", "-u").stdout.strip() == "65534"
    cwd = node.kubectl("exec", "worker", "--", "pwd").stdout.strip()
    assert not cwd.startswith(str(node.data_dir.resolve()))
    node.kubectl("delete", "pod", "worker", "--grace-period=1")


def test_runas_user_and_group_are_honoured(node: ShoalProcess) -> None:
    run_pod(node, "custom", "id -u; id -g; id -G", pod_sc={"runAsUser": 1234,
                                                          "supplementalGroups": [4000]},
            sc={"runAsGroup": 2345})
    wait_for(node, "custom", finished)
    uid, gid, groups = node.kubectl("logs", "custom").stdout.splitlines()
    assert (uid, gid) == ("1234", "2345")
    assert "4000" in groups.split()


def test_run_as_non_root_with_uid_0_is_refused_as_the_kubelet_does(node: ShoalProcess) -> None:
    run_pod(node, "contradiction", "id -u", sc={"runAsUser": 0, "runAsNonRoot": True})
    pod = wait_for(node, "contradiction", lambda p: waiting_reason(p)[0] != "")
    _, message = waiting_reason(pod)
    uid = pod["metadata"]["uid"]
    assert message == ("container's runAsUser breaks non-root policy "
                       f'(pod: "contradiction_default({uid})", container: main)')


def test_a_root_pod_needs_the_nodes_permission(node: ShoalProcess) -> None:
    run_pod(node, "rooted", "id -u", sc={"runAsUser": 0})
    pod = wait_for(node, "rooted", lambda p: waiting_reason(p)[0] != "")
    assert "--allow-root-pods" in waiting_reason(pod)[1]
    assert "runAsUser 0" in waiting_reason(pod)[1]
    node.kubectl("delete", "pod", "rooted", "--grace-period=0", "--force")
    # The same node started with the flag runs it as root.
    node.stop()
    node.start(["--allow-root-pods"])
    run_pod(node, "rooted", "id -u", sc={"runAsUser": 0})
    wait_for(node, "rooted", finished)
    assert node.kubectl("logs", "rooted").stdout.strip() == "0"


def test_the_pods_files_live_outside_the_data_dir_and_go_with_the_pod(
        node: ShoalProcess) -> None:
    run_pod(node, "tidy", "pwd; sleep 30")
    wait_for(node, "tidy", lambda p: bool(node.kubectl("logs", "tidy").stdout.strip()))
    cwd = Path(node.kubectl("logs", "tidy").stdout.strip())
    assert cwd.is_dir()
    assert cwd.stat().st_uid == 65534
    assert oct(cwd.parent.stat().st_mode & 0o777) == oct(0o711)  # enterable, not listable
    node.kubectl("delete", "pod", "tidy", "--grace-period=1")
    deadline = time.monotonic() + 10
    while cwd.parent.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not cwd.parent.exists()
