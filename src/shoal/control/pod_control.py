"""What controllers do to pods (Kubernetes' PodControl): delete one, once, by uid."""

from __future__ import annotations

import logging
from typing import Any

from shoal.model.kinds import Kind
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)


async def delete_pod(store: ObjectStore, pod_kind: Kind, pod: dict[str, Any]) -> bool:
    """Delete ``pod`` unless it is already going; the uid precondition keeps a newer pod
    of the same name safe. Returns whether a deletion was issued."""
    m = pod["metadata"]
    if m.get("deletionTimestamp"):
        return False
    try:
        await store.delete(pod_kind, m.get("namespace"), m["name"], precondition_uid=m.get("uid"))
        return True
    except StoreError as e:
        log.debug("pod %s not deleted: %s", m["name"], e)
        return False
