"""Recording Kubernetes Events, deduplicated like the client-go recorder (count, lastTimestamp)."""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)


def time_ordered_name(object_name: str, seconds: float) -> str:
    """``<object>.<time in ns, hex>``, as client-go names events: kubectl sorts events by
    their second, and events of one second keep the list's order, which is by name."""
    return f"{object_name}.{round(seconds * 1e9):x}"


async def record(store: ObjectStore, obj: dict[str, Any], event_type: str, reason: str,
                 message: str, component: str, name: str | None = None) -> None:
    """An Event about ``obj``; a repeat of the same one bumps its count.

    ``name`` None: derived from the object, reason and message, so that every peer
    recording the same event writes the same one. A single recorder (the node agent)
    may name events by time instead, so that they list in the order they happened.
    """
    kind = store.registry.by_kind("v1", "Event")
    assert kind is not None
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or "default"
    key = f"{meta.get('uid', '')}/{reason}/{message}"
    name = name or (f"{meta.get('name', 'unknown')}."
                    f"{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}")
    now = now_rfc3339(store.replica.wall.now())
    try:
        existing = store.find(kind, ns, name)
        if existing is not None:
            new = copy.deepcopy(existing)
            new["count"] = int(existing.get("count", 1)) + 1
            new["lastTimestamp"] = now
            await store.update(kind, new, ns, name)
            return
        await store.create(kind, {
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"),
                "name": meta.get("name"), "namespace": meta.get("namespace"),
                "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason, "message": message, "type": event_type,
            "source": {"component": component}, "reportingComponent": component,
            "reportingInstance": store.replica.node_id,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }, ns)
    except StoreError as e:
        log.debug("event %s on %s not recorded: %s", reason, meta.get("name"), e)
