"""ConfigMap and Secret volumes follow their objects while the pod runs, as the kubelet's do,
and downwardAPI volumes follow the pod's labels and annotations.

The kubelet rewrites a running pod's configMap and secret volumes (and projected volumes
made of ConfigMaps, Secrets and the downward API) within about a minute of a change,
whichever peer the change was written on; before, a pod here saw a change only once its
node restarted. Each pod's worker checks every :data:`UPDATE_SECONDS` and rewrites a volume
whose files differ from what its sources say now, with the AtomicWriter swap
(:func:`shoal.node.volumes.write_atomically`): a reader sees all the old files or all the
new ones. The first rewrite turns a volume written as plain files into that layout. A
source that is missing (and not optional) or lacks a key it names leaves the volume as it
is; so does a projected volume with a ServiceAccount token (renewed on its own schedule).
A ``subPath`` mount under runc keeps the file it was given, as in Kubernetes.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shoal.node.env import Lookup
from shoal.node.volumes import DEFAULT_MODE, VolumeError, projected_files, write_atomically

log = logging.getLogger(__name__)

UPDATE_SECONDS = 10.0

Files = list[tuple[str, bytes, int]]


def wanted_files(pod: dict[str, Any], vol: dict[str, Any], lookup: Lookup) -> Files | None:
    """What the volume should hold now; None if it is not one that follows its sources.
    Raises :class:`VolumeError` when a source is missing or lacks a key."""
    if "configMap" in vol:
        src = dict(vol["configMap"] or {})
        return projected_files(pod, [{"configMap": src}],
                               int(src.get("defaultMode", DEFAULT_MODE)), lookup, None)
    if "secret" in vol:
        src = dict(vol["secret"] or {})
        src["name"] = src.pop("secretName", "")
        return projected_files(pod, [{"secret": src}],
                               int(src.get("defaultMode", DEFAULT_MODE)), lookup, None)
    if "downwardAPI" in vol:  # metadata.labels and annotations change while the pod runs
        src = vol["downwardAPI"] or {}
        return projected_files(pod, [{"downwardAPI": src}],
                               int(src.get("defaultMode", DEFAULT_MODE)), lookup, None)
    if "projected" in vol:
        proj = vol["projected"] or {}
        sources = proj.get("sources") or []
        if any("serviceAccountToken" in s for s in sources):
            return None
        return projected_files(pod, sources, int(proj.get("defaultMode", DEFAULT_MODE)),
                               lookup, None)
    return None


def _differs(target: Path, files: Files) -> bool:
    top = {Path(rel).parts[0] for rel, _, _ in files if rel}
    try:
        present = {e.name for e in target.iterdir() if not e.name.startswith("..")}
        if present != top:
            return True
        for rel, content, mode in files:
            path = target / rel
            if path.read_bytes() != content or path.stat().st_mode & 0o7777 != mode:
                return True
    except OSError:
        return True
    return False


def update_volumes(pod: dict[str, Any], files_dir: Path, lookup: Lookup) -> list[str]:
    """Rewrite the pod's volumes whose sources changed; returns their names."""
    changed = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name", ""))
        target = files_dir / "volumes" / name
        try:
            files = wanted_files(pod, vol, lookup)
        except (VolumeError, ValueError) as e:  # ValueError: a Secret's data not base64
            log.debug("pod %s: volume %s kept as it is: %s",
                      (pod.get("metadata") or {}).get("name"), name, e)
            continue
        if files is None or not target.is_dir() or not _differs(target, files):
            continue
        top = {Path(rel).parts[0] for rel, _, _ in files if rel}
        try:
            for entry in list(target.iterdir()):
                # Plain files of the first write that no source names any more (the swap
                # replaces only its own links).
                if entry.name.startswith("..") or entry.name in top or entry.is_symlink():
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    os.unlink(entry)
            write_atomically(target, files)
        except (VolumeError, OSError) as e:
            log.warning("pod %s: cannot update volume %s: %s",
                        (pod.get("metadata") or {}).get("name"), name, e)
            continue
        changed.append(name)
    return changed


async def follow_sources(pod: Callable[[], dict[str, Any]], files_dir: Path, lookup: Lookup,
                         sleep_or_stop: Callable[[float], Awaitable[bool]]) -> None:
    """Keep the pod's volumes current until ``sleep_or_stop`` says the pod is stopping."""
    while not await sleep_or_stop(UPDATE_SECONDS):
        update_volumes(pod(), files_dir, lookup)
