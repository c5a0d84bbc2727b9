"""Node lifecycle: a node whose Lease is not renewed is unreachable, not dead.

- Its Ready condition turns Unknown and it gets the ``node.kubernetes.io/unreachable``
  NoExecute and NoSchedule taints. As Kubernetes' TaintNodesByCondition, a reachable
  node's conditions keep NoSchedule taints too (``not-ready`` for Ready=False,
  ``unreachable`` for Unknown, until its agent reports Ready=True; ``disk-pressure``,
  ``memory-pressure``, ``pid-pressure`` and ``network-unavailable`` while those
  conditions are True, as a node whose data dir's disk is full reports DiskPressure):
  pods' default tolerations are for NoExecute only, so without them new pods could bind
  there. A node alone (no other live peer to judge it, as in a single-node cluster)
  keeps its own pressure taints.
- Its pods are not deleted. After the node's eviction timeout (``shoal server
  --pod-eviction-timeout``, or the node annotation ``shoal.dev/pod-eviction-timeout``)
  they stop counting toward their ReplicaSet (``is_lost``), so replacements start
  elsewhere. When the node comes back the taint goes, its pods count again, and
  the ReplicaSet's trim keeps whichever copies have run longest: reconnecting does
  not restart healthy workloads, and there is no eviction storm.
- Its pods are marked not ready at once, as Kubernetes' ``MarkPodsNotReady``: the
  pod's Ready condition turns False (its reason and message are kept) and the pod
  gets a Warning ``NodeNotReady`` event, "Node is not ready". The endpoints
  controller then lists them as not ready, so Services stop routing to a node that
  cannot answer. When the node returns, its agent writes the status it knows
  (the agent re-asserts a status that a merge replaced), and its newer stamp wins.

A node is unreachable when its Lease's renewTime is ``grace`` seconds old by this
peer's clock. (Counting from when a renewal *arrived*, as Kubernetes does, would
take a dead node's last renewal, delivered late by a heal, for a fresh one.) But a
node is never judged before this peer has known it for ``grace`` seconds (as
Kubernetes' node controller starts a node's clock when it first observes it): a
peer that has just started holds a replica that may be stale, and a node that has
just joined registers its Node before its first Lease, which may reach the others
later. A peer that resumes from standing still (frozen, suspended, starved:
``loop_stalls``) missed the renewals of that time and counts again from its resume, as from
a start: every node is known from then. A pass is scheduled for the moment the next Lease
runs out, so a node is judged ``grace`` seconds after its last renewal, not up to a resync
later.

Only peers that hold a node's Lease judge it: a weak peer (``--sync-via super``) holds
no Lease but its own (docs/semantics.md, "Node Leases"), so it judges no node, and a
super-peer holds those of its site's weak nodes and of its region's super-peers
(``mesh.topology.holds_lease``); the rendezvous for a node is over the live peers that
hold its Lease (``ownership.lease_actors``). A weak peer cut off from its super-peers
therefore marks no node unreachable; its own node is judged by its site's super-peers
(and the full peers) from the Lease it renews and sends them.

A node none of whose Lease's holders is live here (nor the node itself) is an orphan here:
across a cut between two sites with no full peer, no peer on this side holds the far
side's weak nodes' Leases. It is judged unreachable ``grace`` seconds after it became one
(or was first seen), by the rendezvous among this side's live non-weak peers (one judge
per side), so that its pods are replaced after the eviction timeout as before Leases were
held near their node. When a holder is live again this side no longer judges it: the
holders clear the taint from its fresh Lease.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

from shoal.authz.scopes import CLUSTER, EMPTY, ScopeMap
from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.ownership import (
    PeerView,
    SinglePeer,
    actors,
    lease_actors,
    lease_grace,
    preferred_actor,
    resumed_at,
    scope_of,
    weak_peers,
)
from shoal.control.pod_state import is_ready, parse_time
from shoal.control.wake_timer import WakeTimer
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
PID_PRESSURE = "node.kubernetes.io/pid-pressure"
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"
CONDITION_TAINTS = {
    "Ready": {"False": NOT_READY, "Unknown": UNREACHABLE},
    "DiskPressure": {"True": DISK_PRESSURE},
    "MemoryPressure": {"True": MEMORY_PRESSURE},
    "PIDPressure": {"True": PID_PRESSURE},
    "NetworkUnavailable": {"True": NETWORK_UNAVAILABLE},
}
"""The NoSchedule taint each condition's status calls for (Kubernetes' nodeConditionToTaintKeyStatusMap)."""
CONDITION_TAINT_KEYS = frozenset(k for m in CONDITION_TAINTS.values() for k in m.values())
EVICTION_ANNOTATION = "shoal.dev/pod-eviction-timeout"
LEASE_NAMESPACE = "kube-node-lease"
NODE_NOT_READY = "NodeNotReady"
NODE_NOT_READY_MESSAGE = "Node is not ready"
COMPONENT = "node-controller"


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


def lost_at(node: dict[str, Any], default_timeout: float) -> float | None:
    """When (wall-clock seconds) this node's pods stop counting: its unreachable taint's
    ``timeAdded`` plus its eviction timeout; None while it has no such taint."""
    since = unreachable_since(node)
    return None if since is None else since + eviction_timeout(node, default_timeout)


def is_lost(node: dict[str, Any] | None, now: float, default_timeout: float) -> bool:
    """Whether pods on this node should be replaced elsewhere (they are not deleted)."""
    at = None if node is None else lost_at(node, default_timeout)
    return at is not None and now >= at


def renewed_within(lease: dict[str, Any] | None, now: float, grace: float,
                   since: float = -math.inf) -> bool:
    """Whether a node's Lease was renewed less than ``lease_grace`` seconds ago by this
    clock, counting from ``since`` if later (when this peer resumed from standing still:
    its replica missed the renewals meanwhile, ``loop_stalls``)."""
    renew = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
    return renew is not None and now - max(renew, since) < lease_grace(lease, grace)


def no_schedule_keys(node: dict[str, Any]) -> set[str]:
    """The NoSchedule taints a reachable node's conditions call for (Kubernetes'
    TaintNodesByCondition: Ready=False is not-ready, Unknown is unreachable, DiskPressure=True
    is disk-pressure, and so on)."""
    keys: set[str] = set()
    for c in (node.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict):
            key = CONDITION_TAINTS.get(str(c.get("type")), {}).get(str(c.get("status")))
            if key is not None:
                keys.add(key)
    return keys


def with_no_schedule_taints(taints: list[Any], keys: set[str]) -> list[Any]:
    """``taints`` holding ``key``:NoSchedule for each of ``keys`` and no other condition
    taint, so that the scheduler binds no new pod there (the pods' default tolerations
    are for NoExecute only); pods already bound stay. Taints of other keys are kept."""
    out = [t for t in taints if not (isinstance(t, dict) and t.get("effect") == "NoSchedule"
                                     and t.get("key") in CONDITION_TAINT_KEYS
                                     and t.get("key") not in keys)]
    for key in sorted(keys):
        if not any(isinstance(t, dict) and t.get("key") == key
                   and t.get("effect") == "NoSchedule" for t in out):
            out.append({"key": key, "effect": "NoSchedule"})
    return out


def with_taints(node: dict[str, Any], taints: list[Any]) -> dict[str, Any] | None:
    """A copy of ``node`` with ``taints`` (none: no ``spec.taints``); None if it has them
    already, in any order."""
    current = (node.get("spec") or {}).get("taints") or []
    if sorted(map(repr, taints)) == sorted(map(repr, current)):
        return None
    new = copy.deepcopy(node)
    new.setdefault("spec", {})["taints"] = taints
    if not taints:
        del new["spec"]["taints"]
    return new


class NodeLifecycle(Controller):
    name = "node-lifecycle"

    def __init__(self, store: ObjectStore, view: PeerView | None = None,
                 grace: float = 40.0, **kw: Any) -> None:
        kw.setdefault("resync", 5.0)
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.grace = grace
        r = store.registry
        node, lease = r.by_kind("v1", "Node"), r.by_kind("coordination.k8s.io/v1", "Lease")
        pod = r.by_kind("v1", "Pod")
        assert node is not None and lease is not None and pod is not None
        self.node_kind, self.lease_kind, self.pod_kind = node, lease, pod
        self.pods_marked = 0
        self._seen: dict[str, float] = {}
        """When this controller first saw each node (a node is judged from then at the
        earliest: the grace a starting peer or a joining node gets)."""
        self._not_ready: set[str] = set()
        """The nodes the last pass judged unreachable (their pods are kept not ready)."""
        self._orphans: dict[str, float] = {}
        """The nodes whose Lease this peer does not hold and none of whose Lease's holders
        (the node included) is live here, and since when (``_orphaned``)."""
        self._lapsed: frozenset[str] = frozenset()
        """The nodes whose Lease the last pass found run out: no judge (a peer across a
        partition stays alive in membership until its suspicion runs its course, up to
        tens of seconds more)."""
        self._timer = WakeTimer(self._wake)

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods":
            # A pod bound to (or turning ready on) a node judged not ready must be marked.
            return change.type != "DELETED" and is_ready(change.obj) and \
                (change.obj.get("spec") or {}).get("nodeName") in self._not_ready
        return change.resource in ("nodes", "leases.coordination.k8s.io")

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        pending = False
        not_ready: set[str] = set()
        wake: list[float] = []
        scopes = self.scopes.current()
        # The scopes whose pods this peer may mark (it is one of their writers).
        mine = [s for s in scopes.names() if scopes.is_writer(s, self.view.name)]
        nodes = self.store.list(self.node_kind)
        names = {n["metadata"]["name"] for n in nodes}
        # Known from its first sight here, and again from this peer's resume after a stall.
        resumed = resumed_at(self.view)
        self._seen = {n: max(self._seen.get(n, now), resumed) for n in names}
        # A weak peer holds no other node's Lease: it judges nobody.
        judging = self.view.name not in weak_peers(self.view)
        # Each node's Lease, and whether it ran out: known for less than grace, no Lease
        # yet (a joining node) or a stale one (our replica after a restart) proves nothing.
        leases: dict[str, tuple[dict[str, Any] | None, float, bool]] = {}
        # Of the others, only the nodes whose Lease this peer holds (a super-peer: its
        # site's and region's): another's is not judged here, nor counted as run out.
        held = {n for n in names - {self.view.name} if self._holds(n)} if judging else set()
        # Of those it does not hold, the orphans: judged from when they became one.
        self._orphans = self._orphaned(names - held - {self.view.name}, now) if judging else {}
        for name, at in self._orphans.items():
            since = max(at, self._seen[name])
            leases[name] = (None, since, now - since < self.grace)
            if now - since < self.grace:
                wake.append(since + self.grace)
        for name in held:
            lease = self.store.find(self.lease_kind, LEASE_NAMESPACE, name)
            renew = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
            since = self._seen[name] if renew is None else max(renew, self._seen[name])
            grace = lease_grace(lease, self.grace)
            leases[name] = (lease, since, now - since < grace)
            if now - since < grace:
                # A pass when it runs out, judged here or not: the node may be the judge of
                # others (``_acts_for`` passes over a judge whose own Lease ran out).
                wake.append(since + grace)
        self._lapsed = frozenset(n for n, (_, _, fresh) in leases.items() if not fresh)
        for node in nodes:
            name = node["metadata"]["name"]
            if name == self.view.name:
                if not actors(self.view, exclude=name):
                    try:
                        await self._own_pressure_taints(node)
                    except StoreError as e:
                        log.debug("node %s: %s", name, e)
                continue
            if not judging:
                continue
            judge = self._acts_for(name)
            if not judge and not any(self._acts_for(name, s, scopes) for s in mine):
                continue
            lease, _, fresh = leases[name]
            if fresh and not renewed_within(lease, now, self.grace):
                continue  # not judged yet, and its pods are left alone
            try:
                if judge:
                    await self._set(node, reachable=fresh, now=now,
                                    grace=lease_grace(lease, self.grace))
            except StoreError as e:
                log.debug("node %s: %s", name, e)
            if not fresh:
                # Judged by the Lease, not the Ready condition: after a heal the node's
                # Ready=True lags its Lease by up to a heartbeat, and marking its pods
                # then would fight the agent re-asserting them.
                not_ready.add(name)
        self._not_ready = not_ready
        if not_ready:
            pending = await self._mark_pods_not_ready(not_ready, now, scopes)
        # The next pass runs just after the next Lease runs out.
        self._timer.arm(min(wake) - now + 0.01 if wake else None)
        return pending

    async def _mark_pods_not_ready(self, nodes: set[str], now: float,
                                   scopes: ScopeMap = EMPTY) -> bool:
        """Kubernetes' MarkPodsNotReady for the pods bound to ``nodes``: a pod of a scope is
        marked by the scope's preferred writer for its node."""
        pending = False
        stamp = now_rfc3339(now)
        for pod in self.store.list(self.pod_kind):
            node = (pod.get("spec") or {}).get("nodeName")
            if node not in nodes or not is_ready(pod):
                continue
            scope = scope_of(scopes, "pods", pod)
            if not self._acts_for(str(node), scope, scopes):
                continue
            new = copy.deepcopy(pod)
            for c in new["status"]["conditions"]:
                if isinstance(c, dict) and c.get("type") == "Ready":
                    c.update(status="False", lastTransitionTime=stamp)
            m = pod["metadata"]
            try:
                stored = await self.store.update(self.pod_kind, new, m.get("namespace"),
                                                 m["name"], "status")
            except StoreError as e:
                log.debug("pod %s/%s not marked not ready: %s", m.get("namespace"), m["name"], e)
                pending = True
                continue
            self.pods_marked += 1
            await events.record(self.store, stored, "Warning", NODE_NOT_READY,
                                NODE_NOT_READY_MESSAGE, COMPONENT)
        return pending

    def _acts_for(self, node: str, scope: str = CLUSTER, scopes: ScopeMap = EMPTY) -> bool:
        """Whether this peer is the preferred actor for ``node`` among the live peers other
        than that node, the weak peers, the peers that do not hold its Lease and the peers
        whose own Lease ran out (for a scope's pods: its live writers other than those): a node
        never judges itself, so if it were its own preferred actor nobody would clear the
        taint it got while cut off."""
        # An orphan (no holder of its Lease live here) by this side's non-weak peers.
        lease = None if node in self._orphans else node
        judges = [p for p in lease_actors(self.view, scope, scopes, exclude=node, lease=lease)
                  if p not in self._lapsed or p == self.view.name]
        return preferred_actor(f"node/{node}", judges) == self.view.name

    def _orphaned(self, nodes: set[str], now: float) -> dict[str, float]:
        """Of ``nodes`` (whose Lease this peer does not hold), those that are not live here
        and none of whose Lease's holders is (the view's ``holds_lease``), each with when
        it was first found so (kept from the last pass)."""
        holds = getattr(self.view, "holds_lease", None)
        if not callable(holds) or not nodes:
            return {}
        live = set(self.view.live())
        out: dict[str, float] = {}
        for node in nodes - live:
            if not any(holds(p, node) for p in live):
                out[node] = self._orphans.get(node, now)
        return out

    def _holds(self, node: str) -> bool:
        """Whether this peer holds ``node``'s Lease (the view's optional ``holds_lease``;
        every one for a view that knows no roles)."""
        holds = getattr(self.view, "holds_lease", None)
        return not callable(holds) or bool(holds(self.view.name, node))

    async def _own_pressure_taints(self, node: dict[str, Any]) -> None:
        """This node's pressure taints (disk-pressure and the like), kept by itself while no
        other live peer may judge it (alone, as a single-node cluster is): its own
        reachability taints are left as they are, for its peers to judge."""
        current = (node.get("spec") or {}).get("taints") or []
        judged = {t.get("key") for t in current if isinstance(t, dict)
                  and t.get("effect") == "NoSchedule" and t.get("key") in (UNREACHABLE, NOT_READY)}
        keys = (no_schedule_keys(node) - {UNREACHABLE, NOT_READY}) | {str(k) for k in judged}
        new = with_taints(node, with_no_schedule_taints(current, keys))
        if new is not None:
            await self.store.update(self.node_kind, new, None, node["metadata"]["name"])

    async def _set(self, node: dict[str, Any], reachable: bool, now: float,
                   grace: float) -> None:
        name = node["metadata"]["name"]
        stamp = now_rfc3339(now)
        current = (node.get("spec") or {}).get("taints") or []
        since = unreachable_since(node)
        had = since is not None
        # Unreachable: its conditions are stale (Kubernetes marks them all Unknown).
        taints = with_no_schedule_taints(
            [t for t in current if not (isinstance(t, dict) and t.get("key") == UNREACHABLE
                                        and t.get("effect") == "NoExecute")],
            {UNREACHABLE} if not reachable else no_schedule_keys(node))
        if not reachable:
            old = next((t for t in current if isinstance(t, dict) and t.get("key") == UNREACHABLE
                        and t.get("effect") == "NoExecute"), None)
            taints.append(old or {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": stamp})
        new = with_taints(node, taints)
        if new is None:
            return
        if reachable == (not had):  # only the NoSchedule taints follow the conditions
            await self.store.update(self.node_kind, new, None, name)
            return
        node = await self.store.update(self.node_kind, new, None, name)
        if not reachable:
            status = copy.deepcopy(node)
            for c in (status.get("status") or {}).get("conditions") or []:
                if c.get("type") == "Ready":
                    c.update(status="Unknown", reason="NodeStatusUnknown",
                             message="Node stopped renewing its lease.",
                             lastTransitionTime=stamp)
            await self.store.update(self.node_kind, status, None, name, "status")
            if name in self._orphans:
                log.warning("node %s is unreachable: no peer that holds its lease has been "
                            "reachable from here for %.0fs", name, grace)
            else:
                log.warning("node %s is unreachable: its lease was last renewed over %.0fs "
                            "ago", name, grace)
        else:
            # Its taint may be a verdict from across a cut that the heal merged in: the time
            # tells an operator which it was.
            log.info("node %s is reachable again%s", name, "" if since is None else
                     f" (judged unreachable since {now_rfc3339(since)}, {now - since:.0f}s ago)")
