"""A joiner writes the defaults it lacks (the cluster-wide ones, each namespace's ``default``
ServiceAccount and ``kube-root-ca.crt``, the IngressClass) only once its first pull completed
(``catch_up.may_create_defaults``), not once merely caught up: caught up as cut off (its seed
held dead over a slow link), its replica is empty, and its creates would be the later ones
and replace the cluster's objects in the merge. A first node, alone, writes them at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.control import manager
from shoal.mesh.catch_up import CatchUp
from shoal.model.kinds import KindRegistry
from shoal.net.cluster_dns import ClusterDns, DnsSettings
from shoal.net.ingress import IngressController
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.test_caught_up import _catch_up

REG = KindRegistry()
CLUSTER_ROLE = REG.by_kind("rbac.authorization.k8s.io/v1", "ClusterRole")
STORAGE_CLASS = REG.by_kind("storage.k8s.io/v1", "StorageClass")
PRIORITY_CLASS = REG.by_kind("scheduling.k8s.io/v1", "PriorityClass")
NAMESPACE, SERVICE = REG.by_kind("v1", "Namespace"), REG.by_kind("v1", "Service")
SERVICE_ACCOUNT, CONFIG_MAP = REG.by_kind("v1", "ServiceAccount"), REG.by_kind("v1", "ConfigMap")
INGRESS_CLASS = REG.by_kind("networking.k8s.io/v1", "IngressClass")
CA_PEM = b"-----BEGIN CERTIFICATE-----\n"  # the ServiceAccounts controller copies it as is


def _defaults(store: ObjectStore) -> dict[str, bool]:
    """Which of the defaults this replica holds."""
    assert CLUSTER_ROLE is not None and STORAGE_CLASS is not None and PRIORITY_CLASS is not None
    return {"rbac policy": store.find(CLUSTER_ROLE, None, "cluster-admin") is not None,
            "local-path": store.find(STORAGE_CLASS, None, "local-path") is not None,
            "priority classes": all(store.find(PRIORITY_CLASS, None, name) is not None
                                    for name in ("system-node-critical",
                                                 "system-cluster-critical"))}


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    return check()


@contextlib.asynccontextmanager
async def _controllers(store: ObjectStore, c: CatchUp, **kw: Any) -> AsyncIterator[None]:
    """The node's controllers (``manager.start``), running for the block."""
    tasks = manager.start(store, caught_up=c, **kw)
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "pi-2"), REG)
    yield s
    s.replica.close()


async def test_a_joiner_caught_up_as_cut_off_writes_no_default_until_a_pull_completes(
        store: ObjectStore) -> None:
    c, ae = _catch_up(["pi-1"])
    async with _controllers(store, c):
        ae.pulled("pi-1", False)  # its seed held dead: caught up, the controllers run
        assert c.done() and not c.synced
        await asyncio.sleep(0.5)
        assert _defaults(store) == dict.fromkeys(_defaults(store), False)
        ae.pulled("pi-1", True)
        assert await _until(lambda: all(_defaults(store).values())), _defaults(store)


async def test_a_first_node_alone_writes_the_defaults_at_once(store: ObjectStore) -> None:
    c, _ = _catch_up([], expect_peers=False)
    async with _controllers(store, c):
        assert await _until(lambda: all(_defaults(store).values()), timeout=2.0), (
            _defaults(store))


async def test_a_joiners_kube_dns_waits_for_the_pull_and_then_for_kube_system(
        store: ObjectStore) -> None:
    """Once synced, it is created within a second of ``kube-system`` arriving, not at the
    next 30 s check (a joiner cut off at its join creates both at the same bound)."""
    assert NAMESPACE is not None and SERVICE is not None
    c, ae = _catch_up(["pi-1"])
    dns = ClusterDns(store, DnsSettings(port=0))  # no listener: the Service alone
    await dns.start(c)
    try:
        ae.pulled("pi-1", False)
        await asyncio.sleep(0.3)
        assert store.find(SERVICE, "kube-system", "kube-dns") is None
        ae.pulled("pi-1", True)  # synced, but this cluster's kube-system is still to come
        await asyncio.sleep(0.3)
        assert store.find(SERVICE, "kube-system", "kube-dns") is None
        await store.create(NAMESPACE, {"metadata": {"name": "kube-system"}})
        assert await _until(lambda: store.find(SERVICE, "kube-system", "kube-dns") is not None,
                            timeout=3.0)
    finally:
        await dns.stop()


async def test_a_first_nodes_kube_dns_is_there_when_its_dns_has_started(
        store: ObjectStore) -> None:
    assert NAMESPACE is not None and SERVICE is not None
    await store.create(NAMESPACE, {"metadata": {"name": "kube-system"}})
    c, _ = _catch_up([], expect_peers=False)
    dns = ClusterDns(store, DnsSettings(port=0))
    await dns.start(c)
    try:
        assert store.find(SERVICE, "kube-system", "kube-dns") is not None
    finally:
        await dns.stop()


def _accounts(store: ObjectStore, namespace: str = "team") -> dict[str, bool]:
    """Whether this replica holds the namespace's ServiceAccount and CA ConfigMap."""
    assert SERVICE_ACCOUNT is not None and CONFIG_MAP is not None
    return {"default": store.find(SERVICE_ACCOUNT, namespace, "default") is not None,
            "kube-root-ca.crt": store.find(CONFIG_MAP, namespace, "kube-root-ca.crt") is not None}


async def test_a_joiner_caught_up_as_cut_off_makes_no_service_account_until_a_pull_completes(
        store: ObjectStore) -> None:
    """A Namespace pushed to the joiner before its first pull completed, without its
    ServiceAccount yet: created then, ``default`` would take a new uid in the merge, and every
    token naming the cluster's would stop verifying."""
    assert NAMESPACE is not None
    await store.create(NAMESPACE, {"metadata": {"name": "team"}})
    c, ae = _catch_up(["pi-1"])
    async with _controllers(store, c, ca_cert_pem=CA_PEM):
        ae.pulled("pi-1", False)
        assert c.done() and not c.synced
        await asyncio.sleep(0.5)
        assert _accounts(store) == {"default": False, "kube-root-ca.crt": False}
        ae.pulled("pi-1", True)
        assert await _until(lambda: all(_accounts(store).values())), _accounts(store)


async def test_a_first_node_alone_makes_each_namespaces_service_account_at_once(
        store: ObjectStore) -> None:
    assert NAMESPACE is not None
    await store.create(NAMESPACE, {"metadata": {"name": "team"}})
    c, _ = _catch_up([], expect_peers=False)
    async with _controllers(store, c, ca_cert_pem=CA_PEM):
        assert await _until(lambda: all(_accounts(store).values()), timeout=2.0), (
            _accounts(store))


class _Haproxy:
    """Counts the configurations it is given, instead of running haproxy."""

    def __init__(self) -> None:
        self.applied = 0

    async def apply(self, text: str) -> None:
        self.applied += 1

    async def stop(self) -> None:
        pass


def _ingress(store: ObjectStore, tmp_path: Path) -> IngressController:
    return IngressController(store, tmp_path, supervisor=_Haproxy())  # type: ignore[arg-type]


def _has_class(store: ObjectStore) -> bool:
    assert INGRESS_CLASS is not None
    return store.find(INGRESS_CLASS, None, "shoal") is not None


async def test_a_joiners_ingress_renders_at_once_and_makes_its_class_after_the_pull(
        store: ObjectStore, tmp_path: Path) -> None:
    c, ae = _catch_up(["pi-1"])
    ingress = _ingress(store, tmp_path)
    ingress.start(c)
    try:
        ae.pulled("pi-1", False)
        assert await _until(lambda: ingress.applies > 0, timeout=2.0)  # not behind the class
        await asyncio.sleep(0.5)
        assert not _has_class(store)
        ae.pulled("pi-1", True)
        assert await _until(lambda: _has_class(store), timeout=2.0)
    finally:
        await ingress.stop()


async def test_a_first_nodes_ingress_makes_its_class_at_once(
        store: ObjectStore, tmp_path: Path) -> None:
    c, _ = _catch_up([], expect_peers=False)
    ingress = _ingress(store, tmp_path)
    ingress.start(c)
    try:
        assert await _until(lambda: _has_class(store), timeout=2.0)
    finally:
        await ingress.stop()
