"""Storage objects in use are not deleted under their users (Kubernetes' StorageObjectInUseProtection).

A PersistentVolumeClaim gets the ``kubernetes.io/pvc-protection`` finalizer and a
PersistentVolume ``kubernetes.io/pv-protection``, on create (:func:`add_finalizer`, a
store admission hook) or, for one that lacks it, from the controller. Deleting a claim
that a scheduled pod still names leaves it ``Terminating`` until no such pod exists in
this peer's replica; a volume stays while it is bound to a claim that still exists.
The preferred actor for the object removes the finalizer, from its own replica: a pod
created on the other side of a partition is seen only after the merge (docs/semantics.md).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.model.kinds import Kind
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

PVC_FINALIZER = "kubernetes.io/pvc-protection"
PV_FINALIZER = "kubernetes.io/pv-protection"
_FINALIZER_OF = {"PersistentVolumeClaim": PVC_FINALIZER, "PersistentVolume": PV_FINALIZER}


def add_finalizer(kind: Kind, obj: dict[str, Any]) -> None:
    """Store admission hook: a new claim or volume carries its protection finalizer."""
    finalizer = _FINALIZER_OF.get(kind.kind) if kind.group == "" else None
    meta = obj.get("metadata")
    if finalizer is None or not isinstance(meta, dict):
        return
    raw = meta.get("finalizers")
    finalizers: list[Any] = raw if isinstance(raw, list) else []
    if finalizer not in finalizers:
        meta["finalizers"] = [*finalizers, finalizer]


def claims_in_use(pods: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, claim) of every claim a scheduled pod names: as Kubernetes, a pod object
    that exists uses its claims, whatever its phase, until it is gone."""
    out: set[tuple[str, str]] = set()
    for pod in pods:
        spec = pod.get("spec") or {}
        if not spec.get("nodeName"):
            continue
        ns = str((pod.get("metadata") or {}).get("namespace") or "default")
        for vol in spec.get("volumes") or []:
            name = (vol.get("persistentVolumeClaim") or {}).get("claimName") \
                if isinstance(vol, dict) else None
            if name:
                out.add((ns, str(name)))
    return out


class StorageProtection(Controller):
    name = "storage-protection"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        r = store.registry
        pod, pvc = r.by_kind("v1", "Pod"), r.by_kind("v1", "PersistentVolumeClaim")
        pv = r.by_kind("v1", "PersistentVolume")
        assert pod is not None and pvc is not None and pv is not None
        self.pod_kind, self.pvc_kind, self.pv_kind = pod, pvc, pv
        self.released = 0

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods":
            return change.type == "DELETED" or bool(
                ((change.obj or {}).get("metadata") or {}).get("deletionTimestamp"))
        return change.resource in ("persistentvolumeclaims", "persistentvolumes")

    async def sync(self) -> bool:
        scopes = self.scopes.current()
        claims = self.store.list(self.pvc_kind)
        in_use = claims_in_use(self.store.list(self.pod_kind))
        live_claims = {(c["metadata"].get("namespace"), c["metadata"]["name"],
                        c["metadata"].get("uid")) for c in claims}
        pending = False
        for claim in claims:
            meta = claim["metadata"]
            if should_act(self.view, meta["uid"], scope_of(scopes, self.pvc_kind.resource, claim),
                          scopes):
                used = (meta.get("namespace") or "default", meta["name"]) in in_use
                pending |= await self._settle(self.pvc_kind, claim, PVC_FINALIZER, used)
        for pv in self.store.list(self.pv_kind):
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            bound = (ref.get("namespace"), ref.get("name"), ref.get("uid")) in live_claims
            if should_act(self.view, f"pv/{pv['metadata']['name']}"):
                pending |= await self._settle(self.pv_kind, pv, PV_FINALIZER, bound)
        return pending

    async def _settle(self, kind: Kind, obj: dict[str, Any], finalizer: str, used: bool) -> bool:
        """Add the finalizer to a live object that lacks it; drop it from a deleted one no
        longer used. True when a write failed (another pass is wanted)."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        deleting = bool(meta.get("deletionTimestamp"))
        if deleting and finalizer in finalizers and not used:
            finalizers.remove(finalizer)
        elif not deleting and finalizer not in finalizers:
            finalizers.append(finalizer)
        else:
            return False
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = finalizers
        try:
            await self.store.update(kind, new, meta.get("namespace"), meta["name"])
        except StoreError as e:
            log.debug("%s %s: %s", kind.kind, meta["name"], e)
            return True
        if deleting:
            self.released += 1
        return False
