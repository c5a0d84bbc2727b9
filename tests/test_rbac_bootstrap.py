"""The default RBAC policy every peer creates, and the aggregation controller."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import pytest

from shoal.authz import bootstrap_policy
from shoal.authz.attributes import Attributes
from shoal.authz.authorizer import Authorizer
from shoal.authz.rbac import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES
from shoal.authz.user import ANONYMOUS, authenticated
from shoal.control.rbac_bootstrap import PolicyInPlace, RbacBootstrap, reconciled
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import heal

REG = KindRegistry()
CLUSTER_ROLE = REG.by_kind("rbac.authorization.k8s.io/v1", "ClusterRole")
CRB = REG.by_kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")


def _store(node: str) -> ObjectStore:
    return ObjectStore(Replica(None, node), REG)


@pytest.fixture
async def stores() -> AsyncIterator[tuple[ObjectStore, ObjectStore]]:
    a, b = _store("peer-a"), _store("peer-b")
    yield a, b
    a.replica.close()
    b.replica.close()


async def _bootstrapped(store: ObjectStore) -> RbacBootstrap:
    """The policy created and aggregated, as after a peer's first controller pass."""
    boot = RbacBootstrap(store)
    await boot.ensure_policy()
    await boot.aggregate()
    return boot


def _names(store: ObjectStore, resource: str) -> set[str]:
    return {o["metadata"]["name"] for o in store.replica.list(resource)}


async def test_a_peer_creates_the_default_policy_once_and_a_second_run_writes_nothing(
        stores: tuple[ObjectStore, ObjectStore]) -> None:
    a, _ = stores
    boot = RbacBootstrap(a)
    assert await boot.ensure_policy() == (len(bootstrap_policy.cluster_roles())
                                          + len(bootstrap_policy.cluster_role_bindings()))
    revision = a.replica.revision
    assert await boot.ensure_policy() == 0
    assert a.replica.revision == revision
    assert {"cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery",
            "system:public-info-viewer", "system:node"} <= _names(a, CLUSTER_ROLES)
    edit = a.replica.get(CLUSTER_ROLES, "", "edit")
    assert edit is not None
    assert edit["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
    assert edit["metadata"]["annotations"][bootstrap_policy.AUTOUPDATE_ANNOTATION] == "true"


async def test_two_peers_that_bootstrap_apart_hold_one_copy_of_each_object_after_the_merge(
        stores: tuple[ObjectStore, ObjectStore]) -> None:
    a, b = stores
    for s in (a, b):
        await _bootstrapped(s)
    await heal(a, b)
    for resource in (CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS):
        assert _names(a, resource) == _names(b, resource)
        for name in _names(a, resource):
            left, right = a.replica.get(resource, "", name), b.replica.get(resource, "", name)
            assert left is not None and right is not None
            for field in ("rules", "aggregationRule", "subjects", "roleRef"):
                assert left.get(field) == right.get(field), (name, field)
            assert left["metadata"]["uid"] == right["metadata"]["uid"]
    # Nothing left to do on either side: the merged state is what both would write.
    assert await RbacBootstrap(a).aggregate() == 0
    assert await RbacBootstrap(b).aggregate() == 0


async def test_aggregation_fills_edit_and_admin_with_the_labelled_roles_rules(
        stores: tuple[ObjectStore, ObjectStore]) -> None:
    a, _ = stores
    await _bootstrapped(a)
    edit = a.replica.get(CLUSTER_ROLES, "", "edit")
    admin = a.replica.get(CLUSTER_ROLES, "", "admin")
    view = a.replica.get(CLUSTER_ROLES, "", "view")
    assert edit is not None and admin is not None and view is not None
    edit_rules, admin_rules = edit["rules"], admin["rules"]
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods/log"]} \
        not in edit_rules  # rules are kept as Kubernetes groups them, not one per resource
    assert any("secrets" in r.get("resources", []) and "create" in r["verbs"]
               for r in edit_rules)
    assert not any("secrets" in r.get("resources", []) for r in view["rules"])
    assert all(r in admin_rules for r in edit_rules)  # edit aggregates into admin
    assert any("rolebindings" in r.get("resources", []) for r in admin_rules)
    assert not any("rolebindings" in r.get("resources", []) for r in edit_rules)


async def test_a_new_labelled_cluster_role_is_aggregated_into_view_edit_and_admin(
        stores: tuple[ObjectStore, ObjectStore]) -> None:
    a, _ = stores
    boot = await _bootstrapped(a)
    await a.create(CLUSTER_ROLE, {
        "metadata": {"name": "widgets-view",
                     "labels": {bootstrap_policy.AGGREGATE_TO + "view": "true"}},
        "rules": [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]})
    user = authenticated("carol")
    ask = Attributes(user, "get", api_group="example.com", resource="widgets",
                     namespace="team", name="w")
    authz = Authorizer(a.replica)
    assert not authz.authorize(ask).allowed
    await a.create(REG.by_kind("v1", "Namespace"), {"metadata": {"name": "team"}})
    await a.create(REG.by_kind("rbac.authorization.k8s.io/v1", "RoleBinding"), {
        "metadata": {"name": "carol-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "admin"},
        "subjects": [{"kind": "User", "name": "carol"}]}, "team")
    # Live: allowed before the controller has written anything.
    assert authz.authorize(ask).allowed
    assert await boot.aggregate() == 3  # view, edit (from view) and admin (from edit)
    widget_rule = {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}
    for name in ("view", "edit", "admin"):
        role = a.replica.get(CLUSTER_ROLES, "", name)
        assert role is not None and widget_rule in role["rules"], name


async def test_the_bootstrap_bindings_let_anyone_discover_and_ask_what_it_may_do(
        stores: tuple[ObjectStore, ObjectStore]) -> None:
    a, _ = stores
    await RbacBootstrap(a).ensure_policy()
    authz = Authorizer(a.replica)
    alice = authenticated("alice")
    assert authz.authorize(Attributes(alice, "get", resource_request=False, path="/apis/apps")
                           ).allowed
    assert authz.authorize(Attributes(alice, "create", api_group="authorization.k8s.io",
                                      resource="selfsubjectaccessreviews")).allowed
    assert authz.authorize(Attributes(ANONYMOUS, "get", resource_request=False,
                                      path="/version")).allowed
    assert not authz.authorize(Attributes(ANONYMOUS, "get", resource_request=False,
                                          path="/api")).allowed
    assert not authz.authorize(Attributes(alice, "list", resource="pods",
                                          namespace="default")).allowed


async def test_reconcile_puts_back_a_lost_subject_unless_autoupdate_is_off(
        stores: tuple[ObjectStore, ObjectStore]) -> None:
    a, _ = stores
    await RbacBootstrap(a).ensure_policy()
    current = a.replica.get(CLUSTER_ROLE_BINDINGS, "", "system:public-info-viewer")
    assert current is not None
    trimmed = copy.deepcopy(current)
    trimmed["subjects"] = trimmed["subjects"][:1]
    default = next(b for b in bootstrap_policy.cluster_role_bindings()
                   if b["metadata"]["name"] == "system:public-info-viewer")
    fixed = reconciled(trimmed, default)
    assert fixed is not None and fixed["subjects"] == default["subjects"]
    trimmed["metadata"]["annotations"][bootstrap_policy.AUTOUPDATE_ANNOTATION] = "false"
    assert reconciled(trimmed, default) is None
    assert reconciled(current, default) is None


async def test_readyz_waits_for_the_default_policy_written_or_replicated_then_passes_for_good(
        stores: tuple[ObjectStore, ObjectStore]) -> None:
    # A fresh node once answered ready (caught up) while its policy was still being written: a
    # ServiceAccount token made then was refused /api (403), which system:discovery grants.
    a, b = stores
    checks = {s: PolicyInPlace(s, interval=0.01) for s in (a, b)}
    runs = {s: asyncio.create_task(c.run()) for s, c in checks.items()}
    await asyncio.sleep(0.05)
    assert checks[a]() == "the default RBAC policy is not in place yet"
    await RbacBootstrap(a).ensure_policy()
    await asyncio.wait_for(runs[a], 5)
    assert checks[a]() is None and checks[b]() is not None
    await heal(a, b)  # a joining peer: the cluster's objects, before it writes any
    await asyncio.wait_for(runs[b], 5)
    assert checks[b]() is None
    await a.delete(CRB, None, "system:discovery")  # by an administrator, later
    assert checks[a]() is None
