"""The disruption controller: a PodDisruptionBudget's status, from the pods it selects.

As Kubernetes' disruption controller: ``expectedPods``, ``desiredHealthy``,
``currentHealthy``, ``disruptionsAllowed``, ``observedGeneration``, the
``DisruptionAllowed`` condition, and ``disruptedPods`` (pods an eviction let go,
counted unhealthy until they are deleted, or for two minutes). With an integer
``minAvailable`` the expected count is the number of matching pods; with a
percentage or ``maxUnavailable`` it is the sum of the ``replicas`` of the pods'
controllers (ReplicaSet, or its Deployment; ReplicationController; StatefulSet).
A pod with no such controller then makes the budget fail safe: nothing may be
disrupted (``SyncFailed``).

The status is written by the preferred actor for the budget (:mod:`ownership`).
The eviction subresource (:mod:`shoal.api.eviction`) reads it on the peer that
serves the request and spends from it there; see docs/semantics.md for what a
partition does to a budget.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.control.controller import Controller
from shoal.control.daemonset import scaled
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_state import is_ready, parse_time
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

DELETION_TIMEOUT = 120.0
"""Seconds an evicted pod counts as disrupted if it is not deleted (Kubernetes' 2 minutes)."""
CONDITION = "DisruptionAllowed"
_CONTROLLERS = {"ReplicaSet": "replicasets.apps", "ReplicationController":
                "replicationcontrollers", "StatefulSet": "statefulsets.apps"}


def matching_budgets(budgets: list[dict[str, Any]], pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The budgets of the pod's namespace whose selector matches its labels (an empty
    selector matches every pod, as in policy/v1)."""
    meta = pod.get("metadata") or {}
    out = []
    for pdb in budgets:
        if (pdb.get("metadata") or {}).get("namespace") != meta.get("namespace"):
            continue
        try:
            selector = LabelSelector.from_api((pdb.get("spec") or {}).get("selector") or {})
        except SelectorError:
            continue
        if selector.matches(meta.get("labels") or {}):
            out.append(pdb)
    return out


def is_healthy(pod: dict[str, Any]) -> bool:
    return is_ready(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


class DisruptionController(Controller):
    name = "disruption"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.default_resync = self.resync
        pdb, pod = (store.registry.by_kind("policy/v1", "PodDisruptionBudget"),
                    store.registry.by_kind("v1", "Pod"))
        assert pdb is not None and pod is not None
        self.pdb_kind, self.pod_kind = pdb, pod
        self._due: float | None = None

    def relevant(self, change: Change) -> bool:
        return change.resource in ("poddisruptionbudgets.policy", "pods", "replicasets.apps",
                                   "deployments.apps", "statefulsets.apps",
                                   "replicationcontrollers")

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        self._due = None
        budgets = self.store.list(self.pdb_kind)
        if not budgets:
            return False
        scopes = self.scopes.current()
        pending = False
        for pdb in budgets:
            meta = pdb["metadata"]
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, meta["uid"], scope_of(scopes, self.pdb_kind.resource, pdb), scopes):
                continue
            try:
                await self.reconcile(pdb, now)
            except StoreError as e:
                log.debug("pdb %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        self.resync = self.default_resync if self._due is None else max(
            0.05, min(self.default_resync, self._due - now))
        return pending

    def _scale_of(self, pod: dict[str, Any]) -> tuple[str, int] | None:
        """(controller uid, replicas) of the workload that owns ``pod``, if any."""
        ns = pod["metadata"].get("namespace") or ""
        for ref in pod["metadata"].get("ownerReferences") or []:
            if not isinstance(ref, dict) or not ref.get("controller"):
                continue
            resource = _CONTROLLERS.get(str(ref.get("kind")))
            if resource is None:
                return None
            owner = self.store.replica.get(resource, ns, str(ref.get("name")))
            if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
                return None
            if ref.get("kind") == "ReplicaSet":
                for up in owner["metadata"].get("ownerReferences") or []:
                    if isinstance(up, dict) and up.get("controller") and \
                            up.get("kind") == "Deployment":
                        d = self.store.replica.get("deployments.apps", ns, str(up.get("name")))
                        if d is not None and d["metadata"].get("uid") == up.get("uid"):
                            owner = d
            return owner["metadata"]["uid"], int((owner.get("spec") or {}).get("replicas", 1))
        return None

    def _expected(self, pdb: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[int, int] | str:
        """(expected pods, desired healthy), or why they cannot be known."""
        spec = pdb.get("spec") or {}
        low, high = spec.get("minAvailable"), spec.get("maxUnavailable")
        if isinstance(low, int) and not isinstance(low, bool):
            return len(pods), low
        scales: dict[str, int] = {}
        for p in pods:
            scale = self._scale_of(p)
            if scale is None:
                return f"found no controllers for pod {p['metadata']['name']!r}"
            scales[scale[0]] = scale[1]
        expected = sum(scales.values())
        # Percentages round up, as the disruption controller's GetScaledValueFromIntOrPercent.
        if high is not None:
            n = scaled(high, expected, -1)
            if n < 0:
                return f"invalid maxUnavailable {high!r}"
            return expected, max(0, expected - n)
        n = scaled(low, expected, -1)
        if n < 0:
            return f"invalid minAvailable {low!r}"
        return expected, n

    async def reconcile(self, pdb: dict[str, Any], now: float) -> None:
        meta = pdb["metadata"]
        spec = pdb.get("spec") or {}
        old = pdb.get("status") or {}
        try:
            selector = LabelSelector.from_api(spec.get("selector") or {})
        except SelectorError:
            selector = None
        pods = [] if selector is None else [
            p for p in self.store.list(self.pod_kind, meta.get("namespace"))
            if selector.matches(p["metadata"].get("labels") or {})]
        disrupted: dict[str, str] = {}
        for name, stamp in (old.get("disruptedPods") or {}).items():
            t = parse_time(stamp)
            pod = next((p for p in pods if p["metadata"]["name"] == name), None)
            if t is None or pod is None or pod["metadata"].get("deletionTimestamp"):
                continue
            if t + DELETION_TIMEOUT <= now:
                continue
            disrupted[name] = stamp
            self._due = t + DELETION_TIMEOUT if self._due is None else min(
                self._due, t + DELETION_TIMEOUT)
        healthy = sum(1 for p in pods if is_healthy(p) and p["metadata"]["name"] not in disrupted)
        expected = self._expected(pdb, pods)
        stamp = now_rfc3339(now)
        status: dict[str, Any] = {"observedGeneration": meta.get("generation", 1)}
        if isinstance(expected, str):
            status |= {"expectedPods": 0, "desiredHealthy": 0, "currentHealthy": healthy,
                       "disruptionsAllowed": 0}
            cond = ("False", "SyncFailed", expected)
        else:
            count, desired = expected
            allowed = max(0, healthy - desired) if count > 0 else 0
            status |= {"expectedPods": count, "desiredHealthy": desired,
                       "currentHealthy": healthy, "disruptionsAllowed": allowed}
            cond = ("True", "SufficientPods", "") if allowed > 0 else (
                "False", "InsufficientPods", "")
        if disrupted:
            status["disruptedPods"] = disrupted
        prev = next((c for c in old.get("conditions") or []
                     if isinstance(c, dict) and c.get("type") == CONDITION), None)
        changed_cond = prev is None or (prev.get("status"), prev.get("reason"),
                                        prev.get("message", "")) != cond
        status["conditions"] = [{
            "type": CONDITION, "status": cond[0], "reason": cond[1], "message": cond[2],
            "observedGeneration": meta.get("generation", 1),
            "lastTransitionTime": stamp if changed_cond else (prev or {}).get(
                "lastTransitionTime", stamp),
        }]
        if status != old:
            new = copy.deepcopy(pdb)
            new["status"] = status
            await self.store.update(self.pdb_kind, new, meta.get("namespace"), meta["name"],
                                    "status")
