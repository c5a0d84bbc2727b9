"""Namespace deletion: empty the namespace, then drop its ``kubernetes`` finalizer.

A namespace of a scope is emptied and finalized only by the scope's writers: they hold
what is in it and may delete it, while a peer outside the scope would find it empty and
drop the finalizer before the scope's objects are gone."""

from __future__ import annotations

import copy
import logging

from shoal.control import namespace_conditions
from shoal.control.controller import Controller
from shoal.store.change_feed import Change
from shoal.store.objects import NAMESPACE_FINALIZER, StoreError

log = logging.getLogger(__name__)


class NamespaceLifecycle(Controller):
    name = "namespace-lifecycle"

    def relevant(self, change: Change) -> bool:
        if change.resource == "namespaces":
            return True
        return change.type == "DELETED" or bool(change.namespace and self._gone(change.namespace))

    async def sync(self) -> bool:
        ns_kind = self.store.registry.by_kind("v1", "Namespace")
        assert ns_kind is not None
        pending = False
        scopes, me = self.scopes.current(), self.store.replica.node_id
        for ns in self.store.list(ns_kind):
            meta = ns["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            name = meta["name"]
            if not scopes.is_writer(scopes.scope_of_namespace(name), me):
                continue
            if await self._empty(name):
                pending = True
                try:  # what remains, in its status conditions (part T)
                    await namespace_conditions.report(self.store, ns)
                except StoreError as e:
                    log.debug("namespace %s: conditions: %s", name, e)
                continue
            new = copy.deepcopy(ns)
            fins = [f for f in (new.get("spec") or {}).get("finalizers") or []
                    if f != NAMESPACE_FINALIZER]
            new.setdefault("spec", {})["finalizers"] = fins
            try:
                await self.store.update(ns_kind, new, None, name,
                                        finalize=True)
                log.info("namespace %s deleted", name)
            except StoreError as e:
                log.debug("namespace %s: finalize failed: %s", name, e)
                pending = True
        # What a peer that had not heard of a namespace's deletion (apart, or racing it)
        # wrote into it arrives after the namespace is gone: a namespace known to be
        # deleted (its tombstone) takes it too, as if it had been there in time.
        for (_, name), entry in list(self.store.replica.iter_entries("namespaces")):
            if entry.value is None and scopes.is_writer(scopes.scope_of_namespace(name), me):
                await self._empty(name)
        return pending

    def _gone(self, namespace: str) -> bool:
        entry = self.store.replica.entry("namespaces", "", namespace)
        return entry is not None and entry.value is None

    async def _empty(self, namespace: str) -> int:
        """Delete what is in ``namespace``; returns how many objects were still there."""
        remaining = 0
        for resource in self.store.replica.resources():
            kind = self.store.registry.by_storage_resource(resource)
            if kind is None or not kind.namespaced:
                continue
            for o in self.store.replica.list(resource, namespace):
                remaining += 1
                if o["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    await self.store.delete(kind, namespace, o["metadata"]["name"],
                                            propagation="Background")
                except StoreError as e:
                    log.debug("namespace %s: delete failed: %s", namespace, e)
        return remaining
