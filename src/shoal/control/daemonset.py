"""The DaemonSet controller: one pod on every eligible node, with names every peer agrees on.

A node is eligible when the DaemonSet's pod, with the tolerations Kubernetes
adds to every daemon pod, passes ``nodeSelector``, required node affinity and
the ``NoSchedule``/``NoExecute`` taints. A pod is pinned to its node as
Kubernetes does, with required node affinity ``matchFields metadata.name In
[node]``, and ``spec.nodeName`` is left to the scheduler, so resource fit, the
``PodScheduled`` condition and the Scheduled event stay the scheduler's, as in
Kubernetes since 1.12.

Pod names are derived from the DaemonSet's uid, the node name, the template
hash and a slot number, so two peers that create the pod of a node while apart
create one object. When a merge leaves two current pods on a node, the one
that has run longest (``pod_state.deletion_rank``) stays.

Updates are tracked without ControllerRevisions: the ``controller-revision-hash``
label is a hash of the template. RollingUpdate replaces old pods within
``maxUnavailable`` (deleting first) or ``maxSurge`` (starting the new pod
first); OnDelete only starts current pods where the old ones were deleted.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Mapping
from typing import Any

from shoal.authz.scopes import CLUSTER
from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.deployment import template_hash
from shoal.control.field_owner import created_by
from shoal.control.node_lifecycle import (
    DISK_PRESSURE,
    MEMORY_PRESSURE,
    NETWORK_UNAVAILABLE,
    NOT_READY,
    PID_PRESSURE,
    UNREACHABLE,
)
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_control import delete_pod
from shoal.control.pod_state import (
    by_controller,
    controller_uid,
    deletion_rank,
    is_active,
    is_available,
    is_ready,
    owner_kind,
)
from shoal.control.replicaset import pod_from_template
from shoal.control.scheduler.plugins.node_affinity import RequiredNodeAffinity
from shoal.control.scheduler.plugins.node_unschedulable import TAINT_NODE_UNSCHEDULABLE
from shoal.control.scheduler.plugins.taint_toleration import (
    NO_EXECUTE,
    NO_SCHEDULE,
    find_untolerated,
    pod_tolerations,
)
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, Forbidden, ObjectStore, StoreError

log = logging.getLogger(__name__)

HASH_LABEL = "controller-revision-hash"
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAX_SLOTS = 64

# The tolerations Kubernetes adds to every daemon pod (``AddOrUpdateDaemonPodTolerations``).
DEFAULT_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": NOT_READY, "operator": "Exists", "effect": NO_EXECUTE},
    {"key": UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE},
    {"key": DISK_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": MEMORY_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": PID_PRESSURE, "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": TAINT_NODE_UNSCHEDULABLE, "operator": "Exists", "effect": NO_SCHEDULE},
)
HOST_NETWORK_TOLERATION = {"key": NETWORK_UNAVAILABLE, "operator": "Exists",
                           "effect": NO_SCHEDULE}
_NODE_NAME_FIELD = "metadata.name"


def daemon_pod_name(ds_name: str, ds_uid: str, node: str, revision: str, slot: int = 0) -> str:
    """The name of the daemon pod on ``node``: the same on every peer."""
    digest = hashlib.blake2b(f"{ds_uid}/{node}/{revision}/{slot}".encode(), digest_size=8).digest()
    n = int.from_bytes(digest, "big")
    suffix = ""
    for _ in range(5):
        n, r = divmod(n, len(ALPHABET))
        suffix += ALPHABET[r]
    return f"{ds_name[:57]}-{suffix}"


def with_default_tolerations(spec: dict[str, Any]) -> None:
    """Add the daemon pod tolerations to a pod spec, in place, without duplicates."""
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    wanted = list(DEFAULT_TOLERATIONS)
    if spec.get("hostNetwork"):
        wanted.append(HOST_NETWORK_TOLERATION)
    for t in wanted:
        if not any(x.get("key") == t["key"] and x.get("effect") == t["effect"]
                   and x.get("operator") == "Exists" for x in tolerations):
            tolerations.append(dict(t))
    spec["tolerations"] = tolerations


def pin_to_node(spec: dict[str, Any], node: str) -> None:
    """Replace the required node affinity with ``matchFields metadata.name In [node]``.

    The node was already checked against the original terms, so, as Kubernetes'
    ``ReplaceDaemonSetPodNodeNameNodeAffinity`` does, they are replaced, not ANDed.
    """
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": _NODE_NAME_FIELD, "operator": "In", "values": [node]}]}]}


def target_node(pod: Mapping[str, Any]) -> str | None:
    """The node a daemon pod is for: ``spec.nodeName``, else its pinning term."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for f in (term or {}).get("matchFields") or []:
            values = f.get("values") or []
            if f.get("key") == _NODE_NAME_FIELD and f.get("operator") == "In" and len(values) == 1:
                return str(values[0])
    return None


def node_should_run(template_spec: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[bool, bool]:
    """(should run, should continue running), as Kubernetes' ``NodeShouldRunDaemonPod``.

    An untolerated ``NoSchedule`` taint keeps new pods off but lets a running one
    stay; an untolerated ``NoExecute`` taint or a selector mismatch removes it.
    """
    info = NodeInfo(node)
    pod = {"spec": template_spec}
    wanted_node = template_spec.get("nodeName")
    if wanted_node and wanted_node != info.name:
        return False, False
    if not RequiredNodeAffinity.of(pod).matches(info):
        return False, False
    tolerations = pod_tolerations(pod)
    if find_untolerated(info.taints, tolerations, (NO_EXECUTE,)) is not None:
        return False, False
    if find_untolerated(info.taints, tolerations, (NO_SCHEDULE,)) is not None:
        return False, True
    return True, True


def scaled(value: Any, total: int, default: int) -> int:
    """maxUnavailable / maxSurge: an int, or a percentage of ``total`` rounded up."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(float(value[:-1]) * total / 100)
        except ValueError:
            return default
    return default


def pod_hash(pod: Mapping[str, Any]) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    value = labels.get(HASH_LABEL)
    return value if isinstance(value, str) else None


class DaemonSetController(Controller):
    name = "daemonset"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        r = store.registry
        ds, pod, node = (r.by_kind("apps/v1", "DaemonSet"), r.by_kind("v1", "Pod"),
                         r.by_kind("v1", "Node"))
        assert ds is not None and pod is not None and node is not None
        self.ds_kind, self.pod_kind, self.node_kind = ds, pod, node

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods":
            return owner_kind(change.obj) == "DaemonSet"
        return change.resource in ("daemonsets.apps", "nodes")

    async def sync(self) -> bool:
        pods_by_owner = by_controller(self.store.list(self.pod_kind))
        nodes = self.store.list(self.node_kind)
        pending = False
        scopes = self.scopes.current()
        for ds in self.store.list(self.ds_kind):
            meta = ds["metadata"]
            scope = scope_of(scopes, self.ds_kind.resource, ds)
            if meta.get("deletionTimestamp") or not should_act(self.view, meta["uid"], scope,
                                                              scopes):
                continue
            # A scope's daemons run on its members only; a node that leaves the scope is
            # treated as gone, so its daemon pod is deleted.
            targets = nodes if scope == CLUSTER else [
                n for n in nodes if scopes.is_member(scope, n["metadata"]["name"])]
            try:
                if await self.reconcile(ds, targets, pods_by_owner.get(meta["uid"], [])):
                    pending = True
            except StoreError as e:
                log.debug("daemonset %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        return pending

    def _template(self, ds: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The pod template with the daemon tolerations, and its hash."""
        template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
        labels = (template.get("metadata") or {}).get("labels")
        if isinstance(labels, dict):
            labels.pop(HASH_LABEL, None)
        h = template_hash(template)
        with_default_tolerations(template.setdefault("spec", {}))
        return template, h

    async def reconcile(self, ds: dict[str, Any], nodes: list[dict[str, Any]],
                        owned: list[dict[str, Any]]) -> bool:
        spec = ds.get("spec") or {}
        try:
            selector = LabelSelector.from_api(spec.get("selector"))
        except SelectorError:
            return False
        owned = [p for p in owned if selector.matches((p.get("metadata") or {}).get("labels"))]
        template, revision = self._template(ds)
        by_node: dict[str, list[dict[str, Any]]] = {}
        for p in owned:
            by_node.setdefault(target_node(p) or "", []).append(p)
        node_names = {n["metadata"]["name"] for n in nodes}
        changed = False
        eligible: list[str] = []
        for node in nodes:
            name = node["metadata"]["name"]
            run, keep = node_should_run(template["spec"], node)
            if run:
                eligible.append(name)
            changed |= await self._node(ds, template, revision, name, by_node.get(name, []),
                                        run, keep)
        # Pods for nodes that no longer exist go too.
        for name, pods in by_node.items():
            if name not in node_names:
                for p in pods:
                    changed |= await self._delete(p)
        if spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate":
            fresh = self._owned(ds, selector)
            changed |= await self._roll(ds, template, revision, eligible, fresh)
        await self._write_status(ds, nodes, template, revision, self._owned(ds, selector))
        return changed

    def _owned(self, ds: dict[str, Any], selector: LabelSelector) -> dict[str, list[dict[str, Any]]]:
        """The DaemonSet's pods by target node, re-read after this pass's writes."""
        uid = ds["metadata"]["uid"]
        out: dict[str, list[dict[str, Any]]] = {}
        for p in self.store.list(self.pod_kind, ds["metadata"].get("namespace")):
            if controller_uid(p) == uid and selector.matches(p["metadata"].get("labels")):
                out.setdefault(target_node(p) or "", []).append(p)
        return out

    async def _node(self, ds: dict[str, Any], template: dict[str, Any], revision: str,
                    node: str, pods: list[dict[str, Any]], run: bool, keep: bool) -> bool:
        """Make one node have zero or one active daemon pod."""
        changed = False
        # Failed pods are replaced (Kubernetes deletes them and starts a new one).
        for p in pods:
            if (p.get("status") or {}).get("phase") == "Failed" and \
                    not p["metadata"].get("deletionTimestamp"):
                changed |= await self._delete(p)
        active = [p for p in pods if is_active(p)]
        if not keep:
            for p in active:
                changed |= await self._delete(p)
            return changed
        if not active and run:
            return await self._create(ds, template, revision, node) or changed
        # Duplicates (a merge after a partition, or a finished surge): keep one per revision,
        # the one that has run longest, and at most one old pod next to a current one.
        for group in (
            [p for p in active if pod_hash(p) == revision],
            [p for p in active if pod_hash(p) != revision],
        ):
            for p in sorted(group, key=deletion_rank)[:-1]:
                changed |= await self._delete(p)
        return changed

    async def _create(self, ds: dict[str, Any], template: dict[str, Any], revision: str,
                      node: str) -> bool:
        meta = ds["metadata"]
        ns = meta.get("namespace", "default")
        for slot in range(MAX_SLOTS):
            name = daemon_pod_name(meta["name"], meta["uid"], node, revision, slot)
            existing = self.store.find(self.pod_kind, ns, name)
            if existing is not None:
                # Still terminating or terminal: the next slot keeps the name unique.
                continue
            owner = {**ds, "spec": {**(ds.get("spec") or {}), "template": template}}
            pod = pod_from_template(owner, self.ds_kind, name)
            pod["metadata"]["labels"][HASH_LABEL] = revision
            pin_to_node(pod["spec"], node)
            try:
                await self.store.create(self.pod_kind, pod, ns,
                                        managed_fields=created_by(self.store, self.pod_kind))
                return True
            except AlreadyExists:
                return False
            except Forbidden as e:  # admission (a quota, a LimitRange): no retry loop
                await events.record(self.store, ds, "Warning", "FailedCreate",
                                    f"Error creating: {e.message}", "daemonset-controller")
                return False
        return False

    async def _delete(self, pod: dict[str, Any]) -> bool:
        return await delete_pod(self.store, self.pod_kind, pod)

    async def _roll(self, ds: dict[str, Any], template: dict[str, Any], revision: str,
                    eligible: list[str], by_node: dict[str, list[dict[str, Any]]]) -> bool:
        """Replace old pods within maxUnavailable, or with maxSurge by starting new ones first."""
        spec = ds.get("spec") or {}
        ru = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        desired = len(eligible)
        surge = scaled(ru.get("maxSurge", 0), desired, 0)
        max_unavailable = scaled(ru.get("maxUnavailable", 1), desired, 1)
        if surge == 0 and max_unavailable == 0:
            max_unavailable = 1
        min_ready = int(spec.get("minReadySeconds", 0) or 0)
        now = self.store.replica.wall.now()
        changed = False
        unavailable = 0
        old_available: list[tuple[str, dict[str, Any]]] = []
        surging = 0
        for node in sorted(eligible):
            active = [p for p in by_node.get(node, []) if is_active(p)]
            new = [p for p in active if pod_hash(p) == revision]
            old = [p for p in active if pod_hash(p) != revision]
            if new and old:
                if any(is_available(p, min_ready, now) for p in new):
                    for p in old:  # the surge pod is up: the old one goes
                        changed |= await self._delete(p)
                else:
                    surging += 1
                continue
            if not any(is_available(p, min_ready, now) for p in active):
                unavailable += 1
                for p in old:  # an old pod that is not available costs nothing to replace
                    changed |= await self._delete(p)
                continue
            if old:
                old_available.append((node, old[0]))
        for node, p in old_available:
            if surge > 0:
                if surging >= surge:
                    break
                changed |= await self._create(ds, template, revision, node)
                surging += 1
            else:
                if unavailable >= max_unavailable:
                    break
                changed |= await self._delete(p)
                unavailable += 1
        return changed

    async def _write_status(self, ds: dict[str, Any], nodes: list[dict[str, Any]],
                            template: dict[str, Any], revision: str,
                            by_node: dict[str, list[dict[str, Any]]]) -> None:
        spec = ds.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds", 0) or 0)
        now = self.store.replica.wall.now()
        desired = current = ready = available = updated = misscheduled = 0
        for node in nodes:
            name = node["metadata"]["name"]
            run, _ = node_should_run(template["spec"], node)
            active = [p for p in by_node.get(name, []) if is_active(p)]
            if run:
                desired += 1
            if not active:
                continue
            if not run:
                misscheduled += 1
                continue
            current += 1
            if any(is_ready(p) for p in active):
                ready += 1
            if any(is_available(p, min_ready, now) for p in active):
                available += 1
            if any(pod_hash(p) == revision for p in active):
                updated += 1
        status: dict[str, Any] = {
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": available,
            "updatedNumberScheduled": updated,
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        if desired - available > 0:
            status["numberUnavailable"] = desired - available
        old = ds.get("status") or {}
        if {k: v for k, v in old.items() if k != "conditions"} == status:
            return
        new = copy.deepcopy(ds)
        new["status"] = {**status, **({"conditions": old["conditions"]}
                                      if "conditions" in old else {})}
        m = ds["metadata"]
        await self.store.update(self.ds_kind, new, m.get("namespace"), m["name"], "status")
