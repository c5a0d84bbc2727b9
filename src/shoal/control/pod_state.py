"""What controllers read off a pod: active, ready, available, and how long it has run."""

from __future__ import annotations

import datetime
from typing import Any

PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def is_active(pod: dict[str, Any]) -> bool:
    """Counts toward replicas: not terminal and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get(
        "deletionTimestamp"
    )


def _ready_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c
    return None


def is_ready(pod: dict[str, Any]) -> bool:
    c = _ready_condition(pod)
    return c is not None and c.get("status") == "True"


def ready_since(pod: dict[str, Any]) -> float | None:
    c = _ready_condition(pod)
    if c is None or c.get("status") != "True":
        return None
    return parse_time(c.get("lastTransitionTime"))


def is_available(pod: dict[str, Any], min_ready_seconds: int, now: float) -> bool:
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and now - since >= min_ready_seconds


def running_since(pod: dict[str, Any]) -> float | None:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return None
    return parse_time(status.get("startTime"))


def deletion_rank(pod: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: the pods to delete first come first.

    Unassigned before assigned, Pending before Unknown before Running, not ready
    before ready, then the most recently started first, so the pods that have
    been running longest are kept; the name breaks ties so every peer agrees.
    """
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    assigned = 1 if spec.get("nodeName") else 0
    phase = PHASE_RANK.get(status.get("phase", "Pending"), 0)
    ready = 1 if is_ready(pod) else 0
    since = ready_since(pod) or running_since(pod)
    # Newer (larger timestamp) first: negate; unknown counts as newest.
    age_key = -(since if since is not None else float("inf"))
    return (assigned, phase, ready, age_key, (pod.get("metadata") or {}).get("name", ""))


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            uid = ref.get("uid")
            return uid if isinstance(uid, str) else None
    return None


def by_controller(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Objects grouped by the uid of their controlling owner (those without one are left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        uid = controller_uid(o)
        if uid:
            out.setdefault(uid, []).append(o)
    return out


def owner_kind(obj: dict[str, Any]) -> str | None:
    """The kind of an object's controller, from its ownerReferences."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            kind = ref.get("kind")
            return kind if isinstance(kind, str) else None
    return None
