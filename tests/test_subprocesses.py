"""Short-lived commands are reaped even when the caller gives up on them."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess

import pytest
import uvloop

from shoal.node.subprocesses import SpawnedProcess, communicate

PIPE = asyncio.subprocess.PIPE


async def test_a_command_gets_its_input_and_gives_its_output() -> None:
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "cat; echo oops >&2", stdin=PIPE, stdout=PIPE, stderr=PIPE)
    assert await communicate(proc, b"hello\n") == (b"hello\n", b"oops\n")
    assert proc.returncode == 0


async def test_a_cancelled_command_is_killed_and_reaped_before_the_cancellation_goes_on(
) -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "30", stdout=PIPE, stderr=PIPE)
    task = asyncio.ensure_future(communicate(proc))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proc.returncode == -signal.SIGKILL


async def test_a_command_that_times_out_is_killed_and_reaped() -> None:
    proc = await asyncio.create_subprocess_exec(
        "sleep", "30", stdin=asyncio.subprocess.DEVNULL, stdout=PIPE, stderr=PIPE)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(communicate(proc), 0.05)
    assert proc.returncode == -signal.SIGKILL


async def test_a_command_without_pipes_is_waited_for() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    assert await communicate(proc) == (b"", b"")
    assert proc.returncode == 0


class _Probe(io.FileIO):
    """A child's stdout that, when closed, first opens a pipe (the lowest free numbers, so the
    pipe's own if it was closed already) and then sees whether closing it closed that too."""

    stolen: list[int] = []

    def close(self) -> None:
        if self.closed:
            return
        fresh = os.pipe()
        super().close()
        for fd in fresh:
            try:
                os.fstat(fd)
                os.close(fd)
            except OSError:
                self.stolen.append(fd)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_spawned_commands_pipes_are_closed_once_and_nothing_else_with_them(loop: str) -> None:
    # uvloop closed a pipe's fd in libuv and then again through its file object: in a node,
    # a number another thread had been given meanwhile (a Job pod's log file, a pidfd).
    got: list[bytes] = []

    class Collect(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            got.append(data)

    async def main() -> None:
        for _ in range(3):
            r, w = os.pipe()
            proc = subprocess.Popen(["echo", "out"], stdout=w, stdin=subprocess.PIPE, bufsize=0)
            os.close(w)
            proc.stdout = _Probe(r, "rb")
            child = await SpawnedProcess.attach(proc, output=(Collect, Collect))
            assert await child.wait() == 0
            await asyncio.sleep(0.05)  # the output read to its end
            child.close()
            await asyncio.sleep(0)

    _Probe.stolen = []
    (uvloop.run if loop == "uvloop" else asyncio.run)(main())
    assert b"".join(got) == b"out\n" * 3
    assert _Probe.stolen == []
