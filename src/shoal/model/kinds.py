"""The kinds Shoal serves: their group, version, plural, scope and subresources.

Built-in kinds are listed here. Custom resources are added at run time from
CustomResourceDefinitions with :meth:`KindRegistry.register_crd`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

VERBS_ALL = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
VERBS_SUB = ("get", "patch", "update")


@dataclass(frozen=True)
class ScaleSpec:
    """Where a kind keeps what the ``scale`` subresource reads and writes."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = ".status.selector"


@dataclass(frozen=True)
class Kind:
    """One served kind at one group/version."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    scale: ScaleSpec | None = None
    # For custom resources: the CRD version entry (schema, printer columns).
    crd_version: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def resource(self) -> str:
        """The storage key of the kind, the same for every version: ``plural.group``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def is_custom(self) -> bool:
        return self.crd_version is not None

    @property
    def subresources(self) -> tuple[str, ...]:
        subs: list[str] = []
        if self.has_status:
            subs.append("status")
        if self.scale is not None:
            subs.append("scale")
        return tuple(subs)


def _k(
    group: str,
    version: str,
    kind: str,
    plural: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    status: bool = True,
    scale: ScaleSpec | None = None,
) -> Kind:
    return Kind(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        has_status=status,
        scale=scale,
    )


_ALL = ("all",)

BUILTIN_KINDS: tuple[Kind, ...] = (
    _k("", "v1", "Namespace", "namespaces", namespaced=False, short=("ns",)),
    _k("", "v1", "Pod", "pods", short=("po",), categories=_ALL),
    _k("", "v1", "Node", "nodes", namespaced=False, short=("no",)),
    _k("", "v1", "Service", "services", short=("svc",), categories=_ALL),
    _k("", "v1", "Endpoints", "endpoints", short=("ep",), status=False),
    _k("", "v1", "ConfigMap", "configmaps", short=("cm",), status=False),
    _k("", "v1", "Secret", "secrets", status=False),
    _k("", "v1", "Event", "events", short=("ev",), status=False),
    _k("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",), status=False),
    _k(
        "apps", "v1", "Deployment", "deployments", short=("deploy",), categories=_ALL,
        scale=ScaleSpec(),
    ),
    _k("apps", "v1", "ReplicaSet", "replicasets", short=("rs",), categories=_ALL, scale=ScaleSpec()),
    _k("apps", "v1", "DaemonSet", "daemonsets", short=("ds",), categories=_ALL),
    _k("apps", "v1", "StatefulSet", "statefulsets", short=("sts",), categories=_ALL, scale=ScaleSpec()),
    _k("batch", "v1", "Job", "jobs", categories=_ALL),
    _k("batch", "v1", "CronJob", "cronjobs", short=("cj",), categories=_ALL),
    _k("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",)),
    _k("", "v1", "ReplicationController", "replicationcontrollers", short=("rc",),
       categories=_ALL, scale=ScaleSpec()),
    _k("coordination.k8s.io", "v1", "Lease", "leases", status=False),
    _k("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", status=False),
    _k("rbac.authorization.k8s.io", "v1", "Role", "roles", status=False),
    _k("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False,
       status=False),
    _k("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", status=False),
    _k("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
       namespaced=False, status=False),
    _k(
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        namespaced=False, short=("crd", "crds"),
    ),
    # -- stateful workloads (issue 12): claims, volumes, classes, revisions --
    _k("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",)),
    _k("", "v1", "PersistentVolume", "persistentvolumes", namespaced=False, short=("pv",)),
    _k("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False,
       short=("sc",), status=False),
    _k("apps", "v1", "ControllerRevision", "controllerrevisions", status=False),
    # -- end stateful workloads --
    # -- quotas, priorities, autoscaling (issue 12) --
    _k("", "v1", "ResourceQuota", "resourcequotas", short=("quota",)),
    _k("", "v1", "LimitRange", "limitranges", short=("limits",), status=False),
    _k("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False,
       short=("pc",), status=False),
    _k("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
       short=("hpa",), categories=_ALL),
    # autoscaling/v1 after v2: v2 stays the preferred and storage version (part W7)
    _k("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
       short=("hpa",), categories=_ALL),
    # -- end quotas, priorities, autoscaling --
    # -- network policy (issue 12) --
    _k("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short=("netpol",),
       status=False),
    # -- end network policy --
    # -- ingress (issue 12): answered on every node by haproxy (shoal.net.ingress) --
    _k("networking.k8s.io", "v1", "Ingress", "ingresses", short=("ing",)),
    _k("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False,
       status=False),
    # -- end ingress --
    # Shoal's own: which namespaces a set of peers holds (shoal.authz.scopes).
    _k("shoal.dev", "v1alpha1", "Scope", "scopes", namespaced=False, status=False),
    # -- devices (issue 15): KubeEdge's devices.kubeedge.io/v1beta1 shape, renamed --
    _k("devices.shoal.dev", "v1beta1", "DeviceModel", "devicemodels", status=False),
    _k("devices.shoal.dev", "v1beta1", "Device", "devices"),
    # -- end devices --
)


class KindRegistry:
    """Looks kinds up by path or by (apiVersion, kind). Safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_gvr: dict[tuple[str, str, str], Kind] = {}
        self._by_gvk: dict[tuple[str, str, str], Kind] = {}
        self._crd_kinds: dict[str, list[Kind]] = {}  # CRD name -> its kinds
        # Bumped on every change, so caches of derived documents (OpenAPI) know to rebuild.
        self.generation = 0
        for k in BUILTIN_KINDS:
            self._add(k)

    def _add(self, k: Kind) -> None:
        self._by_gvr[(k.group, k.version, k.plural)] = k
        self._by_gvk[(k.group, k.version, k.kind)] = k

    def _remove(self, k: Kind) -> None:
        self._by_gvr.pop((k.group, k.version, k.plural), None)
        self._by_gvk.pop((k.group, k.version, k.kind), None)

    def by_resource(self, group: str, version: str, plural: str) -> Kind | None:
        return self._by_gvr.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> Kind | None:
        group, _, version = api_version.rpartition("/")
        return self._by_gvk.get((group, version, kind))

    def by_storage_resource(self, resource: str) -> Kind | None:
        """Any served version of a storage resource (``plural.group``)."""
        for k in list(self._by_gvr.values()):
            if k.resource == resource:
                return k
        return None

    def all(self) -> list[Kind]:
        return list(self._by_gvr.values())

    def __iter__(self) -> Iterator[Kind]:
        return iter(self.all())

    def groups(self) -> dict[str, list[str]]:
        """Group name to its versions, in a stable order (core group is ``""``)."""
        out: dict[str, list[str]] = {}
        for k in self.all():
            versions = out.setdefault(k.group, [])
            if k.version not in versions:
                versions.append(k.version)
        return out

    def kinds_in(self, group: str, version: str) -> list[Kind]:
        return [k for k in self.all() if k.group == group and k.version == version]

    def register_crd(self, crd: dict[str, Any]) -> list[Kind]:
        """Serve the kinds a CustomResourceDefinition declares (replacing older ones)."""
        name = crd["metadata"]["name"]
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        kinds: list[Kind] = []
        for v in spec.get("versions") or []:
            if not v.get("served", True):
                continue
            sub = v.get("subresources") or {}
            scale = None
            if "scale" in sub:
                s = sub["scale"] or {}
                scale = ScaleSpec(
                    spec_replicas_path=s.get("specReplicasPath", ".spec.replicas"),
                    status_replicas_path=s.get("statusReplicasPath", ".status.replicas"),
                    label_selector_path=s.get("labelSelectorPath"),
                )
            kinds.append(
                Kind(
                    group=spec.get("group", ""),
                    version=v["name"],
                    kind=names.get("kind", ""),
                    plural=names.get("plural", ""),
                    singular=names.get("singular") or names.get("kind", "").lower(),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    short_names=tuple(names.get("shortNames") or ()),
                    categories=tuple(names.get("categories") or ()),
                    has_status="status" in sub,
                    scale=scale,
                    crd_version=v,
                )
            )
        with self._lock:
            for old in self._crd_kinds.pop(name, []):
                self._remove(old)
            for k in kinds:
                self._add(k)
            self._crd_kinds[name] = kinds
            self.generation += 1
        return kinds

    def unregister_crd(self, name: str) -> None:
        with self._lock:
            for old in self._crd_kinds.pop(name, []):
                self._remove(old)
            self.generation += 1
