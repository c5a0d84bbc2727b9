"""The pieces behind kubectl attach, debug and proxy, in process (no server)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from shoal.api.ephemeral import only_ephemeral
from shoal.api.errors import ApiError
from shoal.api.http_proxy import ChunkedDecoder, split_name
from shoal.node.attach import STDERR, STDOUT, follow_output
from shoal.node.images import ImageConfig
from shoal.node.runtime import ContainerConfig
from shoal.node.runtime_runc import bundle_config

POD: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
    "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "busybox"}]},
}


def with_ephemeral(pod: dict[str, Any], *containers: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    out["spec"]["ephemeralContainers"] = list(containers)
    return out


def test_the_ephemeralcontainers_subresource_changes_only_ephemeral_containers() -> None:
    wanted = with_ephemeral(POD, {"name": "dbg", "image": "busybox"})
    wanted["spec"]["containers"][0]["image"] = "evil"  # not through this subresource
    wanted["metadata"]["labels"] = {"x": "y"}
    new = only_ephemeral(POD, wanted)
    assert new["spec"]["ephemeralContainers"] == [{"name": "dbg", "image": "busybox"}]
    assert new["spec"]["containers"] == POD["spec"]["containers"]
    assert "labels" not in new["metadata"]


@pytest.mark.parametrize("change, message", [
    (lambda p: with_ephemeral(p), "may not be removed"),
    (lambda p: with_ephemeral(p, {"name": "dbg", "image": "other"}), "may not be changed"),
    (lambda p: with_ephemeral(p, {"name": "dbg", "image": "busybox"},
                              {"name": "main", "image": "x"}), "Duplicate value"),
])
def test_ephemeral_containers_may_be_added_but_not_removed_changed_or_named_twice(
        change: Any, message: str) -> None:
    current = with_ephemeral(POD, {"name": "dbg", "image": "busybox"})
    with pytest.raises(ApiError) as e:
        only_ephemeral(current, change(current))
    assert e.value.code == 422 and message in e.value.message


def test_proxy_names_and_chunked_bodies_are_read_as_kubernetes_spells_them() -> None:
    assert split_name("web") == ("", "web", "")
    assert split_name("web:8080") == ("", "web", "8080")
    assert split_name("http:web:http") == ("http", "web", "http")
    body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    for step in (1, 3, len(body)):  # split anywhere, even inside a size line or a CRLF
        d = ChunkedDecoder()
        out = b"".join(d.feed(body[i:i + step]) for i in range(0, len(body), step))
        assert out == b"hello, world" and d.done


def test_attach_sees_only_what_is_written_after_it_each_stream_on_its_channel(
        tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"2026-01-01T00:00:00.000000000Z stdout F before\n")
    done = asyncio.Event()

    async def run() -> list[tuple[int, bytes]]:
        got: list[tuple[int, bytes]] = []

        async def collect() -> None:
            async for item in follow_output(log, lambda: not done.is_set()):
                got.append(item)

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(0.05)
        with log.open("ab") as f:
            f.write(b"2026-01-01T00:00:01.000000000Z stdout F out\n"
                    b"2026-01-01T00:00:01.000000000Z stderr P par\n"
                    b"2026-01-01T00:00:01.000000000Z stderr F tial\n")
        await asyncio.sleep(0.3)
        done.set()  # the container exited: what is left is read, then the stream ends
        await asyncio.wait_for(task, 2)
        return got

    assert asyncio.run(run()) == [(STDOUT, b"out\n"), (STDERR, b"par"), (STDERR, b"tial\n")]


def test_a_runc_ephemeral_container_joins_its_targets_pid_ipc_and_uts_namespaces(
        tmp_path: Path) -> None:
    cfg = ContainerConfig(pod_uid="u", pod_namespace="default", pod_name="web", name="dbg",
                          attempt=0, image="busybox", argv=["sh"], env={}, working_dir=None,
                          log_path=tmp_path / "0.log", join_pid=4242)
    spec = bundle_config(cfg, ImageConfig(), tmp_path, "abc")
    assert spec["linux"]["namespaces"] == [
        {"type": "pid", "path": "/proc/4242/ns/pid"}, {"type": "ipc", "path": "/proc/4242/ns/ipc"},
        {"type": "uts", "path": "/proc/4242/ns/uts"}, {"type": "mount"}]
    alone = bundle_config(ContainerConfig(**{**cfg.__dict__, "join_pid": None}), ImageConfig(),
                          tmp_path, "abc")
    assert {"type": "pid"} in alone["linux"]["namespaces"]
