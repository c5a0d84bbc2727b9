"""The ReplicaSet controller: keep spec.replicas pods, with names every peer agrees on.

Pod names are derived from the ReplicaSet's uid and a slot number, so two peers
that create "the same" replica while apart create one object, which the merge
keeps once. When there are more active pods than desired, the extras are
trimmed by a deterministic rank (``pod_state.deletion_rank``) that keeps the
pods that have been running longest.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.field_owner import created_by
from shoal.control.node_lifecycle import LEASE_NAMESPACE, lost_at, renewed_within
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_state import (
    by_controller,
    deletion_rank,
    is_active,
    is_available,
    is_ready,
    owner_kind,
)
from shoal.control.trim_gate import TrimGate, hearsay
from shoal.control.wake_timer import WakeTimer
from shoal.model.kinds import Kind
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, Forbidden, ObjectStore, StoreError

log = logging.getLogger(__name__)

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAX_SLOTS_SCANNED = 100_000


def slot_name(owner_name: str, owner_uid: str, slot: int) -> str:
    """The name of the pod in ``slot``: the same on every peer."""
    digest = hashlib.blake2b(f"{owner_uid}/{slot}".encode(), digest_size=8).digest()
    n = int.from_bytes(digest, "big")
    suffix = ""
    for _ in range(5):
        n, r = divmod(n, len(ALPHABET))
        suffix += ALPHABET[r]
    return f"{owner_name[:57]}-{suffix}"


def pod_from_template(owner: dict[str, Any], owner_kind: Kind, name: str) -> dict[str, Any]:
    meta = owner["metadata"]
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    pod_meta: dict[str, Any] = {
        "name": name,
        "namespace": meta.get("namespace", "default"),
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [{
            "apiVersion": owner_kind.api_version, "kind": owner_kind.kind, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
        }],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": template.get("spec") or {}}


class ReplicaSetController(Controller):
    name = "replicaset"

    def __init__(self, store: ObjectStore, view: PeerView | None = None,
                 eviction_timeout: float = 300.0, grace: float = 40.0, settle: float = 2.0,
                 **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.eviction_timeout = eviction_timeout
        self.grace = grace
        """The node monitor grace period: a node whose Lease is younger is reachable, and
        its agent re-asserts its pods' status within it (``TrimGate.status_wait``)."""
        self.gate = TrimGate(settle, status_wait=grace)
        self._timer = WakeTimer(self._wake)
        self._holds: list[float] = []
        r = store.registry
        rs, pod, node = (r.by_kind("apps/v1", "ReplicaSet"), r.by_kind("v1", "Pod"),
                         r.by_kind("v1", "Node"))
        lease = r.by_kind("coordination.k8s.io/v1", "Lease")
        assert rs is not None and pod is not None and node is not None and lease is not None
        self.rs_kind, self.pod_kind, self.node_kind, self.lease_kind = rs, pod, node, lease
        self._lost_nodes: set[str] = set()

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods":
            return owner_kind(change.obj) == "ReplicaSet"
        return change.resource in ("replicasets.apps", "nodes")

    def _counts(self, pod: dict[str, Any]) -> bool:
        """Active, and not on a node lost for longer than its eviction timeout."""
        return is_active(pod) and (pod.get("spec") or {}).get("nodeName") not in self._lost_nodes

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        leases = {lease["metadata"]["name"]: renewed_within(lease, now, self.grace)
                  for lease in self.store.list(self.lease_kind, LEASE_NAMESPACE)}
        self._lost_nodes = set()
        # A node's pods stop counting when its eviction timeout runs out, which no change
        # announces (an unreachable node writes nothing): a pass is scheduled for then.
        # Not while its Lease is fresh here: at a heal the far side's verdicts on this
        # side's nodes merge in before their judges clear them, and every node looks lost
        # for a moment (a trial saw pods made and killed within 2 s at every heal).
        evictions: list[float] = []
        for n in self.store.list(self.node_kind):
            at = lost_at(n, self.eviction_timeout)
            if at is None:
                continue
            if now < at:
                evictions.append(at - now)
            elif leases.get(n["metadata"]["name"]):
                evictions.append(self.grace)  # looked at again should its Lease go stale
            else:
                self._lost_nodes.add(n["metadata"]["name"])
        pods = self.store.list(self.pod_kind)
        pods_by_owner = by_controller(pods)
        pending = False
        self._holds = []
        # A heal or a restart, whose merge may be half-way through: a peer back in the live
        # set, a node whose Lease is fresh again, or pods new to this peer on a node it
        # cannot reach (the other side's, arriving before their node's Lease).
        far = {f"pod/{p['metadata']['uid']}" for p in pods
               if leases.get((p.get("spec") or {}).get("nodeName") or "") is False}
        self.gate.peers({f"peer/{p}" for p in self.view.live()} | far
                        | {f"lease/{n}" for n, fresh in leases.items() if fresh}, now)
        acting: set[str] = set()
        scopes = self.scopes.current()
        for rs in self.store.list(self.rs_kind):
            meta = rs["metadata"]
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, meta["uid"], scope_of(scopes, self.rs_kind.resource, rs), scopes):
                continue
            acting.add(meta["uid"])
            try:
                if await self.reconcile(rs, pods_by_owner.get(meta["uid"], []), now):
                    pending = True
            except StoreError as e:
                log.debug("replicaset %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        self.gate.keep_only(acting)
        # A held-back trim is looked at again when its wait ends, and the count when a
        # node's pods stop counting.
        waits = self._holds + evictions
        self._timer.arm(min(waits) + 0.01 if waits else None)
        return pending

    async def reconcile(self, rs: dict[str, Any], owned: list[dict[str, Any]], now: float) -> bool:
        meta = rs["metadata"]
        ns = meta.get("namespace", "default")
        spec = rs.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        try:
            selector = LabelSelector.from_api(spec.get("selector"))
        except SelectorError:
            return False
        owned = [p for p in owned
                 if selector.matches((p.get("metadata") or {}).get("labels") or {})]
        active = [p for p in owned if self._counts(p)]
        changed = False
        if len(active) < desired:
            taken = {p["metadata"]["name"] for p in self.store.list(self.pod_kind, ns)}
            missing = desired - len(active)
            slot = 0
            while missing > 0 and slot < MAX_SLOTS_SCANNED:
                name = slot_name(meta["name"], meta["uid"], slot)
                slot += 1
                if name in taken:
                    continue
                taken.add(name)  # a later slot whose name collides with it is skipped
                try:
                    await self.store.create(self.pod_kind, pod_from_template(rs, self.rs_kind, name),
                                            ns, managed_fields=created_by(self.store, self.pod_kind))
                    changed = True
                except AlreadyExists:
                    pass
                except Forbidden as e:  # admission (a quota, a LimitRange): no retry loop
                    await events.record(self.store, rs, "Warning", "FailedCreate",
                                        f"Error creating: {e.message}", "replicaset-controller")
                    break
                missing -= 1
        # Pods on nodes this peer cannot reach are never trimmed: deleting one would stop
        # nothing until the heal, and then it may be the copy that ran longest. The trim
        # brings the pods it can reach down to the desired count; the rest wait for the
        # heal, or stop counting once their node is lost.
        reachable = [p for p in active if self._reachable(p, now)]
        surplus = min(len(active), len(reachable)) - desired
        if surplus <= 0:
            self.gate.settled(meta["uid"])
        elif hold := self.gate.hold(meta["uid"], [p["metadata"]["uid"] for p in reachable
                                                  if self._status_unknown(p)], now):
            self._holds.append(hold)
        else:
            for p in sorted(reachable, key=deletion_rank)[:surplus]:
                try:
                    await self.store.delete(self.pod_kind, ns, p["metadata"]["name"],
                                            precondition_uid=p["metadata"]["uid"])
                    changed = True
                except StoreError as e:
                    log.debug("trim of %s failed: %s", p["metadata"]["name"], e)
        await self._write_status(rs, owned, now)
        return changed

    def _node_lease(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        node = (pod.get("spec") or {}).get("nodeName")
        return self.store.find(self.lease_kind, LEASE_NAMESPACE, node) \
            if isinstance(node, str) and node else None

    def _reachable(self, pod: dict[str, Any], now: float) -> bool:
        """Unscheduled, or on a node with no Lease, or whose Lease is younger than the grace
        period by this peer's clock (as ``NodeLifecycle`` judges it)."""
        lease = self._node_lease(pod)
        return lease is None or renewed_within(lease, now, self.grace)

    def _status_unknown(self, pod: dict[str, Any]) -> bool:
        """The pod's status is not its node's word (``trim_gate.hearsay``) and the node has
        an agent renewing its Lease: until that agent re-asserts the pod, its status says
        nothing."""
        return self._node_lease(pod) is not None and hearsay(self.store.replica, pod)

    async def _write_status(self, rs: dict[str, Any], owned: list[dict[str, Any]],
                            now: float) -> None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds", 0) or 0)
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        active = [p for p in owned if self._counts(p)]
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active
                if all(((p["metadata"].get("labels") or {}).get(k) == v)
                       for k, v in template_labels.items())),
            "readyReplicas": sum(1 for p in active if is_ready(p)),
            "availableReplicas": sum(1 for p in active if is_available(p, min_ready, now)),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        old = rs.get("status") or {}
        if all(old.get(k, 0) == v for k, v in status.items()):
            return
        new = copy.deepcopy(rs)
        new["status"] = {**old, **status}
        await self.store.update(self.rs_kind, new, rs["metadata"].get("namespace"),
                                rs["metadata"]["name"], "status")
