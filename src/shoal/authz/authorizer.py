"""The authorizer every request goes through (a stub: it allows everything until RBAC and
the Node authorizer land)."""

from __future__ import annotations

from typing import Any

from shoal.authz.attributes import ALLOW, Attributes, Decision
from shoal.authz.reader import ObjectReader
from shoal.authz.user import UserInfo


class Authorizer:
    """Answers "may this user do this?" from one replica."""

    def __init__(self, reader: ObjectReader) -> None:
        self.reader = reader

    def authorize(self, attrs: Attributes) -> Decision:
        return ALLOW

    def rules_review(self, user: UserInfo, namespace: str
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        """(resourceRules, nonResourceRules, incomplete) as SelfSubjectRulesReview's status."""
        return [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], [
            {"verbs": ["*"], "nonResourceURLs": ["*"]}], False

    def uncovered(self, user: UserInfo, namespace: str, rules: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
        """The rules the user does not hold itself (escalation prevention); [] if all are."""
        return []
