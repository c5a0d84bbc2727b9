"""The HTTP server the API runs on, by the names of ``aiohttp.web`` that the handlers use.

``SHOAL_HTTP_SERVER=native`` (the default) is Shoal's own HTTP/1.1 server
(:mod:`shoal.api.http_protocol`, :mod:`shoal.api.http_messages`,
:mod:`shoal.api.websocket`): a node then does not import aiohttp unless something
needs an HTTP client. ``SHOAL_HTTP_SERVER=aiohttp`` serves with ``aiohttp.web`` as
before. Chosen once, when this module is first imported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

SERVER = os.environ.get("SHOAL_HTTP_SERVER", "native")
NATIVE = SERVER != "aiohttp"

if TYPE_CHECKING or NATIVE:
    from shoal.api.http_messages import (
        AppKey,
        Application,
        HTTPBadRequest,
        HTTPException,
        HTTPFound,
        HTTPMethodNotAllowed,
        HTTPMovedPermanently,
        HTTPNotFound,
        HTTPRedirection,
        HTTPRequestEntityTooLarge,
        Request,
        RequestKey,
        Response,
        StreamResponse,
        json_response,
        middleware,
    )
    from shoal.api.http_protocol import AppRunner, TCPSite
    from shoal.api.http_routing import UrlDispatcher
    from shoal.api.websocket import WebSocketResponse, WSMessage, WSMsgType
else:
    from aiohttp import WSMessage, WSMsgType
    from aiohttp.web import (
        AppKey,
        Application,
        AppRunner,
        HTTPBadRequest,
        HTTPException,
        HTTPFound,
        HTTPMethodNotAllowed,
        HTTPMovedPermanently,
        HTTPNotFound,
        HTTPRedirection,
        HTTPRequestEntityTooLarge,
        Request,
        RequestKey,
        Response,
        StreamResponse,
        TCPSite,
        UrlDispatcher,
        WebSocketResponse,
        json_response,
        middleware,
    )

__all__ = [
    "NATIVE", "SERVER", "AppKey", "AppRunner", "Application", "HTTPBadRequest",
    "HTTPException", "HTTPFound", "HTTPMethodNotAllowed", "HTTPMovedPermanently",
    "HTTPNotFound", "HTTPRedirection", "HTTPRequestEntityTooLarge", "Request", "RequestKey",
    "Response", "StreamResponse", "TCPSite", "UrlDispatcher", "WSMessage", "WSMsgType",
    "WebSocketResponse", "json_response", "middleware",
]
