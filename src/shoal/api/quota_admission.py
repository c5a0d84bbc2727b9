"""ResourceQuota admission on every peer: a create that would pass a quota is refused.

A store admission hook (``ObjectStore.admission``), run after LimitRanger's
defaults. Usage is counted from the serving peer's own replica at the moment of
the create (Kubernetes reads ``status.used`` and compare-and-swaps it; with no
leader there is nothing to swap against). So two sides of a partition each
admit up to what remains of the quota as they see it: over-admission is bounded
by the number of sides, and the status controller
(:mod:`shoal.control.resource_quota`) reports ``used`` above ``hard`` after the
merge (docs/semantics.md).
"""

from __future__ import annotations

from typing import Any

from shoal.control.quota_usage import (
    exceeded,
    missing_values,
    object_usage,
    quota_matches,
    resources_counted,
    usage_of,
)
from shoal.model.kinds import Kind
from shoal.store.objects import Forbidden, qualified
from shoal.store.replica import Replica


class QuotaAdmission:
    """The hook: ``QuotaAdmission(replica)(kind, obj)``."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def __call__(self, kind: Kind, obj: dict[str, Any]) -> None:
        if not kind.namespaced:
            return
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        quotas = sorted(self.replica.list("resourcequotas", ns), key=lambda q: q["metadata"]["name"])
        if not quotas:
            return
        request = object_usage(kind.resource, obj)
        counted: dict[str, list[dict[str, Any]]] | None = None
        for quota in quotas:
            if quota["metadata"].get("deletionTimestamp") or not quota_matches(
                    quota, kind.resource, obj):
                continue
            refusal = missing_values(quota, obj) if kind.resource == "pods" else None
            if refusal is not None:
                refusal = f"failed quota: {quota['metadata']['name']}: must specify {refusal}"
            else:
                if counted is None:
                    counted = {r: self.replica.list(r, ns) for r in resources_counted(quotas)}
                refusal = exceeded(quota, usage_of(quota, counted), request)
            if refusal is not None:
                raise Forbidden(f'{qualified(kind)} "{meta.get("name", "")}" is forbidden: '
                                f"{refusal}")
