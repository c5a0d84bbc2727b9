"""Authorization of every request: what it asks (kube-apiserver's RequestInfo), impersonation,
and the 403 a refusal gets.

The attributes come from the path and method alone, before the path is resolved to a kind, as
Kubernetes does: a caller may not learn which resources exist from a 404 it was not allowed
to see. A list or watch is authorized as a list or watch of the whole resource (in the
namespace, if any); selectors filter nothing that authorization looks at, except that a
``metadata.name=`` field selector names the object, as Kubernetes sets it (a kubelet
watches its own Node that way).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from multidict import MultiMapping

from shoal.api.errors import ApiError
from shoal.authz.attributes import Attributes, Decision
from shoal.authz.authorizer import Authorizer
from shoal.authz.user import (
    ANONYMOUS,
    SERVICE_ACCOUNT_PREFIX,
    SERVICE_ACCOUNTS,
    UserInfo,
    authenticated,
)

log = logging.getLogger("shoal.api.authz")

NAMESPACE_SUBRESOURCES = ("status", "finalize")
# Exec, attach and port-forward open a stream that writes into the pod: Kubernetes 1.31+
# authorizes their WebSocket GET as create, as their SPDY POST always was.
STREAM_SUBRESOURCES = ("exec", "attach", "portforward")
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                 "PATCH": "patch", "DELETE": "delete"}


ATTRIBUTES_KEPT = 4096
"""How many requests' attributes are kept for reuse (first in, first out)."""
_kept: dict[tuple[int, str, str, str | None, str | None], Attributes] = {}


def request_attributes(user: UserInfo, method: str, path: str,
                       query: MultiMapping[str]) -> Attributes:
    """What a request asks to do, as kube-apiserver's RequestInfoFactory parses it.

    The same user object sending the same method and path (with the same ``watch`` and
    ``fieldSelector``, the only query parameters read) gets the same (frozen) attributes:
    parsing the path and building them was 2-3 µs of every request (issue 11)."""
    key = (id(user), method, path, query.get("watch"), query.get("fieldSelector"))
    attrs = _kept.get(key)
    if attrs is not None and attrs.user is user:
        return attrs
    attrs = _request_attributes(user, method, path, query)
    if len(_kept) >= ATTRIBUTES_KEPT:
        del _kept[next(iter(_kept))]
    _kept[key] = attrs
    return attrs


def _request_attributes(user: UserInfo, method: str, path: str,
                        query: MultiMapping[str]) -> Attributes:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return _non_resource(user, method, path)
    parts = parts[1:]
    group = ""
    if path.startswith("/apis"):
        if len(parts) < 3:
            return _non_resource(user, method, path)
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = ""
    by_method = False
    if parts[0] in ("watch", "proxy"):
        if len(parts) < 2:
            return _non_resource(user, method, path)
        verb, parts = parts[0], parts[1:]
    else:
        by_method = True
        verb = _METHOD_VERBS.get(method, "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    sub = parts[2] if len(parts) >= 3 and verb != "proxy" else ""
    if by_method and not name and verb == "get":
        verb = "watch" if query.get("watch") in ("true", "1") else "list"
        name = _name_from_field_selector(query.get("fieldSelector", ""))
    if by_method and not name and verb == "delete":
        verb = "deletecollection"
    if resource == "pods" and sub in STREAM_SUBRESOURCES and verb == "get":
        verb = "create"
    return Attributes(user, verb, True, group, version, resource, sub, namespace, name, path)


def _non_resource(user: UserInfo, method: str, path: str) -> Attributes:
    """(Made only for such a path: a frozen dataclass costs a microsecond per request.)"""
    return Attributes(user, method.lower(), resource_request=False, path=path)


def _name_from_field_selector(selector: str) -> str:
    """The name a ``metadata.name=`` (or ``==``) requirement pins, if it is the only value."""
    for term in selector.split(","):
        key, sep, value = term.partition("==")
        if not sep:
            key, sep, value = term.partition("=")
        if sep and key.strip() == "metadata.name" and not key.endswith("!"):
            value = value.strip()
            if value and "/" not in value and value not in (".", ".."):
                return value
    return ""


class ForbiddenError(ApiError):
    """A 403 with Kubernetes' Status: details name the resource (not the kind)."""

    def __init__(self, message: str, *, group: str = "", resource: str = "",
                 name: str = "") -> None:
        super().__init__(403, message, "Forbidden")
        self.group = group
        self.resource = resource
        self.forbidden_name = name

    def status(self) -> dict[str, Any]:
        body = super().status()
        details = {k: v for k, v in (("name", self.forbidden_name), ("group", self.group),
                                     ("kind", self.resource)) if v}
        if details:
            body["details"] = details
        return body


def qualified_resource(group: str, resource: str) -> str:
    """``deployments.apps``, ``pods``: how Kubernetes names a resource in a message."""
    return f"{resource}.{group}" if group else resource


def forbidden(group: str, resource: str, name: str, why: str) -> ForbiddenError:
    """Kubernetes' NewForbidden: ``<resource>[ "<name>"] is forbidden: <why>``."""
    if not resource:
        message = f"forbidden: {why}"
    elif name:
        message = f'{qualified_resource(group, resource)} "{name}" is forbidden: {why}'
    else:
        message = f"{qualified_resource(group, resource)} is forbidden: {why}"
    return ForbiddenError(message, group=group, resource=resource, name=name)


def denial_message(attrs: Attributes) -> str:
    """What the user may not do, as the apiserver words it."""
    who = f"User {_go_quote(attrs.user.username)}"
    if not attrs.resource_request:
        return f"{who} cannot {attrs.verb} path {_go_quote(attrs.path)}"
    what = (f"{who} cannot {attrs.verb} resource {_go_quote(attrs.resource_with_sub)} "
            f"in API group {_go_quote(attrs.api_group)}")
    if attrs.namespace:
        return f"{what} in the namespace {_go_quote(attrs.namespace)}"
    return f"{what} at the cluster scope"


def forbidden_for(attrs: Attributes, decision: Decision) -> ForbiddenError:
    why = denial_message(attrs)
    if decision.reason:
        why = f"{why}: {decision.reason}"
    if not attrs.resource_request:
        return forbidden("", "", "", why)
    return forbidden(attrs.api_group, attrs.resource, attrs.name, why)


def _go_quote(s: str) -> str:
    """Go's %q for the plain strings in these messages."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def go_quote_list(items: tuple[str, ...] | list[str]) -> str:
    """Go's %q of a []string: ``["a" "b"]``."""
    return "[" + " ".join(_go_quote(i) for i in items) + "]"


# -- impersonation ---------------------------------------------------------------------------

IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"
IMPERSONATE_UID = "Impersonate-Uid"
IMPERSONATE_EXTRA_PREFIX = "Impersonate-Extra-"


def impersonate(authorizer: Authorizer, user: UserInfo,
                headers: MultiMapping[str]) -> UserInfo:
    """The user a request acts as: ``user`` itself, or whom its Impersonate-* headers name,
    if ``user`` may ``impersonate`` each of them (403 otherwise), as kube-apiserver's
    impersonation filter."""
    name = headers.get(IMPERSONATE_USER, "")
    groups = list(headers.getall(IMPERSONATE_GROUP, []))
    uid = headers.get(IMPERSONATE_UID, "")
    extra: dict[str, tuple[str, ...]] = {}
    for key in headers:
        if key.lower().startswith(IMPERSONATE_EXTRA_PREFIX.lower()):
            extra_key = key[len(IMPERSONATE_EXTRA_PREFIX):].lower()
            extra[extra_key] = tuple(headers.getall(key))
    if not name:
        if groups or uid or extra:
            raise ApiError(500, "requested [] without impersonating a user", "InternalError")
        return user
    checks: list[Attributes] = []
    sa = _service_account_of(name)
    if sa is not None:
        checks.append(Attributes(user, "impersonate", True, "", "v1", "serviceaccounts", "",
                                 sa[0], sa[1]))
    else:
        checks.append(Attributes(user, "impersonate", True, "", "", "users", "", "", name))
    checks += [Attributes(user, "impersonate", True, "", "", "groups", "", "", g)
               for g in groups]
    if sa is not None and not groups:  # a ServiceAccount's groups follow from its name
        groups = [SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{sa[0]}"]
    if uid:
        checks.append(Attributes(user, "impersonate", True, "authentication.k8s.io", "v1",
                                 "uids", "", "", uid))
    checks += [Attributes(user, "impersonate", True, "authentication.k8s.io", "v1",
                          "userextras", key, "", v) for key, values in extra.items()
               for v in values]
    for attrs in checks:
        decision = authorizer.authorize(attrs)
        if not decision.allowed:
            log_denial(attrs, decision)
            raise forbidden_for(attrs, decision)
    if name == ANONYMOUS.username:
        return UserInfo(name, tuple(groups), uid, extra)
    return authenticated(name, tuple(groups), uid, extra)


def _service_account_of(name: str) -> tuple[str, str] | None:
    if not name.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    ns, sep, sa = name[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
    return (ns, sa) if sep and ns and sa else None


# -- logging denials -------------------------------------------------------------------------

DENIAL_LOG_BURST = 20
"""Denials logged per DENIAL_LOG_WINDOW; more are counted and summed up in the next line, so
a client retrying a forbidden request in a loop cannot flood the log."""
DENIAL_LOG_WINDOW = 10.0


class DenialLog:
    """Logs denials at info, at most DENIAL_LOG_BURST per DENIAL_LOG_WINDOW."""

    def __init__(self) -> None:
        self.window_start = 0.0
        self.logged = 0
        self.suppressed = 0

    def __call__(self, attrs: Attributes, decision: Decision) -> None:
        now = time.monotonic()
        if now - self.window_start >= DENIAL_LOG_WINDOW:
            if self.suppressed:
                log.info("%d more denials in the last %.0fs were not logged", self.suppressed,
                         now - self.window_start)
            self.window_start, self.logged, self.suppressed = now, 0, 0
        if self.logged >= DENIAL_LOG_BURST:
            self.suppressed += 1
            return
        self.logged += 1
        target = (attrs.path if not attrs.resource_request else
                  "/".join(x for x in (qualified_resource(attrs.api_group, attrs.resource_with_sub),
                                       attrs.namespace and f"ns={attrs.namespace}",
                                       attrs.name) if x))
        log.info("denied: user=%s groups=%s verb=%s target=%s%s", attrs.user.username,
                 ",".join(attrs.user.groups), attrs.verb, target,
                 f" ({decision.reason})" if decision.reason else "")


log_denial = DenialLog()


def authorize(authorizer: Authorizer, attrs: Attributes) -> None:
    """Raise the 403 Kubernetes answers if ``attrs`` is not allowed (and log it)."""
    decision = authorizer.authorize(attrs)
    if not decision.allowed:
        log_denial(attrs, decision)
        raise forbidden_for(attrs, decision)
