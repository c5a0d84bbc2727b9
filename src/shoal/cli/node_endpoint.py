"""GET one of a node's JSON endpoints (``/shoal/v1/...``) with a kubeconfig's credentials.

Reads the kubeconfig itself (the ``kubernetes`` client is not a runtime dependency):
the context's cluster (``server``, ``certificate-authority[-data]``,
``insecure-skip-tls-verify``) and user (``token``,
``tokenFile``, ``client-certificate[-data]`` and ``client-key[-data]``), which is
what ``shoal kubeconfig`` writes and what kubectl reads for these fields.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any


def _kubeconfig_path(kubeconfig: str | None) -> Path:
    if kubeconfig:
        return Path(kubeconfig)
    # As kubectl: the first file of $KUBECONFIG that exists, else ~/.kube/config.
    for entry in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if entry and Path(entry).exists():
            return Path(entry)
    return Path.home() / ".kube" / "config"


def _named(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(section[:-1])
            return value if isinstance(value, dict) else {}
    raise RuntimeError(f"kubeconfig: no {section[:-1]} named {name!r}")


def _data(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    """A credential given inline (``key-data``, base64) or as a file path (``key``)."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = Path(entry[key])
        return (path if path.is_absolute() else base / path).read_bytes()
    return None


def _ssl_context(cluster: dict[str, Any], user: dict[str, Any], base: Path,
                 scratch: Path) -> ssl.SSLContext:
    ca = _data(cluster, "certificate-authority", base)
    ctx = ssl.create_default_context(cadata=ca.decode() if ca is not None else None)
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert, key = (_data(user, "client-certificate", base), _data(user, "client-key", base))
    if cert is not None and key is not None:
        # ssl loads a client certificate only from files: private ones, removed after.
        cert_path, key_path = scratch / "client.crt", scratch / "client.key"
        for path, content in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def get_json(path: str, kubeconfig: str | None, context: str | None,
             server: str | None) -> dict[str, Any]:
    """The endpoint's JSON body; raises RuntimeError with the status for anything but 200."""
    # Here, not at the top: a running node loads no PyYAML (2.6 MB), and no
    # urllib.request (with http.client and email); ``shoal server`` imports this module.
    import urllib.request

    import yaml

    config_path = _kubeconfig_path(kubeconfig)
    config = yaml.safe_load(config_path.read_text()) or {}
    context_name = context or config.get("current-context")
    if not context_name:
        raise RuntimeError(f"{config_path}: no context given and no current-context")
    ctx_entry = _named(config, "contexts", context_name)
    cluster = _named(config, "clusters", str(ctx_entry.get("cluster")))
    user = _named(config, "users", str(ctx_entry.get("user"))) if ctx_entry.get("user") else {}
    url = (server or str(cluster.get("server", ""))).rstrip("/") + path
    headers = {"Accept": "application/json"}
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with tempfile.TemporaryDirectory(prefix="shoal-kubeconfig-") as scratch:
        ssl_ctx = _ssl_context(cluster, user, config_path.parent, Path(scratch))
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, context=ssl_ctx, timeout=30) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{e.code}: {e.read().decode(errors='replace')}") from None
