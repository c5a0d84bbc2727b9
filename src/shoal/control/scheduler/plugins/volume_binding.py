"""VolumeBinding: a pod using a claim runs only where the claim's volume is.

As kube-scheduler's plugin, for what Shoal's volumes need: a claim bound to a
PersistentVolume with ``nodeAffinity`` (a local-path volume: a directory on one node)
admits only the nodes that affinity matches, so a StatefulSet pod comes back to its data.
An unbound claim of a ``WaitForFirstConsumer`` class admits any node (the claim is bound
where the pod lands); an unbound claim of an ``Immediate`` class, a missing claim or one
being deleted keep the pod pending, with Kubernetes' messages. The claims, volumes and
classes come with the snapshot (``Snapshot.volumes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal.control.scheduler.framework import CycleState
from shoal.control.scheduler.plugins.node_affinity import term_matches
from shoal.control.scheduler.snapshot import NodeInfo
from shoal.control.scheduler.status import Status

NAME = "VolumeBinding"

ERR_REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"

_STATE_KEY = NAME + "/affinities"


def claim_names(pod: Mapping[str, Any]) -> list[str]:
    """The claims a pod's volumes name."""
    out = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName") if isinstance(
            v, Mapping) else None
        if isinstance(claim, str) and claim:
            out.append(claim)
    return out


def _required_terms(pv: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    required = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
    terms = required.get("nodeSelectorTerms")
    return [t for t in terms if isinstance(t, Mapping)] if isinstance(terms, list) else None


class VolumeBinding:
    name = NAME

    def pre_filter(self, state: CycleState, pod: Mapping[str, Any]) -> Status | None:
        claims = claim_names(pod)
        if not claims:
            return Status.skip()
        catalog = state.snapshot.volumes
        ns = str((pod.get("metadata") or {}).get("namespace") or "default")
        affinities: list[list[Mapping[str, Any]]] = []
        for name in claims:
            claim = catalog.claims.get((ns, name))
            if claim is None:
                return Status.unresolvable(f'persistentvolumeclaim "{name}" not found')
            if (claim.get("metadata") or {}).get("deletionTimestamp"):
                return Status.unresolvable(f'persistentvolumeclaim "{name}" is being deleted')
            volume = (claim.get("spec") or {}).get("volumeName")
            if volume:
                pv = catalog.persistent_volumes.get(str(volume))
                if pv is None:
                    return Status.unresolvable(
                        f'persistentvolume "{volume}" not found')
                terms = _required_terms(pv)
                if terms is not None:
                    affinities.append(terms)
                continue
            cls = catalog.storage_classes.get(str((claim.get("spec") or {}).get(
                "storageClassName") or ""))
            if cls is None or cls.get("volumeBindingMode") != "WaitForFirstConsumer":
                return Status.unresolvable(ERR_REASON_UNBOUND_IMMEDIATE)
        state.write(_STATE_KEY, affinities)
        return None

    def filter(self, state: CycleState, pod: Mapping[str, Any], node: NodeInfo) -> Status | None:
        for terms in state.read(_STATE_KEY, list):
            if not any(term_matches(t, node) for t in terms):
                return Status.unresolvable(ERR_REASON_NODE_CONFLICT)
        return None


def new(args: Mapping[str, Any]) -> VolumeBinding:
    return VolumeBinding()
