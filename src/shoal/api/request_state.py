"""What the API server's middlewares leave on a request for the handlers after them.

Typed ``web.RequestKey`` keys rather than strings: aiohttp warns on string keys, and the
test suite turns warnings into errors."""

from __future__ import annotations

from shoal.api import web
from shoal.authz.attributes import Attributes
from shoal.authz.user import UserInfo

# The authenticated (possibly impersonated) user, set by the auth middleware.
USER = web.RequestKey("shoal_user", UserInfo)
# The authorization attributes of the request (verb, resource, ...), for metrics.
ATTRIBUTES = web.RequestKey("shoal_attributes", Attributes)
# Warning headers to add to the response (unknown fields, admission warnings).
WARNINGS = web.RequestKey("shoal_warnings", list[str])


def add_warnings(request: web.Request, warnings: list[str]) -> None:
    """Queue ``Warning`` headers for the response to ``request``."""
    request.setdefault(WARNINGS, []).extend(warnings)
