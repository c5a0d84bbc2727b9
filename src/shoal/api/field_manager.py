"""A write request's field manager: who it is (the ``fieldManager`` parameter, else the
User-Agent), and the ``metadata.managedFields`` its write leaves, computed by
:mod:`shoal.api.server_side_apply` and :mod:`shoal.model.field_ownership`. The handlers of
:mod:`shoal.api.resources` call this.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shoal.api import web
from shoal.api.errors import ApiError
from shoal.api.routing import Target
from shoal.api.server_side_apply import (
    KUBECTL_APPLIER,
    ApplyConflict,
    apply,
    conflicts_allowed_by_last_applied,
    keep_last_applied_in_step,
)
from shoal.model import field_schema, managed_fields
from shoal.model.field_ownership import Write, created_entries, updated_entries
from shoal.model.field_sets import field_set
from shoal.model.managed_fields import APPLY
from shoal.store.objects import ManagedFieldsOf, ObjectStore, now_rfc3339

APPLY_PATCH = "application/apply-patch+yaml"
_OPTIONS = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}


def _invalid_option(request: web.Request, detail: str) -> ApiError:
    options = _OPTIONS.get(request.method, "PatchOptions")
    return ApiError(422, f'{options}.meta.k8s.io "" is invalid: {detail}', "Invalid")


def manager_of(request: web.Request, is_apply: bool) -> str:
    """The write's manager; an apply must name one, as in Kubernetes."""
    name = request.query.get("fieldManager")
    if name is None or name == "":
        if is_apply:
            raise _invalid_option(request, "fieldManager: Required value: is required for "
                                           "apply patch")
        return managed_fields.default_manager(request.headers.get("User-Agent", "")) \
            or "unknown"
    if len(name) > managed_fields.MAX_MANAGER_LENGTH:
        raise _invalid_option(request, "fieldManager: Too long: may not be more than "
                                       f"{managed_fields.MAX_MANAGER_LENGTH} bytes")
    if not name.isprintable():
        raise _invalid_option(request, f"fieldManager: Invalid value: {name!r}: must only "
                                       "contain printable characters")
    return name


def forced(request: web.Request, is_apply: bool) -> bool:
    value = request.query.get("force")
    if value is None:
        return False
    if not is_apply:
        raise _invalid_option(request, "force: Forbidden: may not be specified for non-apply "
                                       "patch")
    if value not in ("true", "false"):
        raise ApiError(400, f"invalid force value {value!r}")
    return value == "true"


def _write(request: web.Request, t: Target, store: ObjectStore, is_apply: bool,
           subresource: str | None) -> Write:
    return Write(manager_of(request, is_apply), t.kind.api_version,
                 now_rfc3339(store.replica.wall.now()), subresource or "",
                 t.kind.has_status)


def _resets(sent: Any) -> bool:
    """``managedFields: []`` or ``[{}]`` in a write clears them (Kubernetes' way to strip them)."""
    return isinstance(sent, list) and (sent == [] or sent == [{}])


def tracker(request: web.Request, t: Target, store: ObjectStore, body: dict[str, Any],
            subresource: str | None = None) -> ManagedFieldsOf:
    """The ownership an update, create or non-apply patch records: ``body`` is the object as
    the client sent it (its managedFields, when given and valid, replace the stored ones)."""
    write = _write(request, t, store, False, subresource)
    sent = (body.get("metadata") or {}).get("managedFields") \
        if isinstance(body.get("metadata"), dict) else None
    root = field_schema.for_kind(t.kind)

    def track(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
        if _resets(sent):
            return []
        if old is None and not sent and not write.subresource:
            return created_entries(new, root, write)
        base = managed_fields.decoded_or_none(sent) if sent else {}
        if not base and old is not None:
            base = managed_fields.decoded_or_none(old["metadata"].get("managedFields"))
        return updated_entries(old, new, base, root, write)

    return track


def applied(request: web.Request, t: Target, store: ObjectStore, live: dict[str, Any] | None,
            config: dict[str, Any]) -> tuple[dict[str, Any], ManagedFieldsOf]:
    """The object a server-side apply leaves, and its managedFields (409 on a conflict)."""
    meta = config.get("metadata")
    if isinstance(meta, dict) and meta.get("managedFields") is not None:
        raise ApiError(400, "metadata.managedFields must be nil")
    if not config.get("apiVersion") or not config.get("kind"):
        raise ApiError(400, "the applied configuration must set apiVersion and kind")
    write = _write(request, t, store, True, t.subresource)
    force = forced(request, True)
    root = field_schema.for_kind(t.kind)
    managers = managed_fields.decoded_or_none((live or {}).get("metadata", {}).get("managedFields"))
    try:
        obj, owners = apply(live, config, managers, root, write, force)
    except ApplyConflict as e:
        if not (write.manager == KUBECTL_APPLIER and live is not None
                and conflicts_allowed_by_last_applied(live, root, e)):
            raise ApiError(409, e.message, "Conflict", causes=e.causes) from e
        obj, owners = apply(live, config, managers, root, write, force=True)
    if write.manager == KUBECTL_APPLIER:
        keep_last_applied_in_step(obj, config)
    key = write.key(APPLY)

    def entries(_old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
        # What the store dropped (unknown fields, pruned) is not owned.
        own = owners.get(key)
        kept = owners
        if own is not None:
            present = own.fields & field_set(new, root)
            if present != own.fields:
                kept = {**owners, key: replace(own, fields=present)}
        return managed_fields.encode(managed_fields.cap_updates(kept, write.now))

    return obj, entries
