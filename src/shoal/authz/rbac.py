"""RBAC over one replica: which rules apply to a user, in a namespace.

Bindings are indexed by subject (a User name, a Group name; a ServiceAccount subject is
its user ``system:serviceaccount:<ns>:<name>``), and each user's rules are resolved once:
the rules of ClusterRoleBindings apply everywhere, those of a RoleBinding only in its
namespace. The index and the per-user rules are rebuilt when an RBAC object changes.
:class:`RbacIndex` notices that by itself: when the reader has a ``revision`` (a
:class:`~shoal.store.replica.Replica` does) and it moved, it compares the RBAC objects'
resourceVersions (cheap: a few dozen objects) before rebuilding anything. ``invalidate()``
forces a rebuild.

A ClusterRole with an ``aggregationRule`` is evaluated live: its rules are the union of
the rules of the ClusterRoles its selectors match (themselves aggregated, in name order,
without repeats), so authorization never waits for the aggregation controller
(:mod:`shoal.control.rbac_bootstrap`), which writes the same union into ``rules`` for
``kubectl describe``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shoal.authz.attributes import Attributes
from shoal.authz.reader import ObjectReader
from shoal.authz.rules import Rule, rules_from_api
from shoal.authz.user import SERVICE_ACCOUNT_PREFIX, UserInfo
from shoal.model.selectors import LabelSelector, SelectorError

GROUP = "rbac.authorization.k8s.io"
ROLES = f"roles.{GROUP}"
CLUSTER_ROLES = f"clusterroles.{GROUP}"
ROLE_BINDINGS = f"rolebindings.{GROUP}"
CLUSTER_ROLE_BINDINGS = f"clusterrolebindings.{GROUP}"
RBAC_RESOURCES = frozenset({ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS})

_MAX_CACHED_USERS = 4096


@dataclass(frozen=True, slots=True)
class Grant:
    """Rules one binding gives, and how Kubernetes names it in a reason."""

    rules: tuple[Rule, ...]
    binding: str  # 'ClusterRoleBinding "x"' or 'RoleBinding "x/ns"'
    role: str  # 'ClusterRole "edit"' or 'Role "r"'
    subject: str  # 'User "alice"', 'Group "g"', 'ServiceAccount "sa/ns"'


@dataclass(frozen=True, slots=True)
class UserRules:
    """Everything RBAC grants one user: cluster-wide, and per namespace."""

    cluster: tuple[Grant, ...]
    namespaced: dict[str, tuple[Grant, ...]]

    def grants(self, namespace: str) -> Iterator[Grant]:
        yield from self.cluster
        if namespace:
            yield from self.namespaced.get(namespace, ())

    def allowing(self, attrs: Attributes) -> Grant | None:
        for grant in self.grants(attrs.namespace if attrs.resource_request else ""):
            for rule in grant.rules:
                if rule.allows(attrs):
                    return grant
        return None

    def rules(self, namespace: str) -> list[Rule]:
        """Every rule in force in ``namespace`` (cluster-wide ones first), without repeats."""
        return list(dict.fromkeys(r for g in self.grants(namespace) for r in g.rules))


def _subject_key(subject: Any, binding_namespace: str) -> tuple[str, str, str] | None:
    """("user" | "group", name, how a reason names it) for one subject."""
    if not isinstance(subject, dict):
        return None
    kind, name = subject.get("kind"), subject.get("name")
    if not isinstance(name, str) or not name:
        return None
    if kind == "User":
        return "user", name, f'User "{name}"'
    if kind == "Group":
        return "group", name, f'Group "{name}"'
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        if not isinstance(ns, str) or not ns:
            return None
        return "user", f"{SERVICE_ACCOUNT_PREFIX}{ns}:{name}", f'ServiceAccount "{name}/{ns}"'
    return None


def _matches(selectors: Any, labels: dict[str, str]) -> bool:
    """Whether any selector takes ``labels``; as Kubernetes, ``{}`` takes every role."""
    for sel in selectors if isinstance(selectors, list) else ():
        if not isinstance(sel, dict):
            continue
        try:
            if LabelSelector.from_api(sel).matches(labels):
                return True
        except SelectorError:
            continue
    return False


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def aggregated_rules(cluster_roles: dict[str, dict[str, Any]], name: str,
                     _seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """A ClusterRole's rules as PolicyRule JSON: its own, or, with an aggregationRule, the
    union of the rules of the ClusterRoles it selects (name order, each rule once, as
    written in its role, cycles cut), as Kubernetes' aggregation controller writes them."""
    role = cluster_roles.get(name)
    if role is None:
        return []
    agg = role.get("aggregationRule")
    if not isinstance(agg, dict):
        rules = role.get("rules")
        return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []
    selectors = agg.get("clusterRoleSelectors")
    seen = _seen | {name}
    out: list[dict[str, Any]] = []
    for other in sorted(cluster_roles):
        if other in seen or not _matches(selectors, _labels(cluster_roles[other])):
            continue
        out.extend(r for r in aggregated_rules(cluster_roles, other, seen) if r not in out)
    return out


def role_rules(reader: ObjectReader, role_ref_kind: str, role_ref_name: str,
               namespace: str) -> list[dict[str, Any]]:
    """The rules a roleRef grants (a ClusterRole's aggregated live), as PolicyRule JSON as
    written; [] when the role does not exist. For the API's ``bind`` check."""
    if role_ref_kind == "ClusterRole":
        cluster_roles = {_name(r): r for r in reader.list(CLUSTER_ROLES)}
        return aggregated_rules(cluster_roles, role_ref_name)
    if role_ref_kind == "Role":
        role = reader.get(ROLES, namespace, role_ref_name)
        rules = role.get("rules") if role is not None else None
        return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []
    return []


@dataclass(frozen=True, slots=True)
class _Binding:
    namespace: str  # "" for a ClusterRoleBinding
    name: str
    role_kind: str
    role_name: str


class RbacIndex:
    """Bindings by subject and each user's resolved rules, kept fresh from a reader."""

    def __init__(self, reader: ObjectReader, *, self_checking: bool = True) -> None:
        """With ``self_checking=False`` the index trusts its caller to ``invalidate()`` it
        on every change to an RBAC object (and saves the check after each write)."""
        self.reader = reader
        self.self_checking = self_checking
        self._built = False
        self._revision: object = None
        self._fingerprint: tuple[tuple[str, ...], ...] | None = None
        self._by_user: dict[str, list[tuple[_Binding, str]]] = {}
        self._by_group: dict[str, list[tuple[_Binding, str]]] = {}
        self._cluster_roles: dict[str, dict[str, Any]] = {}
        self._role_rules: dict[tuple[str, str, str], tuple[Rule, ...]] = {}
        self._users: dict[tuple[str, tuple[str, ...]], UserRules] = {}

    def invalidate(self) -> None:
        self._built = False
        self._revision = None
        self._fingerprint = None

    def _current_fingerprint(self) -> tuple[tuple[str, ...], ...]:
        return tuple(
            tuple(str((o.get("metadata") or {}).get("resourceVersion") or id(o))
                  for o in self.reader.list(resource))
            for resource in (CLUSTER_ROLES, ROLES, CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS))

    def refresh(self) -> None:
        """Rebuild if an RBAC object changed since the last call."""
        if self._built and not self.self_checking:
            return
        revision = getattr(self.reader, "revision", None)
        if revision is not None and revision == self._revision:
            return
        fingerprint = self._current_fingerprint()
        self._revision = revision
        if fingerprint == self._fingerprint:
            return
        self._fingerprint = fingerprint
        self._rebuild()
        self._built = True

    def _rebuild(self) -> None:
        self._cluster_roles = {_name(r): r for r in self.reader.list(CLUSTER_ROLES)}
        self._role_rules = {}
        self._users = {}
        by_user: dict[str, list[tuple[_Binding, str]]] = {}
        by_group: dict[str, list[tuple[_Binding, str]]] = {}
        for resource in (CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS):
            for b in self.reader.list(resource):
                ref = b.get("roleRef")
                if not isinstance(ref, dict):
                    continue
                ns = _namespace(b) if resource == ROLE_BINDINGS else ""
                binding = _Binding(ns, _name(b), str(ref.get("kind") or ""),
                                   str(ref.get("name") or ""))
                for subject in b.get("subjects") or ():
                    key = _subject_key(subject, ns)
                    if key is None:
                        continue
                    table = by_user if key[0] == "user" else by_group
                    table.setdefault(key[1], []).append((binding, key[2]))
        self._by_user, self._by_group = by_user, by_group

    def _rules_of(self, b: _Binding) -> tuple[Rule, ...]:
        key = (b.role_kind, b.namespace if b.role_kind == "Role" else "", b.role_name)
        rules = self._role_rules.get(key)
        if rules is None:
            if b.role_kind == "ClusterRole":
                rules = tuple(dict.fromkeys(rules_from_api(
                    aggregated_rules(self._cluster_roles, b.role_name))))
            elif b.role_kind == "Role" and b.namespace:
                role = self.reader.get(ROLES, b.namespace, b.role_name)
                rules = rules_from_api(role.get("rules")) if role else ()
            else:  # a RoleBinding's Role must be in its namespace; anything else grants nothing
                rules = ()
            self._role_rules[key] = rules
        return rules

    def for_user(self, user: UserInfo) -> UserRules:
        self.refresh()
        key = (user.username, user.groups)
        cached = self._users.get(key)
        if cached is not None:
            return cached
        found = list(self._by_user.get(user.username, ()))
        for g in user.groups:
            found.extend(self._by_group.get(g, ()))
        cluster: list[Grant] = []
        namespaced: dict[str, list[Grant]] = {}
        for b, subject in found:
            rules = self._rules_of(b)
            if not rules:
                continue
            if b.namespace:
                grant = Grant(rules, f'RoleBinding "{b.name}/{b.namespace}"',
                              f'{b.role_kind} "{b.role_name}"', subject)
                namespaced.setdefault(b.namespace, []).append(grant)
            else:
                grant = Grant(rules, f'ClusterRoleBinding "{b.name}"',
                              f'ClusterRole "{b.role_name}"', subject)
                cluster.append(grant)
        result = UserRules(tuple(cluster), {ns: tuple(gs) for ns, gs in namespaced.items()})
        if len(self._users) >= _MAX_CACHED_USERS:
            self._users.clear()
        self._users[key] = result
        return result


def allowed_reason(grant: Grant) -> str:
    """Kubernetes' RBAC reason for an allowed request."""
    return f"RBAC: allowed by {grant.binding} of {grant.role} to {grant.subject}"
