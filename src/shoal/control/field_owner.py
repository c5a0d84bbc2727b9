"""The ``metadata.managedFields`` the controllers' creates leave, as in Kubernetes: one
``Update`` entry by ``kube-controller-manager`` that owns everything the created object
holds (its labels, ownerReferences, spec; not its status, nor the server's metadata).

The entry is built as the API builds a create's (:func:`shoal.model.field_ownership.
created_entries`): the spec's FieldsV1 tree is remembered on the kind's schema by the
spec's bytes, so the pods of one template share one tree and a scale-up walks a spec once.
Updates by controllers record nothing new: the store keeps the entries an object has.
"""

from __future__ import annotations

from typing import Any

from shoal.model import field_schema
from shoal.model.field_ownership import Write, created_entries
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
