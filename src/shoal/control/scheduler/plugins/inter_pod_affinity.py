"""InterPodAffinity: place pods near, or away from, other pods by topology.

Filter enforces three rules, in this order, each over topology domains (the
nodes that share a value of a term's ``topologyKey``):

1. the pod's required affinity: every term must be met by some pod in the
   node's domain. The first pod of a group that selects itself may go
   anywhere, so that such groups can start;
2. the pod's required anti-affinity: no term may be met by a pod in the
   node's domain;
3. existing pods' required anti-affinity: no pod in the node's domain may
   have a term that selects the incoming pod (symmetry).

A term selects pods by ``labelSelector`` within ``namespaces`` and namespaces
matching ``namespaceSelector`` (none of the two: the term's own namespace).

Score adds, per domain, the weights of the pod's preferred terms met there,
minus those of its preferred anti-affinity, plus those of existing pods'
terms that select the incoming pod (their required affinity counts with
``hardPodAffinityWeight``, 1 by default), normalised to 0..100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.control.scheduler.framework import MAX_NODE_SCORE, CycleState
from shoal.control.scheduler.pod_info import AffinityTerm, PodInfo
from shoal.control.scheduler.snapshot import NodeInfo, Snapshot
from shoal.control.scheduler.status import Status

NAME = "InterPodAffinity"

ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH = (
    "node(s) didn't satisfy existing pods anti-affinity rules"
)
ERR_REASON_AFFINITY_RULES_NOT_MATCH = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH = "node(s) didn't match pod anti-affinity rules"

DEFAULT_HARD_POD_AFFINITY_WEIGHT = 1

_PRE_FILTER_KEY = "PreFilter" + NAME
_PRE_SCORE_KEY = "PreScore" + NAME

_Pair = tuple[str, str]


@dataclass
class _FilterState:
    existing_anti_affinity: dict[_Pair, int] = field(default_factory=dict)
    affinity: dict[_Pair, int] = field(default_factory=dict)
    anti_affinity: dict[_Pair, int] = field(default_factory=dict)


def _bump(counts: dict[_Pair, int], pair: _Pair, by: int = 1) -> None:
    counts[pair] = counts.get(pair, 0) + by


def _matches_all(terms: Sequence[AffinityTerm], pod: PodInfo, snapshot: Snapshot) -> bool:
    ns_labels = snapshot.labels_of_namespace(pod.namespace)
    return all(t.matches(pod, ns_labels) for t in terms)


def _pre_filter_state(incoming: PodInfo, snapshot: Snapshot) -> _FilterState:
    s = _FilterState()
    incoming_ns = snapshot.labels_of_namespace(incoming.namespace)
    for node in snapshot.pods_with_required_anti_affinity_nodes:
        for existing in node.pods_with_required_anti_affinity:
            for term in existing.required_anti_affinity_terms:
                value = node.labels.get(term.topology_key)
                if value is not None and term.matches(incoming, incoming_ns):
                    _bump(s.existing_anti_affinity, (term.topology_key, value))
    affinity = incoming.required_affinity_terms
    anti = incoming.required_anti_affinity_terms
    if not affinity and not anti:
        return s
    for node in snapshot.nodes:
        for existing in node.pods:
            # Affinity counts a pod only if it meets every term (podMatchesAllAffinityTerms).
            if affinity and _matches_all(affinity, existing, snapshot):
                for term in affinity:
                    value = node.labels.get(term.topology_key)
                    if value is not None:
                        _bump(s.affinity, (term.topology_key, value))
            if anti:
                ns_labels = snapshot.labels_of_namespace(existing.namespace)
                for term in anti:
                    value = node.labels.get(term.topology_key)
                    if value is not None and term.matches(existing, ns_labels):
                        _bump(s.anti_affinity, (term.topology_key, value))
    return s


def _satisfies_affinity(s: _FilterState, incoming: PodInfo, node: NodeInfo, snap: Snapshot) -> bool:
    pods_exist = True
    for term in incoming.required_affinity_terms:
        value = node.labels.get(term.topology_key)
        if value is None:
            return False  # a node without the topology label cannot satisfy the term
        if s.affinity.get((term.topology_key, value), 0) <= 0:
            pods_exist = False
    if pods_exist:
        return True
    # No pod anywhere matches yet: let the first pod of a self-selecting group in.
    return not s.affinity and _matches_all(incoming.required_affinity_terms, incoming, snap)


def _satisfies_anti_affinity(s: _FilterState, incoming: PodInfo, node: NodeInfo) -> bool:
    for term in incoming.required_anti_affinity_terms:
        value = node.labels.get(term.topology_key)
        if value is not None and s.anti_affinity.get((term.topology_key, value), 0) > 0:
            return False
    return True


def _satisfies_existing_anti_affinity(s: _FilterState, node: NodeInfo) -> bool:
    if not s.existing_anti_affinity:
        return True
    return all(s.existing_anti_affinity.get(pair, 0) <= 0 for pair in node.labels.items())


@dataclass(frozen=True)
class InterPodAffinity:
    hard_pod_affinity_weight: int = DEFAULT_HARD_POD_AFFINITY_WEIGHT
    ignore_preferred_terms_of_existing_pods: bool = False
    name: str = NAME

    def pre_filter(self, state: CycleState, pod: Mapping[str, Any]) -> Status | None:
        incoming = state.pod_info
        if incoming.error is not None:
            return Status.error(incoming.error)
        snap = state.snapshot
        if (
            not incoming.required_affinity_terms
            and not incoming.required_anti_affinity_terms
            and not snap.pods_with_required_anti_affinity_nodes
        ):
            return Status.skip()
        state.write(_PRE_FILTER_KEY, _pre_filter_state(incoming, snap))
        return None

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        s = state.read(_PRE_FILTER_KEY, _FilterState)
        incoming = state.pod_info
        if not _satisfies_affinity(s, incoming, node, state.snapshot):
            return Status.unresolvable(ERR_REASON_AFFINITY_RULES_NOT_MATCH)
        if not _satisfies_anti_affinity(s, incoming, node):
            return Status.unschedulable(ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH)
        if not _satisfies_existing_anti_affinity(s, node):
            return Status.unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH)
        return None

    # --- scoring ---

    def pre_score(
        self, state: CycleState, pod: Mapping[str, Any], nodes: Sequence[NodeInfo]
    ) -> Status | None:
        incoming = state.pod_info
        if incoming.error is not None:
            return Status.error(incoming.error)
        snap = state.snapshot
        has_preferred = bool(
            incoming.preferred_affinity_terms or incoming.preferred_anti_affinity_terms
        )
        candidates = snap.nodes if has_preferred else snap.pods_with_affinity_nodes
        if not candidates:
            return Status.skip()
        scores: dict[str, dict[str, int]] = {}
        incoming_ns = snap.labels_of_namespace(incoming.namespace)
        for node in candidates:
            pods = node.pods if has_preferred else node.pods_with_affinity
            for existing in pods:
                self._process_existing(scores, incoming, incoming_ns, existing, node, snap)
        if not scores:
            return Status.skip()
        state.write(_PRE_SCORE_KEY, scores)
        return None

    def _process_existing(
        self,
        scores: dict[str, dict[str, int]],
        incoming: PodInfo,
        incoming_ns: Mapping[str, str],
        existing: PodInfo,
        node: NodeInfo,
        snap: Snapshot,
    ) -> None:
        labels = node.labels

        def add(term: AffinityTerm, weight: int) -> None:
            value = labels.get(term.topology_key)
            if value is not None and weight:
                by_value = scores.setdefault(term.topology_key, {})
                by_value[value] = by_value.get(value, 0) + weight

        if incoming.preferred_affinity_terms or incoming.preferred_anti_affinity_terms:
            existing_ns = snap.labels_of_namespace(existing.namespace)
            for wt in incoming.preferred_affinity_terms:
                if wt.term.matches(existing, existing_ns):
                    add(wt.term, wt.weight)
            for wt in incoming.preferred_anti_affinity_terms:
                if wt.term.matches(existing, existing_ns):
                    add(wt.term, -wt.weight)
        if self.hard_pod_affinity_weight > 0:
            for term in existing.required_affinity_terms:
                if term.matches(incoming, incoming_ns):
                    add(term, self.hard_pod_affinity_weight)
        if self.ignore_preferred_terms_of_existing_pods:
            return
        for wt in existing.preferred_affinity_terms:
            if wt.term.matches(incoming, incoming_ns):
                add(wt.term, wt.weight)
        for wt in existing.preferred_anti_affinity_terms:
            if wt.term.matches(incoming, incoming_ns):
                add(wt.term, -wt.weight)

    def score(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> int:
        scores = state.read(_PRE_SCORE_KEY, dict)
        total = 0
        for key, by_value in scores.items():
            value = node.labels.get(key)
            if value is not None:
                total += by_value.get(value, 0)
        return total

    def normalize_score(
        self, state: CycleState, pod: Mapping[str, Any], scores: dict[str, int]
    ) -> Status | None:
        if not scores:
            return None
        low, high = min(scores.values()), max(scores.values())
        spread = high - low
        for k, v in scores.items():
            scores[k] = int(MAX_NODE_SCORE * ((v - low) / spread)) if spread > 0 else 0
        return None


def new(args: Mapping[str, Any]) -> InterPodAffinity:
    """Reads ``hardPodAffinityWeight`` and ``ignorePreferredTermsOfExistingPods``."""
    weight = args.get("hardPodAffinityWeight", DEFAULT_HARD_POD_AFFINITY_WEIGHT)
    if not isinstance(weight, int) or not 0 <= weight <= 100:
        raise ValueError(f"hardPodAffinityWeight must be in 0..100, not {weight!r}")
    return InterPodAffinity(
        hard_pod_affinity_weight=weight,
        ignore_preferred_terms_of_existing_pods=bool(
            args.get("ignorePreferredTermsOfExistingPods", False)
        ),
    )
