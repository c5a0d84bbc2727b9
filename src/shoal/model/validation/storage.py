"""PersistentVolumeClaim, PersistentVolume and StorageClass, as Kubernetes validates them.

The checks ``kubectl apply`` users meet: access modes, a storage request or capacity, one
volume source, a local volume's node affinity, the reclaim policies and binding modes, and
what may not change afterwards (a claim's spec but its requests, its ``volumeName`` once
and a missing class; a volume's source; a class's provisioner, parameters, reclaim policy
and binding mode).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shoal.model.quantity import QuantityError, parse_quantity
from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _d
from shoal.model.validation.names import is_dns1123_subdomain

ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
VOLUME_MODES = ("Block", "Filesystem")
PV_RECLAIM_POLICIES = ("Delete", "Recycle", "Retain")
SC_RECLAIM_POLICIES = ("Delete", "Retain")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
VOLUME_SOURCES = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "fc",
    "flexVolume", "flocker", "gcePersistentDisk", "glusterfs", "hostPath", "iscsi", "local",
    "nfs", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO",
    "storageos", "vsphereVolume",
)
CLAIM_UPDATE_FORBIDDEN = ("spec is immutable after creation except resources.requests and "
                          "volumeAttributesClassName for bound claims")


def _access_modes(e: _Errors, modes: Any, field: str) -> None:
    if not isinstance(modes, list) or not modes:
        e.required(field, "at least 1 access mode is required")
        return
    for m in modes:
        if m not in ACCESS_MODES:
            e.not_supported(field, m, ACCESS_MODES)
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        e.forbidden(field, "may not use ReadWriteOncePod with other access modes")


def _positive_storage(e: _Errors, value: Any, field: str) -> None:
    if value is None:
        e.required(field, "")
        return
    try:
        q = parse_quantity(value)
    except QuantityError:
        e.invalid(field, value, "quantities must match the regular expression "
                  "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
        return
    if q <= Decimal(0):
        e.invalid(field, value, "must be greater than zero")


def _class_name(e: _Errors, spec: dict[str, Any], field: str) -> None:
    name = spec.get("storageClassName")
    if isinstance(name, str) and name:
        e.each(field, name, is_dns1123_subdomain(name))


def _validate_persistent_volume_claim(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _access_modes(e, spec.get("accessModes"), "spec.accessModes")
    requests = _d(_d(spec.get("resources")).get("requests"))
    _positive_storage(e, requests.get("storage"), "spec.resources[storage]")
    mode = spec.get("volumeMode")
    if mode is not None and mode not in VOLUME_MODES:
        e.not_supported("spec.volumeMode", mode, VOLUME_MODES)
    _class_name(e, spec, "spec.storageClassName")


def _validate_persistent_volume_claim_update(e: _Errors, obj: dict[str, Any],
                                             old: dict[str, Any]) -> None:
    new_spec, old_spec = dict(_d(obj.get("spec"))), dict(_d(old.get("spec")))
    for spec in (new_spec, old_spec):
        spec["resources"] = {k: v for k, v in _d(spec.get("resources")).items()
                             if k != "requests"}
        spec.pop("volumeAttributesClassName", None)
    if not old_spec.get("volumeName"):  # the binder sets it, once
        old_spec.pop("volumeName", None)
        new_spec.pop("volumeName", None)
    if old_spec.get("storageClassName") is None:  # a default class given afterwards
        old_spec.pop("storageClassName", None)
        new_spec.pop("storageClassName", None)
    if new_spec != old_spec:
        e.forbidden("spec", CLAIM_UPDATE_FORBIDDEN)


def _validate_persistent_volume(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    capacity = spec.get("capacity")
    if not isinstance(capacity, dict) or not capacity:
        e.required("spec.capacity", "")
    else:
        _positive_storage(e, capacity.get("storage"), "spec.capacity[storage]")
    _access_modes(e, spec.get("accessModes"), "spec.accessModes")
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy is not None and policy not in PV_RECLAIM_POLICIES:
        e.not_supported("spec.persistentVolumeReclaimPolicy", policy, PV_RECLAIM_POLICIES)
    mode = spec.get("volumeMode")
    if mode is not None and mode not in VOLUME_MODES:
        e.not_supported("spec.volumeMode", mode, VOLUME_MODES)
    _class_name(e, spec, "spec.storageClassName")
    sources = [s for s in VOLUME_SOURCES if spec.get(s) is not None]
    if not sources:
        e.required("spec", "must specify a volume type")
    for extra in sources[1:]:
        e.forbidden(f"spec.{extra}", "may not specify more than 1 volume type")
    for source in ("hostPath", "local"):
        if spec.get(source) is not None and not _d(spec[source]).get("path"):
            e.required(f"spec.{source}.path", "")
    if spec.get("local") is not None and not spec.get("nodeAffinity"):
        e.required("spec.nodeAffinity", "Local volume requires node affinity")


def _validate_persistent_volume_update(e: _Errors, obj: dict[str, Any],
                                       old: dict[str, Any]) -> None:
    new_spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    if {s: new_spec.get(s) for s in VOLUME_SOURCES} != {s: old_spec.get(s) for s in VOLUME_SOURCES}:
        e.forbidden("spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation")
    if old_spec.get("nodeAffinity") and new_spec.get("nodeAffinity") != old_spec["nodeAffinity"]:
        e.invalid("spec.nodeAffinity", new_spec.get("nodeAffinity"), "field is immutable")


def _validate_storage_class(e: _Errors, obj: dict[str, Any]) -> None:
    provisioner = obj.get("provisioner")
    if not isinstance(provisioner, str) or not provisioner:
        e.required("provisioner", "")
    else:
        e.each("provisioner", provisioner, is_dns1123_subdomain(provisioner.replace("/", ".")))
    policy = obj.get("reclaimPolicy")
    if policy is not None and policy not in SC_RECLAIM_POLICIES:
        e.not_supported("reclaimPolicy", policy, SC_RECLAIM_POLICIES)
    mode = obj.get("volumeBindingMode")
    if mode is not None and mode not in BINDING_MODES:
        e.not_supported("volumeBindingMode", mode, BINDING_MODES)


def _validate_storage_class_update(e: _Errors, obj: dict[str, Any],
                                   old: dict[str, Any]) -> None:
    for key in ("parameters", "provisioner", "reclaimPolicy"):
        if obj.get(key) != old.get(key):
            e.forbidden(key, f"updates to {key} are forbidden.")
    if obj.get("volumeBindingMode") != old.get("volumeBindingMode"):
        e.invalid("volumeBindingMode", obj.get("volumeBindingMode"), "field is immutable")
