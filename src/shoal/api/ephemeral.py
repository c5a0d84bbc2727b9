"""pods/ephemeralcontainers: how ``kubectl debug`` adds a container to a running pod.

GET returns the pod; PUT and PATCH (kubectl sends a strategic merge patch) change only
``spec.ephemeralContainers``, whatever else the body holds, as Kubernetes does. Entries
may be added, never changed or removed (422), and a name must be new in the pod. The
pod's node starts each new one (:mod:`shoal.node.ephemeral`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from shoal.api import web
from shoal.api.errors import ApiError
from shoal.api.routing import Target

if TYPE_CHECKING:  # resources dispatches here
    from shoal.api.resources import ResourceHandlers

SUBRESOURCE = "ephemeralcontainers"


def only_ephemeral(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``wanted``'s ephemeral containers, if the change is one allowed."""
    old = list((current.get("spec") or {}).get("ephemeralContainers") or [])
    new = (wanted.get("spec") or {}).get("ephemeralContainers") or []
    if not isinstance(new, list) or not all(isinstance(c, dict) for c in new):
        raise ApiError(400, "spec.ephemeralContainers must be a list of containers")
    by_name = {c.get("name"): c for c in new}
    name = current["metadata"]["name"]
    for c in old:
        if c.get("name") not in by_name:
            raise _invalid(name, f'spec.ephemeralContainers[{c.get("name")}]',
                           "existing ephemeral containers may not be removed")
        if _without_defaults(by_name[c.get("name")]) != _without_defaults(c):
            raise _invalid(name, f'spec.ephemeralContainers[{c.get("name")}]',
                           "existing ephemeral containers may not be changed")
    spec = current.get("spec") or {}
    taken = {c.get("name") for key in ("containers", "initContainers")
             for c in spec.get(key) or []}
    for c in new:
        if c.get("name") in taken:
            raise _invalid(name, "spec.ephemeralContainers[].name",
                           f'Duplicate value: "{c.get("name")}"')
    out = copy.deepcopy(current)
    out["spec"]["ephemeralContainers"] = copy.deepcopy(new)
    out["metadata"]["resourceVersion"] = (wanted.get("metadata") or {}).get(
        "resourceVersion") or current["metadata"].get("resourceVersion")
    return out


def _without_defaults(c: dict[str, Any]) -> dict[str, Any]:
    # A client sends back what it read, defaults included, or its own leaner copy.
    return {k: v for k, v in c.items() if k not in (
        "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "resources")}


def _invalid(pod: str, field: str, message: str) -> ApiError:
    return ApiError(422, f'Pod "{pod}" is invalid: {field}: Forbidden: {message}', "Invalid")


async def serve(request: web.Request, t: Target, handlers: ResourceHandlers) -> web.Response:
    assert t.name is not None
    store = handlers.store
    current = store.get(t.kind, t.namespace, t.name)
    if request.method == "GET":
        return web.Response(body=handlers.encoded.dumps(current), content_type="application/json")
    # A Pod, its fields checked as a pod's are (fieldValidation), as the apiserver does.
    if request.method == "PUT":
        from shoal.api.resources import read_checked  # (resources dispatches here)
        wanted = await read_checked(request, "", "Pod", "UpdateOptions")
    elif request.method == "PATCH":
        wanted = await handlers.checked_patch(request, t, current)
    else:
        raise ApiError(405, "the server does not allow this method on the requested resource")
    if not (current.get("spec") or {}).get("nodeName"):
        raise ApiError(400, f"pod {t.name} does not have a host assigned", "BadRequest")
    new = only_ephemeral(current, wanted)
    handlers._admit(request, "UPDATE", t, new, current)
    stored = await store.update(t.kind, new, t.namespace, t.name, SUBRESOURCE)
    return web.Response(body=handlers.encoded.dumps(stored), content_type="application/json")
