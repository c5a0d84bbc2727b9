"""Ingress through a real ``shoal server`` and real kubectl: ``kubectl create ingress`` (a
protobuf body), ``kubectl create secret tls``, and haproxy answering HTTP and HTTPS."""

from __future__ import annotations

import http.client
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.conftest import ShoalProcess, free_port
from tests.test_ingress import _self_signed  # also skips this module without haproxy

# Starts a real `shoal server` (the slow half of make test).
pytestmark = pytest.mark.slow


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _get(port: int, host: str, path: str, tls: ssl.SSLContext | None = None
         ) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    if tls is not None:
        # SNI and the certificate check name ``host``; the TCP connection goes to 127.0.0.1.
        conn.sock = tls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname=host)
    conn.request("GET", path, headers={"Host": host})
    r = conn.getresponse()
    return r.status, r.read().decode()


def _until(port: int, host: str, path: str, want: str,
           tls: ssl.SSLContext | None = None) -> None:
    deadline, last = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        try:
            last = _get(port, host, path, tls)
            if last == (200, want):
                return
        except OSError as e:
            last = e  # type: ignore[assignment]
        time.sleep(0.05)
    raise AssertionError(f"{host}{path}: {last}")


def test_kubectl_create_ingress_routes_http_and_https_through_haproxy(
        tmp_path: Path, backend: int) -> None:
    http_port, https_port = free_port(), free_port()
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start(["--ingress-http-port", str(http_port), "--ingress-https-port", str(https_port)])
    try:
        node.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
        node.kubectl("apply", "-f", "-", input=f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
ports: [{{name: "80-8080", port: {backend}, protocol: TCP}}]
""")
        crt, key = _self_signed("b.example.com")
        (tmp_path / "tls.crt").write_bytes(crt)
        (tmp_path / "tls.key").write_bytes(key)
        node.kubectl("create", "secret", "tls", "b-tls", f"--cert={tmp_path / 'tls.crt'}",
                     f"--key={tmp_path / 'tls.key'}")
        node.kubectl("create", "ingress", "web", "--rule=a.example.com/app*=web:80",
                     "--rule=b.example.com/*=web:80,tls=b-tls")
        _until(http_port, "a.example.com", "/app/x", "hello /app/x")
        assert _get(http_port, "a.example.com", "/other")[0] == 404
        _until(https_port, "b.example.com", "/s", "hello /s",
               ssl.create_default_context(cadata=crt.decode()))
        out = node.kubectl("get", "ingress", "web").stdout.split("\n")
        assert out[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
        row = out[1].split()
        assert row[:3] == ["web", "shoal", "a.example.com,b.example.com"]
        assert "443" in out[1]
        # The Python client reads it back, status included, and creates one.
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(node.kubeconfig), client_configuration=cfg)
        api = client.NetworkingV1Api(client.ApiClient(cfg))
        got = api.read_namespaced_ingress_status("web", "default")
        assert got.spec.tls[0].secret_name == "b-tls"
        assert got.status.load_balancer.ingress[0].ip == "127.0.0.1"
        api.create_namespaced_ingress("default", client.V1Ingress(
            metadata=client.V1ObjectMeta(name="py"),
            spec=client.V1IngressSpec(rules=[client.V1IngressRule(
                host="c.example.com", http=client.V1HTTPIngressRuleValue(paths=[
                    client.V1HTTPIngressPath(path="/", path_type="Prefix", backend=(
                        client.V1IngressBackend(service=client.V1IngressServiceBackend(
                            name="web", port=client.V1ServiceBackendPort(number=80)))))]))])))
        _until(http_port, "c.example.com", "/py", "hello /py")
        assert [c.metadata.name for c in api.list_ingress_class().items] == ["shoal"]
    finally:
        node.stop()
