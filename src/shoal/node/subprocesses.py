"""Short-lived commands (runc, ip, nft, wg, the CNI plugins) that are always reaped.

``Process.communicate()`` that is cancelled (the agent or the pod network stopping,
a ``wait_for`` timing out) leaves the command running and its transport unclosed.
Collected after its event loop has closed, that transport raises "Event loop is
closed" from ``__del__``, in whatever code runs then. So a cancelled command is
killed and waited for before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib


async def communicate(proc: asyncio.subprocess.Process,
                      stdin: bytes | None = None) -> tuple[bytes, bytes]:
    """``proc.communicate(stdin)``; if that is interrupted, ``proc`` is killed and reaped."""
    try:
        out, err = await proc.communicate(stdin)
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        raise
    return out or b"", err or b""
