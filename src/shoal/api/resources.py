"""The resource endpoints: CRUD, list/watch, patch and the status and scale subresources."""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime
import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from shoal.api import (
    bodies,
    ephemeral,  # pods/ephemeralcontainers (issue 12)
    eviction,  # pods/eviction (issue 12)
    field_manager,  # server-side apply and managedFields (issue 12)
    http_proxy,  # pods/proxy, services/proxy (issue 12)
    pod_streams,
    request_options,
    request_state,
    served_versions,  # autoscaling/v1 HorizontalPodAutoscaler (issue 12)
    token_request,  # service accounts
    web,
)
from shoal.api.admission import Admission, AdmissionRequest
from shoal.api.encoded import EncodedObjects
from shoal.api.errors import ApiError, success_status
from shoal.api.memory import tune_malloc
from shoal.api.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from shoal.api.pod_proxy import PodProxy
from shoal.api.routing import Target
from shoal.api.tables import build_table
from shoal.api.watch import WatchStream, caught_up, too_large_response
from shoal.model.jsonpath import get_first, set_value
from shoal.model.kinds import Kind
from shoal.model.selectors import FieldSelector, LabelSelector, SelectorError
from shoal.model.validation import drop_unknown_fields, unknown_fields
from shoal.node.agent import NodeAgent
from shoal.store.objects import ObjectStore, StoreError

JSON = "application/json"
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
MAX_WATCH_SECONDS = 1800.0
STREAM_ITEMS = 500
"""A list of more items is written as it is serialized, CHUNK_ITEMS at a time (chunked
transfer encoding), so the node never holds a whole large body (nor the copies the
TLS layer makes of it) per request: 200 clients listing a few thousand pods took RSS
from 106 MB to 1.43 GB. Between chunks the handler yields, so one large list does not
hold up the other requests (health checks included) until it is all serialized, and
a slow reader holds up only its own handler (the write waits for the socket)."""
CHUNK_ITEMS = 100
# Stateful workloads (issue 12): these registries return the deleted object too.
RETURN_DELETED_STORAGE = ("PersistentVolumeClaim", "PersistentVolume", "StorageClass")
# The registries whose strategy has AllowCreateOnUpdate (group, kind): a PUT to a missing
# object creates it, ignoring the body's resourceVersion. Every other kind, custom
# resources among them, answers 404 NotFound.
CREATE_ON_UPDATE = frozenset({
    ("", "Service"), ("", "Endpoints"), ("", "Event"), ("", "LimitRange"),
    ("coordination.k8s.io", "Lease"), ("coordination.k8s.io", "LeaseCandidate"),
    ("rbac.authorization.k8s.io", "Role"), ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"), ("node.k8s.io", "RuntimeClass"),
})


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON)


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept


def _include_object(request: web.Request) -> str:
    v = request.query.get("includeObject", "Metadata")
    return v if v in ("None", "Metadata", "Object") else "Metadata"


def from_store_error(e: StoreError) -> ApiError:
    causes = [{"reason": c.reason, "message": c.message, "field": c.field} for c in e.causes]
    return ApiError(e.code, e.message, e.reason, kind=e.kind, name=e.name, causes=causes)


def _selectors(request: web.Request, kind: Kind) -> tuple[LabelSelector, FieldSelector]:
    try:
        labels = LabelSelector.parse(request.query.get("labelSelector", ""))
        fields = FieldSelector.parse(request.query.get("fieldSelector", ""))
        # Custom resources select on metadata.name and metadata.namespace only.
        fields.check_supported("" if kind.is_custom else kind.kind)
    except SelectorError as e:
        raise ApiError(400, str(e)) from e
    return labels, fields


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise ApiError(400, f"unsupported dryRun value {v!r}: only All is supported")
    return bool(values)


def check_fields(request: web.Request, kind: Kind, obj: dict[str, Any], mode: str,
                 duplicates: Sequence[str] = (), patched: bool = False) -> None:
    """``fieldValidation`` (``mode``), as the apiserver's strict decoding: the unknown
    fields of ``obj`` are dropped from it (what the apiserver stores), and with them the
    repeated keys of its body (``duplicates``, from :func:`bodies.parse`) are warned of
    under Warn (the default) and refused with a 400 under Strict; a body that was not
    ``patched`` in (create, update) is "cannot be handled" there, as the apiserver says."""
    unknown = drop_unknown_fields(kind, obj)
    if mode == "Ignore":
        return
    errors = [*duplicates, *(f'unknown field "{f}"' for f in unknown)]
    if not errors:
        return
    if mode == "Strict":
        message = "strict decoding error: " + ", ".join(errors)
        if not patched:
            message = (f'{kind.kind} in version "{kind.version}" cannot be handled as a '
                       f"{kind.kind}: {message}")
        raise ApiError(400, message)
    request_state.add_warnings(request, [_one_line(e) for e in errors])


def _one_line(warning: str) -> str:
    """A warning for a header: Go's net/http writes a newline in a header as a space."""
    return warning.replace("\r", " ").replace("\n", " ")


Duplicates = list[str] | None
"""Where a body's repeated keys go (see :func:`bodies.parse`); None: not looked for."""


def _duplicates(mode: str) -> Duplicates:
    """Where :func:`bodies.parse` puts a body's repeated keys: nowhere under Ignore."""
    return None if mode == "Ignore" else []


async def read_checked(request: web.Request, group: str, kind: str, options: str
                       ) -> dict[str, Any]:
    """A subresource's body (a Scale, a Binding, an Eviction, a TokenRequest, a Pod),
    decoded as strictly as a resource's: under ``fieldValidation`` its unknown fields are
    dropped and, with its repeated keys, warned of or refused in the apiserver's words for
    ``kind`` (at the version the body names, as its decoder gives it). ``options`` names
    the write's options for a bad fieldValidation (``CreateOptions``, ``UpdateOptions``)."""
    mode = request_options.field_validation(request, options)
    duplicates = _duplicates(mode)
    obj = await bodies.read_object(request, duplicates)
    av = obj.get("apiVersion")
    named, _, version = av.rpartition("/") if isinstance(av, str) else ("", "", "")
    check_fields(request, body_kind(group, version if named == group and version else "v1",
                                    kind), obj, mode, duplicates or ())
    return obj


@functools.cache
def body_kind(group: str, version: str, kind: str) -> Kind:
    """The kind of a body a subresource takes, for :func:`check_fields`."""
    return Kind(group, version, kind, f"{kind.lower()}s", kind.lower(), True)


def _checked_patched(request: web.Request, kind: Kind, patched: Any, mode: str,
                     duplicates: Duplicates) -> dict[str, Any]:
    if not isinstance(patched, dict):
        raise ApiError(422, "the patched object must be a JSON object")
    check_fields(request, kind, patched, mode, duplicates or (), patched=True)
    return patched


def check_applied_fields(request: web.Request, t: Target, config: dict[str, Any],
                         mode: str, duplicates: Sequence[str]) -> None:
    """Server-side apply: an unknown field is refused whatever ``fieldValidation`` says
    (the apiserver fails to build the typed patch object), and a repeated key of the YAML
    is refused under Strict and warned of under Warn. The apiserver answers the first
    with a 500 (kubernetes/kubernetes#139253); Shoal with a 400 and the same words."""
    unknown = unknown_fields(t.kind, config)
    if unknown:
        meta = config.get("metadata") or {}
        where = f"{meta.get('namespace') or t.namespace or ''}/{t.name}"
        group = f"{t.kind.group}/{t.kind.version}" if t.kind.group else f"/{t.kind.version}"
        errors = [f".{f}: field not declared in schema" for f in unknown]
        detail = errors[0] if len(errors) == 1 else "errors:\n  " + "\n  ".join(errors)
        raise ApiError(400, f"failed to create typed patch object ({where}; {group}, "
                            f"Kind={t.kind.kind}): {detail}")
    if mode == "Ignore" or not duplicates:
        return
    errors = [f"error converting YAML to JSON: {d}" for d in duplicates]
    if mode == "Strict":
        raise ApiError(400, f"error strict decoding YAML: {errors[0]}")
    request_state.add_warnings(request, [_one_line(e) for e in errors])


def _encode_continue(rv: int, after: tuple[str, str]) -> str:
    raw = orjson.dumps({"rv": rv, "ns": after[0], "name": after[1]})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        pad = "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(token + pad))
        rv, ns, name = data["rv"], data["ns"], data["name"]
        if type(rv) is not int or not 0 <= rv < 2**63 or not isinstance(ns, str) \
                or not isinstance(name, str):
            raise ValueError("not a continue token of this server")
        return rv, (ns, name)
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ApiError(400, "continue key is not valid: incorrect encoded start resourceVersion "
                       "(version meta.k8s.io/v1)") from e


def _key_of(obj: dict[str, Any]) -> tuple[str, str]:
    m = obj["metadata"]
    return (m.get("namespace", ""), m["name"])


class ResourceHandlers:
    """Serves one request on a resolved target."""

    def __init__(self, store: ObjectStore, bookmark_interval: float = 60.0) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.node_agent: NodeAgent | None = None  # set by the node; serves pods/log and exec
        self.pod_proxy: PodProxy | None = None  # set by the node; pods/log, exec on other nodes
        # --- service accounts: set by the node; serves serviceaccounts/token ---
        self.token_requests: token_request.TokenRequests | None = None
        # --- end service accounts ---
        self.admission: Admission | None = None  # set by the server; checks writes' bodies
        tune_malloc()  # memory under load: large blocks go back to the system when freed
        self.encoded = EncodedObjects()
        """Stored objects' JSON, reused by lists and gets while they do not change."""

    def _admit(self, request: web.Request, operation: str, t: Target,
               obj: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        """Run the admission hooks on a write, before it is made (raises to refuse it)."""
        if self.admission is None:
            return
        meta = (obj if obj is not None else old or {}).get("metadata") or {}
        ns = (t.namespace or "") if t.kind.namespaced else ""
        warnings = self.admission.admit(AdmissionRequest(
            request[request_state.USER], operation, t.kind, ns,
            t.name or str(meta.get("name") or ""), t.subresource or "", obj, old))
        if warnings:
            request_state.add_warnings(request, list(warnings))

    async def handle(self, request: web.Request, t: Target) -> web.StreamResponse:
        try:
            if served_versions.converted(t.kind):  # a second served version (issue 12)
                return await served_versions.serve(self, self._dispatch, request, t)
            return await self._dispatch(request, t)
        except StoreError as e:
            raise from_store_error(e) from e
        except PatchError as e:
            raise ApiError(e.code, e.message) from e

    async def _dispatch(self, request: web.Request, t: Target) -> web.StreamResponse:
        m = request.method
        if t.name is None:
            if t.watch_path or (m == "GET" and request.query.get("watch") in ("true", "1")):
                if m != "GET":
                    raise ApiError(405, "the server does not allow this method on the requested resource")
                return await self.watch(request, t)
            if m == "GET":
                return await self.list(request, t)
            if t.kind.namespaced and t.namespace is None:
                # As Kubernetes: the all-namespaces path of a namespaced kind only lists and
                # watches; a DELETE there would empty every namespace at once.
                raise ApiError(405, "the server does not allow this method on the requested resource")
            if m == "POST":
                return await self.create(request, t)
            if m == "DELETE":
                return await self.delete_collection(request, t)
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if t.watch_path:
            return await self.watch(request, t)
        if t.subresource == "scale":
            return await self.scale(request, t)
        if t.subresource == "binding":
            if m != "POST":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return await self.bind(request, t)
        if t.subresource == "ephemeralcontainers":  # kubectl debug
            return await ephemeral.serve(request, t, self)
        if t.subresource == "proxy":  # pods/proxy, services/proxy: HTTP to a pod
            return await http_proxy.serve(request, t, self.store, self.node_agent,
                                          self.pod_proxy)
        if t.subresource in ("log", "exec", "attach", "portforward"):
            return await pod_streams.serve(request, t, self.store, self.node_agent,
                                         self.pod_proxy)
        # --- service accounts: the TokenRequest subresource ---
        if t.subresource == "token" and t.kind.kind == "ServiceAccount":
            return await token_request.serve(request, t, self.store, self.token_requests)
        # --- end service accounts ---
        if t.subresource == "eviction":
            return await eviction.serve(request, t, self.store, self._admit)
        if m == "GET":
            if request.query_string:  # at a revision not reached, it waits as a list does
                want = request_options.resource_version_param(request)
                if want is not None and not await caught_up(self.store.replica, want):
                    return too_large_response(want, self.store.replica.revision)
            return self.get(request, t)
        if m == "PUT":
            return await self.update(request, t)
        if m == "PATCH":
            return await self.patch(request, t)
        if m == "DELETE" and t.subresource is None:
            return await self.delete(request, t)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    # -- reads -----------------------------------------------------------------

    def _ns(self, t: Target) -> str | None:
        return t.namespace if t.kind.namespaced else None

    def get(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        obj = self.store.get(t.kind, self._ns(t), t.name)
        if t.subresource == "status":
            return json_response(obj)
        if wants_table(request):
            return json_response(build_table(
                t.kind, [obj], now=datetime.datetime.now(datetime.UTC),
                include_object=_include_object(request),
                resource_version=obj["metadata"].get("resourceVersion", ""),
            ))
        return web.Response(body=self.encoded.dumps(obj), content_type=JSON)

    async def list(self, request: web.Request, t: Target) -> web.StreamResponse:
        labels, fields = _selectors(request, t.kind)
        replica = self.store.replica
        want = request_options.resource_version_param(request)
        request_options.int_param(request, "timeoutSeconds")  # checked, as the apiserver
        limit = request_options.int_param(request, "limit")
        if want is not None and not await caught_up(replica, want):
            # As the apiserver's watch cache: wait a while for a revision not reached yet.
            return too_large_response(want, replica.revision)
        revision = replica.revision
        items = self.store.list(t.kind, t.namespace)
        if not labels.empty or not fields.empty:
            items = [o for o in items
                     if labels.matches((o.get("metadata") or {}).get("labels") or {})
                     and fields.matches(o)]
        cont = request.query.get("continue", "")
        if cont:
            revision, after = _decode_continue(cont)
            items = [o for o in items if _key_of(o) > after]
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        next_token = ""
        if limit is not None and 0 < limit < len(items):
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            next_token = _encode_continue(revision, _key_of(items[-1]))
            meta["continue"] = next_token
        if wants_table(request):
            now = datetime.datetime.now(datetime.UTC)
            include = _include_object(request)

            def table(objs: Sequence[dict[str, Any]]) -> dict[str, Any]:
                return build_table(t.kind, objs, now=now, include_object=include,
                                   resource_version=str(revision), continue_token=next_token)

            if len(items) <= STREAM_ITEMS:
                return json_response(table(items))
            return await self._stream_list(request, table([]), "rows", items,
                                           lambda chunk: table(chunk)["rows"])
        body = {"kind": t.kind.list_kind, "apiVersion": t.kind.api_version, "metadata": meta,
                "items": items}
        if len(items) <= STREAM_ITEMS:
            opening = orjson.dumps({**body, "items": []})
            return web.Response(body=b"".join((
                opening[:-2], b",".join(self.encoded.dumps(o) for o in items), b"]}")),
                content_type=JSON)
        return await self._stream_list(request, {**body, "items": []}, "items", items,
                                       lambda chunk: chunk)

    async def _stream_list(self, request: web.Request, head: dict[str, Any], key: str,
                           items: Sequence[dict[str, Any]],
                           render: Callable[[Sequence[dict[str, Any]]], Sequence[Any]],
                           ) -> web.StreamResponse:
        """``head`` with ``head[key]`` (empty, and last) filled with ``render`` of the items,
        written CHUNK_ITEMS at a time. The items are the values as of the list's revision
        (the replica replaces values, it never changes one in place)."""
        opening = orjson.dumps(head)
        suffix = b"]}"
        assert opening.endswith(b'"' + key.encode() + b'":[' + suffix)
        resp = web.StreamResponse(headers={"Content-Type": JSON})
        await resp.prepare(request)
        await resp.write(opening[:-len(suffix)])
        for i in range(0, len(items), CHUNK_ITEMS):
            rendered = render(items[i:i + CHUNK_ITEMS])
            chunk = b",".join(self.encoded.dumps(x) for x in rendered)
            await resp.write(b"," + chunk if i else chunk)
            await asyncio.sleep(0)  # let the other requests in between chunks
        await resp.write(suffix)
        await resp.write_eof()
        return resp

    async def watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        labels, fields = _selectors(request, t.kind)
        q = request.query
        if t.name is not None:
            fields = FieldSelector.parse(
                ",".join(x for x in (q.get("fieldSelector", ""), f"metadata.name={t.name}") if x)
            )
        # As the apiserver: an int64 (a 400 otherwise), 0 or none for the server's own limit.
        seconds = request_options.int_param(request, "timeoutSeconds")
        timeout = min(float(seconds), MAX_WATCH_SECONDS) if seconds else MAX_WATCH_SECONDS
        request_options.resource_version_param(request)  # a 400 now, not an ERROR event
        request_options.int_param(request, "limit")
        stream = WatchStream(
            request, self.store.replica, t.kind, t.namespace, labels, fields,
            resource_version=q.get("resourceVersion"),
            timeout=timeout,
            bookmarks=q.get("allowWatchBookmarks") in ("true", "1"),
            bookmark_interval=self.bookmark_interval,
            send_initial_events=q.get("sendInitialEvents") in ("true", "1"),
            as_table=wants_table(request),
            include_object=_include_object(request),
        )
        return await stream.run()

    # -- writes ----------------------------------------------------------------

    def _check_body_target(self, t: Target, obj: dict[str, Any]) -> None:
        bodies.check_type(t.kind, obj)
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        if t.kind.namespaced and ns and t.namespace and ns != t.namespace:
            raise ApiError(400, "the namespace of the provided object does not match the "
                                "namespace sent on the request")
        if t.name is not None and meta.get("name") and meta["name"] != t.name:
            raise ApiError(400, "the name of the object "
                                f"({meta['name']}) does not match the name on the URL ({t.name})")

    async def create(self, request: web.Request, t: Target) -> web.Response:
        mode = request_options.field_validation(request, "CreateOptions")
        duplicates = _duplicates(mode)
        obj = await bodies.read_object(request, duplicates)
        self._check_body_target(t, obj)
        if t.kind.namespaced and t.namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        meta = obj.get("metadata") or {}
        if not meta.get("name") and not meta.get("generateName"):
            raise ApiError(422, f'{t.kind.kind} "" is invalid: metadata.name: Required value: '
                                "name or generateName is required", "Invalid", kind=t.kind,
                           causes=[{"reason": "FieldValueRequired",
                                    "message": "Required value: name or generateName is required",
                                    "field": "metadata.name"}])
        check_fields(request, t.kind, obj, mode, duplicates or ())
        self._admit(request, "CREATE", t, obj, None)
        # The body is this request's alone: the store need not copy it (issue 11).
        stored = await self.store.create(t.kind, obj, t.namespace, dry_run=_dry_run(request),
                                         managed_fields=field_manager.tracker(request, t,
                                                                              self.store, obj),
                                         owned=bodies.parsed_unshared(request))
        return json_response(stored, 201)

    async def update(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        mode = request_options.field_validation(request, "UpdateOptions")
        duplicates = _duplicates(mode)
        obj = await bodies.read_object(request, duplicates)
        self._check_body_target(t, obj)
        if t.subresource not in (None, "status"):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        check_fields(request, t.kind, obj, mode, duplicates or ())
        track = field_manager.tracker(request, t, self.store, obj, t.subresource)
        old = self.store.find(t.kind, self._ns(t), t.name)
        if old is None and t.subresource is None:
            if (t.kind.group, t.kind.kind) not in CREATE_ON_UPDATE or t.kind.is_custom:
                raise ApiError(404, f'{t.kind.resource} "{t.name}" not found', kind=t.kind,
                               name=t.name)
            obj.setdefault("metadata", {})["name"] = t.name
            self._admit(request, "CREATE", t, obj, None)
            stored = await self.store.create(t.kind, obj, t.namespace, dry_run=_dry_run(request),
                                             managed_fields=track)
            return json_response(stored, 201)
        self._admit(request, "UPDATE", t, obj, old)
        stored = await self.store.update(t.kind, obj, self._ns(t), t.name, t.subresource,
                                         dry_run=_dry_run(request), managed_fields=track)
        return json_response(stored)

    def _apply_patch(self, request: web.Request, kind: Kind, current: dict[str, Any],
                     raw: bytes, duplicates: Duplicates = None) -> dict[str, Any]:
        ctype = request.content_type
        if ctype not in PATCH_TYPES:
            raise ApiError(415, f"the body of the request was in an unknown format - accepted "
                                f"media types include: {', '.join(PATCH_TYPES)}")
        patch = bodies.parse(raw, "yaml" if ctype.endswith("yaml") else "json", duplicates)
        if ctype == "application/json-patch+json":
            if duplicates:  # the apiserver decodes the operations strictly, and says so
                duplicates[:] = [f"json patch {d}" for d in duplicates]
            return apply_json_patch(current, patch)
        if not isinstance(patch, dict):
            raise ApiError(400, "the patch must be a JSON object")
        if ctype == "application/merge-patch+json":
            return apply_merge_patch(current, patch)
        if ctype == "application/strategic-merge-patch+json":
            if kind.is_custom:
                raise ApiError(415, "strategic merge patch is not supported for custom resources; "
                                    "use a merge patch or a JSON patch")
            return apply_strategic_merge_patch(current, patch, kind.group, kind.kind)
        # Server-side apply of the scale subresource: the applied Scale is merged in.
        return apply_merge_patch(current, patch)

    async def patch(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        raw = await bodies.read_raw(request)
        ns = self._ns(t)
        current = self.store.find(t.kind, ns, t.name)
        dry = _dry_run(request)
        if request.content_type == field_manager.APPLY_PATCH:
            return await self._server_side_apply(request, t, raw, current, dry)
        field_manager.forced(request, False)
        mode = request_options.field_validation(request, "PatchOptions")
        if current is None:
            raise ApiError(404, f'{t.kind.resource} "{t.name}" not found', kind=t.kind, name=t.name)
        duplicates = _duplicates(mode)
        patched = self._apply_patch(request, t.kind, current, raw, duplicates)
        if not isinstance(patched, dict):
            raise ApiError(422, "the patched object must be a JSON object")
        bodies.check_type(t.kind, patched)
        check_fields(request, t.kind, patched, mode, duplicates or (), patched=True)
        pmeta = patched.get("metadata") or {}
        if pmeta.get("name") not in (None, t.name):
            raise ApiError(400, "the name of the object does not match the name on the URL")
        self._admit(request, "UPDATE", t, patched, current)
        stored = await self.store.update(t.kind, patched, ns, t.name, t.subresource, dry_run=dry,
                                         check_rv=pmeta.get("resourceVersion") !=
                                         current["metadata"].get("resourceVersion"),
                                         managed_fields=field_manager.tracker(
                                             request, t, self.store, patched, t.subresource))
        return json_response(stored)

    async def _server_side_apply(self, request: web.Request, t: Target, raw: bytes,
                                 current: dict[str, Any] | None, dry: bool) -> web.Response:
        """PATCH with ``application/apply-patch+yaml``: creates the object when absent."""
        assert t.name is not None
        mode = request_options.field_validation(request, "PatchOptions")
        duplicates = _duplicates(mode)
        config = bodies.parse(raw, "yaml", duplicates)
        if not isinstance(config, dict):
            raise ApiError(400, "the applied configuration must be an object")
        self._check_body_target(t, config)
        check_applied_fields(request, t, config, mode, duplicates or ())
        if current is None and t.subresource is not None:
            raise ApiError(404, f'{t.kind.resource} "{t.name}" not found', kind=t.kind, name=t.name)
        obj, owners = field_manager.applied(request, t, self.store, current, config)
        obj.setdefault("metadata", {})["name"] = t.name
        if current is None:
            self._admit(request, "CREATE", t, obj, None)
            return json_response(await self.store.create(t.kind, obj, t.namespace, dry,
                                                         managed_fields=owners), 201)
        self._admit(request, "UPDATE", t, obj, current)
        stored = await self.store.update(
            t.kind, obj, self._ns(t), t.name, t.subresource, dry_run=dry,
            check_rv=bool((config.get("metadata") or {}).get("resourceVersion")),
            managed_fields=owners)
        return json_response(stored)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if request.can_read_body:
            raw = await bodies.read_raw(request)
            if raw.strip():
                body = bodies.parse(raw, request.content_type or JSON)
                if not isinstance(body, dict):
                    raise ApiError(400, "DeleteOptions must be an object")
                opts = body
        q = request.query
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        grace = request_options.int_param(request, "gracePeriodSeconds")
        if grace is not None:
            opts["gracePeriodSeconds"] = grace
        elif not -(2**63) <= (_grace(opts) or 0) < 2**63:  # from the body: an int64 too
            raise ApiError(400, "json: cannot unmarshal number into Go struct field "
                                "DeleteOptions.gracePeriodSeconds of type int64")
        if q.get("orphanDependents") in ("true", "false") and "propagationPolicy" not in opts:
            opts["propagationPolicy"] = "Orphan" if q["orphanDependents"] == "true" else "Background"
        if "orphanDependents" in opts and "propagationPolicy" not in opts:
            opts["propagationPolicy"] = "Orphan" if opts["orphanDependents"] else "Background"
        return opts

    async def delete(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        opts = await self._delete_options(request)
        pre = opts.get("preconditions") or {}
        self._admit(request, "DELETE", t, None, self.store.find(t.kind, self._ns(t), t.name))
        obj, gone = await self.store.delete(
            t.kind, self._ns(t), t.name,
            propagation=opts.get("propagationPolicy"),
            precondition_uid=pre.get("uid"),
            precondition_rv=pre.get("resourceVersion"),
            dry_run=bool(opts.get("dryRun")) or _dry_run(request),
            grace_period=_grace(opts),
        )
        # Kinds whose registry returns the deleted object (ReturnDeletedObject), as Kubernetes.
        if gone and t.kind.kind not in ("Pod", "Namespace", "Service", "ServiceAccount",
                                        *RETURN_DELETED_STORAGE) \
                and not t.kind.is_custom:
            return json_response(success_status(t.kind, t.name, obj["metadata"].get("uid", "")))
        return json_response(obj, 200 if gone else 202)

    async def delete_collection(self, request: web.Request, t: Target) -> web.Response:
        labels, fields = _selectors(request, t.kind)
        opts = await self._delete_options(request)
        items = [o for o in self.store.list(t.kind, t.namespace)
                 if labels.matches((o.get("metadata") or {}).get("labels") or {})
                 and fields.matches(o)]
        deleted = []
        for o in items:
            m = o["metadata"]
            self._admit(request, "DELETE", replace(t, name=m["name"]), None, o)
            try:
                obj, _ = await self.store.delete(t.kind, m.get("namespace"), m["name"],
                                                 propagation=opts.get("propagationPolicy"),
                                                 dry_run=_dry_run(request),
                                                 grace_period=_grace(opts))
            except StoreError:
                continue
            deleted.append(obj)
        return json_response({"kind": t.kind.list_kind, "apiVersion": t.kind.api_version,
                              "metadata": {"resourceVersion": str(self.store.replica.revision)},
                              "items": deleted})

    # -- subresources ----------------------------------------------------------

    def _scale_of(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        assert kind.scale is not None
        meta = obj["metadata"]
        status: dict[str, Any] = {
            "replicas": get_first(kind.scale.status_replicas_path, obj, 0) or 0,
        }
        if kind.is_custom:
            if kind.scale.label_selector_path:
                sel = get_first(kind.scale.label_selector_path, obj)
                if sel:
                    status["selector"] = sel
        else:
            sel = (obj.get("spec") or {}).get("selector")
            if isinstance(sel, dict) and kind.kind == "ReplicationController":
                sel = {"matchLabels": sel}  # an RC's selector is a plain label map
            if isinstance(sel, dict):
                status["selector"] = _selector_string(sel)
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": get_first(kind.scale.spec_replicas_path, obj, 0) or 0},
            "status": status,
        }

    async def scale(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None and t.kind.scale is not None
        ns = self._ns(t)
        obj = self.store.get(t.kind, ns, t.name)
        current = self._scale_of(t.kind, obj)
        if request.method == "GET":
            return json_response(current)
        if request.method == "PUT":
            new_scale = await read_checked(request, "autoscaling", "Scale", "UpdateOptions")
        elif request.method == "PATCH":
            new_scale = await self._patch_scale(request, t, current)
        else:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        # Go clients omit replicas: 0 (omitempty), so a missing value means zero.
        replicas = (new_scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, f'Scale.autoscaling "{t.name}" is invalid: spec.replicas: Invalid '
                                f"value: {replicas}: must be greater than or equal to 0",
                           "Invalid", kind=t.kind, name=t.name)
        rv = (new_scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != obj["metadata"].get("resourceVersion"):
            raise ApiError(409, f'Operation cannot be fulfilled on {t.kind.resource} "{t.name}": '
                                "the object has been modified; please apply your changes to the "
                                "latest version and try again", "Conflict", kind=t.kind, name=t.name)
        updated = copy.deepcopy(obj)
        set_value(t.kind.scale.spec_replicas_path, updated, replicas)
        self._admit(request, "UPDATE", t, updated, obj)
        stored = await self.store.update(t.kind, updated, ns, t.name, dry_run=_dry_run(request),
                                         check_rv=False, managed_fields=field_manager.tracker(
                                             request, t, self.store, {}, "scale"))
        return json_response(self._scale_of(t.kind, stored))

    async def _patch_scale(self, request: web.Request, t: Target,
                           current: dict[str, Any]) -> dict[str, Any]:
        """The Scale a PATCH makes of ``current``, its fields checked as a Scale's (the
        apiserver decodes the patched Scale strictly; an applied one must hold only
        fields a Scale has, whatever fieldValidation says)."""
        raw = await bodies.read_raw(request)
        mode = request_options.field_validation(request, "PatchOptions")
        duplicates = _duplicates(mode)
        scale_kind = body_kind("autoscaling", "v1", "Scale")  # a custom resource's too
        if request.content_type == field_manager.APPLY_PATCH:
            config = bodies.parse(raw, "yaml", duplicates)
            if not isinstance(config, dict):
                raise ApiError(400, "the applied configuration must be an object")
            check_applied_fields(request, replace(t, kind=scale_kind), config, mode,
                                 duplicates or ())
            return apply_merge_patch(current, config)
        if request.content_type == "application/strategic-merge-patch+json":
            patched = apply_merge_patch(current, bodies.parse(raw, JSON, duplicates))
        else:
            patched = self._apply_patch(request, t.kind, current, raw, duplicates)
        return _checked_patched(request, scale_kind, patched, mode, duplicates)

    async def checked_patch(self, request: web.Request, t: Target,
                            current: dict[str, Any]) -> dict[str, Any]:
        """``current`` patched by the request's body (no apply), its fields checked as
        :meth:`patch` checks a resource's: for a subresource whose body is the object."""
        raw = await bodies.read_raw(request)
        mode = request_options.field_validation(request, "PatchOptions")
        duplicates = _duplicates(mode)
        patched = self._apply_patch(request, t.kind, current, raw, duplicates)
        return _checked_patched(request, t.kind, patched, mode, duplicates)

    async def bind(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        body = await read_checked(request, "", "Binding", "CreateOptions")
        target = (body.get("target") or {}).get("name")
        if not target:
            raise ApiError(422, "Binding is invalid: target.name: Required value")
        ns = self._ns(t)
        pod = self.store.get(t.kind, ns, t.name)
        if (pod.get("spec") or {}).get("nodeName"):
            raise ApiError(409, f'Operation cannot be fulfilled on pods/binding "{t.name}": pod '
                                f"{t.name} is already assigned to node "
                                f'"{pod["spec"]["nodeName"]}"', "Conflict")
        updated = copy.deepcopy(pod)
        updated["spec"]["nodeName"] = target
        self._admit(request, "CREATE", t, body, None)
        await self.store.update(t.kind, updated, ns, t.name, "binding", check_rv=False)
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "code": 201}, 201)


def _grace(opts: dict[str, Any]) -> int | None:
    """DeleteOptions.gracePeriodSeconds (0: at once, e.g. kubectl delete --force)."""
    g = opts.get("gracePeriodSeconds")
    return int(g) if isinstance(g, int) and not isinstance(g, bool) else None


def _selector_string(sel: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator")
        key = e.get("key")
        vals = ",".join(sorted(e.get("values") or []))
        if op == "In":
            parts.append(f"{key} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({vals})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
