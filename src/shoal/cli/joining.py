"""A first start with ``--join``: retried until the seed answers, and all or nothing.

The join writes its keys and certificates into ``DATA_DIR/pki.joining`` and moves them
into ``pki`` only once the signer has answered, so a join that is stopped, killed or
refused leaves no half-made ``pki`` behind; a leftover ``pki.joining`` is thrown away
by the next start. A seed that cannot be reached is retried with exponential backoff
(1 s doubling to 30 s), logged at every attempt, until ``give_up_after`` seconds if
given, forever otherwise (as a k3s agent keeps retrying under systemd). A refusal
(a bad or spent token, another cluster's CA) is not retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from shoal.mesh import join
from shoal.mesh.pki import NodePKI
from shoal.mesh.transport import TransportError

log = logging.getLogger("shoal")

STAGING = "pki.joining"
FIRST_DELAY = 1.0
MAX_DELAY = 30.0


def staging_dir(pki_dir: Path) -> Path:
    return pki_dir.with_name(STAGING)


def discard_staging(pki_dir: Path) -> None:
    shutil.rmtree(staging_dir(pki_dir), ignore_errors=True)


async def join_with_retry(pki: NodePKI, name: str, hosts: list[str], seed: str, token: str,
                          give_up_after: float | None = None,
                          sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                          clock: Callable[[], float] = time.monotonic) -> None:
    staging = NodePKI(staging_dir(pki.dir))
    delay, attempt, started = FIRST_DELAY, 0, clock()
    try:
        while True:
            attempt += 1
            discard_staging(pki.dir)
            _seed_staging(pki, staging)
            try:
                await join.join_cluster(staging, name, hosts, seed, token)
                break
            except TransportError as e:
                waited = clock() - started
                if give_up_after is not None and waited >= give_up_after:
                    raise join.JoinError(f"cannot join through {seed}: {e} (gave up after "
                                         f"{attempt} attempts in {waited:.0f}s)") from e
                # The last wait is cut short so that the last attempt falls at the limit.
                pause = delay if give_up_after is None else min(delay, give_up_after - waited)
                log.warning("join: cannot reach the seed %s (%s); attempt %d, retrying in "
                            "%.3gs", seed, e, attempt, pause)
                await sleep(pause)
                delay = min(delay * 2, MAX_DELAY)
        _commit(staging, pki)
    finally:
        discard_staging(pki.dir)


def _seed_staging(pki: NodePKI, staging: NodePKI) -> None:
    """A node key already in ``pki`` (a node rejoining after its certificate expired) goes
    into the staging dir, so the signer sees the key the node holds."""
    staging.dir.mkdir(parents=True, mode=0o700)
    key = join.node_key_path(pki)
    if key.exists():
        shutil.copy2(key, join.node_key_path(staging))


def _commit(staging: NodePKI, pki: NodePKI) -> None:
    """Move the join's files into ``pki``: one rename on a first join; file by file, the CA
    certificate last (what marks a join complete), when ``pki`` exists already."""
    if not pki.dir.exists():
        os.rename(staging.dir, pki.dir)
        return
    files = sorted(staging.dir.iterdir(), key=lambda p: p.name == pki.ca_cert.name)
    for path in files:
        os.replace(path, pki.dir / path.name)
