"""Kubernetes ``Status`` responses for every error the API returns."""

from __future__ import annotations

from typing import Any

import orjson

from shoal.api import web
from shoal.model.kinds import Kind

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    408: "Timeout",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    501: "NotImplemented",
    504: "Timeout",
    507: "InsufficientStorage",
}


class ApiError(Exception):
    """Raised by handlers; rendered as a Status object."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        *,
        kind: Kind | None = None,
        name: str = "",
        causes: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.kind = kind
        self.name = name
        self.causes = causes or []

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.message, self.reason, kind=self.kind, name=self.name,
                           causes=self.causes)


def status_body(
    code: int,
    message: str,
    reason: str,
    *,
    kind: Kind | None = None,
    name: str = "",
    causes: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if kind is not None:
        if kind.group:
            details["group"] = kind.group
        # As the apiserver: Invalid names the kind (kubectl prints 'The Service "x" is
        # invalid'), every other reason the resource.
        details["kind"] = kind.kind if code == 422 else kind.plural
    if causes:
        details["causes"] = causes
    if details:
        body["details"] = details
    body["code"] = code  # last, as metav1.Status serializes (strict clients compare bodies)
    return body


def success_status(kind: Kind, name: str, uid: str = "") -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": kind.plural}
    if kind.group:
        details["group"] = kind.group
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


def error_response(err: ApiError) -> web.Response:
    return web.Response(
        status=err.code, body=orjson.dumps(err.status()), content_type="application/json"
    )


def not_found_path() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound")
