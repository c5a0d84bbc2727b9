"""A container's environment and command line, resolved as the kubelet does.

Env comes from ``envFrom`` (ConfigMaps and Secrets, with a prefix) and then ``env``
(literal values, ConfigMap and Secret keys, the downward API's ``fieldRef`` and
``resourceFieldRef``); a later name wins. Before all of them come the variables that name
the API (:func:`kubernetes_service_env`), so ``$(KUBERNETES_SERVICE_HOST)`` expands. ``$(VAR)`` in values, command and args is
replaced by a variable defined before it, ``$$`` is a literal ``$``, and an unknown
reference is left as written.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from shoal.model.quantity import parse_quantity

# (resource, namespace, name) -> the object, or None
Lookup = Callable[[str, str, str], dict[str, Any] | None]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ConfigError(Exception):
    """The container cannot be configured yet (a missing ConfigMap, Secret or key)."""

    reason = "CreateContainerConfigError"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def _data_of(obj: dict[str, Any], secret: bool) -> dict[str, str]:
    data: dict[str, str] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            data[k] = base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (obj.get("stringData") or {}).items():
            data[k] = str(v)
    else:
        data.update({k: str(v) for k, v in (obj.get("data") or {}).items()})
        for k, v in (obj.get("binaryData") or {}).items():
            data.setdefault(k, base64.b64decode(v).decode("utf-8", "replace"))
    return data


def _source(lookup: Lookup, secret: bool, ns: str, name: str, optional: bool
            ) -> dict[str, str] | None:
    obj = lookup("secrets" if secret else "configmaps", ns, name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{"secret" if secret else "configmap"} "{name}" not found')
    return _data_of(obj, secret)


def field_ref(pod: dict[str, Any], path: str, node_ip: str, pod_ip: str | None = None) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": node_ip, "status.hostIPs": node_ip,
        # A pod in its own network namespace has its own address; else it is the node's.
        "status.podIP": pod_ip or node_ip, "status.podIPs": pod_ip or node_ip,
    }
    if path == "metadata.labels" or path == "metadata.annotations":
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def resource_field_ref(pod: dict[str, Any], container: dict[str, Any], ref: dict[str, Any],
                       node_allocatable: Mapping[str, str]) -> str:
    target = container
    if ref.get("containerName"):
        target = next((c for c in (pod.get("spec") or {}).get("containers") or []
                       if c.get("name") == ref["containerName"]), container)
    resource = str(ref.get("resource", ""))
    section, _, res = resource.partition(".")
    value = ((target.get("resources") or {}).get(section) or {}).get(res)
    if value is None:
        # Like the kubelet: an unset limit is the node's allocatable amount.
        value = node_allocatable.get(res, "0")
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = parse_quantity("1")
    return str(math.ceil(parse_quantity(value) / divisor))


def kubernetes_service_env(host: str, port: int) -> dict[str, str]:
    """The variables Kubernetes gives every pod for the ``kubernetes`` Service (what
    client-go's in-cluster config reads). In Shoal they name the pod's own node's API."""
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"tcp://{hostport}"
    tcp = f"KUBERNETES_PORT_{port}_TCP"
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": url,
            tcp: url, f"{tcp}_PROTO": "tcp", f"{tcp}_PORT": str(port), f"{tcp}_ADDR": host}


def bus_env(url: str) -> dict[str, str]:
    """``NATS_URL``: where a pod reaches its node's bus (``shoal.bus``), given to every
    container as the API's variables are."""
    return {"NATS_URL": url}


def container_env(pod: dict[str, Any], container: dict[str, Any], lookup: Lookup,
                  node_ip: str, node_allocatable: Mapping[str, str] | None = None,
                  pod_ip: str | None = None,
                  service_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the container sees (before the runtime adds its own)."""
    meta = pod.get("metadata") or {}
    ns = meta.get("namespace") or "default"
    alloc = node_allocatable or {}
    # No PATH: under runc the image's PATH applies (the runtime's default when it has none),
    # as with containerd; the process runtime adds the default itself.
    env: dict[str, str] = {"HOSTNAME": str(meta.get("name", "")), "HOME": "/root",
                           **(service_env or {})}
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        for key, secret in (("configMapRef", False), ("secretRef", True)):
            ref = src.get(key)
            if not ref:
                continue
            data = _source(lookup, secret, ns, str(ref.get("name", "")), bool(ref.get("optional")))
            for k, v in (data or {}).items():
                if _ENV_NAME.match(prefix + k):
                    env[prefix + k] = v
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        vf = var["valueFrom"] or {}
        if "fieldRef" in vf:
            env[name] = field_ref(pod, str((vf["fieldRef"] or {}).get("fieldPath", "")), node_ip,
                                  pod_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_field_ref(pod, container, vf["resourceFieldRef"] or {}, alloc)
        else:
            for key, secret in (("configMapKeyRef", False), ("secretKeyRef", True)):
                ref = vf.get(key)
                if not ref:
                    continue
                optional = bool(ref.get("optional"))
                data = _source(lookup, secret, ns, str(ref.get("name", "")), optional)
                k = str(ref.get("key", ""))
                if data is not None and k in data:
                    env[name] = data[k]
                elif not optional:
                    raise ConfigError(f'couldn\'t find key {k} in {"Secret" if secret else "ConfigMap"}'
                                      f' {ns}/{ref.get("name", "")}')
    return env


def command_and_args(container: dict[str, Any], env: Mapping[str, str]
                     ) -> tuple[list[str] | None, list[str] | None]:
    """``command`` and ``args`` expanded, each None when the spec does not give it (then a
    runtime with images uses the image's Entrypoint or Cmd in its place)."""
    command = container.get("command")
    args = container.get("args")
    return ([expand(str(a), env) for a in command] if command is not None else None,
            [expand(str(a), env) for a in args] if args is not None else None)


def _registry_key(server: str) -> str:
    """A docker config's registry key ("https://index.docker.io/v1/", "host:5000") as the
    registry part of an image reference."""
    host = server.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def pull_credentials(pod: dict[str, Any], lookup: Lookup) -> list[tuple[str, str, str]]:
    """(registry, username, password) from the pod's imagePullSecrets, which are Secrets of
    type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg. Missing ones are
    ignored, as the kubelet does (the pull may not need them)."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    out: list[tuple[str, str, str]] = []
    for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
        obj = lookup("secrets", ns, str((ref or {}).get("name", "")))
        if obj is None:
            continue
        data = _data_of(obj, True)
        try:
            if ".dockerconfigjson" in data:
                auths = json.loads(data[".dockerconfigjson"]).get("auths") or {}
            else:
                auths = json.loads(data.get(".dockercfg", "{}"))
        except (ValueError, AttributeError):
            continue
        if not isinstance(auths, dict):
            continue
        for server, entry in auths.items():
            if not isinstance(entry, dict):
                continue
            user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
            if not user and entry.get("auth"):
                user, _, password = base64.b64decode(str(entry["auth"])).decode(
                    "utf-8", "replace").partition(":")
            if user:
                out.append((_registry_key(str(server)), user, password))
    return out


def command_line(container: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args, expanded. With no command, args alone are the command line
    (the process runtime has no image entrypoint to fall back on)."""
    argv = [expand(str(a), env) for a in (container.get("command") or [])]
    argv += [expand(str(a), env) for a in (container.get("args") or [])]
    if not argv:
        raise ConfigError("the process runtime needs a command (it cannot read the image's "
                          "entrypoint)")
    return argv
