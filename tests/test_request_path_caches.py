"""The request path's kept resolutions (issue 11, gets): the router's per (method, path) and
the API's targets per path answer as resolving afresh does, and forget what changed."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.api import http_routing
from shoal.api.errors import ApiError
from shoal.api.http_routing import UrlDispatcher
from shoal.api.routing import Targets, resolve
from shoal.model.kinds import KindRegistry


async def _handler(request: Any) -> Any:
    return None


def _crd(subresources: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "crontabs.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"kind": "CronTab", "plural": "crontabs"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "subresources": subresources}]}}


def test_the_router_answers_as_afresh_and_a_later_route_or_a_changed_parameter_counts() -> None:
    r = UrlDispatcher()
    first = r.add_route("*", "/api/v1/{tail:.*}", _handler)
    r.add_get("/version", _handler)
    paths = [("GET", "/api/v1/pods"), ("GET", "/api/v1/namespaces/a%2Fb/pods"),
             ("POST", "/version"), ("GET", "/nowhere")]
    for _ in range(2):  # the second pass is served from what was kept
        for method, path in paths:
            assert r.resolve(method, path) == r._resolve(method, path)
    route, info, _ = r.resolve("GET", "/api/v1/pods")
    assert route is first
    info["tail"] = "changed by a handler"
    assert r.resolve("GET", "/api/v1/pods")[1] == {"tail": "pods"}
    assert r.resolve("POST", "/version") == (None, {}, True)  # 405
    later = r.add_route("POST", "/version", _handler)
    assert r.resolve("POST", "/version")[0] is later


def test_the_router_keeps_a_bounded_number_of_short_paths(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_routing, "RESOLVED_KEPT", 3)
    r = UrlDispatcher()
    r.add_route("*", "/{tail:.*}", _handler)
    for i in range(10):
        r.resolve("GET", f"/p{i}")
    r.resolve("GET", "/" + "x" * (http_routing.RESOLVED_PATH_MAX + 1))
    assert list(r._resolved) == [("GET", "/p7"), ("GET", "/p8"), ("GET", "/p9")]


def test_targets_answer_as_resolve_and_follow_the_registry() -> None:
    registry = KindRegistry()
    targets = Targets(registry)
    for tail in ("pods", "namespaces/default/pods/p", "namespaces/default/pods/p/status/",
                 "watch/namespaces/default/pods"):
        kept = targets.resolve("", "v1", tail)
        assert kept == resolve(registry, "", "v1", tail.rstrip("/").split("/"))
        assert targets.resolve("", "v1", tail) is kept
    with pytest.raises(ApiError) as e:
        targets.resolve("example.com", "v1", "namespaces/default/crontabs/c/status")
    assert e.value.code == 404
    registry.register_crd(_crd({}))  # served, without a status subresource
    assert targets.resolve("example.com", "v1", "namespaces/default/crontabs/c").name == "c"
    with pytest.raises(ApiError):
        targets.resolve("example.com", "v1", "namespaces/default/crontabs/c/status")
    registry.register_crd(_crd({"status": {}}))  # its status is now served
    t = targets.resolve("example.com", "v1", "namespaces/default/crontabs/c/status")
    assert t.subresource == "status" and t.kind is registry.by_resource(
        "example.com", "v1", "crontabs")
    registry.unregister_crd("crontabs.example.com")
    with pytest.raises(ApiError):
        targets.resolve("example.com", "v1", "namespaces/default/crontabs/c")
