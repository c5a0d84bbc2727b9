"""The ``metadata.managedFields`` the controllers' writes leave, as in Kubernetes: a create
records one ``Update`` entry by ``kube-controller-manager`` that owns everything the created
object holds (its labels, ownerReferences, spec; not its status, nor the server's metadata).

The entry is built as the API builds a create's (:func:`shoal.model.field_ownership.
created_entries`): the FieldsV1 tree is remembered on the kind's schema by what a writer
may own, so the pods of one template share one tree and a scale-up walks a template once.
An update that records (:func:`updated_by`) walks the old and the new object, as an API
update does: it is used only off the hot path (scaling a ReplicaSet or an autoscaler's
target); other updates record nothing, and the store keeps the entries an object has.
"""

from __future__ import annotations

from typing import Any

from shoal.model import field_schema, managed_fields
from shoal.model.field_ownership import Write, created_entries, updated_entries
from shoal.model.kinds import Kind
from shoal.store.objects import ManagedFieldsOf, ObjectStore, now_rfc3339

CONTROLLER_MANAGER = "kube-controller-manager"
"""The manager Kubernetes' controllers write as (the process's name)."""


def created_by(store: ObjectStore, kind: Kind,
               manager: str = CONTROLLER_MANAGER) -> ManagedFieldsOf:
    """What ``store.create(kind, ..., managed_fields=...)`` records for a create by
    ``manager``, stamped with the store's wall clock now."""
    write = Write(manager, kind.api_version, now_rfc3339(store.replica.wall.now()), "",
                  kind.has_status)
    root = field_schema.for_kind(kind)

    def entries(_old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
        return created_entries(new, root, write)

    return entries


def updated_by(store: ObjectStore, kind: Kind, subresource: str = "",
               manager: str = CONTROLLER_MANAGER) -> ManagedFieldsOf:
    """What ``store.update(kind, ..., managed_fields=...)`` records for an update by
    ``manager`` (through ``subresource`` as Kubernetes' controller would write it): it takes
    the fields it changed from whoever owned them, without a conflict."""
    write = Write(manager, kind.api_version, now_rfc3339(store.replica.wall.now()),
                  subresource, kind.has_status)
    root = field_schema.for_kind(kind)

    def entries(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
        before = managed_fields.decoded_or_none((old or {}).get("metadata", {})
                                                .get("managedFields"))
        return updated_entries(old, new, before, root, write)

    return entries
