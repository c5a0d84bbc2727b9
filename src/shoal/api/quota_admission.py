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
from shoal.store.objects import Forbidden
from shoal.store.replica import Replica


class QuotaAdmission:
    """The hooks: ``QuotaAdmission(replica)(kind, obj)`` on create, ``.on_update(resource,
    old, new)`` on update (``ObjectStore.update_admission``)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def __call__(self, kind: Kind, obj: dict[str, Any]) -> None:
        if not kind.namespaced:
            return
        ns = (obj.get("metadata") or {}).get("namespace") or "default"
        if not self.replica.list("resourcequotas", ns):
            return  # the usage of the object is not worth computing (issue 11)
        self._check(kind.resource, obj, object_usage(kind.resource, obj), creating=True)

    def on_update(self, resource: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        """An update is charged what it adds, as Kubernetes charges it: the usage of the new
        object less the old one's, only the resources that grow (a claim's storage request
        raised, a Service turned NodePort or LoadBalancer). One that adds nothing passes,
        even in a namespace already over its quota (after a partition's merge)."""
        if not (old.get("metadata") or {}).get("namespace"):
            return
        before = object_usage(resource, old)
        grows = {n: v - before.get(n, 0) for n, v in object_usage(resource, new).items()
                 if v > before.get(n, 0)}
        if grows:
            self._check(resource, new, grows, creating=False)

    def _check(self, resource: str, obj: dict[str, Any], request: dict[str, int],
               creating: bool) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        quotas = sorted(self.replica.list("resourcequotas", ns), key=lambda q: q["metadata"]["name"])
        if not quotas:
            return
        counted: dict[str, list[dict[str, Any]]] | None = None
        for quota in quotas:
            if quota["metadata"].get("deletionTimestamp") or not quota_matches(
                    quota, resource, obj):
                continue
            refusal = missing_values(quota, obj) if creating and resource == "pods" else None
            if refusal is not None:
                refusal = f"failed quota: {quota['metadata']['name']}: must specify {refusal}"
            else:
                if counted is None:
                    counted = {r: self.replica.list(r, ns) for r in resources_counted(quotas)}
                refusal = exceeded(quota, usage_of(quota, counted), request)
            if refusal is not None:
                raise Forbidden(f'{resource} "{meta.get("name", "")}" is forbidden: {refusal}')
