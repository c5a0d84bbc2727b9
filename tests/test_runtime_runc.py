"""The runc runtime with real containers from a busybox-static image built by the tests.

With ``CI=true`` these fail, never skip, when runc or busybox-static is missing or
runc cannot run a container here (the failure says exactly why).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.node.agent import make_runtime
from shoal.node.images import ImageStore
from shoal.node.runtime import ContainerConfig, RuntimeStartError
from shoal.node.runtime_runc import RuncRuntime
from tests.test_images import busybox_layer, require, write_docker_save

IMAGE = "shoal.test/busybox:v1"


def _fail_or_skip(msg: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def runc_works(tmp_path_factory: pytest.TempPathFactory) -> str:
    """runc's path, once a throwaway container has run here (else the exact reason it cannot)."""
    runc = require("runc", "runc")
    root = tmp_path_factory.mktemp("runc-probe")
    (root / "rootfs").mkdir()
    r = subprocess.run([runc, "spec", "--bundle", str(root)], capture_output=True, text=True)
    if r.returncode != 0:
        _fail_or_skip(f"runc spec failed: {r.stderr.strip()}")
    cfg = (root / "config.json").read_text().replace('"terminal": true', '"terminal": false')
    (root / "config.json").write_text(cfg.replace('"sh"', '"/busybox", "true"'))
    shutil.copy("/bin/busybox", root / "rootfs" / "busybox")
    os.chmod(root / "rootfs" / "busybox", 0o755)
    r = subprocess.run([runc, "--root", str(root / "state"), "run", "--bundle", str(root),
                        "probe"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        _fail_or_skip(f"runc cannot run a container in this environment: {r.stderr.strip()} "
                      "(namespaces, cgroups or mounts unavailable to this user?)")
    return runc


@pytest.fixture
async def rt(tmp_path: Path, runc_works: str) -> AsyncIterator[RuncRuntime]:
    archive = tmp_path / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], IMAGE)
    runtime = make_runtime("runc", tmp_path / "data")
    assert isinstance(runtime, RuncRuntime)
    t0 = time.monotonic()
    ImageStore(tmp_path / "data").import_archive(archive)
    print(f"\nFIGURE import for runc {1000 * (time.monotonic() - t0):.0f} ms")
    yield runtime
    runtime.cleanup_orphans(set())
    await runtime.puller.registry.close()
    await settle()


async def settle() -> None:
    """Let exited subprocesses' transports close while the loop still runs: one collected
    after the loop has closed warns "Event loop is closed", which fails a later test."""
    await asyncio.sleep(0.1)
    gc.collect()
    await asyncio.sleep(0)


def config(rt: RuncRuntime, name: str, argv: list[str], attempt: int = 0,
           **kw: object) -> ContainerConfig:
    pod_dir = rt.data_dir / "pods" / "uid-1"
    return ContainerConfig(
        pod_uid="uid-1", pod_namespace="default", pod_name="pod-1", name=name, attempt=attempt,
        image=str(kw.pop("image", IMAGE)), argv=argv, env={"GREETING": "hello"},
        working_dir=None, log_path=pod_dir / name / f"{attempt}.log",
        **kw)  # type: ignore[arg-type]


def log_lines(cfg: ContainerConfig) -> list[tuple[str, str]]:
    """(stream, text) per CRI record."""
    out = []
    for line in cfg.log_path.read_text().splitlines():
        _ts, stream, _tag, text = line.split(" ", 3)
        out.append((stream, text))
    return out


async def test_a_container_runs_from_the_image_and_its_output_reaches_the_log(
        rt: RuncRuntime) -> None:
    cfg = config(rt, "hello", ["sh", "-c",
                               'echo "$GREETING $FROM_IMAGE $(pwd) $(hostname)"; echo oops >&2; '
                               "test -e /bin/busybox && ! test -e /etc/shoal-host-only"])
    t0 = time.monotonic()
    handle = await rt.start(cfg)
    started = time.monotonic() - t0
    assert handle.id.startswith("runc://")
    assert await asyncio.wait_for(rt.wait(handle), 10) == 0
    lines = log_lines(cfg)
    assert ("stdout", "hello yes /tmp pod-1") in lines
    assert ("stderr", "oops") in lines
    assert not list(rt.bundles.iterdir())  # the bundle went with the container
    print(f"\nFIGURE runc start (first, incl. unpack) {started * 1000:.0f} ms")
    times = []
    for i in range(5):
        t0 = time.monotonic()
        h = await rt.start(config(rt, f"again{i}", ["true"]))
        times.append(time.monotonic() - t0)
        assert await asyncio.wait_for(rt.wait(h), 10) == 0
    times.sort()
    print(f"FIGURE runc start (warm, start() to running) median {times[2] * 1000:.0f} ms, "
          f"max {times[-1] * 1000:.0f} ms")


async def test_the_exit_code_and_the_image_cmd_are_used(rt: RuncRuntime) -> None:
    h = await rt.start(config(rt, "fails", ["sh", "-c", "exit 3"]))
    assert await asyncio.wait_for(rt.wait(h), 10) == 3
    cfg = config(rt, "cmd", [])  # no command: the image's Cmd ("sh") with no stdin exits 0
    h = await rt.start(cfg)
    assert await asyncio.wait_for(rt.wait(h), 10) == 0


async def test_a_missing_executable_is_a_start_error(rt: RuncRuntime) -> None:
    with pytest.raises(RuntimeStartError) as e:
        await rt.start(config(rt, "missing", ["/no/such/program"]))
    assert e.value.reason == "StartError"
    assert "/no/such/program" in e.value.message
    assert not list(rt.bundles.iterdir())


async def test_an_image_that_is_not_here_and_cannot_be_pulled_is_err_image_pull(
        rt: RuncRuntime) -> None:
    with pytest.raises(RuntimeStartError) as e:
        await rt.start(config(rt, "absent", ["true"], image="127.0.0.1:9/absent:v1"))
    # Nothing listens on the discard port: the pull fails (IfNotPresent is the default).
    assert e.value.reason == "ErrImagePull"


async def test_exec_runs_in_the_container_with_and_without_a_tty(rt: RuncRuntime) -> None:
    h = await rt.start(config(rt, "long", ["sh", "-c", "touch /tmp/inside; exec sleep 30"]))
    try:
        await asyncio.sleep(0.2)
        s = await rt.exec(h, ["sh", "-c", "ls /tmp; echo $GREETING; cat /proc/1/cmdline"])
        out, err = await asyncio.wait_for(s.process.communicate(), 10)
        assert s.process.returncode == 0, err
        assert out.split(b"\n")[:2] == [b"inside", b"hello"]
        assert b"sleep" in out  # pid 1 is the container's own process
        s = await rt.exec(h, ["sh", "-c", "read x; echo got $x"], stdin=True)
        out, _ = await asyncio.wait_for(s.process.communicate(b"line\n"), 10)
        assert out == b"got line\n"
        s = await rt.exec(h, ["tty"], tty=True)
        assert s.pty_master is not None
        data = b""
        loop = asyncio.get_running_loop()
        while not data.endswith(b"\n"):
            try:
                chunk = await loop.run_in_executor(None, os.read, s.pty_master, 1024)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        await asyncio.wait_for(s.process.wait(), 10)
        os.close(s.pty_master)
        assert data.strip().startswith(b"/dev/pts/"), data
    finally:
        await rt.stop(h, 0)


async def test_stop_sends_sigterm_then_sigkill_after_the_grace_period(rt: RuncRuntime) -> None:
    polite = await rt.start(config(rt, "polite", [
        "sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done"]))
    stubborn = await rt.start(config(rt, "stubborn", [
        "sh", "-c", "trap 'echo ignored' TERM; while true; do sleep 0.05; done"]))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await rt.stop(polite, 5)
    assert time.monotonic() - t0 < 2
    assert await rt.wait(polite) == 0
    assert ("stdout", "bye") in log_lines(polite.config)
    t0 = time.monotonic()
    await rt.stop(stubborn, 1.0)
    took = time.monotonic() - t0
    assert 1.0 <= took < 4
    assert await rt.wait(stubborn) == 128 + signal.SIGKILL
    assert ("stdout", "ignored") in log_lines(stubborn.config)


async def test_limits_go_to_the_containers_cgroup(rt: RuncRuntime) -> None:
    h = await rt.start(config(rt, "limited", ["sleep", "30"], cpu_millis=250,
                              memory_bytes=64 << 20))
    try:
        hexid = h.id.removeprefix("runc://")
        v1 = Path("/sys/fs/cgroup/memory/shoal") / hexid / "memory.limit_in_bytes"
        v2 = Path("/sys/fs/cgroup/shoal") / hexid / "memory.max"
        mem = v1 if v1.exists() else v2
        assert int(mem.read_text()) == 64 << 20
        cpu_v1 = Path("/sys/fs/cgroup/cpu/shoal") / hexid / "cpu.cfs_quota_us"
        if cpu_v1.exists():
            assert int(cpu_v1.read_text()) == 25000
        else:
            assert (Path("/sys/fs/cgroup/shoal") / hexid / "cpu.max").read_text().split()[0] \
                == "25000"
    finally:
        await rt.stop(h, 0)


async def test_a_restarted_agent_removes_the_containers_it_left_behind(rt: RuncRuntime) -> None:
    keep = await rt.start(config(rt, "keep", ["sleep", "30"]))
    lost = await rt.start(config(rt, "lost", ["sleep", "30"]))
    try:
        fresh = RuncRuntime(rt.data_dir, rt.store, rt.puller)
        assert fresh.cleanup_orphans({keep.id}) == 1
        assert await asyncio.wait_for(rt.wait(lost), 10) == 128 + signal.SIGKILL
        assert not keep.exited.is_set()
    finally:
        await rt.stop(keep, 0)


async def test_a_start_cancelled_while_runc_starts_the_container_leaves_nothing_behind(
        rt: RuncRuntime) -> None:
    # The agent, stopping, cancels a pod worker that is waiting for runc's pid file: that
    # `runc run` was neither killed nor reaped, and its transport, collected once the loop
    # had closed, failed whichever test ran next with "Event loop is closed".
    cancelled = 0
    for attempt in range(3):
        start = asyncio.ensure_future(rt.start(config(rt, f"cut{attempt}", ["sleep", "30"])))
        while not start.done() and not any(rt.state_root.iterdir()):
            await asyncio.sleep(0.001)  # until runc has begun to create the container
        start.cancel()
        try:
            handle = await start
        except asyncio.CancelledError:
            cancelled += 1
        else:  # runc was quicker: stop it, and try again
            await rt.stop(handle, 0)
        assert not any(rt.state_root.iterdir()), "runc still holds a container"
        assert not any(rt.bundles.iterdir()), "a bundle is left behind"
        listed = subprocess.run(rt._cmd("list", "--quiet"), capture_output=True, text=True)
        assert listed.stdout.split() == []
    assert cancelled > 0, "runc started every container before the cancellation landed"
    await settle()


async def test_a_start_cancelled_while_runc_run_is_being_spawned_leaves_nothing_behind(
        rt: RuncRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a loaded node `runc run` can be creating the container before asyncio's spawn has
    # returned: a cancellation landing there lost the process, its state dir and the bundle.
    real_spawn = asyncio.create_subprocess_exec
    spawning = asyncio.Event()

    async def slow_spawn(*argv: str, **kw: Any) -> asyncio.subprocess.Process:
        proc = await real_spawn(*argv, **kw)
        if "run" in argv:
            spawning.set()
            for _ in range(1000):  # returns once runc has begun to create the container
                await asyncio.sleep(0.005)  # where the test's cancellation lands
                if any(rt.state_root.iterdir()):
                    break
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_spawn)
    start = asyncio.ensure_future(rt.start(config(rt, "spawning", ["sleep", "30"])))
    await spawning.wait()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert not any(rt.state_root.iterdir()), "runc still holds a container"
    assert not any(rt.bundles.iterdir()), "a bundle is left behind"
    await settle()


async def test_a_state_dir_holding_runcs_bind_mounted_binary_is_still_removed(
        rt: RuncRuntime) -> None:
    # `runc run` killed while its init bind-mounts runc's binary into the state dir leaves
    # that mount, and `runc delete --force` then fails with "device or resource busy".
    state = rt.state_root / "abc123"
    state.mkdir()
    (state / "runc.Xy12Ab").touch()
    subprocess.run(["mount", "--bind", "-o", "ro", rt.runc, str(state / "runc.Xy12Ab")],
                   check=True)
    bundle = rt.bundles / "abc123"
    (bundle / "rootfs").mkdir(parents=True)
    await rt._delete("abc123", bundle)
    assert not state.exists()
    assert not bundle.exists()
    assert str(state) not in Path("/proc/self/mounts").read_text()


async def test_a_pod_runs_in_runc_under_the_node_agent_and_a_failing_liveness_probe_restarts_it(
        tmp_path: Path, runc_works: str) -> None:
    from shoal.model.kinds import KindRegistry
    from shoal.node.agent import AgentConfig, NodeAgent
    from shoal.node.logs import LogOptions, read_logs
    from shoal.node.node_status import NodeStatusReporter
    from shoal.store.objects import ObjectStore
    from shoal.store.replica import Replica
    from tests.test_node_agent import FAST, NODE, Env, cs, phase

    write_docker_save(tmp_path / "busybox.tar", [busybox_layer()], IMAGE)
    ImageStore(tmp_path).import_archive(tmp_path / "busybox.tar")
    store = ObjectStore(Replica(None, NODE), KindRegistry())
    await NodeStatusReporter(store, NODE, "127.0.0.1").register()
    runtime = make_runtime("runc", tmp_path)
    assert isinstance(runtime, RuncRuntime)
    agent = NodeAgent(store, NODE, "127.0.0.1", tmp_path, runtime,
                      AgentConfig(worker=FAST, status_interval=0.02, resync=1.0))
    await agent.start()
    env = Env(store, agent)
    try:
        await env.create("web", [{
            "name": "c", "image": IMAGE,
            "command": ["sh", "-c", "echo up; touch /tmp/healthy; sleep 1; rm /tmp/healthy; "
                                    "exec sleep 30"],
            "livenessProbe": {"exec": {"command": ["test", "-e", "/tmp/healthy"]},
                              "periodSeconds": 1, "failureThreshold": 1}}],
            # sleep is PID 1 in its pid namespace, so it ignores SIGTERM: SIGKILL after 1s.
            terminationGracePeriodSeconds=1)
        pod = await env.until("web", lambda p: phase(p) == "Running"
                              and "running" in cs(p).get("state", {}))
        assert cs(pod)["containerID"].startswith("runc://")
        pod = await env.until("web", lambda p: cs(p).get("restartCount", 0) >= 1, timeout=20)
        out = b"".join([x async for x in read_logs(
            agent.container_dir(pod, "c") / "0.log", LogOptions())])
        assert out == b"up\n"
    finally:
        await agent.stop()
        runtime.cleanup_orphans(set())
        await runtime.puller.registry.close()
        await settle()
