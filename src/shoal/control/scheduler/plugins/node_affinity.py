"""NodeAffinity: ``spec.nodeSelector`` and node affinity.

Filter keeps the nodes whose labels match every ``nodeSelector`` pair and, if
set, any one of the required ``nodeSelectorTerms``. A term matches when all its
``matchExpressions`` (on labels) and all its ``matchFields`` (only
``metadata.name``) match; an empty term matches nothing. Operators are ``In``,
``NotIn``, ``Exists``, ``DoesNotExist``, ``Gt`` and ``Lt``; ``NotIn`` and
``DoesNotExist`` match a node without the key, and ``Gt``/``Lt`` compare one
integer value with an integer label. A malformed requirement matches nothing
(``nodeaffinity.LazyErrorNodeSelector``).

Score adds the weights of the preferred terms a node matches, normalised so
the best node gets 100.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.control.scheduler.framework import CycleState, default_normalize_score
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status

NAME = "NodeAffinity"

ERR_REASON_POD = "node(s) didn't match Pod's node affinity/selector"

_PRE_FILTER_KEY = "PreFilter" + NAME
_PRE_SCORE_KEY = "PreScore" + NAME
_INT = re.compile(r"[+-]?[0-9]+")
_NODE_NAME_FIELD = "metadata.name"


def _int(text: str) -> int | None:
    return int(text) if _INT.fullmatch(text) else None


def _requirement_matches(req: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = req.get("key")
    op = req.get("operator")
    values = req.get("values") or []
    if not isinstance(key, str) or not isinstance(values, list):
        return False
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels and not values
    if op == "DoesNotExist":
        return key not in labels and not values
    if op in ("Gt", "Lt"):
        if len(values) != 1 or key not in labels:
            return False
        want, have = _int(str(values[0])), _int(labels[key])
        if want is None or have is None:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _field_matches(req: Mapping[str, Any], node_name: str) -> bool:
    values = req.get("values") or []
    # Field selectors take exactly one value, and nodes select only on their name.
    if req.get("key") != _NODE_NAME_FIELD or not isinstance(values, list) or len(values) != 1:
        return False
    if req.get("operator") == "In":
        return bool(node_name == values[0])
    if req.get("operator") == "NotIn":
        return bool(node_name != values[0])
    return False


def term_matches(term: Mapping[str, Any], node: NodeInfo) -> bool:
    """Whether one ``NodeSelectorTerm`` matches ``node``."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not isinstance(exprs, list) or not isinstance(fields, list) or not (exprs or fields):
        return False
    for e in exprs:
        if not isinstance(e, Mapping) or not _requirement_matches(e, node.labels):
            return False
    return all(isinstance(f, Mapping) and _field_matches(f, node.name) for f in fields)


@dataclass(frozen=True, slots=True)
class RequiredNodeAffinity:
    """A pod's ``nodeSelector`` and required node affinity, read once per cycle."""

    node_selector: Mapping[str, Any] | None
    terms: Sequence[Mapping[str, Any]] | None

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> RequiredNodeAffinity:
        spec = pod.get("spec") or {}
        selector = spec.get("nodeSelector") or None
        affinity = spec.get("affinity") or {}
        node_affinity = affinity.get("nodeAffinity") or {} if isinstance(affinity, Mapping) else {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        terms = None
        if isinstance(required, Mapping):
            raw = required.get("nodeSelectorTerms") or []
            terms = [t for t in raw if isinstance(t, Mapping)] if isinstance(raw, list) else []
        return cls(selector if isinstance(selector, Mapping) else None, terms)

    @property
    def empty(self) -> bool:
        return self.node_selector is None and self.terms is None

    def matches(self, node: NodeInfo) -> bool:
        if self.node_selector is not None:
            labels = node.labels
            for k, v in self.node_selector.items():
                if labels.get(k) != v:
                    return False
        if self.terms is not None:
            return any(term_matches(t, node) for t in self.terms)
        return True


def _preferred_terms(pod: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    node_affinity = affinity.get("nodeAffinity") or {} if isinstance(affinity, Mapping) else {}
    raw = node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    out = []
    for t in raw if isinstance(raw, list) else []:
        if not isinstance(t, Mapping):
            continue
        weight, pref = t.get("weight"), t.get("preference")
        # A zero weight changes nothing, so it is dropped like in Kubernetes.
        if isinstance(weight, int) and weight != 0 and isinstance(pref, Mapping):
            out.append((weight, pref))
    return out


class NodeAffinity:
    name = NAME

    def pre_filter(self, state: CycleState, pod: Mapping[str, Any]) -> Status | None:
        required = RequiredNodeAffinity.of(pod)
        if required.empty:
            return Status.skip()
        state.write(_PRE_FILTER_KEY, required)
        return None

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        if state.read(_PRE_FILTER_KEY, RequiredNodeAffinity).matches(node):
            return None
        return Status.unresolvable(ERR_REASON_POD)

    def pre_score(
        self, state: CycleState, pod: Mapping[str, Any], nodes: Sequence[NodeInfo]
    ) -> Status | None:
        preferred = _preferred_terms(pod)
        if not preferred:
            return Status.skip()
        state.write(_PRE_SCORE_KEY, preferred)
        return None

    def score(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> int:
        preferred = state.read(_PRE_SCORE_KEY, list)
        return sum(w for w, term in preferred if term_matches(term, node))

    def normalize_score(
        self, state: CycleState, pod: Mapping[str, Any], scores: dict[str, int]
    ) -> Status | None:
        default_normalize_score(scores)
        return None


def new(args: Mapping[str, Any]) -> NodeAffinity:
    return NodeAffinity()
