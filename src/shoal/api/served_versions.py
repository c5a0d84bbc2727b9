"""Requests to a kind served at a second version: autoscaling/v1 HorizontalPodAutoscaler.

The replica holds one form (v2, the storage version). A request to the other version
is served by the ordinary handlers on the storage kind: the body is converted to the
storage version before them, and every object in their answer converted back after
them. A patch is applied to the object as the client sees it (the v1 form), as the
API server does, then stored as an update. Watches convert as they encode
(``shoal.api.watch``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

import orjson

from shoal.api import bodies, web
from shoal.api.errors import ApiError
from shoal.api.routing import Target
from shoal.model import hpa_versions
from shoal.model.kinds import Kind
from shoal.store.objects import ObjectStore

Handler = Callable[[web.Request, Target], Awaitable[web.StreamResponse]]
# (group, kind, served version) -> (storage version, to storage form, to served form)
CONVERSIONS: dict[tuple[str, str, str], tuple[str, Callable[[dict[str, Any]], dict[str, Any]],
                                              Callable[[dict[str, Any]], dict[str, Any]]]] = {
    ("autoscaling", "HorizontalPodAutoscaler", "v1"):
        ("v2", hpa_versions.to_v2, hpa_versions.to_v1),
}


class Patcher(Protocol):
    store: ObjectStore

    def _apply_patch(self, request: web.Request, kind: Kind, current: dict[str, Any],
                     raw: bytes) -> dict[str, Any]: ...

    async def update(self, request: web.Request, t: Target) -> web.Response: ...


def converted(kind: Kind) -> bool:
    return (kind.group, kind.kind, kind.version) in CONVERSIONS


def to_served(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object in the form ``kind``'s version serves (itself for most kinds)."""
    conv = CONVERSIONS.get((kind.group, kind.kind, kind.version))
    if conv is None or obj.get("kind") != kind.kind:
        return obj
    return conv[2](obj)


def _convert_answer(kind: Kind, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    if body.get("kind") == kind.kind:
        return to_served(kind, body)
    if isinstance(body.get("items"), list):  # a list, or deletecollection's answer
        body["items"] = [to_served(kind, o) if isinstance(o, dict) else o
                         for o in body["items"]]
    for row in body.get("rows") or []:  # a Table with includeObject=Object
        if isinstance(row, dict) and isinstance(row.get("object"), dict):
            row["object"] = to_served(kind, row["object"])
    return body


async def serve(handlers: Patcher, dispatch: Handler, request: web.Request,
                t: Target) -> web.StreamResponse:
    conv = CONVERSIONS[(t.kind.group, t.kind.kind, t.kind.version)]
    storage = handlers.store.registry.by_kind(
        f"{t.kind.group}/{conv[0]}" if t.kind.group else conv[0], t.kind.kind)
    assert storage is not None
    stored_t = replace(t, kind=storage)
    m = request.method
    watching = t.watch_path or (m == "GET" and request.query.get("watch") in ("true", "1"))
    if watching:
        return await dispatch(request, t)  # the watch converts each event itself
    applying = m == "PATCH" and request.content_type == "application/apply-patch+yaml"
    if m in ("POST", "PUT") or applying:
        if not applying:
            bodies.check_media_type(request.content_type)
        obj = bodies.parse(await bodies.read_raw(request),
                           "yaml" if applying else request.content_type or "json")
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        bodies.check_type(t.kind, obj)
        request[bodies.CONVERTED_BODY] = orjson.dumps(conv[1](obj))
        answer = await dispatch(request, stored_t)
    elif m == "PATCH":
        answer = await _patch(handlers, request, t, stored_t, conv[1])
    else:
        answer = await dispatch(request, t if m == "GET" else stored_t)
    if isinstance(answer, web.Response) and answer.body is not None \
            and answer.content_type == "application/json":
        raw = answer.body
        assert isinstance(raw, bytes)
        answer.body = orjson.dumps(_convert_answer(t.kind, orjson.loads(raw)))
    return answer


async def _patch(handlers: Patcher, request: web.Request, t: Target,
                 stored_t: Target, to_storage: Callable[[dict[str, Any]], dict[str, Any]],
                 ) -> web.StreamResponse:
    """Patch the served form of the object, then update the stored one with the result."""
    assert t.name is not None
    raw = await bodies.read_raw(request)
    ns = t.namespace if t.kind.namespaced else None
    current = handlers.store.find(stored_t.kind, ns, t.name)
    if current is None:
        raise ApiError(404, f'{t.kind.resource} "{t.name}" not found', kind=t.kind, name=t.name)
    patched = handlers._apply_patch(request, t.kind, to_served(t.kind, current), raw)
    if not isinstance(patched, dict):
        raise ApiError(422, "the patched object must be a JSON object")
    bodies.check_type(t.kind, patched)
    meta = patched.setdefault("metadata", {})
    if isinstance(meta, dict) and not meta.get("resourceVersion"):
        meta["resourceVersion"] = current["metadata"].get("resourceVersion")
    request[bodies.CONVERTED_BODY] = orjson.dumps(to_storage(patched))
    return await handlers.update(request, stored_t)
