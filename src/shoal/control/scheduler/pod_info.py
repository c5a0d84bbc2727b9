"""A pod parsed once for scheduling: its requests and its pod (anti-)affinity terms.

Parsing label selectors is the expensive part of inter-pod affinity, so every
pod in a :class:`~shoal.control.scheduler.snapshot.Snapshot` is parsed when it
is added, not on every scheduling cycle (kube-scheduler's ``PodInfo``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.control.scheduler.resources import Resource, pod_requests
from shoal.model.selectors import LabelSelector, SelectorError

__all__ = ["AffinityTerm", "PodInfo", "WeightedAffinityTerm", "controller_uid"]

_EMPTY: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A parsed ``PodAffinityTerm``: which pods (selector and namespaces) in which topology."""

    selector: LabelSelector
    namespaces: frozenset[str]
    namespace_selector: LabelSelector
    topology_key: str

    @classmethod
    def from_api(cls, owner_namespace: str, term: Mapping[str, Any]) -> AffinityTerm:
        ns_list = term.get("namespaces") or []
        ns_sel = term.get("namespaceSelector")
        # No namespaces and no namespaceSelector: the term's own pod's namespace.
        if not ns_list and ns_sel is None:
            namespaces = frozenset({owner_namespace})
        else:
            namespaces = frozenset(str(n) for n in ns_list)
        return cls(
            selector=LabelSelector.from_api(term.get("labelSelector")),
            namespaces=namespaces,
            namespace_selector=LabelSelector.from_api(ns_sel),
            topology_key=str(term.get("topologyKey") or ""),
        )

    def matches(self, pod: PodInfo, namespace_labels: Mapping[str, str] | None) -> bool:
        """Whether ``pod`` (whose namespace carries ``namespace_labels``) is selected."""
        if pod.namespace not in self.namespaces and not self.namespace_selector.matches(
            namespace_labels
        ):
            return False
        return self.selector.matches(pod.labels)


@dataclass(frozen=True, slots=True)
class WeightedAffinityTerm:
    term: AffinityTerm
    weight: int


def _terms(namespace: str, raw: Any) -> tuple[AffinityTerm, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(AffinityTerm.from_api(namespace, t) for t in raw if isinstance(t, Mapping))


def _weighted(namespace: str, raw: Any) -> tuple[WeightedAffinityTerm, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for t in raw:
        if isinstance(t, Mapping) and isinstance(t.get("podAffinityTerm"), Mapping):
            weight = t.get("weight", 0)
            out.append(
                WeightedAffinityTerm(
                    AffinityTerm.from_api(namespace, t["podAffinityTerm"]),
                    weight if isinstance(weight, int) else 0,
                )
            )
    return tuple(out)


def controller_uid(pod: Mapping[str, Any]) -> str | None:
    """The uid of the pod's controlling owner (``controller: true``), if any."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("uid"):
            return str(ref["uid"])
    return None


class PodInfo:
    """A pod with what the scheduler reads from it computed once."""

    __slots__ = (
        "controller_kind",
        "controller_uid",
        "error",
        "labels",
        "name",
        "namespace",
        "node_name",
        "non_zero_requests",
        "pod",
        "preferred_affinity_terms",
        "preferred_anti_affinity_terms",
        "requests",
        "required_affinity_terms",
        "required_anti_affinity_terms",
        "terminating",
        "uid",
    )

    def __init__(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.name: str = str(meta.get("name") or "")
        self.namespace: str = str(meta.get("namespace") or "default")
        self.uid: str = str(meta.get("uid") or "")
        labels = meta.get("labels")
        self.labels: Mapping[str, str] = labels if isinstance(labels, Mapping) else _EMPTY
        self.node_name: str = str(spec.get("nodeName") or "")
        self.terminating: bool = meta.get("deletionTimestamp") is not None
        self.controller_uid = controller_uid(pod)
        self.controller_kind: str | None = None
        for ref in meta.get("ownerReferences") or []:
            if isinstance(ref, Mapping) and ref.get("controller"):
                self.controller_kind = str(ref.get("kind") or "")
                break
        self.requests = Resource.from_list(pod_requests(pod))
        self.non_zero_requests = Resource.from_list(pod_requests(pod, non_zero=True))
        self.error: str | None = None
        self.required_affinity_terms: tuple[AffinityTerm, ...] = ()
        self.required_anti_affinity_terms: tuple[AffinityTerm, ...] = ()
        self.preferred_affinity_terms: tuple[WeightedAffinityTerm, ...] = ()
        self.preferred_anti_affinity_terms: tuple[WeightedAffinityTerm, ...] = ()
        affinity = spec.get("affinity")
        if not isinstance(affinity, Mapping):
            return
        pa = affinity.get("podAffinity") or {}
        paa = affinity.get("podAntiAffinity") or {}
        ns = self.namespace
        req = "requiredDuringSchedulingIgnoredDuringExecution"
        pref = "preferredDuringSchedulingIgnoredDuringExecution"
        try:
            parsed = (
                _terms(ns, pa.get(req)),
                _terms(ns, paa.get(req)),
                _weighted(ns, pa.get(pref)),
                _weighted(ns, paa.get(pref)),
            )
        except SelectorError as exc:
            # A bad selector fails this pod's scheduling; as an existing pod it selects nothing.
            self.error = f"parsing pod affinity terms of {ns}/{self.name}: {exc}"
            return
        (
            self.required_affinity_terms,
            self.required_anti_affinity_terms,
            self.preferred_affinity_terms,
            self.preferred_anti_affinity_terms,
        ) = parsed

    @property
    def has_affinity(self) -> bool:
        """Whether any pod (anti-)affinity term is set: such pods matter to other pods' scoring."""
        return bool(
            self.required_affinity_terms
            or self.required_anti_affinity_terms
            or self.preferred_affinity_terms
            or self.preferred_anti_affinity_terms
        )
