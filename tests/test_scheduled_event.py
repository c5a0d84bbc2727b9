"""The scheduler's Scheduled event lists before the node agent's events of the same second."""

from __future__ import annotations

import copy
import time

from shoal.control.events import time_ordered_name
from shoal.control.scheduling import Scheduler
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
EVENT = REG.by_kind("v1", "Event")


async def test_a_pods_scheduled_event_sorts_before_the_events_its_node_agent_records_next(
) -> None:
    replica = Replica(None, "n1")
    store = ObjectStore(replica, REG)
    try:
        await store.create(REG.by_kind("v1", "Namespace"), {"metadata": {"name": "default"}})
        node_kind = REG.by_kind("v1", "Node")
        await store.create(node_kind, {"metadata": {"name": "pi-1"}})
        node = copy.deepcopy(store.get(node_kind, None, "pi-1"))
        alloc = {"cpu": "2", "memory": "4Gi", "pods": "110"}
        node["status"] = {"allocatable": alloc, "capacity": alloc,
                          "conditions": [{"type": "Ready", "status": "True"}]}
        await store.update(node_kind, node, None, "pi-1", "status")
        await store.create(REG.by_kind("v1", "Pod"), {"metadata": {"name": "web"}, "spec": {
            "containers": [{"name": "c", "image": "x"}]}}, "default")
        await Scheduler(store).sync()
        # What the node agent names its first event a moment later (agent._event_name).
        pulled = f"web.{time.time_ns() + 1000:x}"
        (scheduled,) = [e["metadata"]["name"] for e in store.list(EVENT, "default")
                        if e["reason"] == "Scheduled"]
        assert scheduled < pulled
    finally:
        replica.close()


def test_an_event_named_by_time_is_its_nanoseconds_in_hex_and_later_ones_sort_after_it() -> None:
    assert time_ordered_name("web", 1_800_000_000.0) < time_ordered_name("web", 1_800_000_001.0)
    assert time_ordered_name("web", 1.0e9) == f"web.{10**18:x}"
