"""Claims and volumes in the control plane: the default class, and static volumes bound.

- The built-in StorageClass ``local-path`` (the default class, ``WaitForFirstConsumer``,
  reclaim ``Delete``) is created at a peer's start when its replica has never held it
  (:func:`ensure_default_class`); a class an administrator deleted stays deleted. Its
  claims are bound by the node that first runs their pod (``shoal.node.local_volumes``).
- :class:`PersistentVolumeBinder` (Kubernetes' PersistentVolume controller, for volumes an
  administrator created): an unbound claim that names no class gets the default one (as
  Kubernetes' retroactive default class does); a Pending claim of any other class is bound to an Available
  volume of its class with room and access modes enough (the smallest that fits; the one it
  names in ``volumeName`` if it names one), and a volume whose claim is gone is
  ``Released``. The preferred actor of the claim (or volume) does it; two sides of a
  partition may bind one volume to two claims, and the merge then keeps one ``claimRef``
  (the other claim's ``volumeName`` points at a volume that is not its own, and its pods
  wait, as Kubernetes leaves a claim whose volume was taken).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from decimal import Decimal
from typing import Any

from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.model.quantity import QuantityError, parse_quantity
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, ObjectStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_CLASS = "local-path"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
LOCAL_PATH_PROVISIONER = "shoal.dev/local-path"  # as shoal.node.local_volumes.PROVISIONER


def default_class() -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": DEFAULT_CLASS,
                         "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
            "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": False}


async def ensure_default_class(store: ObjectStore) -> None:
    """Create ``local-path`` unless this replica holds it or its tombstone (a joining peer
    calls it once its first pull completed, ``manager``, so that its replica has the
    cluster's)."""
    kind = store.registry.by_kind("storage.k8s.io/v1", "StorageClass")
    assert kind is not None
    if store.replica.entry(kind.resource, "", DEFAULT_CLASS) is not None:
        return
    with contextlib.suppress(AlreadyExists):
        await store.create(kind, default_class())


def _storage(obj: dict[str, Any], *path: str) -> Decimal | None:
    value: Any = obj
    for p in path:
        value = (value or {}).get(p) if isinstance(value, dict) else None
    try:
        return parse_quantity(value) if value is not None else None
    except QuantityError:
        return None


class PersistentVolumeBinder(Controller):
    name = "persistent-volume-binder"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        r = store.registry
        pvc, pv = r.by_kind("v1", "PersistentVolumeClaim"), r.by_kind("v1", "PersistentVolume")
        sc = r.by_kind("storage.k8s.io/v1", "StorageClass")
        assert pvc is not None and pv is not None and sc is not None
        self.pvc_kind, self.pv_kind, self.sc_kind = pvc, pv, sc

    def relevant(self, change: Change) -> bool:
        return change.resource in ("persistentvolumeclaims", "persistentvolumes")

    async def sync(self) -> bool:
        pvs = self.store.list(self.pv_kind)
        scopes = self.scopes.current()
        pending = False
        claims = {(c["metadata"].get("namespace"), c["metadata"]["name"]): c
                  for c in self.store.list(self.pvc_kind)}
        try:
            for pv in pvs:
                if should_act(self.view, f"pv/{pv['metadata']['name']}"):
                    await self._volume_phase(pv, claims)
            classes = {c["metadata"]["name"]: c for c in self.store.list(self.sc_kind)}
            default = next((n for n, c in sorted(classes.items()) if (
                c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"),
                None)
            for claim in claims.values():
                spec = claim.get("spec") or {}
                if spec.get("volumeName") or claim["metadata"].get("deletionTimestamp"):
                    continue
                if spec.get("storageClassName") is None and default is not None and should_act(
                        self.view, claim["metadata"]["uid"],
                        scope_of(scopes, self.pvc_kind.resource, claim), scopes):
                    # Kubernetes' retroactive default class: an unbound claim naming none
                    # gets the default one.
                    claim = copy.deepcopy(claim)
                    claim["spec"]["storageClassName"] = default
                    await self.store.update(self.pvc_kind, claim, claim["metadata"].get(
                        "namespace"), claim["metadata"]["name"])
                    continue
                cls = classes.get(str(spec.get("storageClassName") or ""))
                if cls is not None and cls.get("provisioner") == LOCAL_PATH_PROVISIONER:
                    continue  # its node binds it
                if not should_act(self.view, claim["metadata"]["uid"],
                                  scope_of(scopes, self.pvc_kind.resource, claim), scopes):
                    continue
                match = self._match(claim, self.store.list(self.pv_kind))
                if match is not None:
                    await self._bind(claim, match)
        except StoreError as e:
            log.debug("binding: %s", e)
            pending = True
        return pending

    async def _volume_phase(self, pv: dict[str, Any],
                            claims: dict[tuple[Any, str], dict[str, Any]]) -> None:
        """Available with no claim, Released once its claim is gone (a local-path volume's
        node handles its own)."""
        if (pv["metadata"].get("annotations") or {}).get("pv.kubernetes.io/provisioned-by"):
            return
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        phase = (pv.get("status") or {}).get("phase")
        want = phase
        if not ref:
            want = "Available"
        elif ref.get("uid"):
            claim = claims.get((ref.get("namespace"), str(ref.get("name", ""))))
            gone = claim is None or claim["metadata"].get("uid") != ref.get("uid")
            want = "Released" if gone else "Bound"
        if want and want != phase:
            new = copy.deepcopy(pv)
            new["status"] = {"phase": want}
            await self.store.update(self.pv_kind, new, None, pv["metadata"]["name"], "status")

    def _match(self, claim: dict[str, Any], pvs: list[dict[str, Any]]) -> dict[str, Any] | None:
        spec, meta = claim.get("spec") or {}, claim["metadata"]
        want = _storage(claim, "spec", "resources", "requests", "storage") or Decimal(0)
        modes = set(spec.get("accessModes") or [])
        cls = str(spec.get("storageClassName") or "")
        fits = []
        for pv in pvs:
            pspec = pv.get("spec") or {}
            ref = pspec.get("claimRef") or {}
            if ref and (ref.get("name") != meta["name"] or ref.get("namespace") !=
                        meta.get("namespace") or ref.get("uid") not in (None, meta["uid"])):
                continue
            if spec.get("volumeName") and spec["volumeName"] != pv["metadata"]["name"]:
                continue
            if (pv.get("status") or {}).get("phase") in ("Released", "Failed"):
                continue
            if str(pspec.get("storageClassName") or "") != cls:
                continue
            size = _storage(pv, "spec", "capacity", "storage") or Decimal(0)
            if size < want or not modes <= set(pspec.get("accessModes") or []):
                continue
            fits.append((size, pv["metadata"]["name"], pv))
        return min(fits, key=lambda f: (f[0], f[1]))[2] if fits else None

    async def _bind(self, claim: dict[str, Any], pv: dict[str, Any]) -> None:
        meta = claim["metadata"]
        new_pv = copy.deepcopy(pv)
        new_pv["spec"]["claimRef"] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                      "namespace": meta.get("namespace"), "name": meta["name"],
                                      "uid": meta["uid"]}
        new_pv = await self.store.update(self.pv_kind, new_pv, None, pv["metadata"]["name"])
        new_pv["status"] = {"phase": "Bound"}
        await self.store.update(self.pv_kind, new_pv, None, pv["metadata"]["name"], "status")
        new = copy.deepcopy(claim)
        new["metadata"].setdefault("annotations", {}).update({
            "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"})
        new["spec"]["volumeName"] = pv["metadata"]["name"]
        new = await self.store.update(self.pvc_kind, new, meta.get("namespace"), meta["name"])
        new["status"] = {"phase": "Bound", "accessModes": list(pv["spec"].get("accessModes") or []),
                         "capacity": dict(pv["spec"].get("capacity") or {})}
        await self.store.update(self.pvc_kind, new, meta.get("namespace"), meta["name"], "status")
        log.info("bound claim %s/%s to volume %s", meta.get("namespace"), meta["name"],
                 pv["metadata"]["name"])
