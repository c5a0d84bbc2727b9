"""A Terminating namespace's status conditions: what is left in it, and why.

As kube-controller-manager's namespace controller, while a deleted namespace still holds
objects its status carries the five deletion conditions, so that
``kubectl describe namespace`` says what it waits for:

- ``NamespaceContentRemaining``: True (``SomeResourcesRemain``) with the count per
  resource (``pods. has 2 resource instances``, group after the dot), else False;
- ``NamespaceFinalizersRemaining``: True (``SomeFinalizersRemain``) with the count per
  finalizer of the objects still there, else False;
- ``NamespaceDeletionDiscoveryFailure``, ``NamespaceDeletionGroupVersionParsingFailure``
  and ``NamespaceDeletionContentFailure``: always False here, as every kind is known from
  the replica and a delete that fails is retried on the next pass.

A condition keeps its ``lastTransitionTime`` while its status holds. The namespace is
written only when a condition changed; peers that write it while apart merge conditions
by type.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from shoal.store.objects import ObjectStore, now_rfc3339

# Kubernetes' order, and each condition's False reason and message.
_OKAY = {
    "NamespaceDeletionDiscoveryFailure": (
        "ResourcesDiscovered", "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": (
        "ParsedGroupVersions", "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": (
        "ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": (
        "ContentHasNoFinalizers", "All content-preserving finalizers finished"),
}


def remaining(store: ObjectStore, namespace: str) -> tuple[Counter[str], Counter[str]]:
    """Objects left in ``namespace`` per ``resource.group``, and per finalizer they carry."""
    resources: Counter[str] = Counter()
    finalizers: Counter[str] = Counter()
    for resource in store.replica.resources():
        kind = store.registry.by_storage_resource(resource)
        if kind is None or not kind.namespaced:
            continue
        for o in store.replica.list(resource, namespace):
            resources[f"{kind.plural}.{kind.group}"] += 1
            finalizers.update(o["metadata"].get("finalizers") or [])
    return resources, finalizers


def conditions(old: list[dict[str, Any]], resources: Counter[str], finalizers: Counter[str],
               now: str) -> list[dict[str, Any]]:
    """The five deletion conditions for what remains, after ``old`` (the current ones)."""
    found: dict[str, tuple[str, str]] = {}
    if resources:
        found["NamespaceContentRemaining"] = ("SomeResourcesRemain", "Some resources are "
                                              "remaining: " + ", ".join(
                                                  f"{r} has {n} resource instances"
                                                  for r, n in sorted(resources.items())))
    if finalizers:
        found["NamespaceFinalizersRemaining"] = (
            "SomeFinalizersRemain", "Some content in the namespace has finalizers remaining: "
            + ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items())))
    before = {c.get("type"): c for c in old}
    out = []
    for ctype, okay in _OKAY.items():
        status, (reason, message) = ("True", found[ctype]) if ctype in found else ("False", okay)
        prev = before.get(ctype) or {}
        out.append({"type": ctype, "status": status,
                    "lastTransitionTime": prev.get("lastTransitionTime", now)
                    if prev.get("status") == status else now,
                    "reason": reason, "message": message})
    return out


async def report(store: ObjectStore, namespace: dict[str, Any]) -> None:
    """Write the conditions of a Terminating ``namespace`` if they changed (raises what
    the store raises: a conflict is retried on the controller's next pass)."""
    name = namespace["metadata"]["name"]
    resources, finalizers = remaining(store, name)
    status = namespace.get("status") or {}
    old = status.get("conditions") or []
    new = conditions(old, resources, finalizers,
                     now_rfc3339(store.replica.wall.now()))
    if new == old:
        return
    updated = copy.deepcopy(namespace)
    updated.setdefault("status", {})["conditions"] = new
    kind = store.registry.by_kind("v1", "Namespace")
    assert kind is not None
    await store.update(kind, updated, None, name, subresource="status")
