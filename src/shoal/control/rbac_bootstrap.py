"""The default RBAC policy on every peer, and the ClusterRole aggregation controller.

At start (a joining peer once a pull completed: ``manager.run_when_may_create``) each peer
creates the default ClusterRoles and ClusterRoleBindings it does not hold (:mod:`shoal.authz.bootstrap_policy`); one that exists with the autoupdate annotation
``"true"`` gets back any rule, subject, label or aggregation selector it lost, as
Kubernetes' reconciliation at apiserver start. Peers that do this concurrently write the
same content, so the merge keeps one object.

Then it keeps the ``rules`` of every aggregated ClusterRole (``aggregationRule``) equal to
the union of the rules of the ClusterRoles it selects, in name order, as Kubernetes'
clusterrole-aggregation controller. The output depends only on the replica, so peers that
write it concurrently agree, and a peer writes only when the stored rules differ.
Authorization does not wait for this (it aggregates live, :mod:`shoal.authz.rbac`): the
stored rules are for readers, such as ``kubectl describe clusterrole edit``.

:class:`PolicyInPlace` is ``/readyz``'s ``rbac-bootstrap`` check, as kube-apiserver's
``poststarthook/rbac/bootstrap-roles``: a node is not ready before the default policy is in
its replica, so a client it calls ready is not refused what the policy grants everyone.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from shoal.authz import bootstrap_policy
from shoal.authz.rbac import CLUSTER_ROLES, aggregated_rules
from shoal.control.controller import Controller
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)


def _union(have: Any, want: list[Any]) -> list[Any]:
    """``have`` with what it lacks of ``want`` appended (order kept, nothing removed)."""
    out = list(have) if isinstance(have, list) else []
    out.extend(w for w in want if w not in out)
    return out


def reconciled(current: dict[str, Any], default: dict[str, Any]) -> dict[str, Any] | None:
    """``current`` with what ``default`` adds, or None if nothing is missing or the object
    opted out of updates (autoupdate not "true")."""
    meta = current.get("metadata") or {}
    if (meta.get("annotations") or {}).get(bootstrap_policy.AUTOUPDATE_ANNOTATION) != "true":
        return None
    new = copy.deepcopy(current)
    new_meta = new.setdefault("metadata", {})
    new_meta["labels"] = {**(new_meta.get("labels") or {}), **default["metadata"]["labels"]}
    if "aggregationRule" in default:
        agg: dict[str, Any] = new.get("aggregationRule") or {}
        new["aggregationRule"] = {**agg, "clusterRoleSelectors": _union(
            agg.get("clusterRoleSelectors"),
            default["aggregationRule"]["clusterRoleSelectors"])}
    elif "rules" in default:
        new["rules"] = _union(new.get("rules"), default["rules"])
    if "subjects" in default:
        new["subjects"] = _union(new.get("subjects"), default["subjects"])
    return None if new == current else new


class PolicyInPlace:
    """``/readyz``'s ``rbac-bootstrap`` check: fails until every default ClusterRole and
    ClusterRoleBinding is in the replica (written by this peer's :class:`RbacBootstrap`, or
    replicated from the cluster to a joining peer, which waits before writing), then passes
    for good: a default object an administrator deletes later does not make the node unready.

    Without it ``/readyz`` passed once caught up while the policy was still being written, and
    a ServiceAccount token made in that window was refused even ``/api`` (403), which
    ``system:discovery`` grants every authenticated user. Health checks run off the loop and
    only read a flag (:mod:`shoal.api.health`): :meth:`run`, on the loop, sets it."""

    def __init__(self, store: ObjectStore, interval: float = 0.05) -> None:
        self.store = store
        self.interval = interval
        self.in_place = False
        role_kind = store.registry.by_kind("rbac.authorization.k8s.io/v1", "ClusterRole")
        binding_kind = store.registry.by_kind("rbac.authorization.k8s.io/v1",
                                              "ClusterRoleBinding")
        assert role_kind is not None and binding_kind is not None
        self._defaults = [(kind, obj["metadata"]["name"]) for kind, objs in (
            (role_kind, bootstrap_policy.cluster_roles()),
            (binding_kind, bootstrap_policy.cluster_role_bindings())) for obj in objs]

    def __call__(self) -> str | None:
        return None if self.in_place else "the default RBAC policy is not in place yet"

    def missing(self) -> list[str]:
        return [f"{kind.kind} {name}" for kind, name in self._defaults
                if self.store.find(kind, None, name) is None]

    async def run(self) -> None:
        while self.missing():
            await asyncio.sleep(self.interval)
        self.in_place = True


class RbacBootstrap(Controller):
    name = "rbac-bootstrap"
    creates_defaults = True

    def __init__(self, store: ObjectStore, resync: float = 30.0) -> None:
        """Started on a joiner only once its first pull completed (``run_when_may_create``):
        its creations would be newer than the cluster's objects and win the merge, undoing
        what an administrator changed in the defaults (a subject removed, autoupdate turned
        off)."""
        super().__init__(store, resync)
        self._ensured = False

    def relevant(self, change: Change) -> bool:
        return change.resource == CLUSTER_ROLES

    def _kinds(self) -> tuple[Any, Any]:
        r = self.store.registry
        role_kind = r.by_kind("rbac.authorization.k8s.io/v1", "ClusterRole")
        binding_kind = r.by_kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")
        assert role_kind is not None and binding_kind is not None
        return role_kind, binding_kind

    async def ensure_policy(self) -> int:
        """Create or complete the default objects; returns how many were written."""
        role_kind, binding_kind = self._kinds()
        written = failed = 0
        for kind, defaults in ((role_kind, bootstrap_policy.cluster_roles()),
                               (binding_kind, bootstrap_policy.cluster_role_bindings())):
            for obj in defaults:
                name = obj["metadata"]["name"]
                current = self.store.find(kind, None, name)
                try:
                    if current is None:
                        await self.store.create(kind, obj)
                        written += 1
                    elif (new := reconciled(current, obj)) is not None:
                        await self.store.update(kind, new, None, name, check_rv=False)
                        written += 1
                except StoreError as e:  # e.g. created meanwhile by a merge: next pass
                    log.debug("rbac bootstrap: %s %s: %s", kind.kind, name, e)
                    failed += 1
        self._ensured = not failed
        return written

    async def aggregate(self) -> int:
        """Write the union of selected rules into every aggregated ClusterRole."""
        role_kind, _ = self._kinds()
        roles = {r["metadata"]["name"]: r for r in self.store.list(role_kind)}
        written = 0
        for name, role in roles.items():
            if not isinstance(role.get("aggregationRule"), dict):
                continue
            rules = aggregated_rules(roles, name)
            if (role.get("rules") or []) == rules:
                continue
            new = copy.deepcopy(role)
            new["rules"] = rules
            try:
                await self.store.update(role_kind, new, None, name, check_rv=False)
                written += 1
            except StoreError as e:
                log.debug("rbac aggregation: %s: %s", name, e)
        return written

    async def sync(self) -> bool:
        if not self._ensured:
            await self.ensure_policy()
        await self.aggregate()
        return not self._ensured
