"""The local-path provisioner and the volume binder, in process."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.control.ownership import SinglePeer
from shoal.control.persistent_volumes import (
    DEFAULT_CLASS,
    PersistentVolumeBinder,
    default_class,
    ensure_default_class,
)
from shoal.model.kinds import Kind, KindRegistry
from shoal.node import volumes
from shoal.node.local_volumes import ClaimPending, LocalVolumes, node_of
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


NS, PVC, PV = kind("v1", "Namespace"), kind("v1", "PersistentVolumeClaim"), kind(
    "v1", "PersistentVolume")
SC = kind("storage.k8s.io/v1", "StorageClass")
POD = kind("v1", "Pod")


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1"), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    await ensure_default_class(s)
    yield s
    s.replica.close()


def claim(name: str, cls: str | None = DEFAULT_CLASS, size: str = "1Gi") -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    return {"metadata": {"name": name}, "spec": spec}


def pod_using(*claims: str) -> dict[str, Any]:
    return {"metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"nodeName": "n1", "volumes": [
                {"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                for i, c in enumerate(claims)]}}


async def test_the_default_class_is_created_once_and_not_brought_back(
        store: ObjectStore) -> None:
    sc = store.get(SC, None, DEFAULT_CLASS)
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    await ensure_default_class(store)
    await store.delete(SC, None, DEFAULT_CLASS)
    await ensure_default_class(store)  # a restart: the administrator's deletion stands
    assert store.find(SC, None, DEFAULT_CLASS) is None


async def test_a_claim_is_bound_to_a_directory_on_the_node_that_runs_its_pod(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(PVC, claim("data-web-0"), "default")
    local = LocalVolumes(store, "n1", lambda: tmp_path)
    await local.provision_for(pod_using("data-web-0"))
    c = store.get(PVC, "default", "data-web-0")
    assert c["status"]["phase"] == "Bound"
    assert c["status"]["capacity"] == {"storage": "1Gi"}
    pv = store.get(PV, None, c["spec"]["volumeName"])
    assert pv["status"]["phase"] == "Bound" and node_of(pv) == "n1"
    assert pv["spec"]["claimRef"]["uid"] == c["metadata"]["uid"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    path = Path(pv["spec"]["local"]["path"])
    assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o777
    # The pod's volume is that directory; a second pass changes nothing.
    lookup = store.replica.get
    assert volumes.prepare(pod_using("data-web-0"), tmp_path / "pod", lookup) == {"v0": path}
    await local.provision_for(pod_using("data-web-0"))
    assert len(store.list(PV)) == 1


async def test_a_claim_that_cannot_be_bound_here_keeps_the_pod_waiting(
        store: ObjectStore, tmp_path: Path) -> None:
    local = LocalVolumes(store, "n1", lambda: tmp_path)
    with pytest.raises(ClaimPending, match="not found"):
        await local.provision_for(pod_using("missing"))
    await store.create(SC, {**default_class(), "metadata": {"name": "nfs"},
                            "provisioner": "example.com/nfs"})
    await store.create(PVC, claim("other", "nfs"), "default")
    with pytest.raises(ClaimPending, match="not bound"):
        await local.provision_for(pod_using("other"))
    with pytest.raises(volumes.VolumeError, match="not bound"):
        volumes.prepare(pod_using("other"), tmp_path / "pod", store.replica.get)


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
async def test_a_released_volume_is_deleted_or_retained_by_its_policy(
        store: ObjectStore, tmp_path: Path, policy: str) -> None:
    await store.create(SC, {**default_class(), "metadata": {"name": "local"},
                            "reclaimPolicy": policy})
    await store.create(PVC, claim("data", "local"), "default")
    local = LocalVolumes(store, "n1", lambda: tmp_path)
    await local.provision_for(pod_using("data"))
    pv_name = store.get(PVC, "default", "data")["spec"]["volumeName"]
    path = Path(store.get(PV, None, pv_name)["spec"]["local"]["path"])
    (path / "file").write_text("kept?")
    await local.reclaim()
    assert path.exists()  # still claimed
    await store.delete(PVC, "default", "data")
    await local.reclaim()
    if policy == "Delete":
        assert store.find(PV, None, pv_name) is None and not path.exists()
    else:
        assert store.get(PV, None, pv_name)["status"]["phase"] == "Released"
        assert (path / "file").read_text() == "kept?"


async def test_another_nodes_volume_is_left_alone(store: ObjectStore, tmp_path: Path) -> None:
    await store.create(PVC, claim("data"), "default")
    await LocalVolumes(store, "n1", lambda: tmp_path).provision_for(pod_using("data"))
    await store.delete(PVC, "default", "data")
    await LocalVolumes(store, "n2", lambda: tmp_path).reclaim()
    assert len(store.list(PV)) == 1


async def test_the_binder_binds_a_static_volume_and_defaults_the_class(
        store: ObjectStore) -> None:
    for name, size in (("big", "10Gi"), ("small", "2Gi"), ("tiny", "1Mi")):
        await store.create(PV, {"metadata": {"name": name}, "spec": {
            "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual", "hostPath": {"path": "/tmp"}}})
    await store.create(PVC, claim("static", "manual", "1Gi"), "default")
    await store.create(PVC, claim("plain", None), "default")
    binder = PersistentVolumeBinder(store, SinglePeer("n1"))
    await binder.sync()
    c = store.get(PVC, "default", "static")
    assert c["spec"]["volumeName"] == "small" and c["status"]["phase"] == "Bound"
    assert store.get(PV, None, "big")["status"]["phase"] == "Available"
    assert store.get(PV, None, "small")["status"]["phase"] == "Bound"
    assert store.get(PVC, "default", "plain")["spec"]["storageClassName"] == DEFAULT_CLASS
    await store.delete(PVC, "default", "static")
    await binder.sync()
    assert store.get(PV, None, "small")["status"]["phase"] == "Released"


async def test_a_volume_is_not_reclaimed_under_a_pod_that_still_uses_it(
        store: ObjectStore, tmp_path: Path) -> None:
    await store.create(PVC, claim("data"), "default")
    local = LocalVolumes(store, "n1", lambda: tmp_path)
    pod = pod_using("data")
    await local.provision_for(pod)
    pod["spec"]["containers"] = [{"name": "c", "image": "db:1"}]
    await store.create(POD, pod, "default")
    await store.delete(PVC, "default", "data")
    await local.reclaim()
    assert len(store.list(PV)) == 1  # web-0 still runs with it
    await store.delete(POD, "default", "web-0")
    await local.reclaim()
    assert store.list(PV) == []
