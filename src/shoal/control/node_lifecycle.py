"""Node lifecycle: a node whose Lease is not renewed is unreachable, not dead.

- Its Ready condition turns Unknown and it gets the ``node.kubernetes.io/unreachable``
  NoExecute taint (``not-ready`` when it reports Ready=False itself).
- Its pods are not deleted. After the node's eviction timeout (``shoal server
  --pod-eviction-timeout``, or the node annotation ``shoal.dev/pod-eviction-timeout``)
  they stop counting toward their ReplicaSet (``is_lost``), so replacements start
  elsewhere. When the node comes back the taint goes, its pods count again, and
  the ReplicaSet's trim keeps whichever copies have run longest: reconnecting does
  not restart healthy workloads, and there is no eviction storm.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, preferred_actor
from shoal.control.pod_state import parse_time
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
EVICTION_ANNOTATION = "shoal.dev/pod-eviction-timeout"
LEASE_NAMESPACE = "kube-node-lease"


def parse_seconds(text: str) -> float | None:
    """``300``, ``10s``, ``5m``, ``1h`` (the forms the flag takes)."""
    text = text.strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                return None
    try:
        return float(text)
    except ValueError:
        return None


def eviction_timeout(node: dict[str, Any], default: float) -> float:
    ann = (node.get("metadata") or {}).get("annotations") or {}
    value = ann.get(EVICTION_ANNOTATION)
    parsed = parse_seconds(value) if isinstance(value, str) else None
    return default if parsed is None else parsed


def unreachable_since(node: dict[str, Any]) -> float | None:
    for t in (node.get("spec") or {}).get("taints") or []:
        if isinstance(t, dict) and t.get("key") in (UNREACHABLE, NOT_READY) and \
                t.get("effect") == "NoExecute":
            return parse_time(t.get("timeAdded"))
    return None


def is_lost(node: dict[str, Any] | None, now: float, default_timeout: float) -> bool:
    """Whether pods on this node should be replaced elsewhere (they are not deleted)."""
    if node is None:
        return False
    since = unreachable_since(node)
    return since is not None and now - since >= eviction_timeout(node, default_timeout)


class NodeLifecycle(Controller):
    name = "node-lifecycle"

    def __init__(self, store: ObjectStore, view: PeerView | None = None,
                 grace: float = 40.0, **kw: Any) -> None:
        kw.setdefault("resync", 5.0)
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.grace = grace
        node, lease = store.registry.by_kind("v1", "Node"), store.registry.by_kind(
            "coordination.k8s.io/v1", "Lease")
        assert node is not None and lease is not None
        self.node_kind, self.lease_kind = node, lease

    def relevant(self, change: Change) -> bool:
        return change.resource in ("nodes", "leases.coordination.k8s.io")

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        for node in self.store.list(self.node_kind):
            name = node["metadata"]["name"]
            if name == self.view.name or not self._acts_for(name):
                continue
            lease = self.store.find(self.lease_kind, LEASE_NAMESPACE, name)
            renew = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
            fresh = renew is not None and now - renew < self.grace
            try:
                await self._set(node, reachable=fresh, now=now)
            except StoreError as e:
                log.debug("node %s: %s", name, e)
        return False

    def _acts_for(self, node: str) -> bool:
        """Whether this peer is the preferred actor for ``node`` among the live peers other
        than that node: a node never judges itself, so if it were its own preferred actor
        nobody would clear the taint it got while cut off."""
        live = [p for p in self.view.live() if p != node]
        if self.view.name not in live:
            live.append(self.view.name)
        return preferred_actor(f"node/{node}", live) == self.view.name

    async def _set(self, node: dict[str, Any], reachable: bool, now: float) -> None:
        name = node["metadata"]["name"]
        stamp = now_rfc3339(now)
        taints = [t for t in (node.get("spec") or {}).get("taints") or []
                  if not (isinstance(t, dict) and t.get("key") == UNREACHABLE)]
        had = unreachable_since(node) is not None
        if not reachable:
            old = next((t for t in (node.get("spec") or {}).get("taints") or []
                        if isinstance(t, dict) and t.get("key") == UNREACHABLE), None)
            taints.append(old or {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": stamp})
        if reachable == (not had):
            return
        new = copy.deepcopy(node)
        new.setdefault("spec", {})["taints"] = taints
        if not taints:
            del new["spec"]["taints"]
        node = await self.store.update(self.node_kind, new, None, name)
        if not reachable:
            status = copy.deepcopy(node)
            for c in (status.get("status") or {}).get("conditions") or []:
                if c.get("type") == "Ready":
                    c.update(status="Unknown", reason="NodeStatusUnknown",
                             message="Node stopped renewing its lease.",
                             lastTransitionTime=stamp)
            await self.store.update(self.node_kind, status, None, name, "status")
            log.warning("node %s is unreachable: its lease was last renewed over %.0fs ago",
                        name, self.grace)
        else:
            log.info("node %s is reachable again", name)
