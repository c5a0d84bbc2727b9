"""Garbage collection by ownerReferences, with Foreground, Background and Orphan deletion.

- An object whose owners are all gone is deleted (Background).
- An owner being deleted with the ``foregroundDeletion`` finalizer first has its
  dependents deleted; the finalizer is removed once none is left.
- An owner being deleted with the ``orphan`` finalizer has its dependents'
  ownerReferences to it removed, then the finalizer.

Every peer collects, but only what it may write: objects of a scope only on the scope's
writers (a change made elsewhere would be refused by its members).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.control.controller import Controller
from shoal.control.ownership import scope_of
from shoal.model.kinds import Kind
from shoal.store.change_feed import Change
from shoal.store.objects import FOREGROUND, ORPHAN, ObjectStore, StoreError

log = logging.getLogger(__name__)

Obj = tuple[Kind, dict[str, Any]]

ORPHAN_GRACE = 30.0
"""Seconds an owner may be missing from this replica before its dependents are collected.

Replication does not keep causal order across writers: a pod created on one peer can
reach a third peer before the ReplicaSet created on another, so an owner absent here
is not yet proof that it was deleted. An owner known to be gone (a tombstone, or a
live object of that name with another uid) is acted on at once."""


def _meta(o: dict[str, Any]) -> dict[str, Any]:
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


class GarbageCollector(Controller):
    name = "garbage-collector"

    def __init__(self, store: ObjectStore, **kw: Any) -> None:
        super().__init__(store, **kw)
        self._missing: dict[str, float] = {}
        """Dependents (by uid) whose owners are all absent here, and since when."""

    def relevant(self, change: Change) -> bool:
        if change.type == "DELETED":
            return True
        m = _meta(change.obj)
        return bool(m.get("deletionTimestamp") or m.get("ownerReferences"))

    def _all(self) -> list[Obj]:
        out: list[Obj] = []
        for resource in self.store.replica.resources():
            kind = self.store.registry.by_storage_resource(resource)
            if kind is None:
                continue
            out.extend((kind, o) for o in self.store.replica.list(resource))
        return out

    async def sync(self) -> bool:
        objs = self._all()
        by_uid = {_meta(o).get("uid"): (k, o) for k, o in objs}
        scopes, me = self.scopes.current(), self.store.replica.node_id

        def writable(k: Kind, o: dict[str, Any]) -> bool:
            return scopes.is_writer(scope_of(scopes, k.resource, o), me)

        dependents: dict[str, list[Obj]] = {}
        for k, o in objs:
            for ref in _meta(o).get("ownerReferences") or []:
                if isinstance(ref, dict) and ref.get("uid"):
                    dependents.setdefault(ref["uid"], []).append((k, o))
        pending = False
        for k, o in objs:
            m = _meta(o)
            fins = m.get("finalizers") or []
            if not m.get("deletionTimestamp"):
                continue
            deps = dependents.get(m.get("uid", ""), [])
            # Each scope's writers handle its dependents; the owner's writers finish once
            # no dependent is left that only another scope's writers may change.
            mine = [(dk, d) for dk, d in deps if writable(dk, d)]
            finish = writable(k, o) and len(mine) == len(deps)
            if ORPHAN in fins:
                for dk, d in mine:
                    await self._drop_owner(dk, d, m["uid"])
                if finish:
                    await self._remove_finalizer(k, o, ORPHAN)
                pending = pending or finish or bool(mine)
            elif FOREGROUND in fins:
                live = [(dk, d) for dk, d in mine if not _meta(d).get("deletionTimestamp")]
                for dk, d in live:
                    await self._delete(dk, d, "Foreground")
                if not deps and writable(k, o):
                    await self._remove_finalizer(k, o, FOREGROUND)
                pending = pending or writable(k, o) or bool(mine)
        now = self.store.replica.wall.now()
        before, self._missing = self._missing, {}
        for k, o in objs:
            refs = _meta(o).get("ownerReferences") or []
            if not refs or _meta(o).get("deletionTimestamp") or not writable(k, o):
                continue
            owners = [by_uid.get(r.get("uid")) for r in refs if isinstance(r, dict)]
            if all(ow is None for ow in owners):
                uid = str(_meta(o).get("uid", ""))
                since = self._missing[uid] = before.get(uid, now)
                gone = all(self._owner_gone(o, r) for r in refs if isinstance(r, dict))
                if gone or now - since >= ORPHAN_GRACE:
                    await self._delete(k, o, "Background")
                    pending = True
        return pending

    def _owner_gone(self, o: dict[str, Any], ref: dict[str, Any]) -> bool:
        """Whether this replica knows the owner was deleted or replaced (not merely unseen)."""
        kind = self.store.registry.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        if kind is None:
            return False
        ns = str(_meta(o).get("namespace", "")) if kind.namespaced else ""
        entry = self.store.replica.entry(kind.resource, ns, str(ref.get("name", "")))
        if entry is None:
            return False
        return entry.value is None or _meta(entry.value).get("uid") != ref.get("uid")

    async def _delete(self, kind: Kind, o: dict[str, Any], propagation: str) -> None:
        m = _meta(o)
        try:
            await self.store.delete(kind, m.get("namespace"), m["name"], propagation=propagation,
                                    precondition_uid=m.get("uid"))
            log.info("garbage-collected %s %s/%s", kind.kind, m.get("namespace", ""), m["name"])
        except StoreError as e:
            log.debug("gc delete of %s failed: %s", m.get("name"), e)

    async def _drop_owner(self, kind: Kind, o: dict[str, Any], uid: str) -> None:
        new = copy.deepcopy(o)
        m = new["metadata"]
        m["ownerReferences"] = [r for r in m.get("ownerReferences") or [] if r.get("uid") != uid]
        if not m["ownerReferences"]:
            del m["ownerReferences"]
        try:
            await self.store.update(kind, new, m.get("namespace"), m["name"])
        except StoreError as e:
            log.debug("gc orphaning of %s failed: %s", m.get("name"), e)

    async def _remove_finalizer(self, kind: Kind, o: dict[str, Any], fin: str) -> None:
        new = copy.deepcopy(o)
        m = new["metadata"]
        m["finalizers"] = [f for f in m.get("finalizers") or [] if f != fin]
        try:
            await self.store.update(kind, new, m.get("namespace"), m["name"])
        except StoreError as e:
            log.debug("gc finalizer removal on %s failed: %s", m.get("name"), e)
