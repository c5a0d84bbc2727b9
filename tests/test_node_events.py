"""The node agent's kubelet-like statuses and events, in process: real host processes, a fake
image runtime for pulls, an in-memory replica, short timings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.model.kinds import KindRegistry
from shoal.node.agent import AgentConfig, NodeAgent
from shoal.node.node_status import NodeStatusReporter
from shoal.node.pod_worker import WorkerConfig, waiting_to_start
from shoal.node.runtime import ContainerConfig, PulledImage, RuntimeStartError
from shoal.node.runtime_process import ProcessRuntime
from shoal.node.runtime_runc import RuncRuntime
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.test_runtime_runc import config, rt, runc_works

pytestmark = pytest.mark.slow

__all__ = ["rt", "runc_works"]  # fixtures, used by name

NODE = "node-1"
FAST = WorkerConfig(backoff_initial=0.4, backoff_max=1.6, backoff_reset=600, config_retry=0.2,
                    probe_time_scale=0.1, image_backoff_initial=0.4, image_backoff_max=1.6)
DIGEST = "sha256:" + "ab" * 32


class FakeImageRuntime(ProcessRuntime):
    """Pulls from a make-believe registry, then runs the command on the host."""

    name = "fake-images"
    images = True

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.present: set[str] = set()
        self.in_registry: set[str] = set()
        self.pulls: list[tuple[str, float]] = []  # (image, monotonic time)

    async def pull(self, config: ContainerConfig, pulling: Callable[[], None]) -> PulledImage:
        if config.image in self.present:
            return PulledImage(DIGEST, pulled=False, seconds=0.0)
        pulling()
        self.pulls.append((config.image, time.monotonic()))
        if config.image not in self.in_registry:
            raise RuntimeStartError("ErrImagePull", f"{config.image}: manifest unknown")
        self.present.add(config.image)
        return PulledImage(DIGEST, pulled=True, seconds=1.2345)


class Env:
    def __init__(self, store: ObjectStore, agent: NodeAgent, runtime: ProcessRuntime) -> None:
        self.store = store
        self.agent = agent
        self._runtime = runtime
        self.kind = store.registry.by_kind("v1", "Pod")
        self.event_kind = store.registry.by_kind("v1", "Event")
        self.uids: dict[str, str] = {}  # a deleted pod's events are still read by its uid

    async def create(self, name: str, containers: list[dict[str, Any]], **spec: Any
                     ) -> dict[str, Any]:
        for c in containers:
            c.setdefault("image", "busybox:1.36")
            c.setdefault("command", ["sh", "-c", "sleep 30"])
        body = {"metadata": {"name": name},
                "spec": {"nodeName": NODE, "containers": containers, **spec}}
        pod = await self.store.create(self.kind, body, "default")
        self.uids[name] = pod["metadata"]["uid"]
        return pod

    @property
    def runtime(self) -> FakeImageRuntime:
        assert isinstance(self._runtime, FakeImageRuntime)
        return self._runtime

    def pod(self, name: str) -> dict[str, Any]:
        p = self.store.find(self.kind, "default", name)
        assert p is not None
        return p

    async def until(self, name: str, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.store.find(self.kind, "default", name)
            if p is not None and pred(p):
                return p
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out; pod is {self.store.find(self.kind, 'default', name)}")

    async def events(self, name: str) -> list[tuple[str, str, str, int]]:
        """(type, reason, message, count) of the pod's events, oldest first."""
        await self.agent.flush_events()
        uid = self.uids.get(name) or self.pod(name)["metadata"]["uid"]
        found = [e for e in self.store.list(self.event_kind)
                 if e["involvedObject"].get("uid") == uid]
        # Named as the kubelet names them, by the time they first happened.
        found.sort(key=lambda e: str(e["metadata"]["name"]))
        for e in found:
            assert e["source"]["component"] == e["reportingComponent"] == "kubelet"
            assert e["reportingInstance"] == NODE
        return [(e["type"], e["reason"], e["message"], int(e["count"])) for e in found]

    async def until_event(self, name: str, reason: str, timeout: float = 10.0
                          ) -> list[tuple[str, str, str, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = await self.events(name)
            if any(e[1] == reason for e in evs):
                return evs
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {reason} event; events are {await self.events(name)}")


def cs(pod: dict[str, Any]) -> dict[str, Any]:
    return dict((pod.get("status") or {}).get("containerStatuses", [{}])[0])


def waiting(pod: dict[str, Any]) -> dict[str, Any]:
    return dict((cs(pod).get("state") or {}).get("waiting") or {})


def phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase"))


def reasons(evs: list[tuple[str, str, str, int]]) -> list[str]:
    return [e[1] for e in evs]


async def make_env(tmp_path: Path, runtime: ProcessRuntime, **agent: Any
                   ) -> AsyncIterator[Env]:
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    a = NodeAgent(store, NODE, "127.0.0.1", tmp_path, runtime,
                  AgentConfig(worker=FAST, status_interval=0.02, resync=1.0, **agent))
    await a.start()
    try:
        yield Env(store, a, runtime)
    finally:
        await a.stop()


@pytest.fixture
async def images(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path, FakeImageRuntime(tmp_path)):
        yield e


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path, ProcessRuntime(tmp_path)):
        yield e


async def test_an_image_that_cannot_be_pulled_waits_with_err_image_pull_then_image_pull_back_off(
        images: Env) -> None:
    await images.create("nopull", [{"name": "web", "image": "shoal.test/absent:v1"}])
    pod = await images.until("nopull", lambda p: waiting(p).get("reason") == "ErrImagePull")
    assert waiting(pod)["message"] == "shoal.test/absent:v1: manifest unknown"
    assert phase(pod) == "Pending"
    pod = await images.until("nopull", lambda p: waiting(p).get("reason") == "ImagePullBackOff")
    assert waiting(pod)["message"] == 'Back-off pulling image "shoal.test/absent:v1"'
    assert phase(pod) == "Pending"  # a pull failure is not a crash
    assert cs(pod)["restartCount"] == 0 and not cs(pod).get("lastState")
    assert not cs(pod)["ready"] and "containerID" not in cs(pod)
    await images.until("nopull", lambda p: len(images.runtime.pulls) >= 3
                       and waiting(p).get("reason") == "ImagePullBackOff")
    # The image backoff doubles: 0.4 s, then 0.8 s between pulls (at least).
    times = [t for _, t in images.runtime.pulls]
    assert times[1] - times[0] >= 0.4 and times[2] - times[1] >= 0.8
    evs = await images.events("nopull")
    assert ("Normal", "Pulling", 'Pulling image "shoal.test/absent:v1"') in \
        {e[:3] for e in evs}
    assert ("Warning", "Failed", 'Failed to pull image "shoal.test/absent:v1": '
            "shoal.test/absent:v1: manifest unknown") in {e[:3] for e in evs}
    assert ("Warning", "Failed", "Error: ErrImagePull") in {e[:3] for e in evs}
    assert ("Normal", "BackOff", 'Back-off pulling image "shoal.test/absent:v1"') in \
        {e[:3] for e in evs}
    assert ("Warning", "Failed", "Error: ImagePullBackOff") in {e[:3] for e in evs}
    # Repeats bump the count of one event instead of adding events.
    assert reasons(evs).count("Pulling") == 1
    assert next(e[3] for e in evs if e[1] == "Pulling") >= 3
    assert "Created" not in reasons(evs) and "Started" not in reasons(evs)

    # The image turns up in the registry: the next pull gets it and the pod runs.
    images.runtime.in_registry.add("shoal.test/absent:v1")
    pod = await images.until("nopull", lambda p: phase(p) == "Running", timeout=15)
    assert "running" in cs(pod)["state"] and cs(pod)["restartCount"] == 0
    evs = await images.until_event("nopull", "Started")
    assert ("Normal", "Pulled", 'Successfully pulled image "shoal.test/absent:v1" in 1.234s') in \
        {e[:3] for e in evs}
    assert reasons(evs)[-2:] == ["Created", "Started"]
    assert evs[-2][2] == "Created container: web" and evs[-1][2] == "Started container web"


async def test_an_image_already_present_is_not_pulled_and_the_event_says_so(
        images: Env) -> None:
    images.runtime.present.add("busybox:1.36")
    await images.create("here", [{"name": "web"}])
    await images.until("here", lambda p: phase(p) == "Running")
    evs = await images.until_event("here", "Started")
    assert [e[:3] for e in evs] == [
        ("Normal", "Pulled", 'Container image "busybox:1.36" already present on machine'),
        ("Normal", "Created", "Created container: web"),
        ("Normal", "Started", "Started container web")]
    assert images.runtime.pulls == []


async def test_the_process_runtime_reports_created_started_and_killing_but_no_pulls(
        process: Env) -> None:
    await process.create("proc", [{"name": "web"}])
    await process.until("proc", lambda p: phase(p) == "Running")
    await process.until_event("proc", "Started")
    await process.store.delete(process.kind, "default", "proc")
    evs = await process.until_event("proc", "Killing")
    assert [e[:3] for e in evs] == [("Normal", "Created", "Created container: web"),
                                    ("Normal", "Started", "Started container web"),
                                    ("Normal", "Killing", "Stopping container web")]


async def test_a_missing_configmap_key_is_create_container_config_error_with_a_failed_event(
        process: Env) -> None:
    cm = process.store.registry.by_kind("v1", "ConfigMap")
    await process.store.create(cm, {"metadata": {"name": "cfg"}, "data": {"a": "1"}}, "default")
    await process.create("cfgerr", [{"name": "web", "env": [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "missing"}}}]}])
    pod = await process.until(
        "cfgerr", lambda p: waiting(p).get("reason") == "CreateContainerConfigError")
    message = waiting(pod)["message"]
    assert "missing" in message
    evs = await process.until_event("cfgerr", "Failed")
    assert ("Warning", "Failed", f"Error: {message}") in {e[:3] for e in evs}
    assert phase(pod) == "Pending"


async def test_a_crashing_container_gets_a_back_off_event(process: Env) -> None:
    await process.create("crash", [{"name": "web", "command": ["sh", "-c", "exit 1"]}])
    pod = await process.until("crash", lambda p: waiting(p).get("reason") == "CrashLoopBackOff")
    evs = await process.until_event("crash", "BackOff")
    uid = pod["metadata"]["uid"]
    assert ("Warning", "BackOff", f"Back-off restarting failed container web in pod "
            f"crash_default({uid})") in {e[:3] for e in evs}
    assert reasons(evs).count("Started") == 1  # one event, counted
    assert next(e[3] for e in evs if e[1] == "Started") >= 2


async def test_a_failing_liveness_probe_is_unhealthy_and_the_container_is_killed(
        process: Env) -> None:
    await process.create("sick", [{"name": "web", "livenessProbe": {
        "exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}}])
    evs = await process.until_event("sick", "Killing")
    assert any(e[:2] == ("Warning", "Unhealthy") and e[2].startswith("Liveness probe failed")
               for e in evs)
    assert ("Normal", "Killing", "Container web failed liveness probe, will be restarted") in \
        {e[:3] for e in evs}


async def test_a_volume_that_cannot_be_set_up_is_a_failed_mount_event(process: Env) -> None:
    await process.create("nomount", [{"name": "web"}],
                         volumes=[{"name": "cfg", "configMap": {"name": "nowhere"}}])
    evs = await process.until_event("nomount", "FailedMount")
    ev = next(e for e in evs if e[1] == "FailedMount")
    assert ev[0] == "Warning" and ev[2].startswith("MountVolume.SetUp failed")
    assert "nowhere" in ev[2]
    assert phase(process.pod("nomount")) == "Pending"


async def test_events_beyond_the_backlog_are_dropped_and_pods_still_run(tmp_path: Path) -> None:
    async for env in make_env(tmp_path, ProcessRuntime(tmp_path), event_backlog=1):
        for i in range(5):
            await env.create(f"p{i}", [{"name": "web"}])
        for i in range(5):
            await env.until(f"p{i}", lambda p: phase(p) == "Running")
        await env.agent.flush_events()
        assert env.agent.events_dropped > 0


@pytest.mark.parametrize(("state", "says"), [
    (None, "ContainerCreating"),
    ({"waiting": {"reason": "ContainerCreating"}}, "ContainerCreating"),
    ({"waiting": {"reason": "PodInitializing"}}, "PodInitializing"),
    ({"waiting": {"reason": "ErrImagePull", "message": "x"}}, "trying and failing to pull image"),
    ({"waiting": {"reason": "ImagePullBackOff"}}, "trying and failing to pull image"),
    ({"waiting": {"reason": "CreateContainerConfigError"}}, "CreateContainerConfigError"),
])
def test_logs_of_a_container_that_has_not_started_say_why_as_the_kubelet_does(
        state: dict[str, Any] | None, says: str) -> None:
    pod: dict[str, Any] = {"metadata": {"name": "x"}, "status": {}}
    if state is not None:
        pod["status"]["containerStatuses"] = [{"name": "web", "state": state}]
    assert waiting_to_start(pod, "web") == \
        f'container "web" in pod "x" is waiting to start: {says}'


async def test_runc_pulls_only_what_is_missing_and_never_tries_with_pull_policy_never(
        rt: RuncRuntime) -> None:
    calls: list[str] = []
    here = await rt.pull(config(rt, "here", ["true"]), lambda: calls.append("here"))
    assert here is not None and not here.pulled and here.digest.startswith("sha256:")
    with pytest.raises(RuntimeStartError) as never:
        await rt.pull(config(rt, "never", ["true"], image="127.0.0.1:9/absent:v1",
                             image_pull_policy="Never"), lambda: calls.append("never"))
    assert never.value.reason == "ErrImageNeverPull"
    with pytest.raises(RuntimeStartError) as absent:
        # Nothing listens on the discard port: the pull is tried, and fails.
        await rt.pull(config(rt, "absent", ["true"], image="127.0.0.1:9/absent:v1"),
                      lambda: calls.append("absent"))
    assert absent.value.reason == "ErrImagePull"
    assert calls == ["absent"]  # Pulling is announced only for a pull that is tried
