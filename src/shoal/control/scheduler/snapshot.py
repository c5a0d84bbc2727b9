"""The cluster as one scheduling cycle sees it: nodes, the pods bound to them, namespaces.

A :class:`Snapshot` is built from plain lists of Kubernetes objects (parsed
JSON). Pods that have finished (``Succeeded`` or ``Failed``) hold no resources
and are left out, as kube-scheduler's informer leaves them out. Pods bound to a
node the snapshot does not know are left out too. The caller may
:meth:`Snapshot.add_pod` a pod it has just bound ("assume" it), so that a run
of pods can be scheduled without rebuilding the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shoal.authz.scopes import EMPTY, ScopeMap
from shoal.control.scheduler.pod_info import PodInfo
from shoal.control.scheduler.resources import Resource, node_allocatable

__all__ = ["NodeInfo", "Snapshot", "VolumeCatalog"]

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_EMPTY: Mapping[str, str] = {}


class NodeInfo:
    """A node with the pods bound to it and the sums the filters need."""

    __slots__ = (
        "allocatable",
        "labels",
        "name",
        "node",
        "non_zero_requested",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "requested",
        "taints",
    )

    def __init__(self, node: Mapping[str, Any], pods: Iterable[PodInfo] = ()) -> None:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        self.node = node
        self.name: str = str(meta.get("name") or "")
        labels = meta.get("labels")
        self.labels: Mapping[str, str] = labels if isinstance(labels, Mapping) else _EMPTY
        taints = spec.get("taints")
        self.taints: Sequence[Mapping[str, Any]] = (
            [t for t in taints if isinstance(t, Mapping)] if isinstance(taints, list) else []
        )
        self.allocatable = Resource.from_list(node_allocatable(node))
        self.requested = Resource()
        self.non_zero_requested = Resource()
        self.pods: list[PodInfo] = []
        self.pods_with_affinity: list[PodInfo] = []
        self.pods_with_required_anti_affinity: list[PodInfo] = []
        for p in pods:
            self.add_pod(p)

    @property
    def unschedulable(self) -> bool:
        return bool((self.node.get("spec") or {}).get("unschedulable"))

    def add_pod(self, pod: PodInfo) -> None:
        self.pods.append(pod)
        self.requested.add_resource(pod.requests)
        self.non_zero_requested.add_resource(pod.non_zero_requests)
        if pod.has_affinity:
            self.pods_with_affinity.append(pod)
        if pod.required_anti_affinity_terms:
            self.pods_with_required_anti_affinity.append(pod)

    def remove_pod(self, uid: str) -> PodInfo | None:
        """Forget the pod with ``uid``; returns it, or None if it was not here."""
        for i, p in enumerate(self.pods):
            if p.uid == uid:
                del self.pods[i]
                self.requested.add_resource(p.requests, -1)
                self.non_zero_requested.add_resource(p.non_zero_requests, -1)
                self.pods_with_affinity = [q for q in self.pods_with_affinity if q is not p]
                self.pods_with_required_anti_affinity = [
                    q for q in self.pods_with_required_anti_affinity if q is not p
                ]
                return p
        return None

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, pods={len(self.pods)})"


class VolumeCatalog:
    """The claims (by namespace and name), PersistentVolumes and StorageClasses (by name)."""

    def __init__(self, claims: Iterable[Mapping[str, Any]] = (),
                 persistent_volumes: Iterable[Mapping[str, Any]] = (),
                 storage_classes: Iterable[Mapping[str, Any]] = ()) -> None:
        def key(o: Mapping[str, Any]) -> tuple[str, str]:
            meta = o.get("metadata") or {}
            return str(meta.get("namespace") or ""), str(meta.get("name") or "")

        self.claims = {key(c): c for c in claims}
        self.persistent_volumes = {key(v)[1]: v for v in persistent_volumes}
        self.storage_classes = {key(c)[1]: c for c in storage_classes}


class Snapshot:
    """Nodes (sorted by name), their pods, and namespace labels for ``namespaceSelector``."""

    def __init__(
        self,
        nodes: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]] = (),
        namespaces: Iterable[Mapping[str, Any]] = (),
        scopes: ScopeMap = EMPTY,
        volumes: VolumeCatalog | None = None,
    ) -> None:
        # Which scope a pod is in and which nodes hold it (the ScopeMembership filter).
        self.scopes = scopes
        # Claims, volumes and classes, for the VolumeBinding filter.
        self.volumes = volumes or VolumeCatalog()
        infos = [NodeInfo(n) for n in nodes]
        infos.sort(key=lambda n: n.name)
        self.nodes: list[NodeInfo] = infos
        self._by_name = {n.name: n for n in infos}
        self.namespace_labels: dict[str, Mapping[str, str]] = {}
        for ns in namespaces:
            meta = ns.get("metadata") or {}
            labels = meta.get("labels")
            self.namespace_labels[str(meta.get("name") or "")] = (
                labels if isinstance(labels, Mapping) else _EMPTY
            )
        for pod in pods:
            self.add_pod(pod)

    def get(self, name: str) -> NodeInfo | None:
        return self._by_name.get(name)

    def labels_of_namespace(self, namespace: str) -> Mapping[str, str]:
        return self.namespace_labels.get(namespace, _EMPTY)

    def add_pod(self, pod: Mapping[str, Any] | PodInfo) -> PodInfo | None:
        """Account for a bound pod; returns its PodInfo, or None if it is ignored."""
        info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        phase = (info.pod.get("status") or {}).get("phase")
        node = self._by_name.get(info.node_name)
        if node is None or phase in _TERMINAL_PHASES:
            return None
        node.add_pod(info)
        return info

    def bind(self, pod: Mapping[str, Any], node_name: str) -> PodInfo | None:
        """Account for ``pod`` as if it were bound to ``node_name`` (kube-scheduler's assume)."""
        spec = dict(pod.get("spec") or {})
        spec["nodeName"] = node_name
        return self.add_pod({**pod, "spec": spec})

    def remove_pod(self, pod: Mapping[str, Any]) -> PodInfo | None:
        info = PodInfo(pod)
        node = self._by_name.get(info.node_name)
        return node.remove_pod(info.uid) if node is not None else None

    @property
    def pods_with_affinity_nodes(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.pods_with_affinity]

    @property
    def pods_with_required_anti_affinity_nodes(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.pods_with_required_anti_affinity]

    def __len__(self) -> int:
        return len(self.nodes)
