"""``--runtime auto``, and what a user sees of a runc pod: kubectl describe, events and logs.

The choice itself is tested with runc made absent, unprivileged or broken; the real
check runs a ``shoal server`` with ``--runtime auto`` on this machine, which must pick
runc when it can run a container here (with ``CI=true`` a missing runc, busybox-static or
docker-registry fails the test instead of skipping it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal.node import runtime_runc
from shoal.node.agent import choose_runtime, make_runtime
from shoal.node.runtime_process import ProcessRuntime
from tests.conftest import ShoalProcess, free_port
from tests.test_images import Built, busybox_layer, push, registry
from tests.test_runtime_runc import runc_works

pytestmark = pytest.mark.slow

__all__ = ["registry", "runc_works"]  # fixtures, used by name


def test_auto_without_runc_is_the_process_runtime_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(runtime_runc, "find_runc", lambda: None)
    assert choose_runtime(tmp_path) == (
        "process", "no runc: runc is not installed (Debian package runc)")
    with caplog.at_level(logging.INFO, logger="shoal.node.agent"):
        assert isinstance(make_runtime("auto", tmp_path), ProcessRuntime)
    assert "runtime: process (no runc: runc is not installed (Debian package runc))" in \
        caplog.messages


def test_auto_when_not_root_is_the_process_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_runc, "find_runc", lambda: "/usr/sbin/runc")
    monkeypatch.setattr(runtime_runc.os, "geteuid", lambda: 1000)
    assert choose_runtime(tmp_path) == ("process", "no runc: not running as root (uid 1000)")


def test_auto_with_a_runc_that_cannot_run_a_container_is_the_process_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_runc.os, "geteuid", lambda: 0)  # the fake needs no root
    fake = tmp_path / "runc"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "runc version 9.9"; exit 0; }\n'
                    'echo "level=error msg=\\"mount proc: operation not permitted\\"" >&2\n'
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(runtime_runc, "find_runc", lambda: str(fake))
    name, why = choose_runtime(tmp_path / "data")
    assert name == "process"
    assert why == 'no runc: a test container failed: level=error msg="mount proc: operation ' \
                  'not permitted"'
    assert list((tmp_path / "data" / "runc").iterdir()) == []  # the check left nothing


def image_with_config(config: dict[str, Any]) -> Built:
    """The busybox image with its config's entrypoint, cmd, env, workingDir and user set."""
    img = Built([busybox_layer()], gzip_layers=True)
    doc = orjson.loads(img.config)
    doc["config"].update(config)
    img.config = orjson.dumps(doc)
    img.config_digest = img._add(img.config)
    manifest = orjson.loads(img.manifest)
    manifest["config"].update(digest=img.config_digest, size=len(img.config))
    img.manifest = orjson.dumps(manifest)
    img.digest = img._add(img.manifest)
    return img


@pytest.fixture
def auto_node(tmp_path: Path, runc_works: str) -> Iterator[ShoalProcess]:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log",
                        runtime="auto")
    # Only the runtime is under test: the host's own network is left alone.
    node.start(["--pod-network", "host", "--proxy-mode", "none", "--dns-port", "0"])
    try:
        yield node
    finally:
        node.stop()


def pod(node: ShoalProcess, name: str) -> dict[str, Any]:
    return dict(json.loads(node.kubectl("get", "pod", name, "-o", "json").stdout))


def waiting_reason(p: dict[str, Any]) -> str:
    cs = ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
    return str(((cs.get("state") or {}).get("waiting") or {}).get("reason", ""))


def wait_for(node: ShoalProcess, name: str, what: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    p: dict[str, Any] = {}
    while time.monotonic() < deadline:
        p = pod(node, name)
        st = p.get("status") or {}
        if what in (st.get("phase"), waiting_reason(p)):
            return p
        time.sleep(0.1)
    raise AssertionError(f"{name} never {what}: {json.dumps(p.get('status'), indent=1)}\n"
                         + node.log_path.read_text()[-3000:])


def test_auto_picks_runc_and_a_user_sees_the_kubelets_statuses_and_events(
        auto_node: ShoalProcess, registry: str) -> None:
    node = auto_node
    assert "runtime: runc (runc version" in node.log_path.read_text()

    # An image whose entrypoint, cmd, env, workingDir and user all matter.
    img = image_with_config({
        "Entrypoint": ["sh", "-c"],
        "Cmd": ['echo "$(id -u):$(id -g) in $(pwd): $GREETING"; exec sleep 60'],
        "Env": ["PATH=/bin", "GREETING=hello from the image"],
        "WorkingDir": "/tmp", "User": "nobody"})
    push(registry, "shoal/auto", "v1", img)
    image = f"{registry}/shoal/auto:v1"
    t0 = time.monotonic()
    node.kubectl("run", "web", f"--image={image}")
    wait_for(node, "web", "Running")
    print(f"\nFIGURE kubectl run to Running under --runtime auto (runc, with a pull) "
          f"{time.monotonic() - t0:.2f} s")
    deadline = time.monotonic() + 10
    while not (logs := node.kubectl("logs", "web").stdout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logs == "65534:65534 in /tmp: hello from the image\n"

    deadline = time.monotonic() + 10
    while "Started" not in (described := node.kubectl("describe", "pod", "web").stdout) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    events = described[described.index("Events:"):]
    lines = events.splitlines()
    at = []
    for reason, message in (("Pulling", f'Pulling image "{image}"'),
                            ("Pulled", f'Successfully pulled image "{image}" in '),
                            ("Created", "Created container: web"),
                            ("Started", "Started container web")):
        at.append(next((i for i, x in enumerate(lines) if f" {reason} " in x), -1))
        assert "kubelet" in lines[at[-1]] and message in lines[at[-1]], events
    assert at == sorted(at), events  # in the order they happened
    listed = node.kubectl("events", "--for", "pod/web").stdout
    assert not [r for r in ("Pulling", "Pulled", "Created", "Started")
                if f" {r} " not in listed], listed

    # An image that does not exist: ErrImagePull, then ImagePullBackOff; the pod stays Pending.
    absent = f"{registry}/shoal/absent:v1"
    node.kubectl("run", "ghost", f"--image={absent}")
    p = wait_for(node, "ghost", "ErrImagePull")
    assert p["status"]["phase"] == "Pending"
    p = wait_for(node, "ghost", "ImagePullBackOff")
    assert p["status"]["phase"] == "Pending"
    assert p["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == \
        f'Back-off pulling image "{absent}"'
    r = node.kubectl("logs", "ghost", check=False)
    assert r.returncode != 0
    assert 'container "ghost" in pod "ghost" is waiting to start: trying and failing to pull ' \
           "image" in r.stderr
    described = node.kubectl("describe", "pod", "ghost").stdout
    assert "ImagePullBackOff" in described
    assert f'Failed to pull image "{absent}"' in described
    assert "Error: ErrImagePull" in described
    assert f'Back-off pulling image "{absent}"' in described
    node.kubectl("delete", "pod", "web", "ghost", "--grace-period=1")
