"""Turning a resource path into what it names: kind, namespace, name, subresource."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.api.errors import ApiError, not_found_path
from shoal.model.kinds import Kind, KindRegistry

NAMESPACE_SUBRESOURCES = ("status", "finalize")
TARGETS_KEPT = 4096
"""How many paths' targets :class:`Targets` keeps (first in, first out)."""
TARGET_PATH_MAX = 512
"""Longer paths are resolved every time (4,096 of 16 KiB would hold 64 MiB)."""


@dataclass(frozen=True)
class Target:
    kind: Kind
    namespace: str | None  # None: all namespaces, or a cluster-scoped kind
    name: str | None
    subresource: str | None
    watch_path: bool  # the legacy /watch/ form


def resolve(registry: KindRegistry, group: str, version: str, segs: list[str]) -> Target:
    """Resolve the segments after ``/api/v1`` or ``/apis/GROUP/VERSION``."""
    watch_path = False
    if segs and segs[0] == "watch":
        watch_path = True
        segs = segs[1:]
    proxied = _proxied_rest(segs)  # pods/NAME/proxy/PATH: PATH is the pod's, kept as is
    segs = segs[:len(segs) - len(proxied)]
    if not segs or any(s == "" for s in segs):
        raise not_found_path()
    namespace: str | None = None
    if segs[0] == "namespaces" and len(segs) >= 3 and not (
        len(segs) == 3 and segs[2] in NAMESPACE_SUBRESOURCES
    ):
        namespace = segs[1]
        segs = segs[2:]
    plural = segs[0]
    kind = registry.by_resource(group, version, plural)
    if kind is None:
        raise not_found_path()
    if namespace is not None and not kind.namespaced:
        raise not_found_path()
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    if len(segs) > 3:
        raise not_found_path()
    if sub is not None and sub not in kind.subresources and not (
        kind.kind == "Pod" and sub in ("binding", "log", "exec", "eviction", "attach", "portforward")
    ) and not (kind.kind == "Namespace" and sub == "finalize") and not (
        kind.kind == "ServiceAccount" and sub == "token"  # service accounts: TokenRequest
    ) and not (kind.kind in ("Pod", "Service") and sub == "proxy") and not (
        kind.kind == "Pod" and sub == "ephemeralcontainers"  # kubectl debug
    ):
        raise not_found_path()
    if watch_path and sub is not None:
        raise not_found_path()
    if name is not None and len(name) > 253:
        raise ApiError(400, f"name too long: {len(name)} characters")
    return Target(kind, namespace, name, sub, watch_path)


def _proxied_rest(segs: list[str]) -> list[str]:
    """The segments after ``pods|services/NAME/proxy``, which name a path in the pod."""
    for i in range(len(segs) - 2):
        if segs[i] in ("pods", "services") and segs[i + 2] == "proxy" and segs[i + 1]:
            return segs[i + 3:]
    return []


class Targets:
    """:func:`resolve` kept per path (group, version and the rest): resolving was about
    2 µs of every request (issue 11), and clients repeat paths. Forgotten whenever the
    registry changes (its ``generation``: a CRD served, changed or removed); a path that
    does not resolve raises every time."""

    def __init__(self, registry: KindRegistry) -> None:
        self.registry = registry
        self._kept: dict[tuple[str, str, str], Target] = {}
        self._generation = registry.generation

    def resolve(self, group: str, version: str, tail: str) -> Target:
        """The target of ``tail``, the path after ``/api/v1/`` or ``/apis/GROUP/VERSION/``."""
        generation = self.registry.generation
        if generation != self._generation:
            self._kept.clear()
            self._generation = generation
        key = (group, version, tail)
        target = self._kept.get(key)
        if target is None:
            target = resolve(self.registry, group, version, tail.rstrip("/").split("/"))
            if len(tail) <= TARGET_PATH_MAX:
                if len(self._kept) >= TARGETS_KEPT:
                    del self._kept[next(iter(self._kept))]
                self._kept[key] = target
        return target
