"""The HTTPS server: authentication and authorization of every request, routing, discovery,
OpenAPI, the review kinds and request logging."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.api import bodies, discovery, request_state, reviews, scope_status, web
from shoal.api.admission import Admission, ScopeWriters
from shoal.api.authentication import Authenticator, Credentials
from shoal.api.authorization import (
    IMPERSONATE_USER,
    authorize,
    impersonate,
    request_attributes,
)
from shoal.api.errors import ApiError, error_response, not_found_path
from shoal.api.health import HealthChecks
from shoal.api.openapi import V2_PROTOBUF_CONTENT_TYPE, OpenAPIDocuments, wants_v2_protobuf
from shoal.api.resources import ResourceHandlers, json_response
from shoal.api.routing import Targets
from shoal.authz.authorizer import Authorizer
from shoal.authz.scopes import ScopeIndex
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore

log = logging.getLogger("shoal.api")
access_log = logging.getLogger("shoal.api.access")

IDLE_TIMEOUT = 60.0
"""Default --api-idle-timeout: Kubernetes' apiserver gives a request's headers 32 s and an
idle connection 90 s; one knob here, in between."""

PUBLIC_PATHS = ("/version", "/version/", "/healthz", "/livez", "/readyz")
"""Served to anyone, with no credential (Kubernetes grants them to system:unauthenticated)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RequestStats:
    """Counts for the periodic summary line."""

    requests: int = 0
    by_code: Counter[int] = field(default_factory=Counter)
    total_ms: float = 0.0

    def reset(self) -> None:
        self.requests = 0
        self.by_code.clear()
        self.total_ms = 0.0


__all__ = ["ApiServer", "Credentials", "server_ssl_context"]


class ApiServer:
    """Builds the HTTP application for one node (served by ``shoal.api.web``'s server)."""

    def __init__(self, store: ObjectStore, registry: KindRegistry, credentials: Credentials,
                 *, server_address: str = "", bookmark_interval: float = 60.0,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.store = store
        self.idle_timeout = idle_timeout
        """Seconds a connection may wait with no request in progress, and a request's
        headers and body may take to arrive; 0: no limit. A request being served (a
        watch, logs, exec, a port-forward) is never cut by it."""
        self.registry = registry
        self.credentials = credentials
        self.server_address = server_address
        self.openapi = OpenAPIDocuments(registry)
        self.handlers = ResourceHandlers(store, bookmark_interval=bookmark_interval)
        self.targets = Targets(registry)
        self.authenticator = Authenticator(credentials, store.replica)
        self.authorizer = Authorizer(store.replica)
        self.handlers.admission = Admission(self.authorizer, store.replica)
        # --- scopes: writes of a scope only on its writers; what this node holds of each ---
        self.scopes = ScopeIndex(store.replica)
        self.handlers.admission.hooks.append(ScopeWriters(store.replica.node_id, self.scopes))
        self.mesh_scope_status: scope_status.MeshScopeStatus | None = None  # set by the node
        # --- end scopes ---
        self.stats = RequestStats()
        self.health = HealthChecks()
        """/healthz, /livez, /readyz: the node adds readiness checks (caught-up)."""
        # --- metrics: routes, public paths and request observers the node adds ---
        self.extra_routes: list[Callable[[web.UrlDispatcher], None]] = []
        """Added before the resource routes: /metrics, /shoal/v1/status, metrics.k8s.io."""
        self.public_prefixes: tuple[str, ...] = ()
        """Served with no credential: the live page's static files (it logs in itself)."""
        self.request_observers: list[Callable[[web.Request, int, float], None]] = []
        # --- end metrics ---

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors],
            client_max_size=8 * 1024 * 1024,
        )
        if self.idle_timeout:
            app[bodies.BODY_DEADLINE] = self.idle_timeout
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/version/", self._version)
        for p in ("/healthz", "/livez", "/readyz"):
            r.add_get(p, self._health)
            r.add_get(p + "/{check}", self._health)
        r.add_get("/api", self._core_versions)
        r.add_get("/api/", self._core_versions)
        r.add_get("/apis", self._groups)
        r.add_get("/apis/", self._groups)
        r.add_get(scope_status.PATH, self._scope_status)
        for add_routes in self.extra_routes:  # --- metrics ---
            add_routes(r)
        r.add_get("/openapi/v2", self._openapi_v2)
        r.add_get("/openapi/v3", self._openapi_v3_index)
        r.add_get("/openapi/v3/{tail:.*}", self._openapi_v3)
        r.add_route("*", "/api/v1", self._core_resource_list)
        r.add_route("*", "/api/v1/", self._core_resource_list)
        r.add_route("*", "/api/v1/{tail:.*}", self._core)
        r.add_route("*", "/apis/{group}", self._group)
        r.add_route("*", "/apis/{group}/", self._group)
        r.add_route("*", "/apis/{group}/{version}", self._group_resource_list)
        r.add_route("*", "/apis/{group}/{version}/", self._group_resource_list)
        r.add_route("*", "/apis/{group}/{version}/{plural:[a-z]*reviews}", self._review)
        r.add_route("*", "/apis/{group}/{version}/namespaces/{namespace}/"
                         "{plural:localsubjectaccessreviews}", self._review)
        r.add_route("*", "/apis/{group}/{version}/{tail:.*}", self._grouped)
        r.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def runner(self) -> web.AppRunner:
        """The app's runner. Its keep-alive timer (the native server's and aiohttp's alike)
        closes a connection that waits for a request (idle, or whose headers trickle in:
        slowloris) ``idle_timeout`` after it opened or after its last response; it never
        fires while a handler runs."""
        return web.AppRunner(self.app(), access_log=None, handle_signals=False,
                             shutdown_timeout=2.0,
                             keepalive_timeout=self.idle_timeout or 3630.0)

    # -- middleware ------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The one middleware: authentication and authorization (:meth:`_auth`), then the
        handler; what either raises becomes its Status; counted and observed. (One layer,
        not two: a middleware is a partial call and a coroutine per request, issue 11.)"""
        start = time.perf_counter()
        code = 500
        try:
            path = request.path
            if path not in PUBLIC_PATHS and not path.startswith(self.public_prefixes):
                self._auth(request)
            resp = await handler(request)
            code = resp.status
            for w in request.get(request_state.WARNINGS, ()):
                if not resp.prepared:
                    resp.headers.add("Warning", warning_header(w))
            return resp
        except ApiError as e:
            code = e.code
            return error_response(e)
        except web.HTTPRedirection:
            code = 301
            raise
        except web.HTTPException as e:
            code = e.status
            msg = e.reason if e.status != 413 else "request entity too large"
            return error_response(ApiError(e.status, msg))
        except (ConnectionResetError, asyncio.CancelledError):
            code = 499
            raise
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path_qs)
            return error_response(ApiError(500, "an internal error occurred; see the node's log"))
        finally:
            ms = (time.perf_counter() - start) * 1000
            self.stats.requests += 1
            self.stats.by_code[code] += 1
            self.stats.total_ms += ms
            for observe in self.request_observers:  # --- metrics ---
                observe(request, code, ms)
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug("%s %s %d %.1fms", request.method, request.path_qs, code, ms)

    def _auth(self, request: web.Request) -> None:
        """Authenticate (401), impersonate and authorize (403) before any handler runs."""
        user = self.authenticator.authenticate(request)
        if IMPERSONATE_USER in request.headers or "Impersonate-Group" in request.headers:
            user = impersonate(self.authorizer, user, request.headers)
        attrs = request_attributes(user, request.method, request.path, request.query)
        authorize(self.authorizer, attrs)
        request[request_state.USER] = user
        request[request_state.ATTRIBUTES] = attrs

    async def summary_loop(self, interval: float = 60.0) -> None:
        """One info line per interval with what was served."""
        while True:
            await asyncio.sleep(interval)
            s = self.stats
            if s.requests:
                codes = " ".join(f"{c}:{n}" for c, n in sorted(s.by_code.items()))
                log.info(
                    "served %d requests in the last %.0fs (mean %.1f ms; codes %s); "
                    "revision %d, %d watchers",
                    s.requests, interval, s.total_ms / s.requests, codes,
                    self.store.replica.revision, self.store.replica.feed.watchers,
                )
                s.reset()

    # -- discovery -------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(discovery.version_info())

    async def _health(self, request: web.Request) -> web.Response:
        endpoint = request.path.strip("/").split("/")[0]
        return self.health.response(request, endpoint, request.match_info.get("check"))

    async def _core_versions(self, request: web.Request) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept")):
            return _aggregated(discovery.aggregated_discovery(self.registry, core=True))
        return json_response(discovery.core_api_versions(self.server_address))

    async def _groups(self, request: web.Request) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept")):
            return _aggregated(discovery.aggregated_discovery(self.registry, core=False))
        return json_response(discovery.api_group_list(self.registry))

    async def _core_resource_list(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        body = discovery.api_resource_list(self.registry, "", "v1")
        if body is None:
            raise not_found_path()
        return json_response(body)

    async def _group(self, request: web.Request) -> web.Response:
        body = discovery.api_group(self.registry, request.match_info["group"])
        if body is None or request.method != "GET":
            raise not_found_path()
        return json_response(body)

    async def _group_resource_list(self, request: web.Request) -> web.Response:
        body = discovery.api_resource_list(
            self.registry, request.match_info["group"], request.match_info["version"]
        )
        if body is None or request.method != "GET":
            raise not_found_path()
        return json_response(body)

    async def _openapi_v2(self, request: web.Request) -> web.Response:
        etag = f'"{self.openapi.v2_hash()}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        if wants_v2_protobuf(request.headers.get("Accept")):
            # kubectl validates `kind: List` manifests against the protobuf form.
            return web.Response(body=self.openapi.v2_protobuf(), headers={
                "Content-Type": V2_PROTOBUF_CONTENT_TYPE, "ETag": etag})
        return web.Response(body=self.openapi.v2(), content_type="application/json",
                            headers={"ETag": etag})

    async def _openapi_v3_index(self, request: web.Request) -> web.Response:
        return json_response(self.openapi.v3_index())

    async def _openapi_v3(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"].strip("/")
        parts = tail.split("/")
        if parts == ["api", "v1"]:
            group, version = "", "v1"
        elif len(parts) == 3 and parts[0] == "apis":
            group, version = parts[1], parts[2]
        else:
            raise not_found_path()
        doc = self.openapi.v3_group_version(group, version)
        if doc is None:
            raise not_found_path()
        current = self.openapi.hash_of(group, version)
        etag = f'"{current}"'
        asked = request.query.get("hash")
        if asked is not None and asked != current:
            # As kube-apiserver does: send clients with a stale hash to the current document.
            raise web.HTTPMovedPermanently(f"{request.path}?hash={current}")
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        headers = {"ETag": etag}
        if asked is not None:
            headers["Cache-Control"] = "public, immutable"
            headers["Expires"] = (datetime.datetime.now(datetime.UTC)
                                  + datetime.timedelta(days=365)).strftime(
                "%a, %d %b %Y %H:%M:%S GMT")
        else:
            headers["Cache-Control"] = "no-cache, private"
        return web.Response(body=doc, content_type="application/json", headers=headers)

    async def _scope_status(self, request: web.Request) -> web.Response:
        """What this node holds of each scope (authorized as the non-resource path)."""
        return json_response(scope_status.scope_report(
            self.store.replica.node_id, self.store.replica, self.scopes.current(),
            self.mesh_scope_status))

    async def _not_found(self, request: web.Request) -> web.Response:
        raise not_found_path()

    async def _review(self, request: web.Request) -> web.Response:
        mi = request.match_info
        kind = discovery.review_kind(mi["group"], mi["version"], mi["plural"])
        if kind is None or kind.namespaced != ("namespace" in mi):
            raise not_found_path()
        if request.method != "POST":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        body = await bodies.read_object(request)
        user = request[request_state.USER]
        return json_response(reviews.answer(kind, body, user, self.authorizer,
                                            mi.get("namespace")), 201)

    # -- resources -------------------------------------------------------------

    async def _core(self, request: web.Request) -> web.StreamResponse:
        target = self.targets.resolve("", "v1", request.match_info["tail"])
        return await self.handlers.handle(request, target)

    async def _grouped(self, request: web.Request) -> web.StreamResponse:
        mi = request.match_info
        target = self.targets.resolve(mi["group"], mi["version"], mi["tail"])
        return await self.handlers.handle(request, target)


def warning_header(text: str) -> str:
    """A ``Warning`` header value (RFC 7234): the text is a quoted-string, so its quotes and
    backslashes are escaped; kubectl drops a warning whose quotes are not."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{escaped}"'


def _aggregated(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body),
                        headers={"Content-Type": discovery.AGGREGATED_CONTENT_TYPE})


def server_ssl_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """TLS for the API: the node's serving cert; client certs signed by the CA are accepted."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx

