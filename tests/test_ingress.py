"""Ingress: haproxy, configured from the replica, routes by host and path and terminates TLS
with the certificate of a ``kubernetes.io/tls`` Secret picked by SNI."""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal.model.kinds import KindRegistry
from shoal.net.ingress import IngressController, IngressSettings
from shoal.net.ingress_admission import DefaultIngressClass
from shoal.net.ingress_config import Listen, render
from shoal.net.ingress_haproxy import (
    MAX_SOCKET_PATH,
    ConfigRefused,
    HaproxySupervisor,
    haproxy_path,
    stats_socket_path,
)
from shoal.store.objects import Invalid, ObjectStore
from shoal.store.replica import Replica
from tests.conftest import free_port

if haproxy_path() is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("haproxy is missing (scripts/bootstrap-debian.sh installs it)")
    pytest.skip("haproxy is not installed", allow_module_level=True)


def _self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


async def _backend(name: str) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} {request.path}")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def _get(port: int, host: str, path: str, tls: ssl.SSLContext | None = None
               ) -> tuple[int, str]:
    """One HTTP/1.0 request to 127.0.0.1:port with a Host header (and SNI ``host``)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname=host if tls else None)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def _service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def _slice(svc: str, port: int) -> dict[str, Any]:
    return {"metadata": {"name": f"{svc}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}


def _path(path: str, svc: str, path_type: str = "Prefix") -> dict[str, Any]:
    return {"path": path, "pathType": path_type,
            "backend": {"service": {"name": svc, "port": {"number": 80}}}}


class _Site:
    def __init__(self, store: ObjectStore, ctl: IngressController, http: int, https: int,
                 ca: ssl.SSLContext) -> None:
        self.store, self.ctl, self.http, self.https, self.ca = store, ctl, http, https, ca

    def kind(self, api_version: str, kind: str) -> Any:
        k = self.store.registry.by_kind(api_version, kind)
        assert k is not None
        return k

    async def until(self, host: str, path: str, want: str, tls: bool = False) -> float:
        """Seconds until a request answers with ``want`` (at most 5)."""
        started = time.monotonic()
        last: tuple[int, str] | None = None
        while time.monotonic() - started < 5:
            try:
                last = await _get(self.https if tls else self.http, host, path,
                                  self.ca if tls else None)
                if last[1] == want:
                    return time.monotonic() - started
            except OSError:
                pass
            await asyncio.sleep(0.02)
        raise AssertionError(f"{host}{path}: {last}, not {want!r}")


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[_Site]:
    tmp = tmp_path_factory.mktemp("ingress")
    replica = Replica(tmp / "replica", "p1")
    store = ObjectStore(replica, KindRegistry())
    store.admission.append(DefaultIngressClass(replica))
    runners = []
    reg = store.registry
    ns, node = reg.by_kind("v1", "Namespace"), reg.by_kind("v1", "Node")
    svc, sl, sec = (reg.by_kind("v1", "Service"), reg.by_kind("discovery.k8s.io/v1",
                    "EndpointSlice"), reg.by_kind("v1", "Secret"))
    assert ns and node and svc and sl and sec
    await store.create(ns, {"metadata": {"name": "default"}})
    await store.create(node, {"metadata": {"name": "edge-1"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}})
    for name in ("app-a", "app-b"):
        runner, port = await _backend(name)
        runners.append(runner)
        await store.create(svc, _service(name), "default")
        await store.create(sl, _slice(name, port), "default")
    crt, key = _self_signed("a.example.com")
    # Line-wrapped base64, as in Kubernetes' own TLS Secret example.
    await store.create(sec, {"metadata": {"name": "a-tls", "namespace": "default"},
                             "type": "kubernetes.io/tls",
                             "data": {"tls.crt": base64.encodebytes(crt).decode(),
                                      "tls.key": base64.b64encode(key).decode()}}, "default")
    ca = ssl.create_default_context(cadata=crt.decode())
    http, https = free_port(), free_port()
    ctl = IngressController(store, Path(tmp), IngressSettings(
        listen=Listen("127.0.0.1", http, https), debounce=0.01),
        HaproxySupervisor(tmp / "ingress" / "haproxy.cfg", tmp / "ingress" / "haproxy.log",
                          backoff=0.1))
    ctl.start()
    try:
        yield _Site(store, ctl, http, https, ca)
    finally:
        await ctl.stop()
        for r in runners:
            await r.cleanup()
        replica.close()


async def test_two_hosts_and_a_path_route_to_their_backends_over_http_and_https(
        site: _Site) -> None:
    ing = site.kind("networking.k8s.io/v1", "Ingress")
    await site.store.create(ing, {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"tls": [{"hosts": ["a.example.com"], "secretName": "a-tls"}],
                 "rules": [{"host": "a.example.com", "http": {"paths": [
                     _path("/", "app-a"), _path("/api", "app-b")]}},
                           {"host": "b.example.com", "http": {"paths": [
                               _path("/", "app-b")]}}]}}, "default")
    await site.until("a.example.com", "/x", "app-a /x")
    assert await _get(site.http, "a.example.com", "/api/v1") == (200, "app-b /api/v1")
    assert await _get(site.http, "a.example.com", "/api") == (200, "app-b /api")
    # A Prefix matches whole path elements: /apix is not under /api.
    assert await _get(site.http, "a.example.com", "/apix") == (200, "app-a /apix")
    assert await _get(site.http, "B.example.com:80", "/") == (200, "app-b /")
    assert (await _get(site.http, "c.example.com", "/"))[0] == 404
    # HTTPS: the Secret's certificate is chosen by SNI and verifies; routing is the same.
    await site.until("a.example.com", "/api/tls", "app-b /api/tls", tls=True)
    assert await _get(site.https, "a.example.com", "/", site.ca) == (200, "app-a /")
    # Every node answers, so the status lists the Nodes' addresses.
    for _ in range(100):
        got = site.store.replica.get(ing.resource, "default", "web") or {}
        if (got.get("status") or {}).get("loadBalancer"):
            break
        await asyncio.sleep(0.02)
    assert got["status"]["loadBalancer"] == {"ingress": [{"ip": "10.0.0.5"}]}
    # The default class exists, so kubectl shows where Ingresses go.
    cls = site.store.replica.get("ingressclasses.networking.k8s.io", "", "shoal")
    assert cls is not None and cls["spec"]["controller"] == "shoal.dev/ingress"


async def test_a_changed_rule_is_served_after_a_reload_and_exact_beats_prefix(
        site: _Site) -> None:
    ing = site.kind("networking.k8s.io/v1", "Ingress")
    reloads = site.ctl.haproxy.reloads
    await site.store.create(ing, {
        "metadata": {"name": "exact", "namespace": "default"},
        "spec": {"rules": [{"host": "*.wild.test", "http": {"paths": [
            _path("/", "app-a"), _path("/only", "app-b", "Exact")]}}]}}, "default")
    await site.until("x.wild.test", "/only", "app-b /only")
    assert site.ctl.haproxy.reloads > reloads
    assert await _get(site.http, "x.wild.test", "/only/more") == (200, "app-a /only/more")
    # A wildcard covers one label only.
    assert (await _get(site.http, "y.x.wild.test", "/"))[0] == 404
    assert site.ctl.last_render is not None and site.ctl.last_render < 0.05
    # Created with no class, it got the default one (DefaultIngressClass admission).
    got = site.store.replica.get(ing.resource, "default", "exact")
    assert got is not None and got["spec"]["ingressClassName"] == "shoal"


async def test_a_haproxy_that_dies_is_started_again_and_serves_the_same_routes(
        site: _Site) -> None:
    await site.until("a.example.com", "/", "app-a /")
    pid = site.ctl.haproxy.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    await site.until("a.example.com", "/", "app-a /")
    assert site.ctl.haproxy.restarts == 1 and site.ctl.haproxy.pid != pid


async def test_an_ingress_with_neither_rules_nor_a_default_backend_is_invalid(
        site: _Site) -> None:
    ing = site.kind("networking.k8s.io/v1", "Ingress")
    with pytest.raises(Invalid) as e:
        await site.store.create(ing, {"metadata": {"name": "bad", "namespace": "default"},
                                      "spec": {"rules": [{"host": "10.0.0.1", "http": {
                                          "paths": [{"path": "x", "pathType": "Bogus",
                                                     "backend": {}}]}}]}}, "default")
    fields = {c.field for c in e.value.causes}
    assert {"spec.rules[0].host", "spec.rules[0].http.paths[0].pathType",
            "spec.rules[0].http.paths[0].backend"} <= fields


async def test_a_protobuf_ingress_as_kubectl_create_ingress_sends_it_decodes_to_its_json() -> None:
    from shoal.api.protobuf import decode
    from tests.test_protobuf import envelope, msg, text, vint

    backend = msg(2, msg(4, text(1, "web"), msg(2, vint(2, 80))))
    body = envelope("networking.k8s.io/v1", "Ingress",
                    msg(1, text(1, "web")),
                    msg(2, msg(3, text(1, "a.example.com"), msg(2, msg(1, msg(
                        1, text(1, "/"), backend, text(3, "Prefix"))))),
                        msg(2, text(1, "a.example.com"), text(2, "a-tls")),
                        text(4, "shoal")))
    assert decode(body)["spec"] == {
        "ingressClassName": "shoal",
        "tls": [{"hosts": ["a.example.com"], "secretName": "a-tls"}],
        "rules": [{"host": "a.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}


async def test_endpoints_on_a_node_this_node_cannot_reach_are_left_out() -> None:
    svc = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "targetPort": 8080}]}}
    sl = {"metadata": {"name": "web-1", "namespace": "default",
                       "labels": {"kubernetes.io/service-name": "web"}},
          "endpoints": [{"addresses": ["10.42.1.5"], "nodeName": "near"},
                        {"addresses": ["10.42.2.5"], "nodeName": "far"}],
          "ports": [{"port": 8080}]}
    ing = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}
    args = ([ing], [], [svc], [sl], [], Listen(), "/c", "/s")
    assert "10.42.2.5:8080" in render(*args).text
    cut_off = render(*args, unreachable=frozenset({"far"})).text
    assert "10.42.1.5:8080" in cut_off and "10.42.2.5" not in cut_off
    # With no endpoint left, the ClusterIP (the Service proxy decides there).
    alone = render(*args, unreachable=frozenset({"far", "near"})).text
    assert "server s0 10.96.0.9:80" in alone


async def test_haproxys_socket_leaves_a_data_dir_too_deep_for_it_and_a_refusal_says_why(
        tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "ingress"
    path = stats_socket_path(deep)
    assert len(str(path)) <= MAX_SOCKET_PATH
    assert path == stats_socket_path(deep)  # the same place at every render
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert stats_socket_path(tmp_path / "ingress") == tmp_path / "ingress" / "haproxy.sock"
    bad = tmp_path / "bad.cfg"
    bad.write_text("global\n    stats socket " + str(deep / "haproxy.sock") + " mode 600\n")
    with pytest.raises(ConfigRefused, match="too long"):
        await HaproxySupervisor(bad, tmp_path / "log").check(bad)
