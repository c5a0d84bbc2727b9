"""``/healthz``, ``/livez`` and ``/readyz`` as the apiserver answers them: named checks,
``?verbose`` lists them, ``?exclude=name`` leaves one out, ``/readyz/<name>`` runs one.

A check returns None when it passes, else why it fails. ``/readyz`` also runs the
readiness checks (such as ``caught-up``: this node's replica has caught up with the
mesh, ``shoal.mesh.catch_up``); ``/livez`` and ``/healthz`` only say the process serves.

On the API port a health check waits its turn on the event loop behind every other
request. :class:`HealthServer` answers the same checks on a port of its own
(``shoal server --health-port``, plain HTTP, like the kubelet's healthz port) from a
thread, so a node whose loop is busy still answers its probes within a few
milliseconds (the GIL's switch interval, 5 ms). Checks therefore only read state
(flags, counters) and never touch the loop.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shoal.api import web

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

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
        status, text = self.evaluate(endpoint, name, set(request.query.getall("exclude", [])),
                                     "verbose" in request.query)
        return web.Response(status=status, text=text)

    def evaluate(self, endpoint: str, name: str | None, excluded: set[str],
                 verbose: bool) -> tuple[int, str]:
        """The HTTP status and body of ``/<endpoint>[/<name>]``."""
        checks = self.checks(endpoint)
        if name is not None:
            check = checks.get(name)
            if check is None:
                return 404, "404 page not found\n"
            why = check()
            if why is None:
                return 200, "ok"
            return 500, f"internal server error: {why}\n"
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
            return 500, "\n".join([*lines, f"{endpoint} check failed", ""])
        if verbose:
            return 200, "\n".join([*lines, f"{endpoint} check passed", ""])
        return 200, "ok"


ENDPOINTS = ("healthz", "livez", "readyz")


class HealthServer:
    """The health endpoints on ``host:port`` (0: a free port), served by threads."""

    timeout = 5.0
    """Seconds a connection may take to send its request (a slow client holds one thread)."""
    poll_interval = 0.5
    """How often the serving thread checks for ``stop`` (the longest a stop waits)."""

    def __init__(self, checks: HealthChecks, host: str, port: int) -> None:
        self.checks = checks
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Start serving; returns the port."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        checks, timeout = self.checks, self.timeout

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if parts[0] not in ENDPOINTS or len(parts) > 2:
                    status, text = 404, "404 page not found\n"
                else:
                    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                    status, text = checks.evaluate(
                        parts[0], parts[1] if len(parts) == 2 else None,
                        set(query.get("exclude", [])), "verbose" in query)
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # probes every few seconds: not worth a log line each

        Handler.timeout = timeout  # the socket's timeout for each request
        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                        name="health-server", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
