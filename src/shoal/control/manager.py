"""Starts the controllers of one node."""

from __future__ import annotations

import asyncio

from shoal.authz.scopes import ScopeIndex
from shoal.control.controller import Controller
from shoal.control.crd_establishing import CRDEstablishing
from shoal.control.cronjob import CronJobController  # scheduled work (issue 12)
from shoal.control.daemonset import DaemonSetController  # workload controllers (issue 4)
from shoal.control.deployment import DeploymentController
from shoal.control.disruption import DisruptionController  # budgets (issue 12)
from shoal.control.endpoints import EndpointsController
from shoal.control.garbage_collector import GarbageCollector
from shoal.control.job import JobController
from shoal.control.namespace_lifecycle import NamespaceLifecycle
from shoal.control.node_ipam import DEFAULT_CLUSTER_CIDR, NodeIpam
from shoal.control.node_lifecycle import NodeLifecycle
from shoal.control.ownership import PeerView
from shoal.control.persistent_volumes import (  # stateful workloads (issue 12)
    PersistentVolumeBinder,
    ensure_default_class,
)
from shoal.control.pod_gc import PodGC
from shoal.control.priority_classes import ensure_system_priority_classes  # issue 12
from shoal.control.rbac_bootstrap import RbacBootstrap  # authz: the default RBAC policy
from shoal.control.replicaset import ReplicaSetController
from shoal.control.replication_controller import ReplicationControllerController
from shoal.control.resource_quota import ResourceQuotaController  # quotas (issue 12)
from shoal.control.scheduling import Scheduler
from shoal.control.service_accounts import ServiceAccountsController  # service accounts
from shoal.control.service_ip_repair import ServiceIpRepair
from shoal.control.statefulset import StatefulSetController  # stateful workloads (issue 12)
from shoal.control.storage_protection import StorageProtection  # pvc/pv-protection (W7)
from shoal.mesh.catch_up import CatchUp, until_may_create_defaults
from shoal.store.objects import ObjectStore


def controllers(store: ObjectStore, view: PeerView | None = None,
                pod_eviction_timeout: float = 300.0,
                node_monitor_grace: float = 40.0,
                cluster_cidr: str = DEFAULT_CLUSTER_CIDR,
                ca_cert_pem: bytes | None = None) -> list[Controller]:
    # --- service accounts: needs the cluster CA for kube-root-ca.crt ---
    accounts: list[Controller] = (
        [ServiceAccountsController(store, ca_cert_pem, view)] if ca_cert_pem else [])
    # --- end service accounts ---
    built: list[Controller] = [*accounts,
        GarbageCollector(store), NamespaceLifecycle(store), CRDEstablishing(store),
        DeploymentController(store, view),
        ReplicaSetController(store, view, eviction_timeout=pod_eviction_timeout,
                             grace=node_monitor_grace),
        # -- workload and endpoints controllers (issue 4) --
        DaemonSetController(store, view), JobController(store, view),
        CronJobController(store, view), DisruptionController(store, view),
        ReplicationControllerController(store, view, eviction_timeout=pod_eviction_timeout,
                                        grace=node_monitor_grace),
        EndpointsController(store, view),
        StatefulSetController(store, view),  # stateful workloads (issue 12)
        PersistentVolumeBinder(store, view),  # stateful workloads (issue 12)
        ResourceQuotaController(store, view),  # quotas (issue 12)
        # -- end --
        NodeLifecycle(store, view, grace=node_monitor_grace),
        Scheduler(store, view),
        NodeIpam(store, view, cluster_cidr), ServiceIpRepair(store, view), PodGC(store, view),
    ]
    # One scope index per node: every controller asks which scope an object is in.
    scopes = ScopeIndex(store.replica)
    for c in built:
        c.scopes = scopes
    return built


def start(store: ObjectStore, view: PeerView | None = None,
          pod_eviction_timeout: float = 300.0,
          node_monitor_grace: float = 40.0,
          cluster_cidr: str = DEFAULT_CLUSTER_CIDR,
          ca_cert_pem: bytes | None = None,
          caught_up: CatchUp | None = None) -> list[asyncio.Task[None]]:
    # pvc-protection and pv-protection (part W7): with the node, as its admission hook; the
    # simulator's seeds are calibrated on the writes of the controllers.
    protection: list[Controller] = [StorageProtection(store, view)]
    # --- authz: the default RBAC policy and ClusterRole aggregation. Started with the
    # node, not in controllers(): the simulator's peers authorize nothing, and its seeds are
    # calibrated on the objects they replicate. A joiner waits for its first pull. ---
    policy: list[Controller] = [RbacBootstrap(store)]
    # --- end authz ---
    # The policy and the ServiceAccounts (creates_defaults) wait for a joiner's first pull.
    tasks = [asyncio.create_task(
        (run_when_may_create if c.creates_defaults else run_when_caught_up)(c, caught_up),
        name=c.name) for c in [*controllers(store, view, pod_eviction_timeout,
                                            node_monitor_grace, cluster_cidr, ca_cert_pem),
                               *protection, *policy]]
    # --- stateful workloads: the default StorageClass local-path, once a pull completed (a
    # class an administrator deleted is not brought back); not in the simulator, as the policy
    tasks.append(asyncio.create_task(_default_class(store, caught_up),
                                     name="default-storage-class"))
    # --- end stateful workloads ---
    # --- priorities (issue 12): the built-in system- PriorityClasses, once a pull completed ---
    tasks.append(asyncio.create_task(_system_priority_classes(store, caught_up),
                                     name="system-priority-classes"))
    return tasks


async def _system_priority_classes(store: ObjectStore, caught_up: CatchUp | None) -> None:
    await until_may_create_defaults(caught_up)  # a joiner's create would replace the cluster's
    await ensure_system_priority_classes(store)


async def _default_class(store: ObjectStore, caught_up: CatchUp | None) -> None:
    await until_may_create_defaults(caught_up)  # a joiner's create would replace the cluster's
    await ensure_default_class(store)


# --- caught-up gating (issue 11): no controller acts on a replica that has not caught up
async def run_when_caught_up(controller: Controller, caught_up: CatchUp | None) -> None:
    if caught_up is not None:
        await caught_up.wait()
    await controller.run()


async def run_when_may_create(controller: Controller, caught_up: CatchUp | None) -> None:
    """For a controller that creates defaults its replica lacks (``creates_defaults``): once
    a pull completed (``may_create_defaults``; a first node at once, a joiner cut off at its
    join after ``CREATE_BOUND``), since a joiner's creates would replace the cluster's
    objects."""
    await until_may_create_defaults(caught_up)
    await controller.run()
# --- end caught-up gating ---
