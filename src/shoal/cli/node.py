"""Assembling and running one Shoal node: replica, controllers, node status and the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from shoal.api.server import ApiServer, Credentials, server_ssl_context
from shoal.control import manager
from shoal.control.crd_establishing import CRD_RESOURCE, crd_observer
from shoal.mesh.pki import NodePKI
from shoal.model.kinds import KindRegistry
from shoal.node.node_status import NodeStatusReporter
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

log = logging.getLogger("shoal")


@dataclass
class NodeConfig:
    name: str
    data_dir: Path
    bind: str = "127.0.0.1"
    api_port: int = 6443
    advertise: str | None = None
    bookmark_interval: float = 60.0
    summary_interval: float = 60.0
    heartbeat_interval: float = 10.0


class ShoalNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.registry = KindRegistry()
        self.replica = Replica(cfg.data_dir, cfg.name)
        self.store = ObjectStore(self.replica, self.registry)
        self.store.observers.append(
            lambda kind, old, new: crd_observer(kind, old, new, self.registry)
        )
        for crd in self.replica.list(CRD_RESOURCE):
            self.registry.register_crd(crd)
        self.pki = NodePKI(cfg.data_dir / "pki")
        advertise = cfg.advertise or (cfg.bind if cfg.bind not in ("0.0.0.0", "::") else "127.0.0.1")
        self.advertise = advertise
        self.pki.ensure(cfg.name, [cfg.bind, advertise])
        self.url = f"https://{_host_for_url(advertise)}:{cfg.api_port}"
        self.api = ApiServer(
            self.store, self.registry,
            Credentials({self.pki.admin_token.read_text().strip(): "shoal-admin"}),
            server_address=f"{advertise}:{cfg.api_port}",
            bookmark_interval=cfg.bookmark_interval,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        reporter = NodeStatusReporter(self.store, self.cfg.name, self.advertise,
                                      self.cfg.heartbeat_interval)
        await reporter.register()
        # Build the OpenAPI documents off the loop so kubectl's first request does not wait.
        warm = asyncio.get_running_loop().run_in_executor(None, self.api.openapi.warm)
        self._tasks += manager.start(self.store)
        self._tasks.append(asyncio.create_task(reporter.run(), name="node-status"))
        self._tasks.append(asyncio.create_task(self.api.summary_loop(self.cfg.summary_interval),
                                               name="summary"))
        ctx = server_ssl_context(str(self.pki.server_cert), str(self.pki.server_key),
                                 str(self.pki.ca_cert))
        self._runner = web.AppRunner(self.api.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.bind, self.cfg.api_port, ssl_context=ctx,
                           backlog=1024)
        await site.start()
        await warm
        (self.cfg.data_dir / "server-url").write_text(self.url + "\n")
        log.info("node %s serving the Kubernetes API on %s (data in %s, revision %d)",
                 self.cfg.name, self.url, self.cfg.data_dir, self.replica.revision)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._runner is not None:
            await self._runner.cleanup()
        self.replica.close()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(cfg: NodeConfig) -> None:
    node = ShoalNode(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    log.info("node %s stopping", cfg.name)
    await node.stop()
