"""An ObjectReader over plain dicts, for tests of the pure authorizers."""

from __future__ import annotations

from typing import Any

RBAC_GROUP = "rbac.authorization.k8s.io"


class DictReader:
    """An ObjectReader over plain dicts, with a revision bumped on every write."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.revision = 0

    def put(self, resource: str, obj: dict[str, Any]) -> None:
        self.revision += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.revision)
        self.objects[(resource, meta.get("namespace", ""), meta["name"])] = obj

    def remove(self, resource: str, namespace: str, name: str) -> None:
        self.revision += 1
        del self.objects[(resource, namespace, name)]

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((resource, namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (r, ns, _), o in sorted(self.objects.items())
                if r == resource and (namespace is None or ns == namespace)]


def binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict[str, Any]],
             namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"kind": kind, "metadata": meta, "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind,
                                                       "name": role}, "subjects": subjects}
