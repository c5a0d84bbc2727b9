"""An idle weak peer that renews its node Lease every 10 s, as a kubelet does, on the
simulated network (issue 10: at most 0.25 kbit/s per weak peer; ``bench.weak_peer_idle``
measures it on real processes): what crosses its link, message by message.

One run (a site of two super-peers and one weak peer, a full peer in another site) is
recorded once and read by each test; then the weak peer is killed, and still found dead."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson

from shoal.crdt.document import Document
from shoal.mesh import config as mesh_config
from shoal.mesh.anti_entropy import _delta
from shoal.mesh.messages import State, tag_of
from shoal.mesh.topology import Role
from shoal.node.node_status import lease_seconds
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster

LEASES = "kube-node-lease"
RENEW = 10.0
WINDOW = 120.0
PING, PUSH, PULL, PULL_REPLY = 0, 7, 8, 9


def _lease(name: str, renew: str, duration: int = 40) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": LEASES},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": duration,
                     "renewTime": renew}}


def renew_forever(node: Any, every: float) -> asyncio.Task[None]:
    """Create the Lease of ``node`` (a simulated peer) and renew it every ``every`` seconds
    of virtual time, as its kubelet would (declaring four renewals, at least 40 s)."""
    loop = asyncio.get_running_loop()
    kind = node.store.registry.by_kind("coordination.k8s.io/v1", "Lease")
    assert kind is not None
    name = node.name

    async def renew() -> None:
        while True:
            now = f"2026-01-01T00:{int(loop.time()) // 60 % 60:02d}:{loop.time() % 60:09.6f}Z"
            obj = node.store.find(kind, LEASES, name)
            if obj is None:
                await node.store.create(kind, _lease(name, now, lease_seconds(every)),
                                        LEASES)
            else:
                await node.store.update(
                    kind, {**obj, "spec": {**obj["spec"], "renewTime": now}}, LEASES, name)
            await asyncio.sleep(every)

    return loop.create_task(renew())


@functools.cache
def idle_run() -> dict[str, Any]:
    """(sender, receiver, tag) -> [count, largest] over WINDOW idle seconds, and when each
    super-peer found the weak peer dead after it was killed (seconds, None: not in 120)."""
    out: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        layout = Layout(sites=2, supers_per_site=2, weak_per_site=1, full=1)
        c = RoleCluster(layout.size, 3, mesh_config.sim(), loop, LinkFaults(), layout=layout)
        await c.start()
        weak = c.names(Role.WEAK, "site-000")[0]
        supers = c.names(Role.SUPER, "site-000")
        await c.nodes[weak].store.create(c.namespace_kind, {"metadata": {"name": LEASES}})
        task = renew_forever(c.nodes[weak], RENEW)
        await asyncio.sleep(60)
        name_of = {n.address: n.name for n in c.nodes.values()}
        seen: dict[tuple[str, str, int], list[int]] = {}

        def observe(src: str, dst: str, payload: bytes) -> None:
            s, d = name_of.get(src, src), name_of.get(dst, dst)
            tag = tag_of(payload)
            if weak in (s, d):
                got = seen.setdefault((s, d, -1 if tag is None else tag), [0, 0])
                got[0] += 1
                got[1] = max(got[1], len(payload))

        c.network.observers.append(observe)
        await asyncio.sleep(WINDOW)
        c.network.observers.remove(observe)
        out.update(weak=weak, supers=supers, seen=seen)
        task.cancel()
        await c.kill(weak)
        start = loop.time()
        dead: dict[str, float | None] = dict.fromkeys(supers)
        while loop.time() - start < 120 and any(v is None for v in dead.values()):
            for s in supers:
                peer = c.nodes[s].peer
                assert peer is not None
                m = next(m for m in peer.members() if m.name == weak)
                if dead[s] is None and m.state == State.DEAD:
                    dead[s] = loop.time() - start
            await asyncio.sleep(0.5)
        out["dead_after"] = dead
        await c.stop()

    virtual_run(main())
    return out


def count(src: str, dst: str, tag: int) -> int:
    return int(idle_run()["seen"].get((src, dst, tag), [0, 0])[0])


def test_a_super_peer_does_not_pull_a_weak_peer_whose_pushes_keep_its_cursor() -> None:
    run = idle_run()
    # Pulled at most every WEAK_PULL_AT_LEAST (300 s): once in the window at most (it was
    # every 10 s, 12 times).
    assert all(count(s, run["weak"], PULL) <= 1 for s in run["supers"])


def test_an_idle_weak_peer_pulls_its_super_peers_less_often() -> None:
    run = idle_run()
    pulls = sum(count(run["weak"], s, PULL) for s in run["supers"])
    # Every other pull round once nothing comes: 19 in 120 s, where it was 37 (every round
    # from its source, and the other super-peer's rows every other round).
    assert pulls <= WINDOW / 5, pulls


def test_a_super_peer_does_not_probe_a_weak_peer_that_pushes_to_it() -> None:
    run = idle_run()
    # Its pushes (every renewal) prove it alive; the probes were every few seconds.
    assert all(count(s, run["weak"], PING) <= 2 for s in run["supers"]), [
        count(s, run["weak"], PING) for s in run["supers"]]


def test_a_killed_weak_peer_is_still_found_dead_by_its_super_peers() -> None:
    assert all(t is not None for t in idle_run()["dead_after"].values()), idle_run()["dead_after"]


def test_a_renewals_delta_carries_the_changed_register_and_merges_as_the_whole() -> None:
    old = Document.create(_lease("w", "2026-01-01T00:00:00.000000Z"), 100, "w")
    new = old.copy()
    new.write(_lease("w", "2026-01-01T00:00:10.000000Z"), 200, "w")
    delta = _delta(old.root, new.root)
    assert delta is not None
    # The unchanged ancestors (the object, spec) carry no register: stamp 0, no writer.
    assert delta[:3] == [0, "", None] and delta[3]["spec"][:3] == [0, "", None]
    assert list(delta[3]) == ["spec"] and list(delta[3]["spec"][3]) == ["renewTime"]
    assert len(orjson.dumps(delta)) < 110
    for held in (old, new):
        got = held.copy()
        got.merge(Document(delta))
        assert got.to_bytes() == new.to_bytes()
    # Into a later version (another register changed since): nothing of it goes back.
    later = new.copy()
    later.write({**_lease("w", "2026-01-01T00:00:10.000000Z"),
                 "spec": {**_lease("w", "x")["spec"], "renewTime": "2026-01-01T00:00:10.000000Z",
                          "leaseDurationSeconds": 60}}, 300, "s1")
    got = later.copy()
    got.merge(Document(delta))
    assert got.to_bytes() == later.to_bytes()
