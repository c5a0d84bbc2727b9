"""The ReplicationController controller: the ReplicaSet controller's logic for the older kind.

A ReplicationController (``v1``) is a ReplicaSet whose selector is a plain label map
(``spec.selector: {app: web}``, defaulted from the template's labels). Its pods are
named, counted, trimmed and reported exactly as a ReplicaSet's
(:class:`shoal.control.replicaset.ReplicaSetController`), and owned by the
ReplicationController.
"""

from __future__ import annotations

import copy
from typing import Any

from shoal.control.ownership import PeerView
from shoal.control.pod_state import owner_kind
from shoal.control.replicaset import ReplicaSetController
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore


class ReplicationControllerController(ReplicaSetController):
    name = "replicationcontroller"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, view, **kw)
        rc = store.registry.by_kind("v1", "ReplicationController")
        assert rc is not None
        self.rs_kind = rc
        self._stored: dict[str, dict[str, Any]] = {}

    async def sync(self) -> bool:
        if not self.store.replica.count(self.rs_kind.resource):
            return False  # most clusters have none: skip the ReplicaSet pass's reads
        return await super().sync()

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods":
            return owner_kind(change.obj) == "ReplicationController"
        return change.resource in ("replicationcontrollers", "nodes")

    async def reconcile(self, rs: dict[str, Any], owned: list[dict[str, Any]], now: float) -> bool:
        # The ReplicaSet logic reads a LabelSelector: present the map as its matchLabels.
        selector = (rs.get("spec") or {}).get("selector")
        if not isinstance(selector, dict) or not selector:
            return False
        as_rs = copy.deepcopy(rs)
        as_rs["spec"]["selector"] = {"matchLabels": dict(selector)}
        self._stored[rs["metadata"]["uid"]] = rs
        try:
            return await super().reconcile(as_rs, owned, now)
        finally:
            self._stored.pop(rs["metadata"]["uid"], None)

    async def _write_status(self, rs: dict[str, Any], owned: list[dict[str, Any]],
                            now: float) -> None:
        # Written over the object as stored, so its selector stays a map.
        await super()._write_status(self._stored.get(rs["metadata"]["uid"], rs), owned, now)
