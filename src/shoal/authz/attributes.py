"""What a request asks to do, as Kubernetes' ``authorizer.Attributes``."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.authz.user import UserInfo


@dataclass(frozen=True)
class Attributes:
    """One request's verb and target. ``resource_request`` is False for a plain path
    (``/version``, ``/openapi/v2``), which RBAC matches with ``nonResourceURLs``."""

    user: UserInfo
    verb: str  # get list watch create update patch delete deletecollection (or bind, escalate,
    # impersonate...)
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""  # the plural, e.g. "pods"
    subresource: str = ""  # e.g. "status", "log", "exec"
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def resource_with_sub(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Decision:
    """allowed, with the reason a denial gives (logged; Kubernetes appends it to the 403)."""

    allowed: bool
    reason: str = ""


ALLOW = Decision(True)
