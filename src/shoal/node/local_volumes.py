"""The local-path provisioner's node half: a claim's volume is a directory on the node.

The default StorageClass ``local-path`` (``WaitForFirstConsumer``) binds a claim where its
pod first runs: when a pod bound to this node uses a Pending claim of a class whose
provisioner is ``shoal.dev/local-path``, this node makes a directory for it, creates the
PersistentVolume ``pvc-<claim uid>`` (``spec.local.path``, ``nodeAffinity`` for this node
only, ``claimRef`` to the claim) and binds the claim to it. Only the node that runs the
pod does this, and the names are the claim's, so a claim is bound to a volume on one node
whatever the mesh does; from then on the scheduler's VolumeBinding filter keeps the
claim's pods on that node (a StatefulSet pod comes back to its data).

When a volume of this node is released (its claim is gone and no pod of this node still
uses it), a ``Delete`` reclaim policy removes the directory, then the PersistentVolume; ``Retain`` keeps both and marks the
volume ``Released`` (an administrator deletes it, as in Kubernetes).

Where the directories live: ``DATA_DIR/local-path``, or, for process pods of a node that
runs as root (they cannot enter the 0700 data dir), beside the pods dir
(``/var/lib/shoal-pods/<marker>-local-path``). Each volume is 0777 as k3s' local-path
provisioner makes them, so a pod running as any user can write to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.node.volumes import VolumeError
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, NotFound, ObjectStore, StoreError

log = logging.getLogger(__name__)

PROVISIONER = "shoal.dev/local-path"
PROVISIONERS = (PROVISIONER, "rancher.io/local-path")  # k3s manifests name theirs
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
HOSTNAME_LABEL = "kubernetes.io/hostname"


class ClaimPending(VolumeError):
    """A claim of the pod cannot be bound here (yet): the pod waits, as for a ConfigMap."""


def volume_name(claim: dict[str, Any]) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def node_of(pv: dict[str, Any]) -> str | None:
    """The one node a local volume's nodeAffinity names (None when it is not of that form)."""
    terms = ((((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
             .get("nodeSelectorTerms")) or []
    for term in terms:
        for expr in (term or {}).get("matchExpressions") or []:
            values = expr.get("values") or []
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In" and \
                    len(values) == 1:
                return str(values[0])
    return None


def host_path(pv: dict[str, Any]) -> Path | None:
    """Where a local or hostPath volume is on its node."""
    spec = pv.get("spec") or {}
    path = (spec.get("local") or {}).get("path") or (spec.get("hostPath") or {}).get("path")
    return Path(str(path)) if path else None


class LocalVolumes:
    """Provisions this node's local-path volumes and reclaims released ones."""

    def __init__(self, store: ObjectStore, node_name: str, root: Callable[[], Path]) -> None:
        self.store = store
        self.node_name = node_name
        self.root = root
        r = store.registry
        pvc, pv = r.by_kind("v1", "PersistentVolumeClaim"), r.by_kind("v1", "PersistentVolume")
        sc = r.by_kind("storage.k8s.io/v1", "StorageClass")
        assert pvc is not None and pv is not None and sc is not None
        self.pvc_kind, self.pv_kind, self.sc_kind = pvc, pv, sc
        self._lock = asyncio.Lock()
        self.provisioned = 0
        self.reclaimed = 0

    # -- provisioning --------------------------------------------------------------------

    async def provision_for(self, pod: dict[str, Any]) -> None:
        """Bind every Pending local-path claim of ``pod`` (bound to this node) to a new
        volume here. Raises ClaimPending for a claim that is missing or another
        provisioner's and still unbound."""
        ns = (pod.get("metadata") or {}).get("namespace") or "default"
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            name = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if not name:
                continue
            async with self._lock:  # two pods of one claim: one volume
                try:
                    await self._provision(ns, str(name))
                except StoreError as e:  # a concurrent write: the pod tries again
                    raise ClaimPending(f'persistentvolumeclaim "{name}": {e}') from e

    async def _provision(self, ns: str, name: str) -> None:
        claim = self.store.find(self.pvc_kind, ns, name)
        if claim is None:
            raise ClaimPending(f'persistentvolumeclaim "{name}" not found')
        spec = claim.get("spec") or {}
        if spec.get("volumeName"):
            return  # bound (the mount checks that its volume is here)
        cls = self.store.find(self.sc_kind, None, str(spec.get("storageClassName") or ""))
        if cls is None or cls.get("provisioner") not in PROVISIONERS:
            raise ClaimPending(f'persistentvolumeclaim "{name}" is not bound')
        pv_name = volume_name(claim)
        path = self.root() / f"{pv_name}_{ns}_{name}"
        await asyncio.to_thread(_make_dir, path)
        pv = self._volume(claim, cls, pv_name, path)
        with contextlib.suppress(AlreadyExists):
            await self.store.create(self.pv_kind, pv)
            self.provisioned += 1
            log.info("provisioned %s for claim %s/%s at %s", pv_name, ns, name, path)
        await self._bind(claim, pv)

    def _volume(self, claim: dict[str, Any], cls: dict[str, Any], name: str,
                path: Path) -> dict[str, Any]:
        meta, spec = claim["metadata"], claim.get("spec") or {}
        storage = (((spec.get("resources") or {}).get("requests") or {}).get("storage")) or "1Gi"
        return {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy") or "Delete",
                "storageClassName": cls["metadata"]["name"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "local": {"path": str(path)},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": HOSTNAME_LABEL, "operator": "In", "values": [self.node_name]}]}]}},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": meta.get("namespace"), "name": meta["name"],
                             "uid": meta["uid"]},
            },
        }

    async def _bind(self, claim: dict[str, Any], pv: dict[str, Any]) -> None:
        meta = claim["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        stored = self.store.find(self.pv_kind, None, pv["metadata"]["name"]) or pv
        if (stored.get("status") or {}).get("phase") != "Bound":
            new_pv = copy.deepcopy(stored)
            new_pv["status"] = {"phase": "Bound"}
            await self.store.update(self.pv_kind, new_pv, None, pv["metadata"]["name"], "status")
        new = copy.deepcopy(claim)
        ann = new["metadata"].setdefault("annotations", {})
        ann.update({"pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes",
                    SELECTED_NODE: self.node_name,
                    "volume.kubernetes.io/storage-provisioner": PROVISIONER})
        new["spec"]["volumeName"] = pv["metadata"]["name"]
        claim = await self.store.update(self.pvc_kind, new, ns, name)
        new = copy.deepcopy(claim)
        new["status"] = {"phase": "Bound", "accessModes": pv["spec"]["accessModes"],
                         "capacity": dict(pv["spec"]["capacity"])}
        await self.store.update(self.pvc_kind, new, ns, name, "status")

    # -- reclaiming ----------------------------------------------------------------------

    def _relevant(self, change: Change) -> bool:
        return change.resource in ("persistentvolumeclaims", "persistentvolumes")

    async def run(self, resync: float = 30.0) -> None:
        """Reclaim this node's released volumes now and whenever claims or volumes change."""
        sub = self.store.replica.subscribe(self._relevant)
        try:
            while True:
                try:
                    await self.reclaim()
                except Exception:
                    log.exception("local volumes: reclaim failed")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(resync):
                        change = await sub.queue.get()
                    if change is None:
                        sub.close()
                        sub = self.store.replica.subscribe(self._relevant)
                await asyncio.sleep(0.05)  # a burst of changes, one pass
                while not sub.queue.empty():
                    sub.queue.get_nowait()
        finally:
            sub.close()

    def _in_use(self) -> set[tuple[str, str]]:
        """The claims that pods of this node still use: their volumes are not reclaimed
        under them, even once the claim is deleted (Kubernetes' pvc-protection keeps
        such a claim; here its node keeps the data until the pods are gone)."""
        pod_kind = self.store.registry.by_kind("v1", "Pod")
        assert pod_kind is not None
        out: set[tuple[str, str]] = set()
        for pod in self.store.list(pod_kind):
            if (pod.get("spec") or {}).get("nodeName") != self.node_name or \
                    (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            ns = str((pod.get("metadata") or {}).get("namespace") or "default")
            for vol in (pod.get("spec") or {}).get("volumes") or []:
                name = (vol.get("persistentVolumeClaim") or {}).get("claimName")
                if name:
                    out.add((ns, str(name)))
        return out

    async def reclaim(self) -> None:
        in_use = self._in_use()
        for pv in self.store.list(self.pv_kind):
            if node_of(pv) != self.node_name or \
                    (pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER:
                continue
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            claim = self.store.find(self.pvc_kind, ref.get("namespace"), str(ref.get("name", "")))
            if claim is not None and claim["metadata"].get("uid") == ref.get("uid"):
                continue  # still claimed
            if (ref.get("namespace"), ref.get("name")) in in_use:
                continue  # a pod here still has it mounted
            try:
                await self._release(pv)
            except StoreError as e:
                log.debug("volume %s not reclaimed: %s", pv["metadata"]["name"], e)

    async def _release(self, pv: dict[str, Any]) -> None:
        name = pv["metadata"]["name"]
        if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") != "Delete":
            if (pv.get("status") or {}).get("phase") != "Released":
                new = copy.deepcopy(pv)
                new["status"] = {"phase": "Released"}
                await self.store.update(self.pv_kind, new, None, name, "status")
            return
        path = host_path(pv)
        if path is not None and path.is_relative_to(self.root()):
            await asyncio.to_thread(shutil.rmtree, path, True)
        with contextlib.suppress(NotFound):
            await self.store.delete(self.pv_kind, None, name,
                                    precondition_uid=pv["metadata"].get("uid"))
        self.reclaimed += 1
        log.info("deleted volume %s (its claim is gone) and its directory %s", name, path)


def _make_dir(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o711)
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o777)
