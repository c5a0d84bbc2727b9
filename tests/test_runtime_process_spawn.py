"""The process runtime spawns containers off the event loop and still sees them whole."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shoal.node.runtime import ContainerConfig
from shoal.node.runtime_process import ProcessRuntime


def config(tmp_path: Path, argv: list[str], stdin: bool = False) -> ContainerConfig:
    return ContainerConfig(pod_uid="u", pod_namespace="default", pod_name="p", name="c",
                           attempt=0, image="busybox", argv=argv, env={}, working_dir=None,
                           log_path=tmp_path / "c" / "0.log", stdin=stdin)


@pytest.fixture
def no_loop_spawns(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*_: Any, **__: Any) -> None:
        raise AssertionError("the event loop spawned a container process")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", refused)


async def test_a_container_runs_logs_and_exits_without_the_loop_spawning_it(
        tmp_path: Path, no_loop_spawns: None) -> None:
    rt = ProcessRuntime(tmp_path)
    handle = await rt.start(config(tmp_path, ["sh", "-c", "echo out; echo err >&2; exit 3"]))
    assert await asyncio.wait_for(rt.wait(handle), 10) == 3
    log = (tmp_path / "c" / "0.log").read_text()
    assert " stdout F out\n" in log and " stderr F err\n" in log


async def test_a_containers_stdin_pipe_reaches_it_and_a_stop_ends_it(
        tmp_path: Path, no_loop_spawns: None) -> None:
    rt = ProcessRuntime(tmp_path)
    handle = await rt.start(config(tmp_path, ["sh", "-c", "read line; echo got $line; sleep 30"],
                                   stdin=True))
    assert handle.stdin is not None
    handle.stdin.write(b"hello\n")
    await handle.stdin.drain()
    log = tmp_path / "c" / "0.log"
    for _ in range(200):
        if log.exists() and "got hello" in log.read_text():
            break
        await asyncio.sleep(0.02)
    assert "stdout F got hello" in log.read_text()
    await rt.stop(handle, grace=5)
    assert handle.exited.is_set() and handle.exit_code is not None


async def test_a_missing_command_is_a_start_error(tmp_path: Path) -> None:
    from shoal.node.runtime import RuntimeStartError

    with pytest.raises(RuntimeStartError, match="no-such-command"):
        await ProcessRuntime(tmp_path).start(config(tmp_path, ["no-such-command-here"]))


async def test_an_exec_in_a_container_runs_without_the_loop_spawning_it(
        tmp_path: Path, no_loop_spawns: None) -> None:
    from shoal.node.subprocesses import communicate

    rt = ProcessRuntime(tmp_path)
    handle = await rt.start(config(tmp_path, ["sleep", "30"]))
    session = await rt.exec(handle, ["sh", "-c", "cat; echo done >&2; exit 4"], stdin=True)
    out, err = await asyncio.wait_for(communicate(session.process, b"in\n"), 10)
    assert (out, err, session.process.returncode) == (b"in\n", b"done\n", 4)
    await rt.stop(handle, grace=5)


async def test_long_lines_are_split_and_a_last_line_without_newline_is_logged(
        tmp_path: Path) -> None:
    from shoal.node.runtime_process import PARTIAL_LINE

    rt = ProcessRuntime(tmp_path)
    script = (f"head -c {PARTIAL_LINE + 10} /dev/zero | tr '\\0' x; sleep 0.3; echo; "
              "printf 'a\\nb'; printf tail >&2")
    handle = await rt.start(config(tmp_path, ["sh", "-c", script]))
    assert await asyncio.wait_for(rt.wait(handle), 10) == 0
    records = [line.split(" ", 3)[1:] for line in
               (tmp_path / "c" / "0.log").read_text().splitlines()]
    assert ["stdout", "P", "x" * PARTIAL_LINE] in records
    assert ["stdout", "F", "x" * 10] in records
    assert ["stdout", "F", "a"] in records and ["stdout", "F", "b"] in records
    assert ["stderr", "F", "tail"] in records
