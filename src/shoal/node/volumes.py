"""Pod volumes: each volume is a host directory, linked or bind-mounted into containers.

emptyDir, configMap and secret volumes are directories under
``DATA_DIR/pods/<pod-uid>/volumes/<name>``; a hostPath volume is the host path
itself. The process runtime cannot bind-mount a volume at its ``mountPath``, so a
container finds each mounted volume (a) in ``SHOAL_VOLUME_<NAME>`` (the volume name,
upper-cased, other characters as ``_``) and (b) at ``mountPath`` itself when that path
is absolute, does not exist yet and its parent is writable: there we put a symlink,
removed when the pod goes. Volume kinds we do not know yet become empty directories.
A runtime that can mount (runc) bind-mounts the same directories instead
(:func:`bind_mounts`), and no host link is made.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.node.env import Lookup
from shoal.node.runtime import Mount

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume cannot be set up yet (a missing ConfigMap or Secret, a missing host path)."""


def env_name(volume: str) -> str:
    return "SHOAL_VOLUME_" + re.sub(r"[^A-Za-z0-9]", "_", volume).upper()


def _write_items(target: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None,
                 default_mode: int, what: str) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    files: list[tuple[str, bytes, int]]
    if items:
        files = []
        for it in items:
            key = str(it.get("key", ""))
            if key not in data:
                raise VolumeError(f"{what}: key {key!r} not found")
            files.append((str(it.get("path") or key), data[key], int(it.get("mode", default_mode))))
    else:
        files = [(k, v, default_mode) for k, v in data.items()]
    for rel, content, mode in files:
        path = (target / rel).resolve()
        if not path.is_relative_to(target.resolve()):
            raise VolumeError(f"{what}: path {rel!r} leaves the volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)


def _object_data(obj: dict[str, Any], secret: bool) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if secret:
        out.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
        out.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
    else:
        out.update({k: str(v).encode() for k, v in (obj.get("data") or {}).items()})
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out


def prepare(pod: dict[str, Any], pod_dir: Path, lookup: Lookup) -> dict[str, Path]:
    """Create every volume of the pod; returns volume name -> host directory."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    out: dict[str, Path] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name", ""))
        local = pod_dir / "volumes" / name
        if "hostPath" in vol:
            hp = vol["hostPath"] or {}
            path = Path(str(hp.get("path", "")))
            kind = hp.get("type") or ""
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif kind in ("Directory", "File") and not path.exists():
                raise VolumeError(f"hostPath type check failed: {path} does not exist")
            out[name] = path
            continue
        for key, secret in (("configMap", False), ("secret", True)):
            if key not in vol:
                continue
            src = vol[key] or {}
            obj_name = str(src.get("secretName" if secret else "name", ""))
            obj = lookup("secrets" if secret else "configmaps", ns, obj_name)
            what = f'{"secret" if secret else "configmap"} "{obj_name}"'
            if obj is None and not src.get("optional"):
                raise VolumeError(f"{what} not found")
            data = _object_data(obj, secret) if obj is not None else {}
            _write_items(local, data, src.get("items"), int(src.get("defaultMode", DEFAULT_MODE)),
                         what)
            out[name] = local
            break
        else:
            if "emptyDir" not in vol:
                log.warning("volume %s of pod %s: only emptyDir, configMap, secret and hostPath "
                            "are supported; using an empty directory", name,
                            (pod.get("metadata") or {}).get("name"))
            local.mkdir(parents=True, exist_ok=True)
            out[name] = local
    return out


@dataclass
class Mounts:
    """What one container sees of the pod's volumes."""

    env: dict[str, str] = field(default_factory=dict)
    links: list[tuple[Path, Path]] = field(default_factory=list)  # (mountPath, target) we created


def mount(container: dict[str, Any], volumes: dict[str, Path]) -> Mounts:
    m = Mounts()
    for vm in container.get("volumeMounts") or []:
        src = volumes.get(str(vm.get("name", "")))
        if src is None:
            continue
        target = src / str(vm["subPath"]) if vm.get("subPath") else src
        m.env[env_name(str(vm.get("name", "")))] = str(target)
        mp = Path(str(vm.get("mountPath", "")))
        if not mp.is_absolute() or os.path.lexists(mp):
            continue  # taken (perhaps by our own link from an earlier attempt)
        if os.access(mp.parent, os.W_OK):
            with contextlib.suppress(OSError):
                mp.symlink_to(target, target_is_directory=target.is_dir())
                m.links.append((mp, target))
    return m


def bind_mounts(container: dict[str, Any], pod_spec: dict[str, Any],
                volumes: dict[str, Path]) -> tuple[Mount, ...]:
    """The container's volumeMounts as bind mounts of the volumes' host directories."""
    kinds = {str(v.get("name", "")): v for v in pod_spec.get("volumes") or []}
    out: list[Mount] = []
    for vm in container.get("volumeMounts") or []:
        name = str(vm.get("name", ""))
        src = volumes.get(name)
        mp = str(vm.get("mountPath", ""))
        if src is None or not mp.startswith("/"):
            continue
        if vm.get("subPath"):
            src = src / str(vm["subPath"])
            if not src.exists():  # as the kubelet: a missing subPath is created as a directory
                src.mkdir(parents=True, exist_ok=True)
        # ConfigMap and Secret volumes are read-only in Kubernetes whatever the mount says.
        ro = bool(vm.get("readOnly")) or any(k in kinds.get(name, {})
                                             for k in ("configMap", "secret"))
        out.append(Mount(src, mp, ro))
    return tuple(out)


def unmount(links: list[tuple[Path, Path]]) -> None:
    """Remove the symlinks we made, if they still point where we made them point."""
    for mp, target in links:
        with contextlib.suppress(OSError):
            if mp.is_symlink() and os.readlink(mp) == str(target):
                mp.unlink()
