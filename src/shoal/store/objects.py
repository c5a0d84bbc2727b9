"""Object semantics on top of the replica: what create, update and delete mean.

This is where Kubernetes' registry rules live, so that the API and the
controllers apply them alike: uid and creation time, generation bumps, the
spec/status split of the status subresource, optimistic concurrency, and
deletion with finalizers and propagation policies.
"""

from __future__ import annotations

import copy
import datetime
import os
import random
import uuid
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

import orjson

from shoal.crdt.document import SET, KeyFn, Path
from shoal.model.defaults import apply_defaults
from shoal.model.kinds import Kind, KindRegistry
from shoal.model.merge_keys import list_merge_key
from shoal.model.validation import Cause, invalid_message, prune_unknown, validate
from shoal.store import service_ips
from shoal.store.frozen import freeze
from shoal.store.persistence import DiskFull, StorageError
from shoal.store.replica import Conflict as ReplicaConflict
from shoal.store.replica import Replica

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"


class StoreError(Exception):
    """An error with a Kubernetes reason and HTTP code, turned into a Status by the API."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, kind: Kind | None = None, name: str = "",
                 causes: list[Cause] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.causes = causes or []


class NotFound(StoreError):
    code, reason = 404, "NotFound"


class AlreadyExists(StoreError):
    code, reason = 409, "AlreadyExists"


class Conflict(StoreError):
    code, reason = 409, "Conflict"


MAX_OBJECT_DEPTH = 50
"""How deeply an object may nest. Real objects stay under 20 levels; the mesh refuses
documents deeper than 64 (``shoal.mesh.messages``), so no node may store one."""


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` levels, without paths. It recurses, but
    never deeper than ``limit`` + 1 calls."""
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    if limit <= 0:
        return True
    for child in value:  # noqa: SIM110 - a loop, not any() over a generator: every write
        if isinstance(child, (dict, list)) and _depth_over(child, limit - 1):
            return True
    return False


def _deeper_than(value: Any, limit: int) -> str | None:
    """The path of a value nested more than ``limit`` levels deep, if any (no recursion)."""
    if not _depth_over(value, limit):  # every write is checked: paths only when needed
        return None
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        v, depth, path = stack.pop()
        if isinstance(v, dict):
            if depth > limit:
                return path
            stack.extend((c, depth + 1, f"{path}.{k}" if path else str(k)) for k, c in v.items())
        elif isinstance(v, list):
            if depth > limit:
                return path
            stack.extend((c, depth + 1, f"{path}[{i}]") for i, c in enumerate(v))
    return None


class Invalid(StoreError):
    code, reason = 422, "Invalid"


class Forbidden(StoreError):
    code, reason = 403, "Forbidden"


class BadRequest(StoreError):
    code, reason = 400, "BadRequest"


class InsufficientStorage(StoreError):
    """The node's disk is full: the write was not stored (reads still work)."""

    code, reason = 507, "InsufficientStorage"


class StorageFailed(StoreError):
    """The node could not commit the write (not for want of space)."""

    code, reason = 500, "InternalError"


def storage_error(node: str, e: StorageError) -> StoreError:
    """The Status a failed commit gets: the node and its disk named."""
    if isinstance(e, DiskFull):
        return InsufficientStorage(
            f"node {node}: {e}; the write was not stored, and writes are refused until "
            "space is freed (reads still work)")
    return StorageFailed(f"node {node}: the write was not stored: {e}")


def qualified(kind: Kind) -> str:
    """``deployments.apps`` style name used in Kubernetes error messages."""
    return kind.resource


def now_rfc3339(seconds: float) -> str:
    return _rfc3339(int(seconds))


@lru_cache(maxsize=8)
def _rfc3339(seconds: int) -> str:
    """Formatted once a second rather than a few times per write (issue 11)."""
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


FINALIZERS: Path = ("metadata", "finalizers")


@cache
def key_fn(group: str, kind: str) -> KeyFn:
    def kf(path: Path) -> str | None:
        if path == FINALIZERS:
            # Two controllers adding their finalizers on two peers at once must both
            # be kept (Kubernetes' listType=set), for every kind, custom ones too.
            return SET
        return list_merge_key(group, kind, path)

    return kf


def _split(obj: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The object without metadata and status (what bumps generation), and its status."""
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    return rest, obj.get("status")


def _clone(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy; a JSON round trip is several times faster than copy.deepcopy."""
    try:
        out: dict[str, Any] = orjson.loads(orjson.dumps(obj))
    except TypeError:
        return copy.deepcopy(obj)
    return out


def _prune(kind: Kind, obj: dict[str, Any]) -> None:
    """Custom resources keep only the fields their schema knows, as in Kubernetes."""
    if kind.crd_version is None:
        return
    schema = (kind.crd_version.get("schema") or {}).get("openAPIV3Schema")
    if isinstance(schema, dict):
        prune_unknown(schema, obj)


ManagedFieldsOf = Callable[[dict[str, Any] | None, dict[str, Any]], list[dict[str, Any]]]
"""A write's ``metadata.managedFields`` from (old, new as it will be stored): server-side
apply's field ownership (shoal.api.server_side_apply, issue 12)."""


def _set_managed_fields(obj: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    if entries:
        obj["metadata"]["managedFields"] = entries
    else:
        obj["metadata"].pop("managedFields", None)


def _namespace_of(kind: Kind, namespace: str | None) -> str:
    return (namespace or "") if kind.namespaced else ""


FREEZE_READS = os.environ.get("SHOAL_FREEZE_READS") == "1"
"""Reads return read-only copies (``shoal.store.frozen``), so that a caller that
changes a stored object in place fails at once: set by tests, too slow for a node."""


class ObjectStore:
    """Create, read, update and delete Kubernetes objects in the local replica.

    Objects it returns are the replica's own (as with a Kubernetes informer cache):
    copy one before changing it. With ``freeze_reads`` (tests) they are read-only
    copies, and changing one raises ``TypeError``.
    """

    freeze_reads = FREEZE_READS

    def __init__(self, replica: Replica, registry: KindRegistry,
                 rng: random.Random | None = None) -> None:
        self.replica = replica
        self.registry = registry
        self._rng = rng or random.Random()
        # Called with (kind, old, new) after each committed write, e.g. to serve new CRDs.
        self.observers: list[Callable[[Kind, dict[str, Any] | None, dict[str, Any] | None], None]] = []
        # --- service accounts ---
        # Mutating admission on create (kind, new object), before defaulting and validation:
        # e.g. shoal.control.service_accounts.admit_pod. May raise a StoreError to refuse.
        self.admission: list[Callable[[Kind, dict[str, Any]], None]] = []
        # --- end service accounts ---
        # Mutating admission on update (resource, old, new), before defaulting and
        # validation: e.g. shoal.authz.scopes.RecordFormerWriters.
        self.update_admission: list[Callable[[str, dict[str, Any], dict[str, Any]], None]] = []

    # -- reads -----------------------------------------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.replica.get(kind.resource, _namespace_of(kind, namespace), name)
        if obj is None:
            raise NotFound(f'{qualified(kind)} "{name}" not found', kind=kind, name=name)
        return freeze(obj) if self.freeze_reads else obj

    def find(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.replica.get(kind.resource, _namespace_of(kind, namespace), name)
        return freeze(obj) if self.freeze_reads and obj is not None else obj

    def list(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        items = self.replica.list(kind.resource, namespace if kind.namespaced else None)
        return [freeze(o) for o in items] if self.freeze_reads else items

    # -- helpers ---------------------------------------------------------------

    def _now(self) -> str:
        return now_rfc3339(self.replica.wall.now())

    def _generate_name(self, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        return prefix[:58] + "".join(self._rng.choice(alphabet) for _ in range(5))

    def _check_namespace(self, kind: Kind, namespace: str) -> None:
        if not kind.namespaced:
            return
        ns = self.replica.get("namespaces", "", namespace)
        if ns is None:
            raise NotFound(f'namespaces "{namespace}" not found',
                           kind=self.registry.by_kind("v1", "Namespace"), name=namespace)
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise Forbidden(
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated"
            )

    def _validate(self, kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None,
                  subresource: str | None = None) -> None:
        too_deep = _deeper_than(obj, MAX_OBJECT_DEPTH)
        if too_deep is not None:
            # Checked before validation walks it recursively, and before anything is stored.
            name = (obj.get("metadata") or {}).get("name", "")
            causes = [Cause("FieldValueInvalid",
                            f"must have at most {MAX_OBJECT_DEPTH} levels of nesting", too_deep)]
            raise Invalid(invalid_message(kind, name, causes), kind=kind, name=name, causes=causes)
        causes = validate(kind, obj, old, subresource=subresource)
        if causes:
            name = (obj.get("metadata") or {}).get("name", "")
            raise Invalid(invalid_message(kind, name, causes), kind=kind, name=name, causes=causes)

    async def _put(self, kind: Kind, namespace: str, name: str, value: dict[str, Any] | None,
                   old: dict[str, Any] | None, expect_rv: int | None = None) -> dict[str, Any] | None:
        try:
            stored, durable = self.replica.put(
                kind.resource, namespace, name, value, key_fn(kind.group, kind.kind), expect_rv
            )
        except orjson.JSONEncodeError as e:
            # Nothing was taken (the replica encodes before it takes a revision).
            raise BadRequest(f"the object has no JSON form: {e}", kind=kind, name=name) from e
        except ReplicaConflict as e:
            raise Conflict(
                f'Operation cannot be fulfilled on {qualified(kind)} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                kind=kind, name=name,
            ) from e
        try:
            await durable
        except StorageError as e:
            raise storage_error(self.replica.node_id, e) from e
        for obs in self.observers:
            obs(kind, old, stored)
        return stored

    # -- create ----------------------------------------------------------------

    def prepare_create(self, kind: Kind, obj: dict[str, Any], namespace: str | None,
                       owned: bool = False) -> dict[str, Any]:
        """The object as it would be stored: named, defaulted, stamped and validated.

        ``owned``: the caller hands ``obj`` over (a body just parsed from JSON, which
        nothing else holds and which shares no dict or list within itself), so it is
        changed in place instead of copied first."""
        if not owned:
            obj = _clone(obj)
        obj["apiVersion"] = kind.api_version
        obj["kind"] = kind.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be an object")
        if kind.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(str(meta["generateName"]))
        for k in ("resourceVersion", "managedFields", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        meta["creationTimestamp"] = self._now()
        if kind.has_status or kind.is_custom:
            meta["generation"] = 1
        if kind.has_status and kind.kind not in ("Namespace", "Node", "CustomResourceDefinition"):
            obj.pop("status", None)
        if kind.kind == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        if kind.kind == "Namespace":
            obj.setdefault("spec", {})["finalizers"] = [NAMESPACE_FINALIZER]
            obj["status"] = {"phase": "Active"}
        # --- service accounts ---
        for admit in self.admission:
            admit(kind, obj)
        # --- end service accounts ---
        _prune(kind, obj)
        apply_defaults(kind, obj)
        if kind.resource == "services":
            service_ips.assign(obj, self.replica.list("services"))
            taken = service_ips.clashes(obj, self.replica.list("services"))
            if taken:
                raise Invalid(invalid_message(kind, meta.get("name", ""), taken), kind=kind,
                              name=meta.get("name", ""), causes=taken)
        self._validate(kind, obj, None)
        return obj

    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str | None = None,
                     dry_run: bool = False,
                     managed_fields: ManagedFieldsOf | None = None,
                     owned: bool = False) -> dict[str, Any]:
        obj = self.prepare_create(kind, obj, namespace, owned)
        if managed_fields is not None:
            _set_managed_fields(obj, managed_fields(None, obj))
        meta = obj["metadata"]
        ns = _namespace_of(kind, meta.get("namespace"))
        name = meta["name"]
        self._check_namespace(kind, ns)
        if self.replica.get(kind.resource, ns, name) is not None:
            raise AlreadyExists(f'{qualified(kind)} "{name}" already exists', kind=kind, name=name)
        if dry_run:
            return obj
        stored = await self._put(kind, ns, name, obj, None)
        assert stored is not None
        return stored

    # -- update ----------------------------------------------------------------

    def prepare_update(self, kind: Kind, obj: dict[str, Any], old: dict[str, Any],
                       subresource: str | None = None, finalize: bool = False) -> dict[str, Any]:
        if subresource == "status":
            return self._prepare_status_update(kind, obj, old)
        obj = _clone(obj)
        obj["apiVersion"] = kind.api_version
        obj["kind"] = kind.kind
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        old_meta = old["metadata"]
        # Fields the server owns.
        for k in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta.pop("managedFields", None)
        if "managedFields" in old_meta:  # a write that does not track ownership keeps it
            meta["managedFields"] = old_meta["managedFields"]
        meta.pop("selfLink", None)
        if kind.kind == "Namespace" and not finalize:
            # Only the finalize subresource changes a namespace's finalizers.
            old_fins = (old.get("spec") or {}).get("finalizers")
            spec = obj.setdefault("spec", {})
            if old_fins is None:
                spec.pop("finalizers", None)
            else:
                spec["finalizers"] = list(old_fins)
        if kind.has_status and "status" in old:
            obj["status"] = copy.deepcopy(old["status"])
        elif kind.has_status and "status" not in old:
            obj.pop("status", None)
        _prune(kind, obj)
        for admit in self.update_admission:
            admit(kind.resource, old, obj)
        if kind.resource == "services":
            spec, old_spec = obj.setdefault("spec", {}), old.get("spec") or {}
            for k in ("clusterIP", "clusterIPs"):
                if not spec.get(k) and old_spec.get(k):
                    spec[k] = copy.deepcopy(old_spec[k])
        apply_defaults(kind, obj)
        if "generation" in old_meta:
            gen = int(old_meta["generation"])
            if _split(obj)[0] != _split(old)[0]:
                gen += 1
            meta["generation"] = gen
        self._validate(kind, obj, old, subresource)
        return obj

    def _prepare_status_update(self, kind: Kind, obj: dict[str, Any],
                               old: dict[str, Any]) -> dict[str, Any]:
        """Only status changes through the status subresource. The new value shares the
        old one's other fields (a pod's spec), which a stored value never changes in place:
        a node's status writes would otherwise keep a copy of each pod's spec per version
        in the change feed. A custom resource is pruned in place, so it is copied whole."""
        if kind.crd_version is not None:
            new = copy.deepcopy(old)
        else:
            new = dict(old)
            new["metadata"] = copy.deepcopy(old["metadata"])
        if "status" in obj:
            new["status"] = _clone({"status": obj["status"]})["status"]
        else:
            new.pop("status", None)
        _prune(kind, new)  # as the main resource's writes: a CR's status too
        self._validate(kind, new, old, "status")
        return new

    async def update(self, kind: Kind, obj: dict[str, Any], namespace: str | None, name: str,
                     subresource: str | None = None, dry_run: bool = False,
                     check_rv: bool = True, finalize: bool = False,
                     managed_fields: ManagedFieldsOf | None = None) -> dict[str, Any]:
        ns = _namespace_of(kind, namespace)
        entry = self.replica.entry(kind.resource, ns, name)
        if entry is None or entry.value is None:
            raise NotFound(f'{qualified(kind)} "{name}" not found', kind=kind, name=name)
        old = entry.value
        meta = obj.get("metadata") or {}
        body_name = meta.get("name")
        if body_name and body_name != name:
            raise BadRequest(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        expect: int | None = None
        rv = meta.get("resourceVersion")
        if check_rv and rv:
            try:
                expect = int(rv)
            except ValueError as e:
                raise BadRequest(f"invalid resourceVersion {rv!r}") from e
            if expect != entry.rv:
                raise Conflict(
                    f'Operation cannot be fulfilled on {qualified(kind)} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    kind=kind, name=name,
                )
        new = self.prepare_update(kind, obj, old, subresource, finalize)
        if managed_fields is not None:
            _set_managed_fields(new, managed_fields(old, new))
        old_cmp = {k: v for k, v in old.items()}
        old_cmp["metadata"] = {k: v for k, v in old["metadata"].items() if k != "resourceVersion"}
        new_cmp = dict(new)
        new_cmp["metadata"] = {k: v for k, v in new["metadata"].items() if k != "resourceVersion"}
        if new_cmp == old_cmp:
            return old  # a no-op update keeps the resourceVersion, as in Kubernetes
        if dry_run:
            return new
        new_meta = new["metadata"]
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers") and not (
            kind.kind == "Namespace" and (new.get("spec") or {}).get("finalizers")
        ) and not new_meta.get("deletionGracePeriodSeconds"):  # a terminating pod stays
            await self._put(kind, ns, name, None, old, expect_rv=entry.rv)
            return new
        stored = await self._put(kind, ns, name, new, old, expect_rv=entry.rv)
        assert stored is not None
        return stored

    # -- delete ----------------------------------------------------------------

    async def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        propagation: str | None = None,
        precondition_uid: str | None = None,
        precondition_rv: str | None = None,
        dry_run: bool = False,
        grace_period: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Delete an object. Returns (the object, whether it is gone now)."""
        ns = _namespace_of(kind, namespace)
        entry = self.replica.entry(kind.resource, ns, name)
        if entry is None or entry.value is None:
            raise NotFound(f'{qualified(kind)} "{name}" not found', kind=kind, name=name)
        old = entry.value
        meta = old["metadata"]
        if precondition_uid and precondition_uid != meta.get("uid"):
            raise Conflict(
                f"Precondition failed: UID in precondition: {precondition_uid}, "
                f"UID in object meta: {meta.get('uid')}", kind=kind, name=name,
            )
        if precondition_rv and precondition_rv != meta.get("resourceVersion"):
            raise Conflict(
                f"Precondition failed: ResourceVersion in precondition: {precondition_rv}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}", kind=kind, name=name,
            )
        if propagation not in (None, "Foreground", "Background", "Orphan"):
            raise BadRequest(f"unsupported propagation policy {propagation!r}")
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if propagation == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        pending = bool(finalizers)
        if kind.kind == "Namespace":
            pending = pending or bool((old.get("spec") or {}).get("finalizers"))
        # -- graceful pod deletion (the node agent stops it, then deletes with grace 0) --
        grace = self._pod_grace(kind, old, grace_period)
        if grace is not None:
            if meta.get("deletionTimestamp") and int(meta.get("deletionGracePeriodSeconds")
                                                     or 0) <= grace:
                return old, False
            new = copy.deepcopy(old)
            new["metadata"].setdefault("deletionTimestamp", self._now())
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            if dry_run:
                return new, False
            stored = await self._put(kind, ns, name, new, old, expect_rv=entry.rv)
            assert stored is not None
            return stored, False
        # -- end graceful pod deletion --
        if not pending:
            if not dry_run:
                await self._put(kind, ns, name, None, old, expect_rv=entry.rv)
            return old, True
        if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []) \
                and not meta.get("deletionGracePeriodSeconds"):
            return old, False
        new = copy.deepcopy(old)
        new_meta = new["metadata"]
        new_meta.setdefault("deletionTimestamp", self._now())
        new_meta["deletionGracePeriodSeconds"] = 0
        if finalizers:
            new_meta["finalizers"] = finalizers
        if kind.kind == "Namespace":
            new.setdefault("status", {})["phase"] = "Terminating"
        if dry_run:
            return new, False
        stored = await self._put(kind, ns, name, new, old, expect_rv=entry.rv)
        assert stored is not None
        return stored, False

    def _pod_grace(self, kind: Kind, pod: dict[str, Any], requested: int | None) -> int | None:
        """The grace period of a graceful pod deletion; None when it is deleted at once.

        A pod a node agent runs (bound to an existing Node and not terminal) stays,
        marked with deletionTimestamp, until that agent has stopped it.
        """
        if kind.kind != "Pod" or requested == 0:
            return None
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node or self.replica.get("nodes", "", node) is None:
            return None
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return None
        if requested is not None and requested > 0:
            return requested
        tgps = spec.get("terminationGracePeriodSeconds")
        return int(tgps) if tgps is not None else 30
