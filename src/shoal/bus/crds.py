"""The Stream and Consumer kinds, installed by the node, and a Stream's limits checked.

Each bus peer writes the two CustomResourceDefinitions when its replica lacks them (or
holds an older revision of Shoal's), as the RBAC bootstrap writes the default policy:
peers that do it concurrently write the same content, so the merge keeps one object.
On create and on update, a Stream whose limits contradict each other is refused with a
422 (the schema checks each field; this checks them against each other).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.bus import stream_objects
from shoal.model.kinds import Kind, KindRegistry
from shoal.model.validation import Cause, invalid_message
from shoal.store.objects import Invalid, ObjectStore, StoreError

log = logging.getLogger(__name__)


async def ensure_crds(store: ObjectStore) -> bool:
    """Create or bring up to date Shoal's Stream and Consumer CRDs; True once both are."""
    kind = store.registry.by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert kind is not None
    done = True
    for crd in (stream_objects.stream_crd(), stream_objects.consumer_crd()):
        name = crd["metadata"]["name"]
        current = store.find(kind, None, name)
        try:
            if current is None:
                await store.create(kind, crd)
                log.info("bus: installed CustomResourceDefinition %s", name)
            elif _older(current):
                new = copy.deepcopy(current)
                new["spec"] = crd["spec"]
                new["metadata"].setdefault("annotations", {}).update(
                    crd["metadata"]["annotations"])
                await store.update(kind, new, None, name, check_rv=False)
                log.info("bus: updated CustomResourceDefinition %s", name)
        except StoreError as e:  # created meanwhile by a merge: the next pass sees it
            log.debug("bus: CRD %s: %s", name, e)
            done = False
    return done


def _older(crd: dict[str, Any]) -> bool:
    annotations = (crd.get("metadata") or {}).get("annotations") or {}
    have = annotations.get(stream_objects.CRD_VERSION_ANNOTATION)
    if have is None:
        return False  # not Shoal's: an operator's own definition is left alone
    try:
        return int(have) < int(stream_objects.CRD_REVISION)
    except ValueError:
        return False


def check_streams(store: ObjectStore) -> None:
    """Refuse conflicting Streams in ``store``'s writes. Every peer installs it, the bus
    or not: a Stream refused through one peer must not be stored through another."""
    store.admission.append(admit_stream)
    store.update_admission.append(StreamUpdates(store.registry))


def admit_stream(kind: Kind, obj: dict[str, Any]) -> None:
    """Refuse a Stream whose limits conflict (a store admission hook, on create)."""
    if kind.group != stream_objects.GROUP or kind.kind != "Stream":
        return
    _refuse_conflicts(kind, obj)


class StreamUpdates:
    """Refuse an update that leaves a Stream's limits conflicting (a store update admission
    hook), as on create; an update that keeps the spec as it was (labels, a finalizer) is
    let through, so that an object stored before the check stays writable."""

    def __init__(self, registry: KindRegistry) -> None:
        self.registry = registry

    def __call__(self, resource: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        if resource != stream_objects.STREAMS or new.get("spec") == old.get("spec"):
            return
        kind = self.registry.by_resource(stream_objects.GROUP, stream_objects.VERSION,
                                         "streams")
        if kind is not None:
            _refuse_conflicts(kind, new)


def _refuse_conflicts(kind: Kind, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    problems = stream_objects.conflicts(spec)
    if problems:
        name = str((obj.get("metadata") or {}).get("name", ""))
        causes = [Cause("FieldValueInvalid", p.split(": ", 1)[1], p.split(": ", 1)[0])
                  for p in problems]
        raise Invalid(invalid_message(kind, name, causes), kind=kind, name=name, causes=causes)
