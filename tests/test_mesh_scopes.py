"""Scopes in the mesh: each peer holds only what it may see, and accepts only what the
scope's writers (or a node, for its own objects) wrote."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.authz.scopes import SCOPES
from shoal.mesh import config as mesh_config
from shoal.mesh.config import MeshConfig
from shoal.mesh.messages import Pull, PullReply, Push, ScopeCursor, decode
from shoal.mesh.peer import MeshPeer
from shoal.sim.loop import VirtualEventLoop, VirtualWallClock
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import SimNetwork
from shoal.store.change_feed import Change
from shoal.store.persistence import MemoryPersistence, Persistence
from shoal.store.replica import Replica

CFG = mesh_config.sim()
NS = "team-a"


def kf(_: tuple[str, ...]) -> None:
    return None


def scope(name: str, members: list[str], writers: list[str] | None = None,
          namespaces: tuple[str, ...] = (NS,)) -> dict[str, Any]:
    spec: dict[str, Any] = {"namespaces": list(namespaces), "members": members}
    if writers is not None:
        spec["writers"] = writers
    return {"apiVersion": "shoal.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": name}, "spec": spec}


class Mesh:
    """A few real peers on the simulated network, their replicas in memory or on disk."""

    def __init__(self, n: int, seed: int, cfg: MeshConfig = CFG,
                 data: Path | None = None) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        self.cfg = cfg
        self.seed = seed
        self.network = SimNetwork(random.Random(f"{seed}:net"))
        self.names = [f"n{i}" for i in range(n)]
        self.data = data
        self.replicas = {
            name: Replica(data / name if data is not None else None, name,
                          clock=VirtualWallClock(loop, 0.0))
            for name in self.names
        }
        self.peers: dict[str, MeshPeer] = {}
        self.sent: list[tuple[str, str, bytes]] = []
        transmit = self.network.transmit

        def record(src: str, dst: str, payload: bytes, reply: Any, is_reply: bool = False) -> None:
            self.sent.append((src.split(":")[0], dst.split(":")[0], payload))
            transmit(src, dst, payload, reply, is_reply)

        self.network.transmit = record  # type: ignore[method-assign]

    async def start(self) -> None:
        everyone = [(n, f"{n}:7443") for n in self.names]
        for name in self.names:
            await self.up(name)
            self.peers[name].membership.add_known(everyone)

    async def up(self, name: str) -> None:
        peer = MeshPeer(name, self.network.transport(f"{name}:7443"), self.replicas[name],
                        self.cfg, random.Random(f"{self.seed}:{name}"))
        self.peers[name] = peer
        await peer.start()

    async def stop(self) -> None:
        for p in self.peers.values():
            await p.stop()
        for r in self.replicas.values():
            r.close()

    async def put(self, node: str, resource: str, ns: str, name: str,
                  value: dict[str, Any] | None) -> None:
        _, fut = self.replicas[node].put(resource, ns, name, value, kf)
        await fut

    def received_by(self, node: str, needle: bytes) -> list[str]:
        """Who sent ``node`` a message containing ``needle``."""
        return [src for src, dst, payload in self.sent if dst == node and needle in payload]

    def rows(self, node: str) -> bytes:
        """Everything the node's persistence holds (a disk's contents, in memory)."""
        p = self.replicas[node].persistence
        assert isinstance(p, MemoryPersistence)
        return b"".join(r.doc + (r.value or b"") + r.name.encode() for r in p.rows.values())


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.2) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not cond():
        assert loop.time() - start < timeout, "timed out"
        await asyncio.sleep(step)
    return loop.time() - start


def has(m: Mesh, node: str, resource: str, name: str, ns: str = NS) -> bool:
    return m.replicas[node].get(resource, ns, name) is not None


def disk_bytes(data: Path, node: str) -> bytes:
    return b"".join(p.read_bytes() for p in (data / node).iterdir() if p.name.startswith("state"))


def test_a_write_in_a_scope_reaches_every_member_and_no_non_member_nor_its_disk(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        m = Mesh(4, 1, data=tmp_path)
        await m.start()
        # The Scope itself is a cluster-scoped object, written on a non-member.
        await m.put("n3", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n1"]))
        await until(lambda: all(has(m, n, SCOPES, "tenant-a", "") for n in m.names), 30)
        await m.put("n0", "configmaps", NS, "plan-9", {"metadata": {"name": "plan-9"},
                                                       "data": {"k": "orchid-value-0x51"}})
        await m.put("n0", "secrets", NS, "vault-key", {"metadata": {"name": "vault-key"},
                                                       "data": {"k": "c2VjcmV0LXh5eg=="}})
        await m.put("n1", "configmaps", "default", "public", {"metadata": {"name": "public"}})
        await until(lambda: has(m, "n1", "secrets", "vault-key"), 10)
        await asyncio.sleep(10 * CFG.pull_interval)  # many pull rounds among everyone
        assert has(m, "n1", "configmaps", "plan-9")
        for outsider in ("n2", "n3"):
            assert not has(m, outsider, "configmaps", "plan-9")
            assert not has(m, outsider, "secrets", "vault-key")
            assert has(m, outsider, "configmaps", "public", "default")  # cluster scope flows
            for needle in (b"plan-9", b"orchid-value-0x51", b"vault-key", b"c2VjcmV0LXh5eg=="):
                assert m.received_by(outsider, needle) == []  # not by push, pull or relay
            assert "tenant-a" not in m.peers[outsider].anti_entropy.coverage.scopes
        # Coverage rows of the scope travel only between members.
        for _, dst, payload in m.sent:
            msg = decode(payload)
            if isinstance(msg, PullReply):
                assert all(p.scope != "tenant-a" or dst in ("n0", "n1") for p in msg.scopes)
            if isinstance(msg, Push) and msg.scope == "tenant-a":
                assert dst in ("n0", "n1")
        status = m.peers["n0"].anti_entropy.scope_status()
        assert status["tenant-a"]["members"] == ["n0", "n1"]
        assert status["tenant-a"]["documents"] == 2
        assert "n1" in status["tenant-a"]["partners"]
        assert "tenant-a" not in m.peers["n2"].anti_entropy.scope_status()
        await m.stop()
        for outsider in ("n2", "n3"):
            on_disk = disk_bytes(tmp_path, outsider)
            assert b"public" in on_disk  # the file is readable as it is
            for needle in (b"plan-9", b"orchid-value-0x51", b"vault-key"):
                assert needle not in on_disk
        assert b"orchid-value-0x51" in disk_bytes(tmp_path, "n1")

    virtual_run(main())


def test_a_member_that_is_not_a_writer_cannot_change_a_secret_but_its_pod_status_flows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        m = Mesh(4, 2)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a",
                    scope("tenant-a", ["n0", "n1", "n2"], writers=["n0", "n1"]))
        await until(lambda: all(has(m, n, SCOPES, "tenant-a", "") for n in m.names), 30)
        await m.put("n0", "secrets", NS, "db", {"metadata": {"name": "db"},
                                                "data": {"password": "b3JpZ2luYWw="}})
        await m.put("n0", "pods", NS, "web", {"metadata": {"name": "web"},
                                              "spec": {"nodeName": "n2"}, "status": {}})
        await until(lambda: all(has(m, n, "pods", "web") for n in ("n1", "n2")), 10)
        await until(lambda: has(m, "n2", "secrets", "db"), 10)
        # n2 bypasses its API (which would refuse) and writes the Secret in its replica.
        forged = {"metadata": {"name": "db"}, "data": {"password": "cHduZWQ="}}
        with caplog.at_level(logging.WARNING, logger="shoal.mesh"):
            await m.put("n2", "secrets", NS, "db", forged)
            await asyncio.sleep(8 * CFG.pull_interval)
        for n in ("n0", "n1"):
            got = m.replicas[n].get("secrets", NS, "db")
            assert got is not None and got["data"]["password"] == "b3JpZ2luYWw="
            assert m.peers[n].anti_entropy.docs_refused >= 1
        assert m.peers["n2"].anti_entropy.refusals_received >= 1
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert any("n2 is not a writer of scope 'tenant-a'" in msg for msg in refused)
        assert any("refused a pushed document" in msg for msg in refused)  # n2 was told
        # n2's own pod status is what the Node authorizer lets a node write: accepted.
        web = m.replicas["n2"].get("pods", NS, "web")
        assert web is not None
        await m.put("n2", "pods", NS, "web", {**web, "status": {"phase": "Running"}})
        await until(lambda: all((m.replicas[n].get("pods", NS, "web") or {}).get("status")
                                == {"phase": "Running"} for n in ("n0", "n1")), 10)
        await m.stop()

    virtual_run(main())


def test_a_peer_added_to_a_scope_gets_its_state_and_one_removed_drops_it_from_disk(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        m = Mesh(4, 3, data=tmp_path)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n1"]))
        await until(lambda: all(has(m, n, SCOPES, "tenant-a", "") for n in m.names), 30)
        for i in range(5):
            await m.put("n0", "configmaps", NS, f"cfg-{i}", {"metadata": {"name": f"cfg-{i}"},
                                                            "data": {"v": f"marigold-{i}"}})
        await until(lambda: all(has(m, "n1", "configmaps", f"cfg-{i}") for i in range(5)), 10)
        assert not has(m, "n2", "configmaps", "cfg-0")
        watch = m.replicas["n1"].subscribe(lambda c: c.namespace == NS)
        # n2 joins the scope and n1 leaves it, in one change of the Scope.
        await m.put("n3", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n2"]))
        await until(lambda: all(has(m, "n2", "configmaps", f"cfg-{i}") for i in range(5)), 30)
        await until(lambda: not any(has(m, "n1", "configmaps", f"cfg-{i}") for i in range(5)),
                    30)
        deleted: list[Change] = []

        def drain() -> bool:
            while not watch.queue.empty():
                c = watch.queue.get_nowait()
                if c is not None and c.type == "DELETED":
                    deleted.append(c)
            return len(deleted) >= 5

        await until(drain, 3600)  # once durable: a real thread rewrites the file meanwhile
        assert sorted(c.name for c in deleted) == [f"cfg-{i}" for i in range(5)]
        assert m.peers["n1"].anti_entropy.docs_forgotten == 5
        # No more updates reach n1.
        await m.put("n0", "configmaps", NS, "cfg-late", {"metadata": {"name": "cfg-late"},
                                                         "data": {"v": "marigold-late"}})
        await until(lambda: has(m, "n2", "configmaps", "cfg-late"), 10)
        await asyncio.sleep(8 * CFG.pull_interval)
        assert not has(m, "n1", "configmaps", "cfg-late")
        await m.stop()
        persisted = Persistence(tmp_path / "n1" / "state.db")
        assert not [r for r in persisted.load() if r.namespace == NS]
        persisted.close()
        on_disk = disk_bytes(tmp_path, "n1")
        for needle in (b"marigold", b"cfg-0", b"cfg-4"):
            assert needle not in on_disk
        assert b"marigold-0" in disk_bytes(tmp_path, "n2")

    virtual_run(main())


GC = dataclasses.replace(CFG, gc_interval=1.0, gc_min_age=5.0, coverage_publish_interval=2.0)


def test_a_scopes_tombstones_go_once_every_member_covers_them_and_not_before() -> None:
    async def main() -> None:
        m = Mesh(4, 4, GC)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n1", "n2"]))
        await until(lambda: all(has(m, n, SCOPES, "tenant-a", "") for n in m.names), 30)
        await m.put("n0", "configmaps", NS, "gone", {"metadata": {"name": "gone"}})
        await until(lambda: all(has(m, n, "configmaps", "gone") for n in ("n1", "n2")), 10)
        # n2, a member, is cut off: nobody may forget the deletion it has not seen.
        for other in ("n0", "n1", "n3"):
            m.network.clog("n2:7443", f"{other}:7443")
        await m.put("n1", "configmaps", NS, "gone", None)
        await asyncio.sleep(40)

        def tombstones(node: str) -> int:
            return sum(1 for key, _ in m.replicas[node].tombstones() if key[1] == NS)

        assert tombstones("n0") == 1 and tombstones("n1") == 1
        assert has(m, "n2", "configmaps", "gone")
        m.network.heal()
        await until(lambda: not has(m, "n2", "configmaps", "gone"), 60)
        # n3 is no member and never sees the scope: the members collect without it.
        await until(lambda: sum(tombstones(n) for n in ("n0", "n1", "n2")) == 0, 120)
        assert all(("configmaps", NS, "gone") in m.replicas[n].fences for n in ("n0", "n1", "n2"))
        assert not m.replicas["n3"].fences
        assert m.received_by("n3", b"gone") == []
        await m.stop()

    virtual_run(main())


def test_a_namespace_moved_into_a_held_scope_is_pulled_whole_by_its_new_members() -> None:
    async def main() -> None:
        m = Mesh(3, 5)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n1"]))
        await m.put("n0", SCOPES, "", "tenant-b", scope("tenant-b", ["n0"], namespaces=("team-b",)))
        await until(lambda: all(has(m, n, SCOPES, "tenant-b", "") for n in m.names), 30)
        await m.put("n0", "configmaps", "team-b", "old-b", {"metadata": {"name": "old-b"}})
        await m.put("n0", "configmaps", NS, "a-1", {"metadata": {"name": "a-1"}})
        await until(lambda: has(m, "n1", "configmaps", "a-1"), 10)
        await asyncio.sleep(5 * CFG.pull_interval)  # n1's cursor for n0 is past old-b now
        assert not has(m, "n1", "configmaps", "old-b", "team-b")
        await m.put("n0", SCOPES, "", "tenant-b", scope("tenant-b", ["n0"], namespaces=()))
        await m.put("n0", SCOPES, "", "tenant-a",
                    scope("tenant-a", ["n0", "n1"], namespaces=(NS, "team-b")))
        await until(lambda: has(m, "n1", "configmaps", "old-b", "team-b"), 30)
        assert not has(m, "n2", "configmaps", "old-b", "team-b")
        await m.stop()

    virtual_run(main())


def test_a_local_write_in_a_scope_this_peer_does_not_hold_is_dropped_and_never_sent() -> None:
    async def main() -> None:
        m = Mesh(3, 6)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n1"]))
        await until(lambda: all(has(m, n, SCOPES, "tenant-a", "") for n in m.names), 30)
        await m.put("n2", "configmaps", NS, "stray", {"metadata": {"name": "stray"}})
        await until(lambda: not has(m, "n2", "configmaps", "stray"), 10)
        await asyncio.sleep(5 * CFG.pull_interval)
        assert not has(m, "n0", "configmaps", "stray") and not has(m, "n1", "configmaps", "stray")
        assert m.peers["n2"].anti_entropy.docs_forgotten == 1
        await m.stop()

    virtual_run(main())


def test_a_pull_for_a_scope_the_puller_is_not_a_member_of_is_refused_in_the_reply() -> None:
    async def main() -> None:
        m = Mesh(3, 7)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n1"]))
        await m.put("n0", "configmaps", NS, "x", {"metadata": {"name": "x"}})
        ae = m.peers["n0"].anti_entropy
        ask = Pull(200, (ScopeCursor("", 0), ScopeCursor("tenant-a", 0)))
        outsider = ae.serve_pull(ask, "n2")
        assert [p.scope for p in outsider.scopes] == [""]
        assert outsider.refused == (("tenant-a", "n2 is not a member"),)
        assert all(d.namespace != NS for p in outsider.scopes for d in p.docs)
        member = ae.serve_pull(ask, "n1")
        part = member.part("tenant-a")
        assert part is not None and [d.name for d in part.docs] == ["x"]
        await m.stop()

    virtual_run(main())


def test_the_writer_rule_admits_a_nodes_own_objects_and_nothing_else() -> None:
    from shoal.authz.scopes import ScopeIndex
    from shoal.crdt.document import Document
    from shoal.mesh.replication_policy import ReplicationPolicy

    class Members:
        name = "n0"
        version = 0
        members: dict[str, Any] = {}

        def live(self) -> list[Any]:
            return []

    async def main() -> None:
        r = Replica(None, "n0")
        _, fut = r.put(SCOPES, "", "t", scope("t", ["n0", "n1", "n2"], writers=["n0"]), kf)
        await fut
        policy = ReplicationPolicy("n0", ScopeIndex(r), Members(), 8)
        pod = Document.create({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}}, 10, "n0")

        def status_by(node: str) -> Document:
            d = pod.copy()
            d.write({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"},
                     "status": {"phase": "Running"}}, 20, node)
            return d

        def held() -> tuple[Document, dict[str, Any] | None]:
            return pod, pod.value()

        def judge(doc: Document, sender: str, resource: str = "pods", ns: str = NS,
                  name: str = "p") -> str | None:
            refusal = policy.accept(resource, ns, name, doc, held, "t", sender)
            return None if refusal is None else refusal.reason

        assert judge(status_by("n1"), "n1") is None  # its own pod's status
        assert "may not write status" in (judge(status_by("n2"), "n2") or "")  # not its pod
        assert "relayed" in (judge(status_by("n1"), "n2") or "")  # a non-writer relays
        assert judge(status_by("n1"), "n0") is None  # a writer relays
        spec = pod.copy()
        spec.write({"metadata": {"name": "p"}, "spec": {"nodeName": "n2"}}, 30, "n1")
        assert "may not write spec" in (judge(spec, "n1") or "")
        assert "not a member" in (judge(status_by("n1"), "n3") or "")
        assert "in scope ''" in (judge(status_by("n1"), "n1", ns="default") or "")
        r.close()

    asyncio.run(main())


def test_a_non_member_pushing_a_scopes_document_is_deferred_a_while_then_refused_and_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 10: "A refused document is logged and dropped, and the sender learns why." A
    peer outside the scope may only look like one (our map may be the stale one), so its
    documents are deferred at first; NON_MEMBER_GRACE later under the same map they are
    refused, logged and the sender told, as a member that is not a writer is."""
    from shoal.crdt.document import Document
    from shoal.mesh.messages import DocRecord
    from shoal.mesh.replication_policy import NON_MEMBER_GRACE

    async def main() -> None:
        m = Mesh(3, 8)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a", scope("tenant-a", ["n0", "n1"]))
        await until(lambda: all(has(m, n, SCOPES, "tenant-a", "") for n in m.names), 30)
        ae = m.peers["n0"].anti_entropy
        forged = Document.create({"metadata": {"name": "db"}, "data": {"k": "cHduZWQ="}},
                                 10**18, "n2")
        push = Push(1, (DocRecord("secrets", NS, "db", forged.to_bytes()),), "tenant-a")
        with caplog.at_level(logging.WARNING, logger="shoal.mesh"):
            await ae.handle("n2:7443", push, "n2")
            await asyncio.sleep(1.0)
            assert ae.docs_deferred == 1 and ae.docs_refused == 0
            assert m.peers["n2"].anti_entropy.refusals_received == 0
            await asyncio.sleep(NON_MEMBER_GRACE)
            await ae.handle("n2:7443", push, "n2")
            await asyncio.sleep(1.0)
        assert ae.docs_refused == 1
        assert not has(m, "n0", "secrets", "db")
        assert m.peers["n2"].anti_entropy.refusals_received == 1
        logged = [r.getMessage() for r in caplog.records]
        assert any("refused secrets team-a/db from n2: n2 is not a member of scope 'tenant-a'"
                   in msg for msg in logged), logged
        assert any("refused a pushed document" in msg for msg in logged)  # n2 was told
        await m.stop()

    virtual_run(main())


def test_a_member_cut_off_from_the_scopes_writer_reports_it_and_how_long_since_an_answer(
) -> None:
    """What ``shoal scopes`` shows on a member cut off from the scope's only writer: the
    writer unreachable, and the age of its partners' last answer growing."""
    async def main() -> None:
        m = Mesh(4, 9)
        await m.start()
        await m.put("n0", SCOPES, "", "tenant-a",
                    scope("tenant-a", ["n0", "n1", "n2"], writers=["n0"]))
        await until(lambda: all(has(m, n, SCOPES, "tenant-a", "") for n in m.names), 30)
        await m.put("n0", "configmaps", NS, "x", {"metadata": {"name": "x"}})
        await until(lambda: has(m, "n1", "configmaps", "x"), 10)
        ae = m.peers["n1"].anti_entropy

        def status() -> dict[str, Any]:
            return ae.scope_status()["tenant-a"]

        await asyncio.sleep(3 * CFG.pull_interval)
        before = status()
        assert before["unreachable_writers"] == [] and before["holders"] == 2
        # n1, no writer, pulls the scope from its writer only: n2's revision is no lag.
        assert set(before["partners"]) == {"n0"}, before["partners"]
        assert before["last_answer"] is not None and before["last_answer"] <= 2 * CFG.pull_interval
        m.network.partition([["n0:7443"], ["n1:7443", "n2:7443", "n3:7443"]])
        await until(lambda: status()["unreachable_writers"] == ["n0"], 60)
        await asyncio.sleep(5 * CFG.pull_interval)
        assert status()["last_answer"] > 3 * CFG.pull_interval, "n2, no writer, serves none"
        m.network.heal()
        await until(lambda: status()["unreachable_writers"] == [], 60)
        await until(lambda: status()["last_answer"] <= 2 * CFG.pull_interval, 30)
        await m.stop()

    virtual_run(main())
