"""A writer removed from a Scope: what it wrote while it was one still replicates, relayed
by members that are not writers; what it writes afterwards, or what anyone forges in its
name after its removal, does not."""

from __future__ import annotations

import asyncio
from typing import Any

from shoal.authz.scopes import FORMER_WRITER_PREFIX, SCOPES, RecordFormerWriters, ScopeIndex
from shoal.crdt.document import Document
from shoal.mesh.replication_policy import ReplicationPolicy
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

NS = "team-a"


def scope(members: list[str], writers: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"namespaces": [NS], "members": members}
    if writers is not None:
        spec["writers"] = writers
    return {"apiVersion": "shoal.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "t"}, "spec": spec}


class Members:
    name = "n0"
    version = 0
    members: dict[str, Any] = {}

    def live(self) -> list[Any]:
        return []


def store_on(name: str) -> tuple[Replica, ObjectStore]:
    replica = Replica(None, name)
    store = ObjectStore(replica, KindRegistry())
    store.update_admission.append(RecordFormerWriters(replica, replica.hlc.now))
    return replica, store


def test_an_update_that_removes_writers_records_until_when_they_wrote() -> None:
    async def main() -> None:
        replica, store = store_on("n0")
        kind = store.registry.by_kind("shoal.dev/v1alpha1", "Scope")
        assert kind is not None
        await store.create(kind, scope(["n0", "n1", "n2"], ["n0", "n1"]))
        before = replica.hlc.now()
        # n1 leaves the writers; n2 (never a writer) leaves the members: only n1 is recorded.
        await store.update(kind, scope(["n0", "n1"], ["n0"]), "", "t")
        stored = store.get(kind, "", "t")
        annotations = stored["metadata"]["annotations"]
        assert set(annotations) == {FORMER_WRITER_PREFIX + "n1"}
        until = int(annotations[FORMER_WRITER_PREFIX + "n1"])
        assert before < until <= replica.hlc.last
        # A body without the annotations (a PUT of the spec alone) keeps the record, and a
        # member removed while writers defaults to every member is recorded too.
        await store.update(kind, scope(["n0", "n3"]), "", "t")
        await store.update(kind, scope(["n0"]), "", "t")
        annotations = store.get(kind, "", "t")["metadata"]["annotations"]
        assert int(annotations[FORMER_WRITER_PREFIX + "n1"]) == until
        assert int(annotations[FORMER_WRITER_PREFIX + "n3"]) > until
        replica.close()

    asyncio.run(main())


def test_a_non_writer_may_relay_what_a_removed_writer_wrote_while_it_was_one() -> None:
    async def main() -> None:
        r = Replica(None, "n0")
        obj = scope(["n0", "n1", "n2"], ["n0"])  # n1 stays a member, no longer a writer
        obj["metadata"]["annotations"] = {FORMER_WRITER_PREFIX + "n1": str(1000)}
        _, fut = r.put(SCOPES, "", "t", obj, lambda _: None)
        await fut
        policy = ReplicationPolicy("n0", ScopeIndex(r), Members(), 8)

        def secret(stamp: int, writer: str) -> Document:
            return Document.create({"metadata": {"name": "s"}, "data": {"k": "dg=="}},
                                   stamp, writer)

        def judge(doc: Document, sender: str) -> str | None:
            refusal = policy.accept("secrets", NS, "s", doc, lambda: (None, None), "t", sender)
            return None if refusal is None else refusal.reason

        assert judge(secret(900, "n1"), "n2") is None  # written while n1 was a writer
        assert judge(secret(1000, "n1"), "n2") is None
        late = judge(secret(1001, "n1"), "n2")  # after its removal: a forgery, or revoked
        assert late is not None and "relayed a change by n1" in late
        never = judge(secret(900, "n3"), "n2")  # n3 was never a writer
        assert never is not None and "relayed a change by n3" in never
        current = judge(secret(900, "n0"), "n2")  # a writer's change: from a writer only
        assert current is not None and "relayed a change by n0" in current
        assert judge(secret(900, "n1"), "n1") is None  # its own, sent before it learnt
        own_late = judge(secret(1001, "n1"), "n1")
        assert own_late is not None and "may not write" in own_late
        r.close()

    asyncio.run(main())


def test_a_writer_removed_while_cut_off_hands_off_what_only_it_wrote() -> None:
    from shoal.sim.loop import run as virtual_run
    from tests.test_mesh_scopes import Mesh, has, until

    async def main() -> None:
        m = Mesh(3, 5)
        await m.start()
        spec = scope(["n0", "n1", "n2"], ["n0", "n1"])
        await m.put("n0", SCOPES, "", "t", spec)
        await until(lambda: all(has(m, n, SCOPES, "t", "") for n in m.names), 30)
        m.network.partition([["n0:7443", "n2:7443"], ["n1:7443"]])
        await m.put("n1", "configmaps", NS, "only-n1", {"metadata": {"name": "only-n1"},
                                                        "data": {"v": "written-by-n1"}})
        await asyncio.sleep(5)
        # On the other side, an operator removes n1 (the API's update hook records it).
        removed = scope(["n0", "n2"], ["n0"])
        old = m.replicas["n0"].get(SCOPES, "", "t")
        assert old is not None
        RecordFormerWriters(m.replicas["n0"], m.replicas["n0"].hlc.now)(SCOPES, old, removed)
        await m.put("n0", SCOPES, "", "t", removed)
        m.network.heal()
        # n1 learns it left the scope and drops it, but hands its write to the members.
        await until(lambda: not has(m, "n1", "configmaps", "only-n1"), 60)
        await until(lambda: has(m, "n0", "configmaps", "only-n1")
                    and has(m, "n2", "configmaps", "only-n1"), 60)
        assert not any(key[1] == NS for key, _ in m.replicas["n1"].all_entries())
        await m.stop()

    virtual_run(main())
