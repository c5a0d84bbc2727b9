"""CustomResourceDefinitions: serve their kinds, report them Established, clean up after them."""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.control.controller import Controller
from shoal.crdt.document import Path
from shoal.model.kinds import Kind
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"


def _no_keys(_: Path) -> str | None:
    return None


def crd_observer(kind: Kind, old: dict[str, Any] | None, new: dict[str, Any] | None,
                 registry: Any) -> None:
    """Register or drop a CRD's kinds as soon as the CRD is written, so the next request sees them."""
    if kind.resource != CRD_RESOURCE:
        return
    if new is None:
        if old is not None:
            registry.unregister_crd(old["metadata"]["name"])
        return
    registry.register_crd(new)


def serve_crds(store: ObjectStore) -> None:
    """Keep ``store.registry`` serving the kinds of every CRD in the replica: those held at
    start, those written here (served before the writer is answered) and those merged from
    peers (a listener on the change feed; it sees local ones again, harmlessly)."""
    registry = store.registry
    for crd in store.replica.list(CRD_RESOURCE):
        registry.register_crd(crd)
    store.observers.append(lambda kind, old, new: crd_observer(kind, old, new, registry))
    store.replica.feed.listeners.append(lambda change: crd_listener(change, registry))


def crd_listener(change: Change, registry: Any) -> None:
    """Serve or drop a CRD's kinds as its changes are published, including those merged
    from peers, which never pass through this node's store writes."""
    if change.resource != CRD_RESOURCE:
        return
    if change.type == "DELETED":
        registry.unregister_crd(change.name)
    else:
        registry.register_crd(change.obj)


CRD_MISSING_GRACE = 600.0
"""Seconds custom resources may be held here with no trace of their CRD (neither it nor its
tombstone) before they are deleted as leftovers of one whose tombstone was collected: far
longer than a catch-up's pages take to bring the CRD on a slow link."""


class CRDEstablishing(Controller):
    name = "crd-establishing"

    def __init__(self, store: ObjectStore, **kw: Any) -> None:
        super().__init__(store, **kw)
        self._missing: dict[str, float] = {}
        """Custom resources (by resource) held with no trace of their CRD, and since when."""

    def relevant(self, change: Change) -> bool:
        return change.resource == CRD_RESOURCE

    async def sync(self) -> bool:
        registry = self.store.registry
        crd_kind = registry.by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        assert crd_kind is not None
        served: set[str] = set()
        for crd in self.store.list(crd_kind):
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            served.add(f"{names.get('plural', '')}.{spec.get('group', '')}")
            conds = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                continue
            new = copy.deepcopy(crd)
            now = now_rfc3339(self.store.replica.wall.now())
            accepted = {k: v for k, v in names.items() if k in (
                "plural", "singular", "kind", "listKind", "shortNames", "categories")}
            accepted.setdefault("listKind", f"{names.get('kind', '')}List")
            accepted.setdefault("singular", str(names.get("kind", "")).lower())
            new["status"] = {
                "acceptedNames": accepted,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
                "storedVersions": [v["name"] for v in spec.get("versions") or []
                                   if v.get("storage")],
            }
            try:
                await self.store.update(crd_kind, new, None, crd["metadata"]["name"], "status")
            except StoreError as e:
                log.warning("could not mark CRD %s established: %s", crd["metadata"]["name"], e)
        # Custom resources whose definition is gone are deleted with it: at once when it is
        # known to be deleted (its tombstone, named plural.group), and not while it may not
        # have arrived yet (a pull brings documents in the sender's revision order, a page
        # at a time, so a CRD changed after its resources were made comes after them).
        replica = self.store.replica
        scopes = self.scopes.current()
        seconds = replica.wall.now()
        before, self._missing = self._missing, {}
        for resource in replica.resources():
            if "." not in resource or resource in served:
                continue
            if registry.by_storage_resource(resource) is not None:
                continue
            definition = replica.entry(CRD_RESOURCE, "", resource)
            if definition is not None and definition.value is not None:
                continue
            if definition is None:
                since = self._missing[resource] = before.get(resource, seconds)
                if seconds - since < CRD_MISSING_GRACE:
                    continue
            for (ns, name), entry in replica.iter_entries(resource):
                # A scope's objects are deleted by its writers (others' deletes are refused).
                if entry.value is not None and scopes.is_writer(
                        scopes.scope_of(resource, ns), replica.node_id):
                    _, durable = replica.put(resource, ns, name, None, _no_keys)
                    await durable
        return False
