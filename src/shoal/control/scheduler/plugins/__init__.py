"""The in-tree plugins, the registry that builds them, and the default profile.

The default profile filters and scores in kube-scheduler's order, with its
default score weights (``pkg/scheduler/apis/config/v1/default_plugins.go``):
TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2,
NodeResourcesFit 1. Kubernetes' NodeResourcesBalancedAllocation and
ImageLocality scores are not implemented. VolumeBinding keeps a pod using a claim on
its volume's node. Shoal's own ScopeMembership filters last: a pod of a scope runs only
on the scope's members.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal.control.scheduler.framework import Profile, Registry
from shoal.control.scheduler.plugins import (
    inter_pod_affinity,
    node_affinity,
    node_name,
    node_resources_fit,
    node_unschedulable,
    pod_topology_spread,
    scope_membership,
    taint_toleration,
    volume_binding,
)

__all__ = [
    "DEFAULT_FILTERS",
    "DEFAULT_SCHEDULER_NAME",
    "DEFAULT_SCORE_WEIGHTS",
    "default_profile",
    "default_registry",
]

DEFAULT_SCHEDULER_NAME = "default-scheduler"

DEFAULT_FILTERS: tuple[str, ...] = (
    node_unschedulable.NAME,
    node_name.NAME,
    taint_toleration.NAME,
    node_affinity.NAME,
    node_resources_fit.NAME,
    volume_binding.NAME,
    pod_topology_spread.NAME,
    inter_pod_affinity.NAME,
    scope_membership.NAME,
)

DEFAULT_SCORE_WEIGHTS: tuple[tuple[str, int], ...] = (
    (taint_toleration.NAME, 3),
    (node_affinity.NAME, 2),
    (node_resources_fit.NAME, 1),
    (pod_topology_spread.NAME, 2),
    (inter_pod_affinity.NAME, 2),
)


def default_registry() -> Registry:
    """A registry of every in-tree plugin, by name."""
    return Registry(
        {
            node_unschedulable.NAME: node_unschedulable.new,
            node_name.NAME: node_name.new,
            taint_toleration.NAME: taint_toleration.new,
            node_affinity.NAME: node_affinity.new,
            node_resources_fit.NAME: node_resources_fit.new,
            pod_topology_spread.NAME: pod_topology_spread.new,
            inter_pod_affinity.NAME: inter_pod_affinity.new,
            scope_membership.NAME: scope_membership.new,
            volume_binding.NAME: volume_binding.new,
        }
    )


def default_profile(args: Mapping[str, Mapping[str, Any]] | None = None) -> Profile:
    """kube-scheduler's default profile, with optional per-plugin args (``pluginConfig``)."""
    return Profile.build(
        default_registry(),
        scheduler_name=DEFAULT_SCHEDULER_NAME,
        filters=DEFAULT_FILTERS,
        scores=DEFAULT_SCORE_WEIGHTS,
        args=args,
    )
