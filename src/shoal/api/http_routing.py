"""The router of Shoal's own HTTP server: aiohttp's route syntax (``/a/{name}``,
``/a/{tail:.*}``), first registered match wins, ``add_get`` also answers HEAD."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.api.http_messages import Request, StreamResponse

RouteHandler = Callable[["Request"], Awaitable["StreamResponse"]]
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::((?:[^{}]|\{[^{}]*\})+))?\}")
RESOLVED_KEPT = 4096
"""How many (method, path) resolutions the router keeps (first in, first out)."""
RESOLVED_PATH_MAX = 512
"""Longer paths are resolved every time (4,096 of 16 KiB would hold 64 MiB)."""


@dataclass
class Route:
    index: int
    method: str  # "*": any
    path: str
    handler: RouteHandler
    prefix: str  # the literal text before the first parameter
    pattern: re.Pattern[str] | None  # None: a plain path
    wrapped: Any = None  # the handler inside the application's middlewares

    def allows(self, method: str) -> bool:
        return self.method == "*" or self.method == method or (
            self.method == "GET" and method == "HEAD")


def _compile(path: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PARAM.finditer(path):
        out.append(re.escape(path[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^{}/]+'})")
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("".join(out))


class UrlDispatcher:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._plain: dict[str, list[Route]] = {}
        self._dynamic: list[Route] = []
        self._resolved: dict[tuple[str, str], tuple[Route | None, dict[str, str], bool]] = {}

    def add_route(self, method: str, path: str, handler: RouteHandler) -> Route:
        method = method.upper()
        brace = path.find("{")
        route = Route(len(self.routes), method, path, handler,
                      path if brace < 0 else path[:brace],
                      None if brace < 0 else _compile(path))
        self.routes.append(route)
        self._resolved.clear()
        if route.pattern is None:
            self._plain.setdefault(path, []).append(route)
        else:
            self._dynamic.append(route)
        return route

    def add_get(self, path: str, handler: RouteHandler) -> Route:
        return self.add_route("GET", path, handler)

    def add_post(self, path: str, handler: RouteHandler) -> Route:
        return self.add_route("POST", path, handler)

    def resolve(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The first route registered for ``path`` and ``method``, its parameters
        (decoded, a new dict each time), and whether some route had the path but not the
        method (a 405). Kept per (method, path): walking the routes was 1-2 µs of every
        request (issue 11), and clients repeat paths."""
        key = (method, path)
        kept = self._resolved.get(key)
        if kept is None:
            kept = self._resolve(method, path)
            if len(path) <= RESOLVED_PATH_MAX:
                if len(self._resolved) >= RESOLVED_KEPT:
                    del self._resolved[next(iter(self._resolved))]
                self._resolved[key] = kept
        route, info, path_matched = kept
        return route, dict(info) if info else {}, path_matched

    def _resolve(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        found: Route | None = None
        info: dict[str, str] = {}
        path_matched = False
        for r in self._plain.get(path, ()):
            if r.allows(method):
                found = r
                break
            path_matched = True
        for r in self._dynamic:
            if found is not None and r.index > found.index:
                break
            if not path.startswith(r.prefix):
                continue
            assert r.pattern is not None
            m = r.pattern.fullmatch(path)
            if m is None:
                continue
            if not r.allows(method):
                path_matched = True
                continue
            found = r
            info = {k: urllib.parse.unquote(v) if "%" in v else v
                    for k, v in m.groupdict().items()}
            break
        return found, info, path_matched
