"""Claims, volumes and classes are checked as Kubernetes checks them."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.model.kinds import KindRegistry
from shoal.model.validation import validate

REG = KindRegistry()
PVC = REG.by_kind("v1", "PersistentVolumeClaim")
PV = REG.by_kind("v1", "PersistentVolume")
SC = REG.by_kind("storage.k8s.io/v1", "StorageClass")


def messages(kind: Any, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [str(c) for c in validate(kind, obj, old)]


def claim(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "data", "namespace": "default"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
        **spec}}


def volume(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "pv1"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "hostPath": {"path": "/srv"}, **spec}}


def test_a_good_claim_volume_and_class_pass() -> None:
    assert messages(PVC, claim()) == []
    assert messages(PV, volume()) == []
    assert messages(SC, {"metadata": {"name": "fast"}, "provisioner": "shoal.dev/local-path",
                         "volumeBindingMode": "WaitForFirstConsumer"}) == []


@pytest.mark.parametrize(("spec", "want"), [
    ({"accessModes": []}, "spec.accessModes: Required value: at least 1 access mode is required"),
    ({"accessModes": ["Sometimes"]}, 'spec.accessModes: Unsupported value: "Sometimes"'),
    ({"resources": {}}, "spec.resources[storage]: Required value"),
    ({"resources": {"requests": {"storage": "0"}}},
     'spec.resources[storage]: Invalid value: "0": must be greater than zero'),
])
def test_bad_claims_are_refused(spec: dict[str, Any], want: str) -> None:
    assert any(m.startswith(want) for m in messages(PVC, claim(**spec))), messages(
        PVC, claim(**spec))


def test_a_claim_spec_is_immutable_but_its_binding_and_requests() -> None:
    old = claim()
    assert messages(PVC, claim(volumeName="pv1"), old) == []
    assert messages(PVC, claim(storageClassName="local-path"), old) == []
    assert messages(PVC, claim(resources={"requests": {"storage": "2Gi"}}), old) == []
    bound = claim(volumeName="pv1")
    assert any("spec is immutable after creation" in m
               for m in messages(PVC, claim(volumeName="pv2"), bound))


def test_bad_volumes_are_refused() -> None:
    assert any("must specify a volume type" in m
               for m in messages(PV, volume(hostPath=None)))
    assert any("Local volume requires node affinity" in m
               for m in messages(PV, volume(hostPath=None, local={"path": "/srv"})))
    assert any("may not specify more than 1 volume type" in m
               for m in messages(PV, volume(local={"path": "/srv"}, nodeAffinity={"x": 1})))
    assert any("immutable" in m for m in messages(PV, volume(hostPath={"path": "/b"}), volume()))


def test_a_class_needs_a_provisioner_and_keeps_it() -> None:
    assert any(m.startswith("provisioner: Required value")
               for m in messages(SC, {"metadata": {"name": "x"}}))
    old = {"metadata": {"name": "x"}, "provisioner": "a.io/x", "reclaimPolicy": "Delete"}
    assert any("updates to reclaimPolicy are forbidden" in m
               for m in messages(SC, {**old, "reclaimPolicy": "Retain"}, old))
    assert any(m.startswith('volumeBindingMode: Unsupported value: "Later"')
               for m in messages(SC, {**old, "volumeBindingMode": "Later"}))
