"""The ReplicaSet trim after a heal: it keeps the pods that ran longest.

A peer (``judge``) runs the ReplicaSet controller; each node's agent writes its pods'
status in its own replica, and the documents are merged between replicas as the
mesh would, so the CRDT records who wrote what.
"""

from __future__ import annotations

import copy
import itertools

from shoal.control.ownership import preferred_actor
from shoal.control.replicaset import ReplicaSetController
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica

REG = KindRegistry()
NS, POD, RS = (REG.by_kind("v1", "Namespace"), REG.by_kind("v1", "Pod"),
               REG.by_kind("apps/v1", "ReplicaSet"))
LEASE = REG.by_kind("coordination.k8s.io/v1", "Lease")
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def now(self) -> float:
        return self.t


class View:
    """The judge alone at first, so that it acts on the ReplicaSet."""

    def __init__(self) -> None:
        self.name = "judge"
        self.peers = ["judge"]

    def live(self) -> list[str]:
        return self.peers


class Cluster:
    def __init__(self, *nodes: str) -> None:
        self.clock = Clock()
        self.stores = {n: ObjectStore(Replica(None, n, clock=self.clock), REG)
                       for n in ("judge", *nodes)}
        self.judge = self.stores["judge"]
        self.view = View()
        self.rs = ReplicaSetController(self.judge, self.view, grace=40.0)

    def merge(self, src: str, dst: str) -> None:
        """Everything ``src`` holds, merged into ``dst``."""
        to = self.stores[dst].replica
        for res in self.stores[src].replica.resources():
            for (ns, name), entry in self.stores[src].replica.iter_entries(res):
                to.merge(res, ns, name, entry.document().copy())

    async def start(self, replicas: int, nodes: list[str]) -> list[str]:
        """A ReplicaSet whose pods are bound to ``nodes`` in turn; returns their names."""
        for s in self.stores.values():
            await s.create(NS, {"metadata": {"name": "default"}})
        await self.judge.create(RS, {"metadata": {"name": "web"}, "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "default")
        await self.rs.sync()
        names = sorted(p["metadata"]["name"] for p in self.judge.list(POD))
        for name, node in zip(names, nodes, strict=True):
            p = copy.deepcopy(self.judge.get(POD, "default", name))
            p["spec"]["nodeName"] = node
            await self.judge.update(POD, p, "default", name, "binding", check_rv=False)
        for node in sorted(set(nodes)):
            self.merge("judge", node)
            await self.renew(node)
        await self.settle()
        return names

    async def settle(self) -> None:
        """Past the trim's settle after nodes (re)appeared: the tests start in a steady state."""
        await self.rs.sync()
        self.clock.t += 2.0
        for node in self.stores:
            if node != "judge":
                await self.renew(node)

    async def renew(self, node: str, at: float | None = None) -> None:
        lease = {"metadata": {"name": node}, "spec": {
            "holderIdentity": node, "renewTime": now_rfc3339(self.clock.t if at is None else at)}}
        store = self.stores[node]
        old = store.find(LEASE, "kube-node-lease", node)
        if old is None:
            if store.find(NS, None, "kube-node-lease") is None:
                await store.create(NS, {"metadata": {"name": "kube-node-lease"}})
            await store.create(LEASE, lease, "kube-node-lease")
        else:
            await store.update(LEASE, {**old, "spec": lease["spec"]}, "kube-node-lease", node)
        self.merge(node, "judge")

    async def report(self, node: str, name: str, ready_since: float) -> None:
        """The node's agent writes the pod Running and Ready since ``ready_since``."""
        self.merge("judge", node)
        store = self.stores[node]
        p = copy.deepcopy(store.get(POD, "default", name))
        since = now_rfc3339(ready_since)
        p["status"] = {"phase": "Running", "startTime": since, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": since}]}
        await store.update(POD, p, "default", name, "status", check_rv=False)
        self.merge(node, "judge")

    async def mark_not_ready(self, name: str) -> None:
        """What a peer's node lifecycle writes while the pod's node is unreachable."""
        p = copy.deepcopy(self.judge.get(POD, "default", name))
        p["status"]["conditions"][0].update(status="False",
                                            lastTransitionTime=now_rfc3339(self.clock.t))
        await self.judge.update(POD, p, "default", name, "status", check_rv=False)

    async def scale(self, replicas: int) -> None:
        rs = copy.deepcopy(self.judge.get(RS, "default", "web"))
        rs["spec"]["replicas"] = replicas
        await self.judge.update(RS, rs, "default", "web")

    def running(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.judge.list(POD)
                      if not p["metadata"].get("deletionTimestamp"))


def on(c: Cluster, node: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in c.judge.list(POD)
                  if p["spec"].get("nodeName") == node)


async def test_a_pod_a_peer_marked_not_ready_is_kept_over_a_younger_one_once_its_agent_speaks(
) -> None:
    c = Cluster("edge-a", "edge-b")
    original, replacement = await c.start(2, ["edge-a", "edge-b"])
    await c.report("edge-a", original, NOW - 1000)
    await c.report("edge-b", replacement, NOW - 100)
    await c.mark_not_ready(original)  # written while edge-a was cut off
    await c.scale(1)
    await c.rs.sync()
    assert c.running() == [original, replacement], "the marked pod's status is hearsay: wait"
    assert c.rs._holds, "the trim is held, and looked at again later"
    await c.report("edge-a", original, NOW - 1000)  # the agent re-asserts after the merge
    await c.rs.sync()
    assert c.running() == [original]


async def test_a_mark_stands_when_the_agent_stays_silent_for_the_grace_period() -> None:
    c = Cluster("edge-a", "edge-b")
    original, replacement = await c.start(2, ["edge-a", "edge-b"])
    await c.report("edge-a", original, NOW - 1000)
    await c.report("edge-b", replacement, NOW - 100)
    await c.mark_not_ready(original)
    await c.scale(1)
    await c.rs.sync()
    assert c.running() == [original, replacement]
    c.clock.t += 41.0
    await c.renew("edge-a")  # renewing, but never re-asserting the pod
    await c.renew("edge-b")
    await c.rs.sync()
    assert c.running() == [replacement], "not ready, as far as anyone can tell"


async def test_pods_on_a_node_whose_lease_ran_out_are_never_trimmed() -> None:
    c = Cluster("edge-a", "edge-b")
    names = await c.start(3, ["edge-a", "edge-a", "edge-b"])
    for name, node in zip(names, ["edge-a", "edge-a", "edge-b"], strict=True):
        await c.report(node, name, NOW - 500)
    c.clock.t += 60.0  # edge-a is cut off: its Lease is 60 s old
    await c.renew("edge-b")
    await c.rs.sync()
    c.clock.t += 2.0  # long after the cut
    await c.renew("edge-b")
    await c.scale(1)
    await c.rs.sync()
    assert c.running() == sorted(names), "edge-b keeps its one pod; edge-a's cannot be reached"
    await c.renew("edge-a")  # the heal
    await c.rs.sync()
    assert len(c.running()) == 3, "edge-a is back: the merge may be half-way, settle first"
    await c.settle()
    await c.rs.sync()
    assert len(c.running()) == 1


async def test_the_trim_waits_two_seconds_after_a_peer_comes_back() -> None:
    c = Cluster("edge-a")
    names = await c.start(2, ["edge-a", "edge-a"])
    for name in names:
        await c.report("edge-a", name, NOW - 500)
    uid = c.judge.get(RS, "default", "web")["metadata"]["uid"]
    # A peer returns (the merge may be half-way through); one that leaves the judge acting.
    # The uid is random, so search without a bound: a hundred names all outrank the judge
    # about once in 101 runs (CI failed on it once).
    c.view.peers.append(next(p for p in (f"edge-{i}" for i in itertools.count())
                             if preferred_actor(uid, ["judge", p]) == "judge"))
    await c.scale(1)
    await c.rs.sync()
    assert c.running() == names
    c.clock.t += 2.0
    await c.renew("edge-a")
    await c.rs.sync()
    assert len(c.running()) == 1


