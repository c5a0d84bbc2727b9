"""The StatefulSet controller: pods with stable names (``web-0``, ``web-1``) and their claims.

As Kubernetes' controller: OrderedReady creates ordinals one at a time, each once the
ones below are Running and Ready, and scales down from the highest, one at a time;
Parallel does both at once. ``volumeClaimTemplates`` give each ordinal its claims
(``<template>-<set>-<ordinal>``), kept across restarts and rescheduling;
``persistentVolumeClaimRetentionPolicy`` says whether they go with the set (whenDeleted)
or with a scaled-down ordinal (whenScaled). A RollingUpdate replaces the pods at or above
``partition`` whose revision is not the update revision, from the highest down, one at a
time, each once every pod is Ready; OnDelete waits for the user to delete them. Each
template revision is recorded as a ControllerRevision (``kubectl rollout history``).

**At most one** (docs/semantics.md, "StatefulSet pods run at most once"): an ordinal's pod
is never replaced while its object exists, whatever its node's state: a pod on a node cut
off stays, and a deletion of it waits for that node's agent (graceful deletion) unless the
operator forces it. An ordinal whose pod is absent is created, and first scheduled, only by
its *home* peer: the rendezvous choice over every Node in the replica, reachable or not
(:func:`home_peer`), so two sides of a partition never both create it. Every other write
(status, revisions, deletions, which all wait for the pod's node) is done by the usual
live actor.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

from shoal.authz.scopes import CLUSTER, ScopeMap
from shoal.control.controller import Controller
from shoal.control.deployment import template_hash
from shoal.control.field_owner import created_by
from shoal.control.ownership import PeerView, SinglePeer, preferred_actor, scope_of, should_act
from shoal.control.pod_control import delete_pod
from shoal.control.pod_state import by_controller, is_available, is_ready, owner_kind
from shoal.control.replicaset import pod_from_template
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, ObjectStore, StoreError

log = logging.getLogger(__name__)

REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
_ORDINAL = re.compile(r"^(.*)-(\d+)$")


def ordinal_of(set_name: str, pod_name: str) -> int | None:
    """The ordinal in ``<set>-<n>``, or None when the name is not one of the set's."""
    m = _ORDINAL.match(pod_name)
    if m is None or m.group(1) != set_name:
        return None
    return int(m.group(2))


def claim_name(template: str, set_name: str, ordinal: int) -> str:
    return f"{template}-{set_name}-{ordinal}"


def home_candidates(nodes: list[dict[str, Any]], view: PeerView, scope: str,
                    scopes: ScopeMap) -> list[str]:
    """The peers an ordinal's home is chosen among: every Node in the replica, reachable or
    not (the scope's writers among them for a scope); this peer alone when there are none."""
    names = [n["metadata"]["name"] for n in nodes
             if not (n.get("metadata") or {}).get("deletionTimestamp")]
    if scope != CLUSTER:
        writers = scopes.writers(scope) or frozenset()
        names = [n for n in names if n in writers]
    return names or [view.name]


def home_peer(set_uid: str, ordinal: int, candidates: list[str]) -> str | None:
    """The one peer that may create, and first schedule, an ordinal's pod and claims."""
    return preferred_actor(f"statefulset/{set_uid}/{ordinal}", candidates)


def schedules_here(view: PeerView, pod: Mapping[str, Any], nodes: list[dict[str, Any]],
                   scopes: ScopeMap) -> bool | None:
    """For the scheduler: whether this peer may bind a pending StatefulSet pod (only its
    home may); None when ``pod`` is not a StatefulSet's."""
    if owner_kind(dict(pod)) != "StatefulSet":
        return None
    meta = pod.get("metadata") or {}
    ref = next(r for r in meta.get("ownerReferences") or [] if r.get("controller"))
    ordinal = ordinal_of(str(ref.get("name", "")), str(meta.get("name", "")))
    if ordinal is None:
        return None
    scope = scope_of(scopes, "pods", pod)
    return home_peer(str(ref.get("uid")), ordinal,
                     home_candidates(nodes, view, scope, scopes)) == view.name


def scaled_count(value: Any, total: int) -> int:
    """An IntOrString count of ``total``, a percent rounded up (GetScaledValueFromIntOrPercent
    with roundUp, as the StatefulSet controller reads maxUnavailable)."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            return -(-int(value[:-1]) * total // 100)
        except ValueError:
            return 1
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _healthy(pod: dict[str, Any]) -> bool:
    """Running and Ready, and not going."""
    return (not pod["metadata"].get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") == "Running" and is_ready(pod))


def _revision(pod: dict[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)


class StatefulSetController(Controller):
    name = "statefulset"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        r = store.registry
        sts, pod = r.by_kind("apps/v1", "StatefulSet"), r.by_kind("v1", "Pod")
        pvc, node = r.by_kind("v1", "PersistentVolumeClaim"), r.by_kind("v1", "Node")
        rev = r.by_kind("apps/v1", "ControllerRevision")
        assert sts is not None and pod is not None and pvc is not None and node is not None
        assert rev is not None
        self.sts_kind, self.pod_kind, self.pvc_kind, self.node_kind = sts, pod, pvc, node
        self.rev_kind = rev
        self.created = 0

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods":
            return owner_kind(change.obj) == "StatefulSet"
        if change.resource == "nodes":
            return change.type != "MODIFIED"  # the homes change with the set of Nodes
        return change.resource == "statefulsets.apps"

    async def sync(self) -> bool:
        pods_by_owner = by_controller(self.store.list(self.pod_kind))
        nodes = self.store.list(self.node_kind)
        scopes = self.scopes.current()
        pending = False
        now = self.store.replica.wall.now()
        for sts in self.store.list(self.sts_kind):
            meta = sts["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            scope = scope_of(scopes, self.sts_kind.resource, sts)
            live_actor = should_act(self.view, meta["uid"], scope, scopes)
            candidates = home_candidates(nodes, self.view, scope, scopes)
            try:
                if await self.reconcile(sts, pods_by_owner.get(meta["uid"], []), candidates,
                                        live_actor, now):
                    pending = True
            except StoreError as e:
                log.debug("statefulset %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        return pending

    # -- one set ---------------------------------------------------------------------------

    async def reconcile(self, sts: dict[str, Any], owned: list[dict[str, Any]],
                        candidates: list[str], live_actor: bool, now: float) -> bool:
        meta, spec = sts["metadata"], sts.get("spec") or {}
        name, uid = meta["name"], meta["uid"]
        replicas = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        strategy = spec.get("updateStrategy") or {}
        rolling = (strategy.get("type") or "RollingUpdate") == "RollingUpdate"
        partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)
        max_unavailable = (strategy.get("rollingUpdate") or {}).get("maxUnavailable")
        # spec.ordinals.start: the set's ordinals are start .. start + replicas - 1
        start = int(((spec.get("ordinals") or {}).get("start")) or 0)
        end = start + replicas
        update_revision = f"{name}-{template_hash(spec.get('template') or {})}"
        by_ordinal: dict[int, dict[str, Any]] = {}
        for p in owned:
            n = ordinal_of(name, p["metadata"]["name"])
            if n is not None:
                by_ordinal[n] = p

        def home(n: int) -> bool:
            return home_peer(uid, n, candidates) == self.view.name

        changed = False
        if live_actor:
            await self._ensure_revision(sts, update_revision)
        # Failed or finished pods are deleted, to be recreated (Kubernetes does the same).
        for n, p in sorted(by_ordinal.items()):
            if _terminal(p) and not p["metadata"].get("deletionTimestamp") and (
                    live_actor or home(n)):
                changed |= await delete_pod(self.store, self.pod_kind, p)
        # Create the missing ordinals of the range (each by its home peer only).
        for n in range(start, end):
            pod = by_ordinal.get(n)
            if pod is not None:
                if not parallel and not _healthy(pod):
                    break  # OrderedReady: the next waits for this one
                continue
            if home(n):
                revision = self._revision_for(n - start, sts, update_revision, rolling,
                                              partition)
                changed |= await self._create(sts, n, revision)
            if not parallel:
                break
        if live_actor:
            changed |= await self._scale_down(sts, by_ordinal, range(start, end), parallel)
            if rolling and max_unavailable is None:
                changed |= await self._roll(by_ordinal, range(start, end), partition,
                                            update_revision)
            elif rolling:
                changed |= await self._roll_several(by_ordinal, range(start, end), partition,
                                                    update_revision, max_unavailable)
            await self._write_status(sts, by_ordinal, replicas, update_revision, now)
        return changed

    def _revision_for(self, index: int, sts: dict[str, Any], update_revision: str,
                      rolling: bool, partition: int) -> str:
        """A new pod below the partition keeps the current revision (Kubernetes does). The
        partition counts from the first ordinal: ``index`` is the ordinal less the start."""
        current = (sts.get("status") or {}).get("currentRevision")
        if rolling and index < partition and current and current != update_revision:
            return str(current)
        return update_revision

    async def _scale_down(self, sts: dict[str, Any], by_ordinal: dict[int, dict[str, Any]],
                          wanted: range, parallel: bool) -> bool:
        """Delete the pods whose ordinal is outside the range (above it after a scale-down,
        below it after ordinals.start moved up), the highest first."""
        condemned = sorted((n for n in by_ordinal if n not in wanted), reverse=True)
        if not condemned:
            return False
        if not parallel:
            # One at a time, from the highest, once it and every pod below are healthy or
            # already going (Kubernetes waits the same way).
            if any(p["metadata"].get("deletionTimestamp") for p in by_ordinal.values()):
                return False
            if any(not _healthy(p) for n, p in by_ordinal.items() if n in wanted):
                return False
            condemned = condemned[:1]
        changed = False
        for n in condemned:
            pod = by_ordinal[n]
            await self._claims_follow_pod(sts, n, pod)
            changed |= await delete_pod(self.store, self.pod_kind, pod)
        return changed

    async def _roll(self, by_ordinal: dict[int, dict[str, Any]], wanted: range, partition: int,
                    update_revision: str) -> bool:
        """Replace one old pod at or above the partition, the highest first, once all are
        healthy; its ordinal is recreated at the update revision."""
        active = {n: p for n, p in by_ordinal.items() if n in wanted}
        if len(active) < len(wanted) or not all(_healthy(p) for p in active.values()):
            return False
        for n in sorted(active, reverse=True):
            if n - wanted.start < partition:
                break
            if _revision(active[n]) != update_revision:
                return await delete_pod(self.store, self.pod_kind, active[n])
        return False

    async def _roll_several(self, by_ordinal: dict[int, dict[str, Any]], wanted: range,
                            partition: int, update_revision: str, max_unavailable: Any) -> bool:
        """``rollingUpdate.maxUnavailable`` (Kubernetes' MaxUnavailableStatefulSet, alpha):
        up to that many pods of the range unavailable at once. Pods missing or not healthy
        count against it; the rest of the budget deletes old pods at or above the
        partition, the highest first. Each is recreated as any deleted ordinal is, once
        its node has stopped it (at most one copy still holds)."""
        budget = max(1, scaled_count(max_unavailable, len(wanted)))
        unavailable = sum(1 for n in wanted if n not in by_ordinal
                          or not _healthy(by_ordinal[n]))
        to_delete = budget - unavailable
        changed = False
        for n in sorted((n for n in by_ordinal if n in wanted), reverse=True):
            if to_delete <= 0 or n - wanted.start < partition:
                break
            pod = by_ordinal[n]
            if _revision(pod) != update_revision and not pod["metadata"].get("deletionTimestamp"):
                changed |= await delete_pod(self.store, self.pod_kind, pod)
                to_delete -= 1
        return changed

    # -- objects -----------------------------------------------------------------------------

    def _pod(self, sts: dict[str, Any], n: int, revision: str) -> dict[str, Any]:
        meta, spec = sts["metadata"], sts.get("spec") or {}
        name = f"{meta['name']}-{n}"
        pod = pod_from_template(sts, self.sts_kind, name)
        if revision != f"{meta['name']}-{template_hash(spec.get('template') or {})}":
            old = self._revision_template(sts, revision)
            if old is not None:
                pod = pod_from_template({**sts, "spec": {**spec, "template": old}},
                                        self.sts_kind, name)
        labels = pod["metadata"].setdefault("labels", {})
        labels.update({REVISION_LABEL: revision, POD_NAME_LABEL: name,
                       POD_INDEX_LABEL: str(n)})
        pspec = pod["spec"]
        pspec.setdefault("hostname", name)
        if spec.get("serviceName"):
            pspec.setdefault("subdomain", spec["serviceName"])
        claims = {str((t.get("metadata") or {}).get("name", "")): t
                  for t in spec.get("volumeClaimTemplates") or []}
        if claims:
            volumes = [v for v in pspec.get("volumes") or [] if v.get("name") not in claims]
            for t in claims:
                volumes.append({"name": t, "persistentVolumeClaim": {
                    "claimName": claim_name(t, meta["name"], n)}})
            pspec["volumes"] = volumes
        return pod

    async def _create(self, sts: dict[str, Any], n: int, revision: str) -> bool:
        ns = sts["metadata"].get("namespace", "default")
        await self._ensure_claims(sts, n)
        try:
            await self.store.create(self.pod_kind, self._pod(sts, n, revision), ns,
                                    managed_fields=created_by(self.store, self.pod_kind))
        except AlreadyExists:
            return False
        self.created += 1
        return True

    def _claim(self, sts: dict[str, Any], template: dict[str, Any], n: int) -> dict[str, Any]:
        meta, spec = sts["metadata"], sts.get("spec") or {}
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        labels.update(((spec.get("selector") or {}).get("matchLabels")) or {})
        claim_meta: dict[str, Any] = {
            "name": claim_name(str(tmeta.get("name", "")), meta["name"], n),
            "namespace": meta.get("namespace", "default"), "labels": labels}
        if tmeta.get("annotations"):
            claim_meta["annotations"] = dict(tmeta["annotations"])
        policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenDeleted") == "Delete":
            # Not the controller: the claim outlives a pod; the garbage collector takes it
            # with the set.
            claim_meta["ownerReferences"] = [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": meta["name"],
                "uid": meta["uid"], "blockOwnerDeletion": True}]
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": claim_meta,
                "spec": copy.deepcopy(template.get("spec") or {})}

    async def _ensure_claims(self, sts: dict[str, Any], n: int) -> None:
        ns = sts["metadata"].get("namespace", "default")
        for t in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
            claim = self._claim(sts, t, n)
            existing = self.store.find(self.pvc_kind, ns, claim["metadata"]["name"])
            if existing is not None:
                await self._drop_pod_owner(existing)
                continue
            with contextlib.suppress(AlreadyExists):
                await self.store.create(self.pvc_kind, claim, ns,
                                        managed_fields=created_by(self.store, self.pvc_kind))

    async def _drop_pod_owner(self, claim: dict[str, Any]) -> None:
        """A claim handed to a scaled-down pod is kept again when its ordinal comes back."""
        refs = claim["metadata"].get("ownerReferences") or []
        kept = [r for r in refs if r.get("kind") != "Pod"]
        if len(kept) == len(refs):
            return
        new = copy.deepcopy(claim)
        new["metadata"]["ownerReferences"] = kept
        await self.store.update(self.pvc_kind, new, claim["metadata"].get("namespace"),
                                claim["metadata"]["name"])

    async def _claims_follow_pod(self, sts: dict[str, Any], n: int, pod: dict[str, Any]) -> None:
        """whenScaled: Delete: the claims of a condemned ordinal get the pod as owner, so
        the garbage collector deletes them once the pod is gone (as Kubernetes does)."""
        spec = sts.get("spec") or {}
        if (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenScaled") != "Delete":
            return
        ns = sts["metadata"].get("namespace", "default")
        ref = {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
               "uid": pod["metadata"]["uid"]}
        for t in spec.get("volumeClaimTemplates") or []:
            name = claim_name(str((t.get("metadata") or {}).get("name", "")),
                              sts["metadata"]["name"], n)
            claim = self.store.find(self.pvc_kind, ns, name)
            if claim is None:
                continue
            refs = claim["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == ref["uid"] for r in refs):
                continue
            new = copy.deepcopy(claim)
            new["metadata"]["ownerReferences"] = [*refs, ref]
            await self.store.update(self.pvc_kind, new, ns, name)

    def _revision_template(self, sts: dict[str, Any], revision: str) -> dict[str, Any] | None:
        rev = self.store.find(self.rev_kind, sts["metadata"].get("namespace"), revision)
        if rev is None:
            return None
        template = ((rev.get("data") or {}).get("spec") or {}).get("template")
        if not isinstance(template, dict):
            return None
        return {k: copy.deepcopy(v) for k, v in template.items() if k != "$patch"}

    async def _ensure_revision(self, sts: dict[str, Any], revision: str) -> None:
        """The ControllerRevision of the current template, numbered after every other one
        (a rollback to an older template renumbers it, as Kubernetes does). Its data is
        the patch ``kubectl rollout history`` and ``undo`` apply: the template, replaced
        whole."""
        meta = sts["metadata"]
        ns = meta.get("namespace", "default")
        owned = [r for r in self.store.list(self.rev_kind, ns)
                 if any(ref.get("uid") == meta["uid"]
                        for ref in r["metadata"].get("ownerReferences") or [])]
        top = max((int(r.get("revision", 0) or 0) for r in owned), default=0)
        existing = next((r for r in owned if r["metadata"]["name"] == revision), None)
        if existing is not None:
            if int(existing.get("revision", 0) or 0) < top:
                renumbered = copy.deepcopy(existing)
                renumbered["revision"] = top + 1
                await self.store.update(self.rev_kind, renumbered, ns, revision)
            return
        labels = dict((((sts.get("spec") or {}).get("template") or {}).get("metadata") or {})
                      .get("labels") or {})
        labels[REVISION_LABEL] = revision
        template = copy.deepcopy((sts.get("spec") or {}).get("template") or {})
        template["$patch"] = "replace"
        obj = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
               "metadata": {"name": revision, "namespace": ns, "labels": labels,
                            "ownerReferences": [{
                                "apiVersion": "apps/v1", "kind": "StatefulSet",
                                "name": meta["name"], "uid": meta["uid"], "controller": True,
                                "blockOwnerDeletion": True}]},
               "data": {"spec": {"template": template}},
               "revision": top + 1}
        with contextlib.suppress(AlreadyExists):
            await self.store.create(self.rev_kind, obj, ns,
                                    managed_fields=created_by(self.store, self.rev_kind))

    async def _write_status(self, sts: dict[str, Any], by_ordinal: dict[int, dict[str, Any]],
                            replicas: int, update_revision: str, now: float) -> None:
        spec, old = sts.get("spec") or {}, sts.get("status") or {}
        min_ready = int(spec.get("minReadySeconds", 0) or 0)
        active = [p for p in by_ordinal.values()
                  if not p["metadata"].get("deletionTimestamp") and not _terminal(p)]
        current = str(old.get("currentRevision") or update_revision)
        updated = sum(1 for p in active if _revision(p) == update_revision)
        if updated == replicas and len(active) == replicas and all(is_ready(p) for p in active):
            current = update_revision  # the rollout is over
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(active),
            "readyReplicas": sum(1 for p in active if is_ready(p)),
            "currentReplicas": sum(1 for p in active if _revision(p) == current),
            "updatedReplicas": updated,
            "availableReplicas": sum(1 for p in active if is_available(p, min_ready, now)),
            "currentRevision": current,
            "updateRevision": update_revision,
            "collisionCount": int(old.get("collisionCount", 0) or 0),
        }
        if all(old.get(k) == v for k, v in status.items()):
            return
        new = copy.deepcopy(sts)
        new["status"] = {**old, **status}
        await self.store.update(self.sts_kind, new, sts["metadata"].get("namespace"),
                                sts["metadata"]["name"], "status")
