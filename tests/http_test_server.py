"""aiohttp's ``TestServer`` for whichever HTTP server the API runs on
(``SHOAL_HTTP_SERVER``, :mod:`shoal.api.web`): tests keep aiohttp's ``TestClient``."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web as aiohttp_web
from aiohttp.test_utils import BaseTestServer
from aiohttp.test_utils import TestServer as AiohttpTestServer
from yarl import URL

from shoal.api import http_messages, http_protocol


class NativeTestServer(BaseTestServer):
    """Serves a :class:`shoal.api.http_messages.Application` on a free local port."""

    def __init__(self, app: http_messages.Application, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    async def _make_runner(self, **kwargs: Any) -> Any:
        raise NotImplementedError  # start_server below does not use aiohttp's runner

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        if self.runner:
            return
        ssl_context = kwargs.pop("ssl", None)
        runner = http_protocol.AppRunner(self.app, shutdown_timeout=2.0)
        await runner.setup()
        sock = self.socket_factory(self.host, self.port or 0, socket.AF_INET)
        await http_protocol.TCPSite(runner, sock=sock, ssl_context=ssl_context).start()
        self.runner = runner  # type: ignore[assignment]  # close() calls its cleanup()
        self.host, self.port = sock.getsockname()[:2]
        if not self.scheme:
            self.scheme = "https" if ssl_context else "http"
        self._root = URL(f"{self.scheme}://{self.host}:{self.port}")


def TestServer(app: Any, **kwargs: Any) -> BaseTestServer:
    if isinstance(app, aiohttp_web.Application):
        return AiohttpTestServer(app, **kwargs)
    return NativeTestServer(app, **kwargs)
