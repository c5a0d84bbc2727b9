"""The Deployment controller: ReplicaSets per pod template, rolled with RollingUpdate or Recreate.

Follows Kubernetes' deployment controller closely enough for ``kubectl rollout
status``, ``history``, ``undo``, ``restart``, ``pause`` and ``resume``: the
ReplicaSet of the current template is named after a hash of it (so every peer
picks the same name), carries the ``deployment.kubernetes.io/revision``
annotation, and status reports updated, ready and available replicas with the
Available and Progressing conditions.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from typing import Any

import orjson

from shoal.control.controller import Controller
from shoal.control.field_owner import created_by, updated_by
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_state import by_controller, parse_time
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.blake2b(orjson.dumps(template, option=orjson.OPT_SORT_KEYS),
                             digest_size=8).digest()
    n = int.from_bytes(digest, "big")
    out = ""
    for _ in range(10):
        n, r = divmod(n, len(ALPHABET))
        out += ALPHABET[r]
    return out


def _resolve(value: Any, replicas: int, round_up: bool) -> int:
    """maxSurge / maxUnavailable: an int, or a percentage of replicas."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = float(value[:-1])
        except ValueError:
            return 0
        x = pct * replicas / 100
        return math.ceil(x) if round_up else math.floor(x)
    return 0


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _spec_replicas(rs: dict[str, Any]) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0) or 0)


def _st(rs: dict[str, Any], key: str) -> int:
    return int((rs.get("status") or {}).get(key, 0) or 0)


class DeploymentController(Controller):
    name = "deployment"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        d = store.registry.by_kind("apps/v1", "Deployment")
        rs = store.registry.by_kind("apps/v1", "ReplicaSet")
        assert d is not None and rs is not None
        self.d_kind, self.rs_kind = d, rs

    def relevant(self, change: Change) -> bool:
        return change.resource in ("deployments.apps", "replicasets.apps")

    async def sync(self) -> bool:
        by_owner = by_controller(self.store.list(self.rs_kind))
        pending = False
        scopes = self.scopes.current()
        for d in self.store.list(self.d_kind):
            meta = d["metadata"]
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, meta["uid"], scope_of(scopes, self.d_kind.resource, d), scopes):
                continue
            try:
                if await self.reconcile(d, by_owner.get(meta["uid"], [])):
                    pending = True
            except StoreError as e:
                log.debug("deployment %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        return pending

    async def reconcile(self, d: dict[str, Any], owned: list[dict[str, Any]]) -> bool:
        meta = d["metadata"]
        ns = meta.get("namespace", "default")
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        new_rs = None
        for rs in owned:
            if _strip_hash((rs.get("spec") or {}).get("template") or {}) == _strip_hash(template):
                new_rs = rs
        olds = [rs for rs in owned if rs is not new_rs]
        max_rev = max((_revision(rs) for rs in owned), default=0)
        changed = False
        if spec.get("paused"):
            await self._write_status(d, new_rs, olds)
            return False
        if new_rs is None:
            new_rs = await self._create_rs(d, template, max_rev + 1, replicas, olds)
            changed = True
        elif olds and _revision(new_rs) < max_rev:
            # Rolling back to an older template makes it the newest revision again.
            new_rs = await self._set_rs(new_rs, annotations={REVISION: str(max_rev + 1)})
            changed = True
        strategy = (spec.get("strategy") or {})
        if strategy.get("type") == "Recreate":
            changed |= await self._recreate(new_rs, olds, replicas)
        else:
            ru = strategy.get("rollingUpdate") or {}
            surge = _resolve(ru.get("maxSurge", "25%"), replicas, True)
            unavail = _resolve(ru.get("maxUnavailable", "25%"), replicas, False)
            if surge == 0 and unavail == 0:
                unavail = 1
            changed |= await self._rolling(new_rs, olds, replicas, surge, unavail)
        changed |= await self._cleanup(d, olds)
        new_rs = self.store.find(self.rs_kind, ns, new_rs["metadata"]["name"]) or new_rs
        olds = [self.store.find(self.rs_kind, ns, o["metadata"]["name"]) or o for o in olds]
        await self._write_status(d, new_rs, [o for o in olds if o is not None])
        return changed

    async def _create_rs(self, d: dict[str, Any], template: dict[str, Any], revision: int,
                         replicas: int, olds: list[dict[str, Any]]) -> dict[str, Any]:
        meta = d["metadata"]
        h = template_hash(_strip_hash(template))
        t = copy.deepcopy(template)
        t.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        # With no old pods to replace, the new ReplicaSet starts at full size.
        start = replicas if not any(_spec_replicas(o) for o in olds) else 0
        rs: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name'][:50]}-{h}",
                "namespace": meta.get("namespace", "default"),
                "labels": {**(t["metadata"].get("labels") or {})},
                "annotations": {
                    REVISION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(replicas),
                    **{k: v for k, v in (meta.get("annotations") or {}).items()
                       if k == "kubernetes.io/change-cause"},
                },
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                    "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {
                "replicas": start,
                "minReadySeconds": (d.get("spec") or {}).get("minReadySeconds", 0),
                "selector": selector,
                "template": t,
            },
        }
        try:
            return await self.store.create(self.rs_kind, rs, meta.get("namespace"),
                                           managed_fields=created_by(self.store, self.rs_kind))
        except AlreadyExists:
            found = self.store.find(self.rs_kind, meta.get("namespace"), rs["metadata"]["name"])
            assert found is not None
            return found

    async def _set_rs(self, rs: dict[str, Any], replicas: int | None = None,
                      annotations: dict[str, str] | None = None) -> dict[str, Any]:
        new = copy.deepcopy(rs)
        if replicas is not None:
            new["spec"]["replicas"] = replicas
        if annotations:
            new["metadata"].setdefault("annotations", {}).update(annotations)
        m = rs["metadata"]
        return await self.store.update(self.rs_kind, new, m.get("namespace"), m["name"],
                                       managed_fields=updated_by(self.store, self.rs_kind))

    async def _recreate(self, new_rs: dict[str, Any], olds: list[dict[str, Any]],
                        replicas: int) -> bool:
        changed = False
        for o in olds:
            if _spec_replicas(o) > 0:
                await self._set_rs(o, replicas=0)
                changed = True
        if any(_st(o, "replicas") > 0 for o in olds):
            return changed  # wait for the old pods to go
        if _spec_replicas(new_rs) != replicas:
            await self._set_rs(new_rs, replicas=replicas)
            changed = True
        return changed

    async def _rolling(self, new_rs: dict[str, Any], olds: list[dict[str, Any]], replicas: int,
                       surge: int, unavail: int) -> bool:
        changed = False
        all_rs = [new_rs, *olds]
        total = sum(_spec_replicas(r) for r in all_rs)
        new_count = _spec_replicas(new_rs)
        # Scale up the new ReplicaSet as far as maxSurge allows.
        if new_count < replicas:
            room = replicas + surge - total
            target = min(replicas, new_count + max(room, 0))
            if target > new_count:
                new_rs = await self._set_rs(new_rs, replicas=target)
                new_count = target
                total = sum(_spec_replicas(r) for r in [new_rs, *olds])
                changed = True
        elif new_count > replicas:
            new_rs = await self._set_rs(new_rs, replicas=replicas)
            return True
        # Scale down old ReplicaSets as far as maxUnavailable allows.
        min_available = replicas - unavail
        new_unavailable = max(_spec_replicas(new_rs) - _st(new_rs, "availableReplicas"), 0)
        budget = total - min_available - new_unavailable
        for o in sorted(olds, key=_revision):
            if budget <= 0:
                break
            # Old pods that are not available cost nothing to remove.
            count = _spec_replicas(o)
            if count == 0:
                continue
            unhealthy = max(count - _st(o, "availableReplicas"), 0)
            cut = min(count, max(budget, unhealthy))
            await self._set_rs(o, replicas=count - cut)
            budget -= cut
            changed = True
        return changed

    async def _cleanup(self, d: dict[str, Any], olds: list[dict[str, Any]]) -> bool:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = sorted((o for o in olds if _spec_replicas(o) == 0 and _st(o, "replicas") == 0),
                      key=_revision)
        changed = False
        for o in idle[: max(len(idle) - limit, 0)]:
            try:
                await self.store.delete(self.rs_kind, o["metadata"].get("namespace"),
                                        o["metadata"]["name"], propagation="Background")
                changed = True
            except StoreError:
                pass
        return changed

    async def _write_status(self, d: dict[str, Any], new_rs: dict[str, Any] | None,
                            olds: list[dict[str, Any]]) -> None:
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        all_rs = [r for r in [new_rs, *olds] if r is not None]
        total = sum(_st(r, "replicas") for r in all_rs)
        available = sum(_st(r, "availableReplicas") for r in all_rs)
        updated = _st(new_rs, "replicas") if new_rs is not None else 0
        ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        unavail = _resolve(ru.get("maxUnavailable", "25%"), replicas, False)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            unavail = replicas
        now = now_rfc3339(self.store.replica.wall.now())
        old_status = d.get("status") or {}
        old_conds = {c.get("type"): c for c in old_status.get("conditions") or []}

        def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
            prev = old_conds.get(ctype) or {}
            same = prev.get("status") == status
            return {
                "type": ctype, "status": status, "reason": reason, "message": message,
                "lastUpdateTime": prev.get("lastUpdateTime", now) if same and
                prev.get("reason") == reason else now,
                "lastTransitionTime": prev.get("lastTransitionTime", now) if same else now,
            }

        complete = (new_rs is not None and updated == replicas and total == replicas
                    and available >= replicas and _spec_replicas(new_rs) == replicas)
        rs_name = new_rs["metadata"]["name"] if new_rs is not None else ""
        conditions = [
            cond("Available", "True" if available >= replicas - unavail else "False",
                 "MinimumReplicasAvailable" if available >= replicas - unavail
                 else "MinimumReplicasUnavailable",
                 "Deployment has minimum availability." if available >= replicas - unavail
                 else "Deployment does not have minimum availability."),
        ]
        if spec.get("paused"):
            conditions.append(cond("Progressing", "Unknown", "DeploymentPaused",
                                   "Deployment is paused"))
        elif complete:
            conditions.append(cond("Progressing", "True", "NewReplicaSetAvailable",
                                   f'ReplicaSet "{rs_name}" has successfully progressed.'))
        else:
            prev = old_conds.get("Progressing") or {}
            started = parse_time(prev.get("lastUpdateTime")) or self.store.replica.wall.now()
            deadline = int(spec.get("progressDeadlineSeconds", 600))
            if (prev.get("reason") == "ReplicaSetUpdated"
                    and self.store.replica.wall.now() - started > deadline):
                conditions.append(cond("Progressing", "False", "ProgressDeadlineExceeded",
                                       f'ReplicaSet "{rs_name}" has timed out progressing.'))
            else:
                conditions.append(cond("Progressing", "True", "ReplicaSetUpdated",
                                       f'ReplicaSet "{rs_name}" is progressing.'))
        status: dict[str, Any] = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": sum(_st(r, "readyReplicas") for r in all_rs),
            "availableReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
            "conditions": conditions,
        }
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                  "unavailableReplicas"):
            if status[k] == 0:
                del status[k]
        new_annotations = None
        if new_rs is not None:
            rev = str(_revision(new_rs))
            if (d["metadata"].get("annotations") or {}).get(REVISION) != rev:
                new_annotations = rev
        if status == old_status and new_annotations is None:
            return
        m = d["metadata"]
        if new_annotations is not None:
            fresh = copy.deepcopy(d)
            fresh["metadata"].setdefault("annotations", {})[REVISION] = new_annotations
            d = await self.store.update(self.d_kind, fresh, m.get("namespace"), m["name"])
        if status != (d.get("status") or {}):
            new = copy.deepcopy(d)
            new["status"] = status
            await self.store.update(self.d_kind, new, m.get("namespace"), m["name"], "status")
