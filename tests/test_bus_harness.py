"""Helpers for the bus tests: certificates and nats-servers configured by shoal.bus from
hand-written Node objects, all on 127.0.0.1 (no test of its own lives here)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from shoal.bus import nats_config, site_topology
from shoal.bus.nats_config import BusSettings, TlsFiles
from shoal.bus.supervisor import NatsSupervisor, nats_server_path
from shoal.mesh import pki
from tests.conftest import free_port


def need_nats_server() -> str:
    """The nats-server binary; without it a test skips, or fails under CI=true."""
    path = nats_server_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nats-server is not installed (scripts/bootstrap-debian.sh installs it)")
        pytest.skip("nats-server is not installed")
    return path


def make_ca() -> pki.KeyPair:
    return pki.create_ca("bus-test-ca")


def write_tls(ca: pki.KeyPair, name: str, where: Path) -> TlsFiles:
    """A node's certificate as Shoal's server.crt is made (server and client use, the
    loopback address), with the CA that signed it."""
    where.mkdir(parents=True, exist_ok=True)
    leaf = pki.issue(ca, name, dns_names=("localhost", name), ips=("127.0.0.1",),
                     server=True, client=True)
    files = TlsFiles(where / "server.crt", where / "server.key", where / "ca.crt")
    files.cert.write_bytes(leaf.cert_pem)
    files.key.write_bytes(leaf.key_pem)
    files.ca.write_bytes(ca.cert_pem)
    return files


@dataclass
class Peer:
    name: str
    site: str
    hub: bool
    settings: BusSettings
    supervisor: NatsSupervisor | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.settings.client_port}"

    def node(self) -> dict[str, Any]:
        s = self.settings
        labels = {site_topology.ZONE_LABEL: self.site}
        if self.hub:
            labels[site_topology.HUB_LABEL] = "true"
        return {"metadata": {"name": self.name, "labels": labels, "annotations": {
            site_topology.CLIENT_ANNOTATION: s.endpoint(s.client_port),
            site_topology.CLUSTER_ANNOTATION: s.endpoint(s.cluster_port),
            site_topology.LEAF_ANNOTATION: s.endpoint(s.leafnode_port),
            site_topology.PIN_ANNOTATION: nats_config.spki_sha256(s.tls.cert.read_bytes())
            if s.tls else ""}}}


@dataclass
class Bus:
    """nats-servers for a set of peers, each configured as its NodeBus would."""

    root: Path
    ca: pki.KeyPair = field(default_factory=make_ca)
    peers: dict[str, Peer] = field(default_factory=dict)

    def add(self, name: str, site: str, hub: bool = False, tls: TlsFiles | None = None,
            leafnode_port: int | None = None) -> Peer:
        tls = tls or write_tls(self.ca, name, self.root / name / "pki")
        settings = BusSettings(name=name, store_dir=self.root / name / "js",
                               client_port=free_port(), cluster_port=free_port(),
                               leafnode_port=leafnode_port or free_port(), tls=tls)
        peer = Peer(name, site, hub, settings)
        self.peers[name] = peer
        return peer

    def config(self, peer: Peer, nodes: Iterable[dict[str, Any]] | None = None,
               leaf_via: dict[str, int] | None = None) -> dict[str, Any]:
        """``leaf_via``: hub peer name -> a port that stands in for its leaf port (a
        proxy the test can cut)."""
        all_nodes = [p.node() for p in self.peers.values()] if nodes is None else list(nodes)
        if leaf_via:
            for n in all_nodes:
                name = n["metadata"]["name"]
                if name in leaf_via:
                    n["metadata"]["annotations"][site_topology.LEAF_ANNOTATION] = (
                        f"127.0.0.1:{leaf_via[name]}")
        me = site_topology.peer_of_node(peer.node())
        assert me is not None
        topo = site_topology.topology(me, all_nodes)
        return nats_config.render(peer.settings, topo)

    async def start(self, peer: Peer, conf: dict[str, Any] | None = None) -> NatsSupervisor:
        d = self.root / peer.name
        sup = NatsSupervisor(d / "nats-server.json", d / "nats-server.pid",
                             d / "nats-server.log", min_backoff=0.1)
        await sup.start(nats_config.config_text(conf or self.config(peer)))
        peer.supervisor = sup
        await wait_port(peer.settings.client_port)
        return sup

    async def stop(self) -> None:
        for p in self.peers.values():
            if p.supervisor is not None:
                await p.supervisor.stop()

    def log(self, name: str) -> str:
        path = self.root / name / "nats-server.log"
        return path.read_text(errors="replace") if path.exists() else ""


async def wait_port(port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


class CuttableProxy:
    """A TCP relay standing in for an uplink: :meth:`cut` drops every connection and
    refuses new ones until :meth:`heal`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, uw}

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()
                self._writers.discard(w)

        await asyncio.gather(pump(reader, uw), pump(ur, writer))

    def cut(self) -> None:
        self.open = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def with_leaf_port(settings: BusSettings, port: int) -> BusSettings:
    return replace(settings, leafnode_port=port)
