"""Rendering a kubeconfig for a node's data dir."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from shoal.mesh.pki import NodePKI


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render(data_dir: Path, server: str, cluster: str = "shoal", use_token: bool = False) -> str:
    """A kubeconfig with the cluster CA and the admin credential (client cert, or token)."""
    pki = NodePKI(data_dir / "pki")
    if not pki.ca_cert.exists():
        raise FileNotFoundError(
            f"{pki.ca_cert} does not exist: start `shoal server --data-dir {data_dir}` first"
        )
    user: dict[str, Any]
    if use_token:
        user = {"token": pki.admin_token.read_text().strip()}
    else:
        user = {
            "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
            "client-key-data": _b64(pki.admin_key.read_bytes()),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": _b64(pki.ca_cert.read_bytes())}}],
        "users": [{"name": f"{cluster}-admin", "user": user}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": f"{cluster}-admin"}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def default_server(data_dir: Path) -> str:
    """The URL the node wrote on start (``DATA_DIR/server-url``), else the default port."""
    f = data_dir / "server-url"
    if f.exists():
        return f.read_text().strip()
    return "https://127.0.0.1:6443"
