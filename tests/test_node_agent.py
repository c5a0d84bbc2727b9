"""The node agent in process: real host processes, an in-memory replica, short timings."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.model.kinds import KindRegistry
from shoal.node.agent import AgentConfig, NodeAgent
from shoal.node.env import ConfigError, command_line, container_env, expand
from shoal.node.logs import LogOptions, read_logs
from shoal.node.node_status import NodeStatusReporter
from shoal.node.pod_worker import WorkerConfig
from shoal.node.runtime_process import ProcessRuntime
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

pytestmark = pytest.mark.slow

NODE = "node-1"
FAST = WorkerConfig(backoff_initial=0.4, backoff_max=1.6, backoff_reset=600, config_retry=0.2,
                    probe_time_scale=0.1)


class Env:
    def __init__(self, store: ObjectStore, agent: NodeAgent) -> None:
        self.store = store
        self.agent = agent
        self.kind = store.registry.by_kind("v1", "Pod")

    async def create(self, name: str, containers: list[dict[str, Any]], **spec: Any
                     ) -> dict[str, Any]:
        for c in containers:
            c.setdefault("image", "busybox")
        body = {"metadata": {"name": name},
                "spec": {"nodeName": NODE, "containers": containers, **spec}}
        return await self.store.create(self.kind, body, "default")

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.store.find(self.kind, "default", name)

    async def until(self, name: str, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.pod(name)
            if p is not None and pred(p):
                return p
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out; pod is {self.pod(name)}")


def cs(pod: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return dict((pod.get("status") or {}).get("containerStatuses", [{}])[i])


def cond(pod: dict[str, Any], ctype: str) -> str:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return str(c["status"])
    return ""


def phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase"))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    agent = NodeAgent(store, NODE, "127.0.0.1", tmp_path, ProcessRuntime(tmp_path),
                      AgentConfig(worker=FAST, status_interval=0.02, resync=1.0))
    await agent.start()
    try:
        yield Env(store, agent)
    finally:
        await agent.stop()


async def test_a_pod_runs_and_reports_running_and_ready(env: Env) -> None:
    await env.create("p", [{"name": "c", "command": ["sh", "-c", "echo hello; sleep 30"]}])
    pod = await env.until("p", lambda p: phase(p) == "Running" and cond(p, "Ready") == "True")
    st = pod["status"]
    assert st["hostIP"] == st["podIP"] == "127.0.0.1"
    assert st["startTime"]
    c = cs(pod)
    assert c["ready"] and c["started"] and c["restartCount"] == 0
    assert "running" in c["state"] and c["containerID"].startswith("process://")
    assert {x["type"] for x in st["conditions"]} >= {"PodScheduled", "Initialized",
                                                      "ContainersReady", "Ready"}
    assert all(x["lastTransitionTime"] for x in st["conditions"])
    path = env.agent.container_dir(pod, "c") / "0.log"
    await asyncio.sleep(0.2)
    out = b"".join([x async for x in read_logs(path, LogOptions())])
    assert out == b"hello\n"
    ts = b"".join([x async for x in read_logs(path, LogOptions(timestamps=True))])
    assert ts.endswith(b"Z hello\n")


async def test_restart_policy_always_restarts_with_a_growing_backoff(env: Env) -> None:
    await env.create("crash", [{"name": "c", "command": ["sh", "-c", "echo run; exit 1"]}])
    pod = await env.until("crash", lambda p: cs(p).get("restartCount", 0) >= 3, timeout=8)
    c = cs(pod)
    assert phase(pod) == "Running"
    assert c["lastState"]["terminated"]["exitCode"] == 1
    assert c["lastState"]["terminated"]["reason"] == "Error"
    pod = await env.until("crash", lambda p: "waiting" in cs(p)["state"])
    assert cs(pod)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    # Immediate, then 0.4s, 0.8s, 1.6s: three restarts take at least 1.2s.
    logs = sorted(env.agent.container_dir(pod, "c").glob("*.log"))
    assert len(logs) >= 3


async def test_restart_policy_never_and_on_failure_end_in_a_final_phase(env: Env) -> None:
    await env.create("never", [{"name": "c", "command": ["sh", "-c", "exit 2"]}],
                     restartPolicy="Never")
    await env.create("ok", [{"name": "c", "command": ["true"]}], restartPolicy="OnFailure")
    pod = await env.until("never", lambda p: phase(p) == "Failed")
    assert cs(pod)["state"]["terminated"]["exitCode"] == 2 and cs(pod)["restartCount"] == 0
    pod = await env.until("ok", lambda p: phase(p) == "Succeeded")
    assert cs(pod)["state"]["terminated"]["reason"] == "Completed"
    assert cond(pod, "Ready") == "False"


async def test_init_containers_run_in_order_before_the_containers(env: Env, tmp_path: Path
                                                                  ) -> None:
    f = tmp_path / "order"
    await env.create(
        "init", [{"name": "main", "command": ["sh", "-c", f"echo main >> {f}; sleep 30"]}],
        initContainers=[
            {"name": "one", "image": "busybox", "command": ["sh", "-c", f"sleep 0.2; echo one >> {f}"]},
            {"name": "two", "image": "busybox", "command": ["sh", "-c", f"echo two >> {f}"]},
        ])
    pod = await env.until("init", lambda p: cond(p, "Initialized") != "")
    assert cond(pod, "Initialized") == "False" and phase(pod) == "Pending"
    pod = await env.until("init", lambda p: phase(p) == "Running" and cond(p, "Ready") == "True")
    assert f.read_text().split() == ["one", "two", "main"]
    inits = pod["status"]["initContainerStatuses"]
    assert [i["state"]["terminated"]["exitCode"] for i in inits] == [0, 0]
    assert cond(pod, "Initialized") == "True"


async def test_readiness_probe_flips_ready_and_liveness_restarts(env: Env, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    probe = {"exec": {"command": ["test", "-e", str(flag)]}, "periodSeconds": 1,
             "failureThreshold": 1}
    await env.create("probed", [{"name": "c", "command": ["sleep", "30"],
                                 "readinessProbe": probe}])
    pod = await env.until("probed", lambda p: phase(p) == "Running")
    assert cond(pod, "Ready") == "False"
    flag.touch()
    await env.until("probed", lambda p: cond(p, "Ready") == "True")
    flag.unlink()
    await env.until("probed", lambda p: cond(p, "Ready") == "False")

    await env.create("live", [{"name": "c", "command": ["sleep", "30"],
                               "livenessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1,
                                                 "failureThreshold": 2}}],
                     terminationGracePeriodSeconds=1)
    pod = await env.until("live", lambda p: cs(p).get("restartCount", 0) >= 1)
    assert "liveness probe" in cs(pod)["lastState"]["terminated"]["message"]


async def test_http_get_readiness_probe_with_a_named_port(env: Env) -> None:
    from tests.conftest import free_port

    port = free_port()
    await env.create("web", [{
        "name": "c", "command": ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }])
    pod = await env.until("web", lambda p: cond(p, "Ready") == "True")
    assert cs(pod)["ready"]


async def test_startup_probe_gates_started(env: Env, tmp_path: Path) -> None:
    flag = tmp_path / "started"
    await env.create("slow", [{"name": "c", "command": ["sleep", "30"], "startupProbe": {
        "exec": {"command": ["test", "-e", str(flag)]}, "periodSeconds": 1,
        "failureThreshold": 100}}])
    pod = await env.until("slow", lambda p: phase(p) == "Running")
    assert cs(pod)["started"] is False and not cs(pod)["ready"]
    flag.touch()
    pod = await env.until("slow", lambda p: cs(p)["started"] is True and cs(p)["ready"])


async def test_env_and_volumes_resolve(env: Env, tmp_path: Path) -> None:
    cm = env.store.registry.by_kind("v1", "ConfigMap")
    sec = env.store.registry.by_kind("v1", "Secret")
    await env.store.create(cm, {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "two"}},
                           "default")
    await env.store.create(sec, {"metadata": {"name": "s"}, "data": {"pw": "c2VjcmV0"}},
                           "default")
    host = tmp_path / "host"
    out = tmp_path / "out"
    script = ('echo "$A $B $PW $POD $NS $MEM $CFG_a $(cat $SHOAL_VOLUME_CONF/x) '
              '$(cat $SHOAL_VOLUME_SEC/pw) $(stat -c %a $SHOAL_VOLUME_SEC/pw)" > ' + str(out)
              + '; touch $SHOAL_VOLUME_SCRATCH/f; touch $SHOAL_VOLUME_HOST/h; sleep 30')
    await env.create("envy", [{
        "name": "c", "command": ["sh", "-c", script],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "A", "value": "x-$(B)"},  # B is not defined yet: left as written
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                "divisor": "1Mi"}}},
        ],
        "resources": {"limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": "conf", "mountPath": "/nonexistent-shoal/conf"},
                         {"name": "sec", "mountPath": str(tmp_path / "mnt-sec")},
                         {"name": "scratch", "mountPath": "/tmp/x"},
                         {"name": "host", "mountPath": "/h"}],
    }], volumes=[
        {"name": "conf", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "x"}]}},
        {"name": "sec", "secret": {"secretName": "s", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}},
    ])
    pod = await env.until("envy", lambda p: phase(p) == "Running")
    deadline = time.monotonic() + 5
    while not out.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert out.read_text().split() == ["x-$(B)", "two", "secret", "envy", "default", "64", "1",
                                       "1", "secret", "400"]
    assert (host / "h").exists()
    link = tmp_path / "mnt-sec"
    assert link.is_symlink() and (link / "pw").read_text() == "secret"
    uid = pod["metadata"]["uid"]
    assert (tmp_path / "pods" / uid / "volumes" / "scratch" / "f").exists()


async def test_a_missing_configmap_waits_then_starts(env: Env) -> None:
    await env.create("later", [{"name": "c", "command": ["sleep", "30"], "env": [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "k"}}}]}])
    pod = await env.until("later", lambda p: "waiting" in cs(p).get("state", {})
                          and cs(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError")
    assert phase(pod) == "Pending"
    cm = env.store.registry.by_kind("v1", "ConfigMap")
    await env.store.create(cm, {"metadata": {"name": "late"}, "data": {"k": "v"}}, "default")
    await env.until("later", lambda p: phase(p) == "Running")


async def test_graceful_deletion_sends_sigterm_then_sigkill(env: Env, tmp_path: Path) -> None:
    marker = tmp_path / "term"
    await env.create("stubborn", [{
        "name": "c", "command": ["sh", "-c", f"trap 'echo term > {marker}' TERM; "
                                             "while true; do sleep 0.05; done"],
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", f"echo pre > {marker}.pre"]}}},
    }], terminationGracePeriodSeconds=1)
    await env.create("polite", [{"name": "c", "command": ["sleep", "30"]}])
    pod = await env.until("stubborn", lambda p: phase(p) == "Running")
    await env.until("polite", lambda p: phase(p) == "Running")
    pid = env.agent.worker_for("default", "stubborn").running_handle("c").pid  # type: ignore[union-attr]
    t0 = time.monotonic()
    _, gone = await env.store.delete(env.kind, "default", "stubborn")
    assert not gone
    marked = env.pod("stubborn")
    assert marked is not None and marked["metadata"]["deletionGracePeriodSeconds"] == 1
    assert marked["metadata"]["deletionTimestamp"]
    deadline = time.monotonic() + 5
    while env.pod("stubborn") is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    took = time.monotonic() - t0
    assert env.pod("stubborn") is None
    assert 0.9 <= took < 3, took
    assert (tmp_path / "term.pre").read_text() == "pre\n"
    assert marker.read_text() == "term\n"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "pods" / pod["metadata"]["uid"]).exists()
    # A polite process exits on SIGTERM at once; grace 0 deletes without waiting.
    t0 = time.monotonic()
    await env.store.delete(env.kind, "default", "polite")
    while env.pod("polite") is not None and time.monotonic() < t0 + 5:
        await asyncio.sleep(0.05)
    assert time.monotonic() - t0 < 1


async def test_force_deletion_is_immediate_and_kills_the_processes(env: Env) -> None:
    await env.create("f", [{"name": "c", "command": ["sleep", "30"]}])
    await env.until("f", lambda p: phase(p) == "Running")
    handle = env.agent.worker_for("default", "f").running_handle("c")  # type: ignore[union-attr]
    assert handle is not None
    _, gone = await env.store.delete(env.kind, "default", "f", grace_period=0)
    assert gone and env.pod("f") is None
    await asyncio.wait_for(handle.exited.wait(), 5)
    assert handle.exit_code == 128 + signal.SIGTERM


async def first_run(tmp_path: Path) -> Env:
    """A started agent on a fresh store (for tests that restart it)."""
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    cfg = AgentConfig(worker=FAST, status_interval=0.02)
    agent = NodeAgent(store, NODE, "127.0.0.1", tmp_path, ProcessRuntime(tmp_path), cfg)
    await agent.start()
    return Env(store, agent)


async def test_restart_brings_pods_back_and_kills_orphans(tmp_path: Path) -> None:
    e = await first_run(tmp_path)
    store, first, cfg = e.store, e.agent, e.agent.config
    await e.create("p", [{"name": "c", "command": ["sleep", "30"]}])
    await e.until("p", lambda p: phase(p) == "Running")
    old = first.worker_for("default", "p").running_handle("c")  # type: ignore[union-attr]
    assert old is not None
    for t in [*first._tasks, *first._worker_tasks.values()]:  # the agent dies, not its pods
        t.cancel()
    second = NodeAgent(store, NODE, "127.0.0.1", tmp_path, ProcessRuntime(tmp_path), cfg)
    await second.start()
    try:
        await asyncio.wait_for(old.exited.wait(), 5)  # the orphan was killed
        e.agent = second
        pod = await e.until("p", lambda p: cs(p).get("containerID") not in (None, old.id)
                            and "running" in cs(p)["state"])
        assert cs(pod)["restartCount"] == 1
        assert cs(pod)["lastState"]["terminated"]["reason"] == "Unknown"
    finally:
        await second.stop()


async def test_stopping_the_agent_kills_pods_without_recording_them_as_done(
        tmp_path: Path) -> None:
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    agent = NodeAgent(store, NODE, "127.0.0.1", tmp_path, ProcessRuntime(tmp_path),
                      AgentConfig(worker=FAST, status_interval=0.02))
    await agent.start()
    e = Env(store, agent)
    await e.create("p", [{"name": "c", "command": ["sleep", "30"]}])
    await e.until("p", lambda p: phase(p) == "Running")
    handle = agent.worker_for("default", "p").running_handle("c")  # type: ignore[union-attr]
    await agent.stop()
    assert handle is not None and handle.exited.is_set()
    await asyncio.sleep(0.1)
    pod = e.pod("p")
    assert pod is not None and phase(pod) == "Running"


async def test_a_stop_keeps_the_pods_directories_for_the_next_start_which_drops_deleted_ones(
        tmp_path: Path) -> None:
    # A stopped node's pods are not done: the next start runs them again with their emptyDir
    # and logs, as a rebooted kubelet node does. A pod deleted while the node was down is
    # gone for good, and so is its directory, at that start.
    e = await first_run(tmp_path)
    store, first, cfg = e.store, e.agent, e.agent.config
    write = ["sh", "-c", 'echo kept >> "$SHOAL_VOLUME_SCRATCH/file"; sleep 30']
    uids = {}
    for name in ("kept", "gone"):
        mount = {"name": "scratch", "mountPath": str(tmp_path / f"mnt-{name}")}
        pod = await e.create(name, [{"name": "c", "command": write, "volumeMounts": [mount]}],
                             volumes=[{"name": "scratch", "emptyDir": {}}])
        uids[name] = pod["metadata"]["uid"]
    dirs = {name: tmp_path / "pods" / uid for name, uid in uids.items()}
    await wait_for_text(dirs["kept"] / "volumes" / "scratch" / "file", "kept\n")
    # The first run reported it running, so the next start counts a restart (the file alone
    # raced the status write: under load the stop came first and no restart was counted).
    await e.until("kept", lambda p: "running" in cs(p).get("state", {}))
    await first.stop()
    assert dirs["kept"].is_dir() and dirs["gone"].is_dir()
    await store.delete(e.kind, "default", "gone", grace_period=0)  # while the node is down
    (tmp_path / "pods" / "not-a-pod").mkdir()  # not named as a pod: never removed
    second = NodeAgent(store, NODE, "127.0.0.1", tmp_path, ProcessRuntime(tmp_path), cfg)
    await second.start()
    try:
        assert not dirs["gone"].exists() and (tmp_path / "pods" / "not-a-pod").is_dir()
        pod = await e.until("kept", lambda p: cs(p).get("restartCount") == 1
                            and "running" in cs(p)["state"])
        worker = second.worker_for("default", "kept")
        assert worker is not None and worker.volumes["scratch"].parent.parent == dirs["kept"]
        # The second run appends to what the first wrote.
        await wait_for_text(worker.volumes["scratch"] / "file", "kept\nkept\n")
    finally:
        await second.stop()


async def wait_for_text(path: Path, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (path.exists() and path.read_text() == text):
        await asyncio.sleep(0.05)
    assert path.read_text() == text


async def test_a_pod_whose_status_another_node_wrote_starts_here_with_no_restart(
        tmp_path: Path) -> None:
    # Two sides of a cut bound the pod to different nodes; the other node ran it and wrote
    # its status, and the merge kept this node's binding. This node starts the containers
    # for the first time: RESTARTS 0, not 1 as if this node had run them and restarted.
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    e = Env(store, None)  # type: ignore[arg-type]
    await e.create("moved", [{"name": "c", "command": ["sleep", "30"]}])
    pod = copy.deepcopy(e.pod("moved"))
    assert pod is not None
    pod["status"] = {"phase": "Running", "hostIP": "10.0.0.2", "startTime": "2026-01-01T00:00:00Z",
                     "containerStatuses": [{
                         "name": "c", "ready": True, "restartCount": 0, "image": "busybox",
                         "imageID": "", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                         "lastState": {}}]}
    await store.update(e.kind, pod, "default", "moved", "status")
    e.agent = NodeAgent(store, NODE, "127.0.0.1", tmp_path, ProcessRuntime(tmp_path),
                        AgentConfig(worker=FAST, status_interval=0.02))
    await e.agent.start()
    try:
        pod = await e.until("moved", lambda p: p["status"].get("hostIP") == "127.0.0.1"
                            and "running" in cs(p)["state"])
        assert cs(pod)["restartCount"] == 0 and cs(pod)["lastState"] == {}
    finally:
        await e.agent.stop()


def test_expansion_follows_the_kubelet() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)", env) == "1-two-$(C)"
    assert expand("$$(A) $ $$ $(A", env) == "$(A) $ $ $(A"
    assert command_line({"command": ["echo", "$(A)"], "args": ["$(B)"]}, env) == ["echo", "1", "two"]
    with pytest.raises(ConfigError):
        command_line({}, env)
    with pytest.raises(ConfigError):
        container_env({"metadata": {"name": "p"}}, {"env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]},
            lambda *a: None, "1.2.3.4")


async def test_log_options_tail_limit_since_and_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(
        b"2020-01-01T00:00:00.000000000Z stdout F old\n"
        b"2099-01-01T00:00:00.000000000Z stdout P par\n"
        b"2099-01-01T00:00:00.100000000Z stdout F tial\n"
        b"2099-01-01T00:00:01.000000000Z stderr F last\n")

    async def read(**kw: Any) -> bytes:
        return b"".join([x async for x in read_logs(path, LogOptions(**kw))])

    assert await read() == b"old\npartial\nlast\n"
    assert await read(tail_lines=1) == b"last\n"
    assert await read(tail_lines=0) == b""
    assert await read(limit_bytes=6) == b"old\npa"
    assert await read(since_seconds=3600) == b"partial\nlast\n"
    assert await read(since_time="2099-01-01T00:00:01Z") == b"last\n"
    assert (await read(timestamps=True, tail_lines=1)) == b"2099-01-01T00:00:01.000000000Z last\n"



class LateStartRuntime(ProcessRuntime):
    """The process runtime, where pod "late" starts only while pod "first" is being stopped."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.stopping_first = asyncio.Event()
        self.late: Any = None

    async def start(self, config: Any) -> Any:
        if config.pod_name == "late":
            await self.stopping_first.wait()
            self.late = await super().start(config)
            return self.late
        return await super().start(config)

    async def stop(self, handle: Any, grace: float, sig: int | None = None) -> None:
        if handle.config.pod_name == "first":
            self.stopping_first.set()
            await asyncio.sleep(0.3)  # time for "late" to start and its worker to see it
        await super().stop(handle, grace, sig)


async def test_a_container_that_starts_while_the_agent_stops_is_killed_too(
        tmp_path: Path) -> None:
    # The agent stopped the containers it knew of, then cancelled the pod workers: a container
    # that started meanwhile got only its worker's SIGTERM and, ignoring it, kept running.
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    runtime = LateStartRuntime(tmp_path)
    agent = NodeAgent(store, NODE, "127.0.0.1", tmp_path, runtime,
                      AgentConfig(worker=FAST, status_interval=0.02))
    await agent.start()
    e = Env(store, agent)
    await e.create("first", [{"name": "c", "command": ["sleep", "30"]}])
    await e.until("first", lambda p: phase(p) == "Running")
    await e.create("late", [{"name": "c", "command": ["sh", "-c", "trap '' TERM; sleep 30"]}])
    await asyncio.sleep(0.2)  # its worker is waiting in start
    await agent.stop()
    assert runtime.late is not None
    await asyncio.wait_for(runtime.late.exited.wait(), 5)


async def test_a_node_switched_to_runc_kills_the_process_pods_it_left_and_no_others(
        tmp_path: Path) -> None:
    from shoal.node.agent import other_runtime_left_behind
    from tests.test_runtime_process_spawn import config

    mine, other = tmp_path / "a", tmp_path / "b"
    runtimes = {d: ProcessRuntime(d) for d in (mine, other)}
    handles = {d: await rt.start(config(d, ["sleep", "30"])) for d, rt in runtimes.items()}
    try:
        assert await asyncio.to_thread(other_runtime_left_behind, "runc", mine) == 1
        await asyncio.wait_for(handles[mine].exited.wait(), 5)
        await asyncio.sleep(0.2)  # a kill of the other would show by now
        assert not handles[other].exited.is_set(), "another node's pod was killed"
    finally:
        await runtimes[other].stop(handles[other], grace=1)
