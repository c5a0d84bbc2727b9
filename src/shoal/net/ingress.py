"""The node's Ingress controller: haproxy configured from its replica, on every node.

It wakes on changes to Ingresses, IngressClasses, Services, EndpointSlices, Secrets and
Nodes, and after a short debounce renders haproxy's configuration
(``shoal.net.ingress_config``); when that or a certificate changed, it writes the
certificates (0600, in a 0700 directory of the data dir) and has haproxy reload
(``shoal.net.ingress_haproxy``). Every node answers every Ingress from its own replica,
also while cut off. It also creates the default IngressClass ``shoal`` (unless this
replica holds it or its tombstone; on a joiner only once its first pull completed,
``may_create_defaults``, while it renders meanwhile) and writes each served Ingress's
``status.loadBalancer.ingress``: the InternalIPs of the Nodes, the same list on every
peer, so concurrent writes agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import grp
import logging
import os
import pwd
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.mesh.catch_up import CatchUp, until_may_create_defaults
from shoal.net.ingress_config import (
    CLASS_NAME,
    Listen,
    Rendered,
    default_class,
    load_balancer_ingress,
    render,
    served,
)
from shoal.net.ingress_haproxy import (
    ConfigRefused,
    HaproxySupervisor,
    haproxy_path,
    stats_socket_path,
)
from shoal.net.replica_follower import cancel, render_loop
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, ObjectStore, StoreError

log = logging.getLogger(__name__)

INGRESSES = "ingresses.networking.k8s.io"
CLASSES = "ingressclasses.networking.k8s.io"
WATCHED = (INGRESSES, CLASSES, "services", "endpointslices.discovery.k8s.io", "secrets",
           "nodes")


@dataclass(frozen=True)
class IngressSettings:
    listen: Listen = field(default_factory=Listen)
    debounce: float = 0.05
    resync: float = 1.0
    write_status: bool = True
    is_reachable: Callable[[str], bool] = field(default=lambda node: True)
    """Whether this node can reach a node now (the mesh's membership); asked at every
    render, and a render runs every ``resync`` seconds, so keep that short."""


def _free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def worker_user() -> str | None:
    """Debian's ``haproxy`` account for the workers when running as root, if it exists."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("haproxy")
        grp.getgrnam("haproxy")
    except KeyError:
        return None
    return "haproxy"


def ingress_ports(host: str, http: int | None, https: int | None) -> tuple[int, int]:
    """The ports asked for; one not asked for is 80 or 443 when this process runs as root
    and the port is free (a second node on the host, a web server), else off (0)."""
    chosen = []
    for asked, default in ((http, 80), (https, 443)):
        if asked is not None:
            chosen.append(asked)
        elif os.geteuid() != 0:
            chosen.append(0)
        elif _free(host, default):
            chosen.append(default)
        else:
            log.warning("ingress: port %d is taken on %s; not answering Ingresses there",
                        default, host)
            chosen.append(0)
    return chosen[0], chosen[1]


def ingress_wanted(http_port: int, https_port: int) -> bool:
    """Whether to run haproxy: a port is asked for and haproxy is installed."""
    if not http_port and not https_port:
        log.info("ingress: off (no --ingress-http-port or --ingress-https-port)")
        return False
    if haproxy_path() is None:
        log.warning("ingress: off: haproxy is not installed (Debian package haproxy)")
        return False
    return True


class IngressController:
    """Renders, checks and applies this node's haproxy configuration on every change."""

    def __init__(self, store: ObjectStore, data_dir: Path,
                 settings: IngressSettings | None = None,
                 supervisor: HaproxySupervisor | None = None) -> None:
        self.store = store
        self.replica = store.replica
        self.settings = settings or IngressSettings()
        self.dir = data_dir / "ingress"
        self.cert_dir = self.dir / "certs"
        self.haproxy = supervisor or HaproxySupervisor(self.dir / "haproxy.cfg",
                                                       self.dir / "haproxy.log")
        self.user = worker_user()
        self.applied: Rendered | None = None
        self.applies = 0
        self.last_render: float | None = None
        """Seconds the last render took."""
        self._task: asyncio.Task[None] | None = None

    def relevant(self, change: Change) -> bool:
        return change.resource in WATCHED

    def desired(self) -> Rendered:
        r = self.replica
        slices = r.list("endpointslices.discovery.k8s.io")
        nodes = {e.get("nodeName") for sl in slices for e in sl.get("endpoints") or []}
        unreachable = frozenset(n for n in nodes if isinstance(n, str)
                                and not self.settings.is_reachable(n))
        return render(r.list(INGRESSES), r.list(CLASSES), r.list("services"), slices,
                      r.list("secrets"), self.settings.listen, str(self.cert_dir),
                      str(stats_socket_path(self.dir)), unreachable, self.user)

    def _write_certificates(self, rendered: Rendered) -> None:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        keep = {Path(f).name for f in rendered.certificates} | {"crt-list"}
        for path, pem in rendered.certificates.items():
            tmp = Path(path + ".tmp")
            tmp.write_text(pem)
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        (self.cert_dir / "crt-list").write_text(rendered.crt_list)
        for old in self.cert_dir.iterdir():
            if old.name not in keep:
                old.unlink(missing_ok=True)

    async def sync(self) -> bool:
        """Render and apply if anything changed; True if haproxy was (re)configured."""
        started = time.perf_counter()
        rendered = self.desired()
        self.last_render = time.perf_counter() - started
        if self.applied is not None and rendered.key() == self.applied.key():
            return False
        self._write_certificates(rendered)
        await self.haproxy.apply(rendered.text)
        self.applied = rendered
        self.applies += 1
        log.debug("ingress: haproxy configured with %d routes, %d certificates",
                  rendered.routes, len(rendered.certificates))
        return True

    async def ensure_default_class(self) -> None:
        kind = self.store.registry.by_kind("networking.k8s.io/v1", "IngressClass")
        assert kind is not None
        if self.replica.entry(kind.resource, "", CLASS_NAME) is not None:
            return
        with contextlib.suppress(AlreadyExists):
            await self.store.create(kind, default_class())

    async def write_status(self) -> int:
        """Set ``status.loadBalancer.ingress`` where it differs; how many were written."""
        kind = self.store.registry.by_kind("networking.k8s.io/v1", "Ingress")
        assert kind is not None
        want = load_balancer_ingress(self.replica.list("nodes"))
        classes = self.replica.list(CLASSES)
        written = 0
        for ing in self.replica.list(INGRESSES):
            if not served(ing, classes):
                continue
            status = ing.get("status") or {}
            if (status.get("loadBalancer") or {}).get("ingress") == want:
                continue
            new = copy.deepcopy(ing)
            new["status"] = {**status, "loadBalancer": {"ingress": want}}
            meta = ing["metadata"]
            try:
                await self.store.update(kind, new, meta.get("namespace"), meta["name"],
                                        subresource="status", check_rv=False)
                written += 1
            except StoreError as e:
                log.debug("ingress: status of %s/%s: %s", meta.get("namespace"),
                          meta["name"], e)
        return written

    def start(self, catch_up: CatchUp | None = None) -> None:
        self._task = asyncio.create_task(self.run(catch_up), name="ingress")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        await self.haproxy.stop()

    async def _step(self) -> None:
        try:
            await self.sync()
        except ConfigRefused as e:
            log.error("ingress: haproxy refused the configuration, keeping the last one: %s", e)
        if self.settings.write_status:
            await self.write_status()

    async def run(self, catch_up: CatchUp | None = None) -> None:
        """Render from now on; create the default class once this peer may (at once on a
        first node, synced alone, or without a mesh)."""
        default_class = asyncio.create_task(self._default_class(catch_up),
                                            name="ingress-default-class")
        try:
            await render_loop(self.replica, self.relevant, self._step, "ingress",
                              resync=self.settings.resync, debounce=self.settings.debounce)
        finally:
            await cancel(default_class)

    async def _default_class(self, catch_up: CatchUp | None) -> None:
        # A joiner's create, the later one, would give the cluster's class a new uid.
        await until_may_create_defaults(catch_up)
        with contextlib.suppress(StoreError):
            await self.ensure_default_class()
