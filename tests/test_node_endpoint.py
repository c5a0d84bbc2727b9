"""`shoal status` and `shoal scopes` read a kubeconfig's credentials themselves, as kubectl does."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal.cli.node_endpoint import get_json
from shoal.mesh.pki import create_ca, issue

TOKEN = "s3cret"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"kind": "Status", "code": 401})
            return
        self._answer(200, {"path": self.path})

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS endpoint with a serving certificate from a CA in ca.crt next to it."""
    where = tmp_path_factory.mktemp("node")
    ca = create_ca()
    serving = issue(ca, "node-1", ips=("127.0.0.1",), server=True)
    (where / "ca.crt").write_bytes(ca.cert_pem)
    (where / "server.crt").write_bytes(serving.cert_pem)
    (where / "server.key").write_bytes(serving.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(where / "server.crt", where / "server.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", where
    server.shutdown()


def _kubeconfig(path: Path, server: str, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}},
                     {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "mine", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "nowhere", "user": "u"}}],
    }))
    return path


def test_a_token_and_a_ca_file_relative_to_the_kubeconfig(node: tuple[str, Path]) -> None:
    server, where = node
    config = _kubeconfig(where / "config", server, {"certificate-authority": "ca.crt"},
                         {"token": TOKEN})
    assert get_json("/shoal/v1/scopes", str(config), "mine", None) == {"path": "/shoal/v1/scopes"}


def test_inline_ca_a_token_file_and_the_server_flag_over_the_context(
        node: tuple[str, Path], tmp_path: Path) -> None:
    server, where = node
    (tmp_path / "token").write_text(TOKEN + "\n")
    ca = base64.b64encode((where / "ca.crt").read_bytes()).decode()
    config = _kubeconfig(tmp_path / "config", "https://127.0.0.1:1",
                         {"certificate-authority-data": ca},
                         {"tokenFile": str(tmp_path / "token")})
    assert get_json("/x", str(config), "mine", server) == {"path": "/x"}


def test_a_refusal_and_an_unknown_ca_are_errors(node: tuple[str, Path], tmp_path: Path) -> None:
    server, where = node
    config = _kubeconfig(tmp_path / "config", server, {"certificate-authority": str(where / "ca.crt")},
                         {"token": "wrong"})
    with pytest.raises(RuntimeError, match=r"^401: "):
        get_json("/x", str(config), "mine", None)
    untrusted = _kubeconfig(tmp_path / "other", server,
                            {"certificate-authority-data": base64.b64encode(
                                create_ca().cert_pem).decode()}, {"token": TOKEN})
    with pytest.raises(OSError):
        get_json("/x", str(untrusted), "mine", None)
    with pytest.raises(RuntimeError, match="no context named"):
        get_json("/x", str(config), "missing", None)
