"""The TokenRequest subresource: ``POST .../serviceaccounts/{name}/token``
(``kubectl create token``).

authentication.k8s.io/v1 TokenRequest in, the same with ``status.token`` and
``status.expirationTimestamp`` out (201). ``spec.expirationSeconds`` defaults to 3600,
below 600 is Invalid and above 48 h is cut to 48 h (kube-apiserver's
--service-account-max-token-expiration caps rather than refuses); ``spec.audiences``
defaults to the API's own (the issuer). ``spec.boundObjectRef`` may name a Pod of the
ServiceAccount: the token then dies with the pod.

Which key signs is :mod:`shoal.authz.service_account_tokens`' rule: a token bound to a
pod of this node is signed with this node's key, anything else with the CA key. A peer
without the CA key answers 503 ServiceUnavailable naming the signers it knows: the request
is well formed and (once RBAC lands) allowed, only this peer cannot sign it, and a signer
can. A 403 would send the user looking for a missing RBAC rule that is not the cause.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.api import web
from shoal.api.errors import ApiError
from shoal.api.routing import Target
from shoal.authz.service_account_tokens import (
    DEFAULT_EXPIRATION,
    ISSUER,
    MAX_EXPIRATION,
    MIN_EXPIRATION,
    Binding,
    NotASigner,
    TokenIssuer,
)
from shoal.store.objects import ObjectStore

API_VERSION = "authentication.k8s.io/v1"


@dataclass
class TokenRequests:
    """What the subresource needs from its node."""

    issuer: Callable[[], TokenIssuer]
    """The current issuer (the node's certificate is renewed under it)."""
    signers: Callable[[], list[str]] = field(default=lambda: [])
    """The peer addresses of the signers this node knows (``pki/signers.json``)."""
    clock: Callable[[], float] = time.time


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(int(seconds), tz=datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _invalid(name: str, field_path: str, value: Any, detail: str) -> ApiError:
    message = f"Invalid value: {orjson.dumps(value).decode()}: {detail}"
    return ApiError(422, f'TokenRequest.authentication.k8s.io "{name}" is invalid: '
                    f"{field_path}: {message}", "Invalid",
                    causes=[{"reason": "FieldValueInvalid", "message": message,
                             "field": field_path}])


def _expiration(name: str, spec: dict[str, Any]) -> int:
    raw = spec.get("expirationSeconds")
    if raw is None:
        return DEFAULT_EXPIRATION
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise _invalid(name, "spec.expirationSeconds", raw, "must be an integer")
    if raw < MIN_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", raw,
                       "may not specify a duration less than 10 minutes")
    if raw > 1 << 32:
        raise _invalid(name, "spec.expirationSeconds", raw,
                       "may not specify a duration larger than 2^32 seconds")
    return min(raw, MAX_EXPIRATION)


def _binding(store: ObjectStore, ns: str, sa_name: str, ref: dict[str, Any]) -> Binding:
    kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
    if kind != "Pod":
        raise ApiError(400, f'cannot bind token for serviceaccount "{sa_name}" to object of '
                       f'kind "{kind}": this server binds tokens to Pods only')
    pod = store.replica.get("pods", ns, name)
    if pod is None:
        raise ApiError(404, f'pods "{name}" not found', "NotFound")
    uid = str(pod["metadata"].get("uid") or "")
    if ref.get("uid") and ref["uid"] != uid:
        raise ApiError(409, f"the UID in the bound object reference ({ref['uid']}) does not "
                       f"match the UID in record. The object might have been deleted and then "
                       "recreated", "Conflict")
    spec = pod.get("spec") or {}
    if (spec.get("serviceAccountName") or "default") != sa_name:
        raise ApiError(400, f'cannot bind token for serviceaccount "{sa_name}" to pod running '
                       "with different serviceaccount name.")
    node = str(spec.get("nodeName") or "")
    node_obj = store.replica.get("nodes", "", node) if node else None
    node_uid = str((node_obj or {}).get("metadata", {}).get("uid") or "")
    return Binding(name, uid, node, node_uid)


def _cannot_sign(requests: TokenRequests, binding: Binding) -> ApiError:
    me = requests.issuer().node_name
    what = (f"a token bound to pod {binding.pod_name!r}, which runs on node "
            f"{binding.node_name or '(none yet)'!r}," if binding.pod_name
            else "a token bound to no pod")
    signers = requests.signers()
    where = (f"ask a node that holds the cluster CA key (signers at peer addresses "
             f"{', '.join(signers)})" if signers
             else "ask the node that holds the cluster CA key (the first node)")
    return ApiError(503, f"node {me!r} cannot sign {what}: only the pod's node or a signer "
                    f"may; {where}", "ServiceUnavailable")


async def serve(request: web.Request, t: Target, store: ObjectStore,
                requests: TokenRequests | None) -> web.Response:
    if request.method != "POST":
        raise ApiError(405, "the server does not allow this method on the requested resource")
    assert t.name is not None and t.namespace is not None
    if requests is None:
        raise ApiError(503, "this node issues no ServiceAccount tokens", "ServiceUnavailable")
    from shoal.api.resources import read_checked  # (resources dispatches here)
    body = await read_checked(request, "authentication.k8s.io", "TokenRequest", "CreateOptions")
    if body.get("kind") not in (None, "TokenRequest"):
        raise ApiError(400, f"the body must be a TokenRequest, not {body.get('kind')}")
    sa = store.replica.get("serviceaccounts", t.namespace, t.name)
    if sa is None:
        raise ApiError(404, f'serviceaccounts "{t.name}" not found', "NotFound", kind=t.kind,
                       name=t.name)
    spec = dict(body.get("spec") or {})
    expiration = _expiration(t.name, spec)
    audiences = [str(a) for a in spec.get("audiences") or []] or [ISSUER]
    ref = spec.get("boundObjectRef")
    binding = _binding(store, t.namespace, t.name, ref) if ref else Binding()
    try:
        issued = requests.issuer().issue(
            t.namespace, t.name, str(sa["metadata"].get("uid") or ""), now=requests.clock(),
            audiences=audiences, expiration_seconds=expiration, binding=binding)
    except NotASigner as e:
        raise _cannot_sign(requests, binding) from e
    spec.update(audiences=audiences, expirationSeconds=expiration)
    out = {"apiVersion": API_VERSION, "kind": "TokenRequest",
           "metadata": {"name": t.name, "namespace": t.namespace,
                        "creationTimestamp": _rfc3339(requests.clock())},
           "spec": {**spec, "boundObjectRef": ref} if ref else spec,
           "status": {"token": issued.token,
                      "expirationTimestamp": _rfc3339(issued.expires)}}
    return web.Response(status=201, body=orjson.dumps(out), content_type="application/json")
