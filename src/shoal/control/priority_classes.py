"""The built-in PriorityClasses (``system-node-critical``, ``system-cluster-critical``).

Every peer creates the ones it does not hold at start, with the same content,
so the merge keeps one object each, as kube-apiserver's bootstrap does; a joiner only once its
first pull completed (``manager``), or its creates, the later ones, would give the cluster's
objects new uids.
"""

from __future__ import annotations

import logging
from typing import Any

from shoal.model.validation.resource_policies import SYSTEM_PRIORITY_CLASSES
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

RESOURCE = "priorityclasses.scheduling.k8s.io"


def system_priority_class(name: str) -> dict[str, Any]:
    """One of the built-in classes, as Kubernetes creates it at start."""
    description = ("Used for system critical pods that must not be moved from their current "
                   "node." if name == "system-node-critical" else
                   "Used for system critical pods that must run in the cluster, but can be "
                   "moved to another node if necessary.")
    return {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": SYSTEM_PRIORITY_CLASSES[name],
        "description": description,
        "preemptionPolicy": "PreemptLowerPriority",
    }


async def ensure_system_priority_classes(store: ObjectStore) -> None:
    kind = store.registry.by_kind("scheduling.k8s.io/v1", "PriorityClass")
    assert kind is not None
    for name in SYSTEM_PRIORITY_CLASSES:
        if store.find(kind, None, name) is None:
            try:
                await store.create(kind, system_priority_class(name))
            except StoreError as e:  # another peer's copy arrived first, or a full disk
                log.debug("priority class %s: %s", name, e)
