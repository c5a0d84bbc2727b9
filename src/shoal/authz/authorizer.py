"""The authorizer every request goes through, as Kubernetes' chain of authorizers:
``system:masters`` may do anything; a node's credential goes to the Node authorizer
(:mod:`shoal.authz.node_authorizer`) and, where that has no opinion, to RBAC; everyone
else to RBAC (:mod:`shoal.authz.rbac`). Nothing is refused by a rule: what no rule
allows is refused.

RBAC's index notices changes to RBAC objects by itself (see :class:`RbacIndex`): after
a write it compares the RBAC objects' resourceVersions, which costs some microseconds per
few dozen objects. A caller that sees every change can build it with
``self_checking=False`` and call ``notice(resource)`` instead.
"""

from __future__ import annotations

from typing import Any

from shoal.authz import node_authorizer
from shoal.authz.attributes import Attributes, Decision
from shoal.authz.rbac import RBAC_RESOURCES, RbacIndex, allowed_reason, role_rules
from shoal.authz.reader import ObjectReader
from shoal.authz.rules import ALL, Rule, rules_from_api, uncovered_rules
from shoal.authz.user import UserInfo

__all__ = ["Authorizer", "role_rules"]

_EVERYTHING = (Rule(frozenset({ALL}), frozenset({ALL}), frozenset({ALL})),
               Rule(frozenset({ALL}), non_resource_urls=frozenset({ALL})))
REASON_MASTERS = "allowed as a member of system:masters"
_MASTERS = Decision(True, REASON_MASTERS)  # frozen: one for every administrator's request


class Authorizer:
    """Answers "may this user do this?" from one replica."""

    def __init__(self, reader: ObjectReader, *, self_checking: bool = True) -> None:
        """``self_checking=False``: the caller calls :meth:`notice` for every change (for
        example from a store observer), and no request pays for the check."""
        self.reader = reader
        self.rbac = RbacIndex(reader, self_checking=self_checking)

    def invalidate(self) -> None:
        """Forget the RBAC index (an RBAC object changed)."""
        self.rbac.invalidate()

    def notice(self, resource: str) -> None:
        """A change to an object of ``resource`` (a storage resource) was made."""
        if resource in RBAC_RESOURCES:
            self.rbac.invalidate()

    def authorize(self, attrs: Attributes) -> Decision:
        user = attrs.user
        if user.is_admin:
            return _MASTERS
        node_reason = ""
        node = user.node_name
        if node is not None:
            by_node = node_authorizer.authorize(self.reader, node, attrs)
            if by_node.allowed:
                return by_node
            node_reason = by_node.reason
        grant = self.rbac.for_user(user).allowing(attrs)
        if grant is not None:
            return Decision(True, allowed_reason(grant))
        return Decision(False, node_reason)

    def _rules(self, user: UserInfo, namespace: str) -> list[Rule]:
        if user.is_admin:
            return list(_EVERYTHING)
        return self.rbac.for_user(user).rules(namespace)

    def rules_review(self, user: UserInfo, namespace: str
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        """(resourceRules, nonResourceRules, incomplete) as SelfSubjectRulesReview's status.
        A node's rules that depend on the object asked about are not listed, so its review
        is incomplete (as Kubernetes reports for any authorizer but RBAC)."""
        rules = self._rules(user, namespace)
        incomplete = user.node_name is not None and not user.is_admin
        if incomplete:
            rules = list(dict.fromkeys([*node_authorizer.STATIC_RULES, *rules]))
        resource_rules = [_resource_rule(r) for r in rules if r.resources]
        non_resource_rules = [{"verbs": sorted(r.verbs),
                               "nonResourceURLs": sorted(r.non_resource_urls)}
                              for r in rules if r.non_resource_urls]
        return resource_rules, non_resource_rules, incomplete

    def uncovered(self, user: UserInfo, namespace: str, rules: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
        """The rules the user does not hold itself (escalation prevention); [] if all are.
        Each missing piece is one verb of one resource (or name, or URL), as Kubernetes
        lists them in its "attempting to grant RBAC permissions not currently held" error."""
        missing = uncovered_rules(self._rules(user, namespace), rules_from_api(rules))
        return [r.to_api() for r in missing]


def _resource_rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"verbs": sorted(rule.verbs), "apiGroups": sorted(rule.api_groups),
                           "resources": sorted(rule.resources)}
    if rule.resource_names:
        out["resourceNames"] = sorted(rule.resource_names)
    return out
