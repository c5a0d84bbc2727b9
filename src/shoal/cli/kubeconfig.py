"""Kubeconfigs: the admin's, and a person's made on a signer.

The admin credential exists only on the node that created the cluster CA (a joined
node gets its own node credential, nothing more). Every peer's serving certificate
chains to that CA and every peer accepts client certificates it signed, so one
kubeconfig, made on a signer, works against any peer with ``--server``.

A kubeconfig holds a private key: the command writes it with
:func:`shoal.cli.private_output.write_private` (0600).
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

from shoal.mesh.pki import NodePKI, issue

DEFAULT_USER_TTL = 8760 * 3600.0


class NoCredential(Exception):
    """This data dir cannot make the kubeconfig asked for; the message says where to."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _where(data_dir: Path) -> str:
    return (f"{data_dir} is a joined node's data dir: it holds only its own node "
            "credential. Run `shoal kubeconfig --data-dir DIR --server URL` where DIR is a "
            "signer's data dir (one that holds pki/ca.key, such as the first node's) and URL "
            "the API of any peer: the kubeconfig works against every peer, since all serving "
            "certificates chain to the same CA")


def _pki(data_dir: Path) -> NodePKI:
    pki = NodePKI(data_dir / "pki")
    if not pki.ca_cert.exists():
        raise NoCredential(f"{pki.ca_cert} does not exist: start `shoal server --data-dir "
                           f"{data_dir}` first")
    return pki


def _config(pki: NodePKI, server: str, cluster: str, user_name: str,
            user: dict[str, Any]) -> str:
    import yaml  # here, not at the top: a running node loads no PyYAML (2.6 MB)

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": _b64(pki.ca_cert.read_bytes())}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user_name}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def render(data_dir: Path, server: str, cluster: str = "shoal", use_token: bool = False) -> str:
    """A kubeconfig with the cluster CA and the admin credential (client cert, or token)."""
    pki = _pki(data_dir)
    if not pki.ca_key.exists() or not pki.admin_cert.exists():
        raise NoCredential(_where(data_dir))
    user: dict[str, Any]
    if use_token:
        user = {"token": pki.admin_token.read_text().strip()}
    else:
        user = {
            "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
            "client-key-data": _b64(pki.admin_key.read_bytes()),
        }
    return _config(pki, server, cluster, f"{cluster}-admin", user)


def render_user(data_dir: Path, server: str, name: str, groups: list[str],
                ttl: float = DEFAULT_USER_TTL, cluster: str = "shoal") -> str:
    """A kubeconfig for a person: a new client certificate (CN=name, O=groups) signed by
    the CA here. What it may do is up to RBAC bindings for the name and the groups."""
    pki = _pki(data_dir)
    if not pki.ca_key.exists():
        raise NoCredential(_where(data_dir))
    if not name:
        raise NoCredential("--user needs a name")
    leaf = issue(pki.ca(), name, organizations=tuple(dict.fromkeys(groups)), client=True,
                 lifetime=datetime.timedelta(seconds=ttl))
    user = {"client-certificate-data": _b64(leaf.cert_pem),
            "client-key-data": _b64(leaf.key_pem)}
    return _config(pki, server, cluster, f"{cluster}-{name}", user)


def default_server(data_dir: Path) -> str:
    """The URL the node wrote on start (``DATA_DIR/server-url``), else the default port."""
    f = data_dir / "server-url"
    if f.exists():
        return f.read_text().strip()
    return "https://127.0.0.1:6443"
