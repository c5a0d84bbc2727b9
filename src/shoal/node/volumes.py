"""Pod volumes: each volume is a host directory, linked or bind-mounted into containers.

emptyDir, configMap and secret volumes are directories under
``DATA_DIR/pods/<pod-uid>/volumes/<name>``; a hostPath volume is the host path
itself, and so is a persistentVolumeClaim's bound local or hostPath volume. The process runtime cannot bind-mount a volume at its ``mountPath``, so a
container finds each mounted volume (a) in ``SHOAL_VOLUME_<NAME>`` (the volume name,
upper-cased, other characters as ``_``) and (b) at ``mountPath`` itself when that path
is absolute, does not exist yet and its parent is writable: there we put a symlink,
removed when the pod goes. Where ``mountPath`` is taken (a host file, another pod's
link), the container's command, args, env values and workingDir name the volume's
directory instead wherever they name ``mountPath`` (:func:`rewritten`), so a container
never runs a stale host file in place of its ConfigMap. Volume kinds we do not know yet
become empty directories.

Projected volumes (and downwardAPI volumes) are written as Kubernetes' AtomicWriter does:
the files go into a fresh hidden directory ``..<stamp>``, the symlink ``..data`` is swapped
to it with one rename, and each top-level name is a symlink through ``..data``; a reader
never sees half of an update. A projected ServiceAccount token is rewritten (with the CA
and namespace beside it) once it is 80 % through its lifetime or 24 h old, as the kubelet
does: :func:`refresh_projected` says when next.
A runtime that can mount (runc) bind-mounts the same directories instead
(:func:`bind_mounts`), and no host link is made.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.node.env import ConfigError, Lookup, field_ref
from shoal.node.runtime import Mount

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644
DATA_LINK = "..data"
DEFAULT_TOKEN_EXPIRATION = 3600
REFRESH_FRACTION = 0.8
REFRESH_MAX_AGE = 24 * 3600.0
RETRY_SECONDS = 10.0  # after a failed renewal

TokenSource = Callable[[dict[str, Any], str, int], str]
"""(pod, audience ("" for the API's), expirationSeconds) -> a token bound to the pod; raises
:class:`VolumeError` when it cannot be issued yet."""


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


def prepare(pod: dict[str, Any], pod_dir: Path, lookup: Lookup,
            tokens: TokenSource | None = None) -> dict[str, Path]:
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
        if "persistentVolumeClaim" in vol:
            out[name] = _claimed(vol["persistentVolumeClaim"] or {}, ns, lookup)
            continue
        if "projected" in vol or "downwardAPI" in vol:
            _write_projected(pod, vol, local, lookup, tokens)
            out[name] = local
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
                log.warning("volume %s of pod %s: only emptyDir, configMap, secret, projected, "
                            "downwardAPI and hostPath are supported; using an empty directory",
                            name,
                            (pod.get("metadata") or {}).get("name"))
            local.mkdir(parents=True, exist_ok=True)
            out[name] = local
    return out


def _claimed(source: dict[str, Any], ns: str, lookup: Lookup) -> Path:
    """The host directory of a bound claim's local or hostPath volume (stateful workloads:
    shoal.node.local_volumes makes the local-path ones)."""
    name = str(source.get("claimName", ""))
    claim = lookup("persistentvolumeclaims", ns, name)
    if claim is None:
        raise VolumeError(f'persistentvolumeclaim "{name}" not found')
    volume = str((claim.get("spec") or {}).get("volumeName") or "")
    if not volume:
        raise VolumeError(f'persistentvolumeclaim "{name}" is not bound')
    pv = lookup("persistentvolumes", "", volume)
    spec = (pv or {}).get("spec") or {}
    path = (spec.get("local") or {}).get("path") or (spec.get("hostPath") or {}).get("path")
    if not path:
        raise VolumeError(f'persistentvolume "{volume}" has no local or hostPath path'
                          if pv is not None else f'persistentvolume "{volume}" not found')
    if not Path(str(path)).is_dir():
        raise VolumeError(f'persistentvolume "{volume}": {path} does not exist on this node')
    return Path(str(path))


class TokenUnavailable(VolumeError):
    """A token cannot be issued yet (its ServiceAccount has not reached this replica)."""


def _selected(data: dict[str, bytes], items: list[dict[str, Any]] | None, mode: int,
              optional: bool, what: str) -> list[tuple[str, bytes, int]]:
    if not items:
        return [(k, v, mode) for k, v in data.items()]
    out = []
    for it in items:
        key = str(it.get("key", ""))
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{what}: key {key!r} not found")
        out.append((str(it.get("path") or key), data[key], int(it.get("mode", mode))))
    return out


def _downward_files(pod: dict[str, Any], items: list[dict[str, Any]], mode: int
                    ) -> list[tuple[str, bytes, int]]:
    out = []
    for it in items:
        ref = it.get("fieldRef") or {}
        if not ref:
            raise VolumeError(f"downwardAPI {it.get('path')!r}: only fieldRef is supported")
        try:
            value = field_ref(pod, str(ref.get("fieldPath", "")), "")
        except ConfigError as e:
            raise VolumeError(str(e)) from e
        out.append((str(it.get("path", "")), value.encode(), int(it.get("mode", mode))))
    return out


def projected_files(pod: dict[str, Any], sources: list[dict[str, Any]], mode: int,
                    lookup: Lookup, tokens: TokenSource | None) -> list[tuple[str, bytes, int]]:
    """The files of a projected volume: (path, content, mode)."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    out: list[tuple[str, bytes, int]] = []
    for src in sources:
        if "serviceAccountToken" in src:
            sat = src["serviceAccountToken"] or {}
            if tokens is None:
                raise TokenUnavailable("this node issues no ServiceAccount tokens")
            token = tokens(pod, str(sat.get("audience") or ""),
                           int(sat.get("expirationSeconds") or DEFAULT_TOKEN_EXPIRATION))
            out.append((str(sat.get("path") or "token"), token.encode(), mode))
        elif "downwardAPI" in src:
            out += _downward_files(pod, (src["downwardAPI"] or {}).get("items") or [], mode)
        for key, secret in (("configMap", False), ("secret", True)):
            if key not in src:
                continue
            ref = src[key] or {}
            name = str(ref.get("name", ""))
            obj = lookup("secrets" if secret else "configmaps", ns, name)
            what = f'{"secret" if secret else "configmap"} "{name}"'
            if obj is None:
                if ref.get("optional"):
                    continue
                raise VolumeError(f"{what} not found")
            out += _selected(_object_data(obj, secret), ref.get("items"), mode,
                             bool(ref.get("optional")), what)
    return out


def write_atomically(target: Path, files: list[tuple[str, bytes, int]]) -> None:
    """Kubernetes' AtomicWriter: the files in a new ``..<stamp>`` directory, ``..data``
    swapped to it by a rename, each top-level name a symlink through ``..data``."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{secrets.token_hex(4)}"
    stamp.mkdir()
    top: set[str] = set()
    for rel, content, mode in files:
        path = (stamp / rel).resolve()
        if rel.startswith("..") or not path.is_relative_to(stamp.resolve()):
            shutil.rmtree(stamp, ignore_errors=True)
            raise VolumeError(f"path {rel!r} leaves the volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)
        top.add(Path(rel).parts[0])
    os.chmod(stamp, 0o755)
    data = target / DATA_LINK
    old = os.readlink(data) if data.is_symlink() else None
    tmp = target / f"{DATA_LINK}_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(stamp.name)
    os.rename(tmp, data)  # the one step a reader can see: all old files, then all new ones
    for name in top:
        link = target / name
        if not link.is_symlink():
            if link.is_dir():
                shutil.rmtree(link)
            elif link.exists():
                link.unlink()
            link.symlink_to(f"{DATA_LINK}/{name}")
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.is_symlink() and entry.name not in top:
            entry.unlink()
    if old and old != stamp.name:
        shutil.rmtree(target / old, ignore_errors=True)


def _write_projected(pod: dict[str, Any], vol: dict[str, Any], local: Path, lookup: Lookup,
                     tokens: TokenSource | None) -> None:
    if "projected" in vol:
        proj = vol["projected"] or {}
        mode = int(proj.get("defaultMode", DEFAULT_MODE))
        files = projected_files(pod, proj.get("sources") or [], mode, lookup, tokens)
    else:
        dapi = vol["downwardAPI"] or {}
        files = _downward_files(pod, dapi.get("items") or [],
                                int(dapi.get("defaultMode", DEFAULT_MODE)))
    write_atomically(local, files)


def _token_due(local: Path, vol: dict[str, Any]) -> float | None:
    """When the projected volume's token is due for renewal (unix seconds); None if it has
    no token. A token we cannot read is due now."""
    sources = ((vol.get("projected") or {}).get("sources")) or []
    paths = [str((s["serviceAccountToken"] or {}).get("path") or "token")
             for s in sources if "serviceAccountToken" in s]
    if not paths:
        return None
    due = float("inf")
    for rel in paths:
        try:
            body = (local / rel).read_text().split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            iat, exp = float(claims["iat"]), float(claims["exp"])
        except (OSError, IndexError, ValueError, KeyError, TypeError):
            return 0.0
        due = min(due, iat + min(REFRESH_FRACTION * (exp - iat), REFRESH_MAX_AGE))
    return due


def refresh_projected(pod: dict[str, Any], pod_dir: Path, lookup: Lookup,
                      tokens: TokenSource | None, now: float) -> float | None:
    """Rewrites the projected volumes whose token is due; returns when the next one is due
    (unix seconds), or None when the pod has no token to renew."""
    next_due: float | None = None
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if "projected" not in vol:
            continue
        local = pod_dir / "volumes" / str(vol.get("name", ""))
        due = _token_due(local, vol)
        if due is None:
            continue
        if due <= now:
            try:
                _write_projected(pod, vol, local, lookup, tokens)
                due = _token_due(local, vol) or now + RETRY_SECONDS
            except (VolumeError, OSError) as e:
                log.warning("pod %s: cannot renew the token in volume %s: %s",
                            (pod.get("metadata") or {}).get("name"), vol.get("name"), e)
                due = now + RETRY_SECONDS
        next_due = due if next_due is None else min(next_due, due)
    return next_due


@dataclass
class Mounts:
    """What one container sees of the pod's volumes."""

    env: dict[str, str] = field(default_factory=dict)
    links: list[tuple[Path, Path]] = field(default_factory=list)  # (mountPath, target) we created
    # mountPath -> the volume's directory, where mountPath is not ours (taken on the host)
    rewrites: dict[str, str] = field(default_factory=dict)


def mount(container: dict[str, Any], volumes: dict[str, Path]) -> Mounts:
    m = Mounts()
    for vm in container.get("volumeMounts") or []:
        src = volumes.get(str(vm.get("name", "")))
        if src is None:
            continue
        target = src / str(vm["subPath"]) if vm.get("subPath") else src
        m.env[env_name(str(vm.get("name", "")))] = str(target)
        mp = Path(str(vm.get("mountPath", "")))
        if not mp.is_absolute():
            continue
        if not os.path.lexists(mp) and os.access(mp.parent, os.W_OK):
            with contextlib.suppress(OSError):
                mp.symlink_to(target, target_is_directory=target.is_dir())
                m.links.append((mp, target))
        if not (mp.is_symlink() and os.readlink(mp) == str(target)):
            # Taken by a host file or another pod's link: the paths the container is given
            # name the volume itself, so it never runs what happens to be on the host.
            m.rewrites[str(mp)] = str(target)
    return m


def rewritten(value: str, rewrites: dict[str, str]) -> str:
    """``value`` with each mountPath in ``rewrites`` that it names (as a whole path or a
    path's head, alone or inside a shell line) replaced by the volume's directory."""
    for mp in sorted(rewrites, key=len, reverse=True):
        if mp in value:
            target = rewrites[mp]
            value = re.sub(r"(?<![^\s\"'=:])" + re.escape(mp) + r"(?=$|[/\s\"';:])",
                           lambda _: target, value)  # noqa: B023 - used at once
    return value


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
        # ConfigMap, Secret, projected and downwardAPI volumes are read-only in Kubernetes
        # whatever the mount says.
        ro = bool(vm.get("readOnly")) or any(
            k in kinds.get(name, {}) for k in ("configMap", "secret", "projected", "downwardAPI"))
        out.append(Mount(src, mp, ro))
    return tuple(out)


def unmount(links: list[tuple[Path, Path]]) -> None:
    """Remove the symlinks we made, if they still point where we made them point."""
    for mp, target in links:
        with contextlib.suppress(OSError):
            if mp.is_symlink() and os.readlink(mp) == str(target):
                mp.unlink()
