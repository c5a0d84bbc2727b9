"""``/healthz``, ``/livez`` and ``/readyz`` as the apiserver answers them: named checks,
``?verbose`` lists them, ``?exclude=name`` leaves one out, ``/readyz/<name>`` runs one.

A check returns None when it passes, else why it fails. ``/readyz`` also runs the
readiness checks (such as ``caught-up``: this node's replica has caught up with the
mesh, ``shoal.mesh.catch_up``); ``/livez`` and ``/healthz`` only say the process serves.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

Check = Callable[[], str | None]


def _ping() -> str | None:
    return None


class HealthChecks:
    def __init__(self) -> None:
        self.live: dict[str, Check] = {"ping": _ping}
        self.ready: dict[str, Check] = {}
        """Checks only ``/readyz`` runs, on top of the liveness checks."""

    def checks(self, endpoint: str) -> dict[str, Check]:
        return {**self.live, **self.ready} if endpoint == "readyz" else dict(self.live)

    def response(self, request: web.Request, endpoint: str, name: str | None = None,
                 ) -> web.Response:
        checks = self.checks(endpoint)
        if name is not None:
            check = checks.get(name)
            if check is None:
                return web.Response(status=404, text="404 page not found\n")
            why = check()
            if why is None:
                return web.Response(text="ok")
            return web.Response(status=500, text=f"internal server error: {why}\n")
        excluded = set(request.query.getall("exclude", []))
        lines: list[str] = []
        failed = False
        for check_name, check in checks.items():
            if check_name in excluded:
                lines.append(f"[+]{check_name} excluded: ok")
                continue
            why = check()
            if why is None:
                lines.append(f"[+]{check_name} ok")
            else:
                failed = True
                lines.append(f"[-]{check_name} failed: {why}")
        if failed:
            return web.Response(status=500,
                                text="\n".join([*lines, f"{endpoint} check failed", ""]))
        if "verbose" in request.query:
            return web.Response(text="\n".join([*lines, f"{endpoint} check passed", ""]))
        return web.Response(text="ok")
