"""Under the process runtime a container sees its volume at its mountPath, even where
that path is taken on the host (a stale file from an earlier install, another pod)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.model.kinds import KindRegistry
from shoal.node import volumes
from shoal.node.agent import AgentConfig, NodeAgent
from shoal.node.node_status import NodeStatusReporter
from shoal.node.pod_worker import WorkerConfig
from shoal.node.runtime_process import ProcessRuntime
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

NODE = "node-1"


def test_a_free_mount_path_is_linked_and_left_as_written(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    mp = tmp_path / "etc" / "app"
    mp.parent.mkdir()
    m = volumes.mount({"volumeMounts": [{"name": "code", "mountPath": str(mp)}]}, {"code": vol})
    assert mp.is_symlink() and m.links == [(mp, vol)]
    assert m.rewrites == {}
    # An earlier attempt's own link is ours too.
    assert volumes.mount({"volumeMounts": [{"name": "code", "mountPath": str(mp)}]},
                         {"code": vol}).rewrites == {}


def test_a_taken_mount_path_is_rewritten_to_the_volume_in_paths_and_shell_lines(
        tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    taken = tmp_path / "etc" / "app"
    taken.mkdir(parents=True)  # a stale directory left on the host
    m = volumes.mount({"volumeMounts": [{"name": "code", "mountPath": str(taken)}]},
                      {"code": vol})
    assert m.links == [] and m.rewrites == {str(taken): str(vol)}
    assert volumes.rewritten(f"python3 {taken}/run.py --conf={taken}", m.rewrites) == \
        f"python3 {vol}/run.py --conf={vol}"
    # Only whole path components: a longer name that starts the same is another path.
    assert volumes.rewritten(f"{taken}x/run.py {tmp_path}/opt{taken}", m.rewrites) == \
        f"{taken}x/run.py {tmp_path}/opt{taken}"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    a = NodeAgent(store, NODE, "127.0.0.1", tmp_path, ProcessRuntime(tmp_path),
                  AgentConfig(worker=WorkerConfig(probe_time_scale=0.1), status_interval=0.02))
    await a.start()
    try:
        yield store
    finally:
        await a.stop()


async def test_a_pod_runs_its_configmaps_script_not_a_stale_file_at_the_mount_path(
        agent: ObjectStore, tmp_path: Path) -> None:
    store = agent
    stale = tmp_path / "etc-demo"
    stale.mkdir()
    (stale / "run.sh").write_text("echo stale\n")
    out = tmp_path / "out"
    await store.create(store.registry.by_kind("v1", "ConfigMap"), {
        "metadata": {"name": "code"}, "data": {"run.sh": f"echo fresh > {out}\n"}}, "default")
    await store.create(store.registry.by_kind("v1", "Pod"), {
        "metadata": {"name": "demo"},
        "spec": {"nodeName": NODE, "volumes": [{"name": "code", "configMap": {"name": "code"}}],
                 "containers": [{"name": "c", "image": "busybox",
                                 "command": ["sh", "-c", f"sh {stale}/run.sh; sleep 30"],
                                 "volumeMounts": [{"name": "code", "mountPath": str(stale)}]}]},
    }, "default")
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert out.read_text() == "fresh\n"
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        events = [e for e in store.list(store.registry.by_kind("v1", "Event"))
                  if e["reason"] == "VolumePathTaken"]
    assert events and str(stale) in events[0]["message"]
