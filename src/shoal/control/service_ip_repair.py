"""Cluster IPs and node ports shared by two Services after a merge are given back.

Each side of a partition allocates from what it sees (``shoal.store.service_ips``),
so two Services created apart can hold the same cluster IP or node port once the
replicas merge. Kubernetes' repair loop only reports such a clash
(``ClusterIPAlreadyAllocated``: "please recreate service"); with no coordinator
clashes are expected, so Shoal resolves them: ``service_ips.repairs`` ranks the
holders (the reserved owner, then the older creationTimestamp, then the smaller
uid), the first keeps the address, and each other one is moved to a new address
with a Warning event saying what moved and who kept it. The preferred actor of the
moving Service writes the move; every peer computes the same plan from the same
replica, so concurrent moves agree or, if their views differed, the next pass
repairs whatever the merge left.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, should_act
from shoal.control.reassign import reassign
from shoal.store import service_ips
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

COMPONENT = "service-ip-repair"
IP_CLASH = "ClusterIPAlreadyAllocated"
PORT_CLASH = "PortAlreadyAllocated"


class ServiceIpRepair(Controller):
    name = "service-ip-repair"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        svc = store.registry.by_kind("v1", "Service")
        assert svc is not None
        self.svc_kind = svc
        self.moves = 0

    def relevant(self, change: Change) -> bool:
        return change.resource == "services" and change.type != "DELETED"

    async def sync(self) -> bool:
        pending = False
        scopes = self.scopes.current()
        for r in service_ips.repairs(self.store.list(self.svc_kind)):
            if not should_act(self.view, f"service/{r.uid}",
                              scopes.scope_of("services", r.namespace), scopes):
                continue
            try:
                await self._move(r)
            except StoreError as e:
                log.debug("service %s/%s not moved: %s", r.namespace, r.name, e)
                pending = True
        return pending

    async def _move(self, r: service_ips.Repair) -> None:
        svc = self.store.find(self.svc_kind, r.namespace, r.name)
        if svc is None or svc["metadata"].get("uid") != r.uid:
            return
        new = copy.deepcopy(svc)
        service_ips.apply(new, r)
        stored = await reassign(self.store, self.svc_kind, new)
        self.moves += 1
        if r.cluster_ip is not None:
            old, ip = r.cluster_ip
            msg = (f"Cluster IP {old} was assigned to this service and to {r.keepers[old]} while "
                   f"the cluster was partitioned; {r.keepers[old]} keeps it, this service "
                   f"moved to {ip}")
            log.warning("service %s/%s: %s", r.namespace, r.name, msg)
            await events.record(self.store, stored, "Warning", IP_CLASH, msg, COMPONENT)
        for old_port, port in sorted(r.node_ports.items()):
            keeper = r.keepers[str(old_port)]
            msg = (f"Port {old_port} was assigned to this service and to {keeper} while the "
                   f"cluster was partitioned; {keeper} keeps it, this service moved to {port}")
            log.warning("service %s/%s: %s", r.namespace, r.name, msg)
            await events.record(self.store, stored, "Warning", PORT_CLASH, msg, COMPONENT)
