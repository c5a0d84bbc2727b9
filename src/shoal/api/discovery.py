"""API discovery documents: ``/version``, ``/api``, ``/apis`` and the resource lists.

Every function here is pure: it reads the :class:`~shoal.model.kinds.KindRegistry` and
returns a JSON-ready dict. The HTTP layer serialises them.

Two formats exist. The legacy ("unaggregated") one is ``/api`` (``APIVersions``),
``/apis`` (``APIGroupList``) and one ``APIResourceList`` per group/version, which clients
fetch one by one. The aggregated one (``apidiscovery.k8s.io/v2``
``APIGroupDiscoveryList``) answers ``/api`` and ``/apis`` with every resource at once. A
client asks for it in its ``Accept`` header (see :func:`wants_aggregated`) and must get the
:data:`AGGREGATED_CONTENT_TYPE` back, or it reads the body as the legacy format.
kubectl and client-go understand both.

We emulate Kubernetes 1.37: the kinds, the discovery shapes and the OpenAPI documents
follow that release, and the ``kubernetes`` Python client we take schemas from is v37.
"""

from __future__ import annotations

import base64
import hashlib
import platform
import re
import sys
from typing import Any

from shoal.model.kinds import VERBS_ALL, VERBS_SUB, Kind, KindRegistry

# The Kubernetes release whose API we serve. kubectl warns when its minor version is
# more than one away from the server's, so keep this in step with the kinds we serve.
K8S_MAJOR = "1"
K8S_MINOR = "37"
GIT_VERSION = f"v{K8S_MAJOR}.{K8S_MINOR}.0-shoal"

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

# Subresources of pods that are not status or scale: (name, group, version, kind, verbs).
_POD_SUBRESOURCES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("attach", "", "v1", "PodAttachOptions", ("create", "get")),
    ("binding", "", "v1", "Binding", ("create",)),
    ("ephemeralcontainers", "", "v1", "Pod", ("get", "patch", "update")),
    ("eviction", "policy", "v1", "Eviction", ("create",)),
    ("exec", "", "v1", "PodExecOptions", ("create", "get")),
    ("log", "", "v1", "Pod", ("get",)),
    ("portforward", "", "v1", "PodPortForwardOptions", ("create", "get")),
    ("proxy", "", "v1", "PodProxyOptions", ("create", "delete", "get", "patch", "update")),
)

# Create-only kinds that are answered and never stored (shoal.api.reviews); the registry,
# which is what is stored, does not hold them.
REVIEW_KINDS: tuple[Kind, ...] = (
    Kind("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
         "selfsubjectreview", False),
    Kind("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
         "localsubjectaccessreview", True),
    Kind("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
         "selfsubjectaccessreview", False),
    Kind("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
         "selfsubjectrulesreview", False),
    Kind("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews",
         "subjectaccessreview", False),
)


# --- metrics: the resource metrics API, answered from the nodes' samples, never stored ---
METRICS_KINDS: tuple[Kind, ...] = (
    Kind("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", "", False),
    Kind("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", "", True),
)
"""Served by :mod:`shoal.api.resource_metrics`; listed here so kubectl top finds them."""
UNSTORED_KINDS = REVIEW_KINDS + METRICS_KINDS
# --- end metrics ---


def review_kind(group: str, version: str, plural: str) -> Kind | None:
    return next((k for k in REVIEW_KINDS
                 if (k.group, k.version, k.plural) == (group, version, plural)), None)


def served_groups(registry: KindRegistry) -> dict[str, list[str]]:
    """The registry's groups and versions, and the review kinds' (which it does not hold)."""
    groups = {g: list(vs) for g, vs in registry.groups().items()}
    for k in UNSTORED_KINDS:
        versions = groups.setdefault(k.group, [])
        if k.version not in versions:
            versions.append(k.version)
    return groups


def served_kinds(registry: KindRegistry, group: str, version: str) -> list[Kind]:
    return sorted([*registry.kinds_in(group, version),
                   *(k for k in UNSTORED_KINDS if (k.group, k.version) == (group, version))],
                  key=lambda k: k.plural)

_GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386"}


def version_info() -> dict[str, Any]:
    """The body of ``/version`` (a ``version.Info``)."""
    machine = platform.machine().lower()
    return {
        "major": K8S_MAJOR,
        "minor": K8S_MINOR,
        "emulationMajor": K8S_MAJOR,
        "emulationMinor": K8S_MINOR,
        "minCompatibilityMajor": K8S_MAJOR,
        "minCompatibilityMinor": str(int(K8S_MINOR) - 1),
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        # Informational only; clients parse gitVersion, never this.
        "goVersion": f"python{platform.python_version()}",
        "compiler": sys.implementation.name,
        "platform": f"{sys.platform}/{_GO_ARCH.get(machine, machine)}",
    }


def core_api_versions(server_address: str) -> dict[str, Any]:
    """The body of ``/api`` (``APIVersions``): the core group has only ``v1``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address},
        ],
    }


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority_key(version: str) -> tuple[int, int, int, str]:
    """Sort key putting the most preferred version first, as Kubernetes orders them.

    GA before beta before alpha, higher numbers first; versions that do not look like
    Kubernetes versions (``foo``) come last, alphabetically.
    """
    m = _VERSION_RE.match(version)
    if m is None:
        return (3, 0, 0, version)
    major = int(m.group(1))
    stability = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stability, -major, -minor, "")


def _sorted_versions(versions: list[str]) -> list[str]:
    return sorted(versions, key=version_priority_key)


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    ordered = _sorted_versions(versions)
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: KindRegistry) -> dict[str, Any]:
    """The body of ``/apis`` (``APIGroupList``): every group except the core group."""
    groups = [
        _group_entry(g, versions) for g, versions in served_groups(registry).items()
        if g and versions
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: KindRegistry, group: str) -> dict[str, Any] | None:
    """The body of ``/apis/GROUP`` (``APIGroup``), or ``None`` if the group is not served."""
    if not group:
        return None
    versions = served_groups(registry).get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def storage_version_hash(registry: KindRegistry, kind: Kind) -> str:
    """An opaque hash of the version a kind is stored in, as Kubernetes computes it.

    Clients (the storage version migrator, some operators) compare it across discovery
    reads to notice that the storage version changed.
    """
    version = kind.version
    if kind.is_custom:
        # Every served version of a CRD shares the hash of the storage version.
        for other in registry.all():
            if other.resource == kind.resource and (other.crd_version or {}).get("storage"):
                version = other.version
                break
    digest = hashlib.sha256(f"{kind.group}/{version}/{kind.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _verbs(kind: Kind) -> list[str]:
    if kind in REVIEW_KINDS:
        return ["create"]
    if kind in METRICS_KINDS:
        return ["get", "list"]
    # Kubernetes serves no deletecollection on namespaces; mirror that.
    if kind.group == "" and kind.plural == "namespaces":
        return [v for v in VERBS_ALL if v != "deletecollection"]
    return list(VERBS_ALL)


def _subresources(kind: Kind) -> list[tuple[str, str, str, str, list[str]]]:
    """(name, group, version, kind, verbs) of each subresource of ``kind``."""
    subs: list[tuple[str, str, str, str, list[str]]] = []
    if kind.has_status:
        subs.append(("status", kind.group, kind.version, kind.kind, list(VERBS_SUB)))
    if kind.scale is not None:
        subs.append(("scale", "autoscaling", "v1", "Scale", list(VERBS_SUB)))
    if kind.group == "" and kind.plural == "pods":
        subs.extend((n, g, v, k, list(verbs)) for n, g, v, k, verbs in _POD_SUBRESOURCES)
    if kind.group == "" and kind.plural == "services":  # services/proxy (api.http_proxy)
        subs.append(("proxy", "", "v1", "ServiceProxyOptions",
                     ["create", "delete", "get", "patch", "update"]))
    return sorted(subs)


def _resource_entry(registry: KindRegistry, kind: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": _verbs(kind),
    }
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    if kind not in UNSTORED_KINDS:  # never stored, so no storage version
        entry["storageVersionHash"] = storage_version_hash(registry, kind)
    return entry


def api_resource_list(registry: KindRegistry, group: str, version: str) -> dict[str, Any] | None:
    """The body of ``/api/v1`` or ``/apis/G/V`` (``APIResourceList``), or ``None``."""
    kinds = served_kinds(registry, group, version)
    if not kinds:
        return None
    resources: list[dict[str, Any]] = []
    for k in kinds:
        resources.append(_resource_entry(registry, k))
        for name, sub_group, sub_version, sub_kind, verbs in _subresources(k):
            sub: dict[str, Any] = {
                "name": f"{k.plural}/{name}",
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": sub_kind,
                "verbs": verbs,
            }
            # group/version are only given when they differ from the list's own.
            if (sub_group, sub_version) != (group, version):
                sub = {**sub, "group": sub_group, "version": sub_version}
            resources.append(sub)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# -- aggregated discovery (apidiscovery.k8s.io/v2) ---------------------------------------


def wants_aggregated(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for aggregated discovery (``APIGroupDiscoveryList``).

    client-go sends ``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,
    application/json``; parameters may come in any order and with spaces.
    """
    if not accept:
        return False
    for clause in accept.split(","):
        parts = [p.strip() for p in clause.split(";")]
        if parts[0].lower() not in ("application/json", "*/*", "application/*"):
            continue
        params = {}
        for p in parts[1:]:
            name, _, value = p.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        if (
            params.get("g") == "apidiscovery.k8s.io"
            and params.get("v") == "v2"
            and params.get("as") == "APIGroupDiscoveryList"
        ):
            return True
    return False


def _aggregated_resource(kind: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": kind.plural,
        "responseKind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "scope": "Namespaced" if kind.namespaced else "Cluster",
        "singularResource": kind.singular,
        "verbs": _verbs(kind),
    }
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    subs = [
        {
            "subresource": name,
            "responseKind": {"group": g, "version": v, "kind": k},
            "verbs": verbs,
        }
        for name, g, v, k, verbs in _subresources(kind)
    ]
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated_discovery(registry: KindRegistry, core: bool) -> dict[str, Any]:
    """The aggregated body of ``/api`` (``core=True``) or ``/apis`` (``core=False``).

    Serve it with the content type :data:`AGGREGATED_CONTENT_TYPE`, only to clients for
    which :func:`wants_aggregated` is true.
    """
    items: list[dict[str, Any]] = []
    for group, versions in served_groups(registry).items():
        if bool(group) == core:
            continue
        vs = []
        for v in _sorted_versions(versions):
            kinds = served_kinds(registry, group, v)
            vs.append({
                "version": v,
                "resources": [_aggregated_resource(k) for k in kinds],
                "freshness": "Current",
            })
        meta: dict[str, Any] = {"name": group} if group else {}
        items.append({"metadata": meta, "versions": vs})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
