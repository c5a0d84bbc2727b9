"""Short-lived commands are reaped even when the caller gives up on them."""

from __future__ import annotations

import asyncio
import signal

import pytest

from shoal.node.subprocesses import communicate

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
