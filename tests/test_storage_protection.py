"""pvc-protection and pv-protection: a claim or volume in use stays Terminating until freed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.storage_protection import (
    PV_FINALIZER,
    PVC_FINALIZER,
    StorageProtection,
    add_finalizer,
)
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import ManualClock

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


POD, PVC, PV = kind("v1", "Pod"), kind("v1", "PersistentVolumeClaim"), \
    kind("v1", "PersistentVolume")


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1", clock=ManualClock()), REG)
    s.admission.append(add_finalizer)
    await s.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


def claim(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


def pod_using(name: str, claim_name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "nodeName": "n1", "containers": [{"name": "c", "image": "x"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}]}}


async def test_a_claim_deleted_while_a_pod_uses_it_stays_until_the_pod_is_gone(
        store: ObjectStore) -> None:
    made = await store.create(PVC, claim("data"), "default")
    assert made["metadata"]["finalizers"] == [PVC_FINALIZER]
    await store.create(POD, pod_using("db", "data"), "default")
    protection = StorageProtection(store)
    await store.delete(PVC, "default", "data")
    await protection.sync()
    held = store.find(PVC, "default", "data")
    assert held is not None and held["metadata"].get("deletionTimestamp")
    await store.delete(POD, "default", "db", grace_period=0)
    await protection.sync()
    assert store.find(PVC, "default", "data") is None


async def test_a_bound_volume_stays_until_its_claim_is_gone(store: ObjectStore) -> None:
    c = await store.create(PVC, claim("data"), "default")
    await store.create(PV, {"metadata": {"name": "pv-1"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "hostPath": {"path": "/tmp/pv-1"},
        "claimRef": {"namespace": "default", "name": "data", "uid": c["metadata"]["uid"]}}})
    assert store.get(PV, None, "pv-1")["metadata"]["finalizers"] == [PV_FINALIZER]
    protection = StorageProtection(store)
    await store.delete(PV, None, "pv-1")
    await protection.sync()
    assert store.find(PV, None, "pv-1") is not None
    await store.delete(PVC, "default", "data")
    await protection.sync()  # the claim goes (no pod), then the volume is free
    await protection.sync()
    assert store.find(PVC, "default", "data") is None
    assert store.find(PV, None, "pv-1") is None


async def test_a_claim_written_without_the_finalizer_gets_it(store: ObjectStore) -> None:
    store.admission.remove(add_finalizer)  # as a peer without the admission wrote it
    await store.create(PVC, claim("old"), "default")
    await StorageProtection(store).sync()
    assert store.get(PVC, "default", "old")["metadata"]["finalizers"] == [PVC_FINALIZER]
