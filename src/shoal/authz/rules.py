"""One RBAC PolicyRule and what it matches, as Kubernetes' ``rbac.RuleAllows`` and
``validation.Covers`` (the escalation check).

A rule's lists are frozen sets, so a match is a few set lookups. ``*`` matches anything;
``*/scale`` matches the ``scale`` subresource of any resource; a ``nonResourceURLs`` entry
ending in ``*`` matches by prefix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shoal.authz.attributes import Attributes

ALL = "*"


def _strings(value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str))


def _sorted_list(values: frozenset[str]) -> list[str]:
    return sorted(values)


@dataclass(frozen=True, slots=True)
class Rule:
    """A PolicyRule. Kept as given (order-free sets), printed back sorted."""

    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()

    @classmethod
    def from_api(cls, rule: Any) -> Rule | None:
        if not isinstance(rule, dict):
            return None
        return cls(_strings(rule.get("verbs")), _strings(rule.get("apiGroups")),
                   _strings(rule.get("resources")), _strings(rule.get("resourceNames")),
                   _strings(rule.get("nonResourceURLs")))

    def to_api(self) -> dict[str, Any]:
        """The PolicyRule's JSON (empty lists left out, as Kubernetes' omitempty)."""
        out: dict[str, Any] = {"verbs": _sorted_list(self.verbs)}
        if self.api_groups or self.resources:
            out["apiGroups"] = _sorted_list(self.api_groups)
        if self.resources:
            out["resources"] = _sorted_list(self.resources)
        if self.resource_names:
            out["resourceNames"] = _sorted_list(self.resource_names)
        if self.non_resource_urls:
            out["nonResourceURLs"] = _sorted_list(self.non_resource_urls)
        return out

    # -- matching a request (rbac.RuleAllows) --------------------------------------------

    def allows(self, attrs: Attributes) -> bool:
        if attrs.verb not in self.verbs and ALL not in self.verbs:
            return False
        if not attrs.resource_request:
            return self.matches_url(attrs.path)
        return (self.matches_group(attrs.api_group)
                and self.matches_resource(attrs.resource, attrs.subresource)
                and (not self.resource_names or attrs.name in self.resource_names))

    def matches_group(self, group: str) -> bool:
        return group in self.api_groups or ALL in self.api_groups

    def matches_resource(self, resource: str, subresource: str) -> bool:
        if ALL in self.resources:
            return True
        if not subresource:
            return resource in self.resources
        return (f"{resource}/{subresource}" in self.resources
                or f"*/{subresource}" in self.resources)

    def matches_url(self, path: str) -> bool:
        for url in self.non_resource_urls:
            if url in (ALL, path):
                return True
            if url.endswith("*") and path.startswith(url[:-1]):
                return True
        return False

    # -- covering another rule (validation.Covers) ----------------------------------------

    def covers(self, other: Rule) -> bool:
        """Whether every request ``other`` allows is allowed by this rule. ``other`` is an
        atomic rule (see :func:`breakdown`); a ``*`` in it is covered only by ``*``."""
        if ALL not in self.verbs and not other.verbs <= self.verbs:
            return False
        if other.non_resource_urls:
            # An owned URL pattern covers a requested one exactly as it would match it.
            return all(self.matches_url(u) for u in other.non_resource_urls)
        if ALL not in self.api_groups and not other.api_groups <= self.api_groups:
            return False
        if not all(self._covers_resource(r) for r in other.resources):
            return False
        if not self.resource_names:
            return True
        return bool(other.resource_names) and other.resource_names <= self.resource_names

    def _covers_resource(self, resource: str) -> bool:
        if ALL in self.resources or resource in self.resources:
            return True
        _, slash, sub = resource.partition("/")
        return bool(slash) and f"*/{sub}" in self.resources


def rules_from_api(rules: Any) -> tuple[Rule, ...]:
    out = []
    for r in rules if isinstance(rules, list) else ():
        rule = Rule.from_api(r)
        if rule is not None:
            out.append(rule)
    return tuple(out)


def breakdown(rule: Rule) -> list[Rule]:
    """One rule per verb x group x resource x resourceName (or verb x URL), as
    Kubernetes' ``BreakdownRule``, in a stable order."""
    out: list[Rule] = []
    verbs = sorted(rule.verbs)
    for group in sorted(rule.api_groups):
        for resource in sorted(rule.resources):
            for verb in verbs:
                if rule.resource_names:
                    out.extend(Rule(frozenset({verb}), frozenset({group}), frozenset({resource}),
                                    frozenset({n})) for n in sorted(rule.resource_names))
                else:
                    out.append(Rule(frozenset({verb}), frozenset({group}), frozenset({resource})))
    for url in sorted(rule.non_resource_urls):
        out.extend(Rule(frozenset({verb}), non_resource_urls=frozenset({url})) for verb in verbs)
    return out


def uncovered_rules(owned: Iterable[Rule], requested: Iterable[Rule]) -> list[Rule]:
    """The atomic pieces of ``requested`` that no rule in ``owned`` covers."""
    owned = tuple(owned)
    missing: dict[Rule, None] = {}
    for rule in requested:
        for atom in breakdown(rule):
            if not any(o.covers(atom) for o in owned):
                missing[atom] = None
    return list(missing)
