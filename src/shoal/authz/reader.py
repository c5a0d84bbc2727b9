"""What the authorizers read: a replica's objects (``shoal.store.replica.Replica`` is one)."""

from __future__ import annotations

from typing import Any, Protocol


class ObjectReader(Protocol):
    """Live objects by storage resource (``pods``, ``roles.rbac.authorization.k8s.io``)."""

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]: ...
