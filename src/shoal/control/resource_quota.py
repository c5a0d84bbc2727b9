"""The resource quota controller: a ResourceQuota's ``status.hard`` and ``status.used``.

As Kubernetes' resourcequota controller, so ``kubectl describe quota`` shows usage.
The preferred actor for a quota (:mod:`ownership`) writes its status from its
replica; peers that disagree converge once their replicas do. Admission
(:mod:`shoal.api.quota_admission`) reads the live objects, not this status.

When two sides of a partition each admitted up to the quota they saw, the
merged replica can hold more than ``hard``: the status then shows ``used``
above ``hard`` and a Warning Event ``QuotaExceeded`` names the resources, so
the over-admission is visible after the merge (docs/semantics.md).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.quota_usage import format_amount, hard_of, resources_counted, usage_of
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

RESOURCE = "resourcequotas"
OVER_REASON = "QuotaExceeded"


class ResourceQuotaController(Controller):
    name = "resource-quota"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        kind = store.registry.by_kind("v1", "ResourceQuota")
        assert kind is not None
        self.kind = kind
        self._counted: set[str] = set()

    def relevant(self, change: Change) -> bool:
        return change.resource == RESOURCE or change.resource in self._counted

    async def sync(self) -> bool:
        quotas = self.store.replica.list(RESOURCE)
        self._counted = resources_counted(quotas)
        scopes = self.scopes.current()
        pending = False
        for quota in quotas:
            meta = quota["metadata"]
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, meta["uid"], scope_of(scopes, RESOURCE, quota), scopes):
                continue
            try:
                await self.reconcile(quota)
            except StoreError as e:
                log.debug("quota %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        return pending

    async def reconcile(self, quota: dict[str, Any]) -> None:
        meta = quota["metadata"]
        ns = meta.get("namespace") or "default"
        counted = {r: self.store.replica.list(r, ns) for r in resources_counted([quota])}
        used = usage_of(quota, counted)
        hard = hard_of(quota)
        status = {"hard": dict((quota.get("spec") or {}).get("hard") or {}),
                  "used": {n: format_amount(n, v) for n, v in sorted(used.items())}}
        if status == quota.get("status"):
            return
        new = copy.deepcopy(quota)
        new["status"] = status
        await self.store.update(self.kind, new, ns, meta["name"], "status")
        over = sorted(n for n, v in used.items() if v > hard.get(n, v))
        if over:
            shown = ", ".join(f"{n}={status['used'][n]}/{status['hard'][n]}" for n in over)
            await events.record(self.store, new, "Warning", OVER_REASON,
                                f"used exceeds hard (admitted on more than one side of a "
                                f"partition?): {shown}", "resourcequota-controller")
