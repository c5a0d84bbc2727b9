"""The review kinds: questions about identity and permissions, answered from this replica and
never stored (create-only, as kube-apiserver serves them).

- authentication.k8s.io/v1 SelfSubjectReview: who am I (``kubectl auth whoami``).
- authorization.k8s.io/v1 SelfSubjectAccessReview: may I (``kubectl auth can-i``).
- SelfSubjectRulesReview: what may I do in a namespace (``kubectl auth can-i --list``).
- SubjectAccessReview and LocalSubjectAccessReview: may someone else (for admins and
  operators; creating them is itself authorized like any create).
"""

from __future__ import annotations

import datetime
from typing import Any

from shoal.api import bodies
from shoal.api.errors import ApiError
from shoal.authz.attributes import Attributes
from shoal.authz.authorizer import Authorizer
from shoal.authz.user import UserInfo
from shoal.model.kinds import Kind


def answer(kind: Kind, body: dict[str, Any], user: UserInfo, authorizer: Authorizer,
           namespace: str | None) -> dict[str, Any]:
    """The review ``body`` answered: the body as sent, with its status filled in."""
    bodies.check_type(kind, body)
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise _invalid(kind, "spec", "must be an object")
    out: dict[str, Any] = {"kind": kind.kind, "apiVersion": kind.api_version,
                           "metadata": {**(body.get("metadata") or {}), "creationTimestamp": None}}
    if kind.kind == "SelfSubjectReview":
        out["metadata"]["creationTimestamp"] = _now()
        out["status"] = {"userInfo": user_info_json(user)}
        return out
    out["spec"] = spec
    if kind.kind == "SelfSubjectRulesReview":
        ns = spec.get("namespace") or ""
        resource_rules, non_resource_rules, incomplete = authorizer.rules_review(user, str(ns))
        out["status"] = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                         "incomplete": incomplete}
        return out
    if kind.kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
        subject = _subject(kind, spec)
    else:
        subject = user
    attrs = _access_attributes(kind, spec, subject, namespace)
    decision = authorizer.authorize(attrs)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    out["status"] = status
    return out


def user_info_json(user: UserInfo) -> dict[str, Any]:
    """authentication/v1 UserInfo."""
    info: dict[str, Any] = {"username": user.username}
    if user.uid:
        info["uid"] = user.uid
    if user.groups:
        info["groups"] = list(user.groups)
    if user.extra:
        info["extra"] = {k: list(v) for k, v in user.extra.items()}
    return info


def _subject(kind: Kind, spec: dict[str, Any]) -> UserInfo:
    name = spec.get("user") or ""
    groups = spec.get("groups") or []
    if not isinstance(name, str) or not isinstance(groups, list):
        raise _invalid(kind, "spec.user", "must be a string, and spec.groups a list")
    if not name and not groups:
        raise _invalid(kind, "spec.user", 'Invalid value: "": at least one of user or group '
                                          "must be specified")
    extra_raw = spec.get("extra") or {}
    extra = {str(k): tuple(str(x) for x in v) for k, v in extra_raw.items()
             if isinstance(v, list)} if isinstance(extra_raw, dict) else {}
    return UserInfo(name, tuple(str(g) for g in groups), str(spec.get("uid") or ""), extra)


def _access_attributes(kind: Kind, spec: dict[str, Any], subject: UserInfo,
                       namespace: str | None) -> Attributes:
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        raise _invalid(kind, "spec.resourceAttributes",
                       "exactly one of nonResourceAttributes or resourceAttributes must be "
                       "specified")
    if non_resource is not None:
        if kind.kind == "LocalSubjectAccessReview":
            raise _invalid(kind, "spec.nonResourceAttributes", "disallowed on this kind of "
                                                               "request")
        if not isinstance(non_resource, dict):
            raise _invalid(kind, "spec.nonResourceAttributes", "must be an object")
        return Attributes(subject, str(non_resource.get("verb") or ""), resource_request=False,
                          path=str(non_resource.get("path") or ""))
    if not isinstance(resource, dict):
        raise _invalid(kind, "spec.resourceAttributes", "must be an object")
    ns = str(resource.get("namespace") or "")
    if namespace is not None:  # LocalSubjectAccessReview: the URL's namespace
        if ns and ns != namespace:
            raise ApiError(400, f"spec.resourceAttributes.namespace must match namespace: "
                                f"{namespace}")
        ns = namespace
        spec["resourceAttributes"] = {**resource, "namespace": ns}
    return Attributes(subject, str(resource.get("verb") or ""), True,
                      str(resource.get("group") or ""), str(resource.get("version") or ""),
                      str(resource.get("resource") or ""), str(resource.get("subresource") or ""),
                      ns, str(resource.get("name") or ""))


def _invalid(kind: Kind, field: str, detail: str) -> ApiError:
    return ApiError(422, f'{kind.kind}.{kind.group} "" is invalid: {field}: {detail}', "Invalid",
                    kind=kind, causes=[{"reason": "FieldValueInvalid", "message": detail,
                                        "field": field}])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
