"""RBAC: rule matching, bindings, aggregation, rules reviews and escalation checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.authz import bootstrap_policy
from shoal.authz.attributes import Attributes
from shoal.authz.authorizer import Authorizer, role_rules
from shoal.authz.rbac import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, ROLE_BINDINGS, ROLES
from shoal.authz.rules import Rule, breakdown
from shoal.authz.user import authenticated, service_account_user
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.readers import DictReader, binding

G = "rbac.authorization.k8s.io"


def _rule(verbs: list[str], groups: list[str] | None = None, resources: list[str] | None = None,
          names: list[str] | None = None, urls: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"verbs": verbs}
    if groups is not None:
        out["apiGroups"] = groups
    if resources is not None:
        out["resources"] = resources
    if names:
        out["resourceNames"] = names
    if urls:
        out["nonResourceURLs"] = urls
    return out


def _with_default_policy() -> DictReader:
    reader = DictReader()
    for role in bootstrap_policy.cluster_roles():
        reader.put(CLUSTER_ROLES, role)
    for b in bootstrap_policy.cluster_role_bindings():
        reader.put(CLUSTER_ROLE_BINDINGS, b)
    return reader


def _ask(user: Any, verb: str, resource: str, namespace: str = "", name: str = "",
         group: str = "", sub: str = "") -> Attributes:
    return Attributes(user, verb, True, group, "v1", resource, sub, namespace, name)


# -- one rule --------------------------------------------------------------------------------

MATCHING = [
    ("a star verb allows any verb", _rule(["*"], [""], ["pods"]), "delete", "", "pods", "", "",
     True),
    ("a verb not listed is refused", _rule(["get"], [""], ["pods"]), "list", "", "pods", "", "",
     False),
    ("the group must match", _rule(["get"], ["apps"], ["pods"]), "get", "", "pods", "", "",
     False),
    ("a star group matches any group", _rule(["get"], ["*"], ["deployments"]), "get", "apps",
     "deployments", "", "", True),
    ("a resource does not match its subresources", _rule(["get"], [""], ["pods"]), "get", "",
     "pods", "log", "", False),
    ("pods/log matches the log subresource", _rule(["get"], [""], ["pods/log"]), "get", "",
     "pods", "log", "", True),
    ("*/scale matches the scale of any resource", _rule(["update"], ["apps"], ["*/scale"]),
     "update", "apps", "deployments", "scale", "", True),
    ("*/scale does not match the resource itself", _rule(["update"], ["apps"], ["*/scale"]),
     "update", "apps", "deployments", "", "", False),
    ("a star resource matches subresources too", _rule(["get"], [""], ["*"]), "get", "", "pods",
     "exec", "", True),
    ("resourceNames restrict to those names", _rule(["get"], [""], ["secrets"], ["a"]), "get",
     "", "secrets", "", "b", False),
    ("resourceNames allow the named object", _rule(["get"], [""], ["secrets"], ["a"]), "get", "",
     "secrets", "", "a", True),
    ("resourceNames never match a list (no name)", _rule(["list"], [""], ["secrets"], ["a"]),
     "list", "", "secrets", "", "", False),
]


@pytest.mark.parametrize(("case", "rule", "verb", "group", "resource", "sub", "name", "allowed"),
                         MATCHING, ids=[m[0] for m in MATCHING])
def test_rule_matching(case: str, rule: dict[str, Any], verb: str, group: str, resource: str,
                       sub: str, name: str, allowed: bool) -> None:
    parsed = Rule.from_api(rule)
    assert parsed is not None
    attrs = _ask(authenticated("u"), verb, resource, "ns", name, group, sub)
    assert parsed.allows(attrs) is allowed


@pytest.mark.parametrize(("pattern", "path", "allowed"), [
    ("/healthz", "/healthz", True), ("/healthz", "/healthz/ping", False),
    ("/apis/*", "/apis/apps/v1", True), ("/apis/*", "/apis", False), ("*", "/anything", True),
    ("/api", "/apis", False),
])
def test_non_resource_urls_match_exactly_or_by_a_trailing_star(pattern: str, path: str,
                                                                allowed: bool) -> None:
    rule = Rule(frozenset({"get"}), non_resource_urls=frozenset({pattern}))
    assert rule.allows(Attributes(authenticated("u"), "get", False, path=path)) is allowed


_words = st.sampled_from(["get", "list", "create", "*"])
_groups = st.sampled_from(["", "apps", "*"])
_resources = st.sampled_from(["pods", "pods/log", "deployments", "*/scale", "deployments/scale",
                              "*"])


@st.composite
def _rules(draw: st.DrawFn) -> Rule:
    return Rule(frozenset(draw(st.lists(_words, min_size=1, max_size=3))),
                frozenset(draw(st.lists(_groups, min_size=1, max_size=2))),
                frozenset(draw(st.lists(_resources, min_size=1, max_size=3))),
                frozenset(draw(st.lists(st.sampled_from(["a", "b"]), max_size=2))))


@given(owner=_rules(), requested=_rules())
def test_a_covered_atomic_rule_allows_nothing_its_owner_refuses(owner: Rule,
                                                                requested: Rule) -> None:
    user = authenticated("u")
    for atom in breakdown(requested):
        if not owner.covers(atom):
            continue
        (verb,), (group,) = atom.verbs, atom.api_groups
        resource, _, sub = next(iter(atom.resources)).partition("/")
        name = next(iter(atom.resource_names), "x")
        for concrete_verb in (["get", "list", "create"] if verb == "*" else [verb]):
            attrs = _ask(user, concrete_verb, "pods" if resource == "*" else resource, "ns",
                         name, "apps" if group == "*" else group, sub)
            if atom.allows(attrs):
                assert owner.allows(attrs), (owner, atom, attrs)


# -- bindings ------------------------------------------------------------------------------


def test_an_edit_rolebinding_allows_writes_in_its_namespace_only() -> None:
    reader = _with_default_policy()
    reader.put(ROLE_BINDINGS, binding("RoleBinding", "team-edit", "ClusterRole", "edit",
                                       [{"kind": "Group", "name": "team"}], "team-a"))
    authz = Authorizer(reader)
    bob = authenticated("bob", ("team",))
    allowed = authz.authorize(_ask(bob, "create", "deployments", "team-a", group="apps"))
    assert allowed.allowed
    assert allowed.reason == ('RBAC: allowed by RoleBinding "team-edit/team-a" of ClusterRole '
                              '"edit" to Group "team"')
    assert authz.authorize(_ask(bob, "get", "secrets", "team-a", "s")).allowed
    assert authz.authorize(_ask(bob, "get", "pods", "team-a", "p", sub="log")).allowed
    assert not authz.authorize(_ask(bob, "create", "deployments", "team-b", group="apps")).allowed
    assert not authz.authorize(_ask(bob, "list", "nodes")).allowed
    assert not authz.authorize(_ask(bob, "create", "rolebindings", "team-a", group=G)).allowed
    assert not authz.authorize(_ask(authenticated("eve"), "get", "pods", "team-a")).allowed


def test_a_role_binding_to_a_role_of_another_namespace_grants_nothing() -> None:
    reader = DictReader()
    reader.put(ROLES, {"metadata": {"name": "r", "namespace": "a"},
                       "rules": [_rule(["get"], [""], ["pods"])]})
    reader.put(ROLE_BINDINGS, binding("RoleBinding", "b", "Role", "r",
                                       [{"kind": "User", "name": "u"}], "b"))
    reader.put(ROLE_BINDINGS, binding("RoleBinding", "b", "Role", "r",
                                       [{"kind": "User", "name": "u"}], "a"))
    authz = Authorizer(reader)
    user = authenticated("u")
    assert authz.authorize(_ask(user, "get", "pods", "a", "p")).allowed
    assert not authz.authorize(_ask(user, "get", "pods", "b", "p")).allowed


def test_a_service_account_subject_names_the_account_in_the_bindings_namespace() -> None:
    reader = _with_default_policy()
    reader.put(ROLE_BINDINGS, binding("RoleBinding", "sa-view", "ClusterRole", "view",
                                       [{"kind": "ServiceAccount", "name": "builder"}], "ci"))
    authz = Authorizer(reader)
    assert authz.authorize(_ask(service_account_user("ci", "builder"), "list", "pods", "ci")
                           ).allowed
    assert not authz.authorize(_ask(service_account_user("other", "builder"), "list", "pods",
                                    "ci")).allowed


def test_removing_a_binding_takes_effect_on_the_next_request() -> None:
    reader = _with_default_policy()
    crb = binding("ClusterRoleBinding", "ops", "ClusterRole", "view",
                   [{"kind": "User", "name": "ops"}])
    reader.put(CLUSTER_ROLE_BINDINGS, crb)
    authz = Authorizer(reader)
    ops = authenticated("ops")
    assert authz.authorize(_ask(ops, "list", "pods", "any")).allowed
    reader.remove(CLUSTER_ROLE_BINDINGS, "", "ops")
    assert not authz.authorize(_ask(ops, "list", "pods", "any")).allowed


async def test_a_binding_written_to_a_replica_is_seen_without_an_invalidation() -> None:
    reg = KindRegistry()
    store = ObjectStore(Replica(None, "n1"), reg)
    authz = Authorizer(store.replica)
    ops = authenticated("ops")
    assert not authz.authorize(_ask(ops, "list", "pods", "any")).allowed
    await store.create(reg.by_kind(f"{G}/v1", "ClusterRole"), {
        "metadata": {"name": "pod-reader"}, "rules": [_rule(["list"], [""], ["pods"])]})
    await store.create(reg.by_kind(f"{G}/v1", "ClusterRoleBinding"), binding(
        "ClusterRoleBinding", "ops", "ClusterRole", "pod-reader", [{"kind": "User",
                                                                     "name": "ops"}]))
    assert authz.authorize(_ask(ops, "list", "pods", "any")).allowed
    store.replica.close()


def test_aggregation_is_evaluated_live_and_follows_labels() -> None:
    reader = _with_default_policy()
    reader.put(CLUSTER_ROLE_BINDINGS, binding("ClusterRoleBinding", "v", "ClusterRole", "view",
                                               [{"kind": "User", "name": "v"}]))
    authz = Authorizer(reader)
    viewer = authenticated("v")
    crontabs = _ask(viewer, "list", "crontabs", "ns", group="stable.example.com")
    assert not authz.authorize(crontabs).allowed
    reader.put(CLUSTER_ROLES, {"metadata": {"name": "crontab-reader", "labels": {
        bootstrap_policy.AGGREGATE_TO + "view": "true"}},
        "rules": [_rule(["list"], ["stable.example.com"], ["crontabs"])]})
    assert authz.authorize(crontabs).allowed
    rules = role_rules(reader, "ClusterRole", "admin", "")
    assert _rule(["list"], ["stable.example.com"], ["crontabs"]) in rules


# -- reviews and escalation ----------------------------------------------------------------


def test_the_rules_review_lists_cluster_and_namespace_rules() -> None:
    reader = _with_default_policy()
    reader.put(ROLES, {"metadata": {"name": "cm", "namespace": "team"},
                       "rules": [_rule(["get"], [""], ["configmaps"], ["settings"])]})
    reader.put(ROLE_BINDINGS, binding("RoleBinding", "cm", "Role", "cm",
                                       [{"kind": "User", "name": "u"}], "team"))
    authz = Authorizer(reader)
    user = authenticated("u")
    resource_rules, url_rules, incomplete = authz.rules_review(user, "team")
    assert not incomplete
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"],
            "resourceNames": ["settings"]} in resource_rules
    assert {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]} in resource_rules
    assert {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version",
                                                  "/version/"]} in url_rules
    elsewhere, _, _ = authz.rules_review(user, "other")
    assert not any("configmaps" in r["resources"] for r in elsewhere)
    admin_rules, admin_urls, _ = authz.rules_review(authenticated("root", ("system:masters",)),
                                                    "x")
    assert admin_rules == [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
    assert admin_urls == [{"verbs": ["*"], "nonResourceURLs": ["*"]}]


def test_uncovered_finds_each_permission_a_role_would_grant_beyond_the_users_own() -> None:
    reader = _with_default_policy()
    reader.put(ROLE_BINDINGS, binding("RoleBinding", "e", "ClusterRole", "edit",
                                       [{"kind": "User", "name": "ed"}], "team"))
    authz = Authorizer(reader)
    ed = authenticated("ed")
    held = [_rule(["get", "list"], [""], ["pods", "secrets"]),
            _rule(["update"], ["apps"], ["deployments/scale"])]
    assert authz.uncovered(ed, "team", held) == []
    missing = authz.uncovered(ed, "team", [
        _rule(["get", "delete"], [""], ["nodes", "pods"]),
        _rule(["*"], [""], ["configmaps"]),
        _rule(["get"], [], [], urls=["/metrics"]),
    ])
    assert missing == [
        _rule(["delete"], [""], ["nodes"]), _rule(["get"], [""], ["nodes"]),
        _rule(["*"], [""], ["configmaps"]),  # edit lists the verbs, so it lacks "*"
        _rule(["get"], urls=["/metrics"]),
    ]
    assert authz.uncovered(ed, "elsewhere", held) != []
    assert authz.uncovered(authenticated("root", ("system:masters",)), "x",
                           [_rule(["*"], ["*"], ["*"])]) == []


def test_an_authorizer_told_of_changes_rebuilds_only_when_an_rbac_object_changed() -> None:
    reader = _with_default_policy()
    crb = binding("ClusterRoleBinding", "ops", "ClusterRole", "view",
                  [{"kind": "User", "name": "ops"}])
    reader.put(CLUSTER_ROLE_BINDINGS, crb)
    authz = Authorizer(reader, self_checking=False)
    ops = authenticated("ops")
    assert authz.authorize(_ask(ops, "list", "pods", "any")).allowed
    reader.remove(CLUSTER_ROLE_BINDINGS, "", "ops")
    authz.notice("pods")
    assert authz.authorize(_ask(ops, "list", "pods", "any")).allowed  # not told: stale
    authz.notice(CLUSTER_ROLE_BINDINGS)
    assert not authz.authorize(_ask(ops, "list", "pods", "any")).allowed
