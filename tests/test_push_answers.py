"""A push that completes the receiver's next pull answer (``Push.answers``, issue 10): a weak
peer's write crosses to each of its super-peers once, not once pushed and once more in
the answer to their next pull; a cursor moves only from the one the push started at and
only over documents all merged, so a lost push is pulled again. Such a push carries an
object changed since a version the receiver holds as a delta (``Push.deltas``), which a
receiver that may not hold that version drops."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import orjson
import pytest

from shoal.mesh import config as mesh_config
from shoal.mesh.anti_entropy import AntiEntropy, PullTarget, _delta
from shoal.mesh.messages import ANSWERS_FLAG, DocRecord, Pull, Push, decode, doc_digest, encode
from shoal.mesh.topology import Role
from shoal.sim.checkers import convergence
from shoal.sim.cluster import NAMESPACE, RESOURCE, SimNode
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster

CFG = mesh_config.sim()
WRITES = 6


def _cluster(seed: int, faults: LinkFaults | None = None) -> RoleCluster:
    return RoleCluster(0, seed, CFG, asyncio.get_running_loop(),  # type: ignore[arg-type]
                       faults or LinkFaults(),
                       layout=Layout(sites=1, supers_per_site=2, weak_per_site=1, full=1))


def _value(c: RoleCluster, name: str, obj: str) -> str | None:
    got = c.nodes[name].replica.get(RESOURCE, NAMESPACE, obj)
    return None if got is None else got["data"].get("k")


def _crossings(c: RoleCluster, weak: str, marker: bytes) -> Counter[str]:
    """From now on: per super-peer, how many messages from ``weak`` carry ``marker``
    (pushes and pull answers alike)."""
    by_address = {c.nodes[n].address: n for n in c.names(Role.SUPER)}
    src = c.nodes[weak].address
    seen: Counter[str] = Counter()

    def observe(a: str, b: str, payload: bytes) -> None:
        if a == src and b in by_address and marker in payload:
            seen[by_address[b]] += payload.count(marker)

    c.network.observers.append(observe)
    return seen


@pytest.mark.parametrize("seed", range(2))
def test_a_weak_peers_write_crosses_to_each_super_peer_once(seed: int) -> None:
    async def main() -> None:
        c = _cluster(seed)
        await c.start()
        weak = c.names(Role.WEAK)[0]
        await asyncio.sleep(20)  # every puller has named its life (and said it takes answers)
        seen = _crossings(c, weak, b"renewed-")
        assert await c.write(c.nodes[weak], "create", "lease", {"k": "renewed-0"})
        for i in range(1, WRITES):
            await asyncio.sleep(10)
            assert await c.write(c.nodes[weak], "update", "lease", {"k": f"renewed-{i}"})
        await asyncio.sleep(20)  # several pull rounds of both super-peers
        for name in c.names(Role.SUPER):
            assert _value(c, name, "lease") == f"renewed-{WRITES - 1}"
        assert _value(c, c.names(Role.FULL)[0], "lease") == f"renewed-{WRITES - 1}"
        # Each version once per super-peer: pushed, and not in the next pull answer again.
        assert seen == dict.fromkeys(c.names(Role.SUPER), WRITES), seen
        sent = c.nodes[weak].peer
        assert sent is not None and sent.anti_entropy.pushes_answering >= WRITES
        # Updates went as deltas, and every replica holds the same documents.
        assert sent.anti_entropy.deltas_sent >= WRITES - 2
        assert not convergence.check({n.name: n.replica for n in c.up_nodes()}, limit=1)
        await c.stop()

    virtual_run(main())


def test_lost_pushes_are_pulled_again_and_no_cursor_skips_them() -> None:
    async def main() -> None:
        c = _cluster(3, LinkFaults(drop=0.3))
        await c.start()
        weak = c.names(Role.WEAK)[0]
        await asyncio.sleep(30)
        for i in range(WRITES):
            name = f"obj-{i}"
            assert await c.write(c.nodes[weak], "create", name, {"k": str(i)})
            await asyncio.sleep(3)
        await asyncio.sleep(60)
        for s in c.names(Role.SUPER):
            for i in range(WRITES):
                assert _value(c, s, f"obj-{i}") == str(i), (s, i)
        await c.stop()

    virtual_run(main())


async def _driven(seed: int) -> tuple[RoleCluster, SimNode, SimNode, AntiEntropy, int]:
    """A settled cluster, its weak peer, a super-peer of it that pulls no more (its pulls
    would move the cursor too), that super-peer's anti-entropy and the weak peer's life."""
    c = _cluster(seed)
    await c.start()
    await asyncio.sleep(20)
    w, s = c.nodes[c.names(Role.WEAK)[0]], c.nodes[c.names(Role.SUPER)[0]]
    assert w.peer is not None and s.peer is not None
    ae = s.peer.anti_entropy
    for t in ae._tasks:
        t.cancel()
    await asyncio.sleep(3)
    return c, w, s, ae, w.peer.anti_entropy.life


def test_a_push_moves_the_cursor_only_from_where_it_started() -> None:
    """Driven by hand on one super-peer that pulls no more: a push that starts past where
    its cursor is (one before it was lost), or is of another life, is merged but leaves the
    cursor; one that starts at the cursor moves it, and the next one on from there."""
    async def main() -> None:
        c, w, s, ae, life = await _driven(5)
        weak, key = w.name, (w.name, "")
        start = ae.cursors.get(key, 0)
        assert ae._partner_lives.get(weak) == life

        async def write(name: str) -> tuple[Push, int]:
            """A write on the weak peer, as a push that completes an answer would carry it,
            and the revision it completes it to."""
            assert await c.write(w, "create", name, {"k": name})
            entry = w.replica.entry(RESOURCE, NAMESPACE, name)
            assert entry is not None and entry.doc_bytes is not None
            return Push(0, (ae._record(RESOURCE, NAMESPACE, name, entry.doc_bytes),)), entry.rv

        async def deliver(p: Push, start_at: int, end: int, life_of: int = life) -> int:
            msg = decode(encode(Push(p.hops, p.docs, "", (life_of, start_at, end))))
            assert isinstance(msg, Push) and msg.answers == (life_of, start_at, end)
            await ae.handle(w.address, msg, weak)
            return ae.cursors.get(key, 0)

        gap, gap_rv = await write("gap")  # lost: not delivered
        after, after_rv = await write("after")
        assert await deliver(after, gap_rv, after_rv) == start  # starts past the gap
        assert s.replica.get(RESOURCE, NAMESPACE, "after") is not None  # merged all the same
        assert await deliver(gap, start, gap_rv, life_of=life + 1) == start  # another life
        assert await deliver(gap, start, gap_rv) == gap_rv
        assert await deliver(after, gap_rv, after_rv) == after_rv
        # A pull in flight when such a push moves the cursor: its answer, from the cursor
        # before, never moves it back (nor reads as the weak peer having lost its state).
        last, last_rv = await write("last")
        pulling = asyncio.get_running_loop().create_task(
            ae.pull_from(PullTarget(weak, w.address)))
        await asyncio.sleep(0)
        assert await deliver(last, after_rv, last_rv + 1) == last_rv + 1
        await pulling
        assert ae.cursors.get(key, 0) == last_rv + 1
        await c.stop()

    virtual_run(main())


def test_a_delta_is_merged_only_where_its_base_is_held() -> None:
    """A delta pushed to a super-peer whose cursor is not where it starts is merged only
    where merging it into what the super-peer holds gives the whole's digest (as that
    whole), and moves no cursor; one of an object not held, or over a version not held, is
    dropped, never merged as a partial object; where the cursor is, it gives what the whole
    document gives."""
    async def main() -> None:
        c, w, s, ae, life = await _driven(6)
        weak, key = w.name, (w.name, "")
        start = ae.cursors.get(key, 0)

        async def changed(name: str, value: str, op: str, pad: str = "x"
                          ) -> tuple[DocRecord, str, int]:
            """The weak peer's write, as a delta over its version before, with the digest of
            the whole and its revision."""
            before = w.replica.entry(RESOURCE, NAMESPACE, name)
            old = None if before is None else before.document().copy().root
            assert await c.write(w, op, name, {"k": value, "pad": pad * 200})
            after = w.replica.entry(RESOURCE, NAMESPACE, name)
            assert after is not None and after.doc_bytes is not None
            delta = _delta(old, orjson.loads(after.doc_bytes))
            assert delta is not None
            data = orjson.dumps(delta)
            if before is not None:
                assert len(data) < len(after.doc_bytes) / 2
            return (DocRecord(RESOURCE, NAMESPACE, name, data), doc_digest(after.doc_bytes),
                    after.rv)

        async def deliver(doc: DocRecord, digest: str, start_at: int, end: int) -> int:
            msg = decode(encode(Push(0, (doc,), "", (life, start_at, end), ((0, digest),))))
            assert isinstance(msg, Push) and msg.deltas == ((0, digest),)
            await ae.handle(w.address, msg, weak)
            return ae.cursors.get(key, 0)

        # Not held there: the "delta" of a create is the whole, but marked as a delta it
        # is dropped all the same, and the cursor stays.
        doc, digest, rv = await changed("fresh", "1", "create")
        assert await deliver(doc, digest, start, rv) == start
        assert s.replica.entry(RESOURCE, NAMESPACE, "fresh") is None
        # Sent whole as a pull would: held there now, at the cursor the answer left.
        whole = w.replica.entry(RESOURCE, NAMESPACE, "fresh")
        assert whole is not None and whole.doc_bytes is not None
        ae.merge([DocRecord(RESOURCE, NAMESPACE, "fresh", whole.doc_bytes)], "", weak)
        ae.cursors[key] = rv
        # A delta from another cursor (a push before it was lost) over a version we do not
        # hold (its pad changed there, unseen here): dropped, never merged as a partial
        # object, and the cursor stays.
        await changed("fresh", "1", "update", pad="y")
        v2 = w.replica.entry(RESOURCE, NAMESPACE, "fresh")
        assert v2 is not None and v2.doc_bytes is not None
        doc, digest, rv2 = await changed("fresh", "2", "update", pad="y")
        assert await deliver(doc, digest, rv - 1, rv2) == rv
        assert (s.replica.get(RESOURCE, NAMESPACE, "fresh") or {})["data"] == {
            "k": "1", "pad": "x" * 200}
        # Over the version we hold: merged as the whole it checks out to (its digest), the
        # cursor still where it was; a wrong digest is dropped all the same.
        ae.merge([DocRecord(RESOURCE, NAMESPACE, "fresh", v2.doc_bytes)], "", weak)
        assert await deliver(doc, "0" * 16, rv - 1, rv2) == rv
        assert (s.replica.get(RESOURCE, NAMESPACE, "fresh") or {})["data"]["k"] == "1"
        rebuilt = ae.deltas_rebuilt
        assert await deliver(doc, digest, rv - 1, rv2) == rv
        assert ae.deltas_rebuilt == rebuilt + 1
        assert (s.replica.get(RESOURCE, NAMESPACE, "fresh") or {})["data"]["k"] == "2"
        # From the cursor: merged, the same document as the weak peer's, the cursor moved.
        assert await deliver(doc, digest, rv, rv2) == rv2
        held, mine = (n.replica.entry(RESOURCE, NAMESPACE, "fresh") for n in (s, w))
        assert held is not None and mine is not None
        assert held.document().root == mine.document().root
        await c.stop()

    virtual_run(main())


def test_a_puller_that_never_said_it_takes_answers_gets_the_plain_push() -> None:
    """An older super-peer (its pulls carry no ANSWERS_FLAG) is pushed only what an older
    decoder accepts, and still gets every write; the other is sent answers."""
    async def main() -> None:
        c = _cluster(7)
        old, new = c.names(Role.SUPER)
        weak = c.names(Role.WEAK)[0]
        transmit = c.network.transmit
        pushes: dict[str, list[list[object]]] = {old: [], new: []}
        by_address = {c.nodes[n].address: n for n in (old, new)}

        def as_older(src: str, dst: str, payload: bytes, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            msg = decode(payload) if payload[:3] in (b"[8,", b"[7,") else None
            if isinstance(msg, Pull) and src == c.nodes[old].address:
                payload = encode(dataclasses.replace(msg, limit=msg.limit % ANSWERS_FLAG))
            elif isinstance(msg, Push) and dst in by_address:
                pushes[by_address[dst]].append(orjson.loads(payload))
            transmit(src, dst, payload, *args, **kwargs)

        c.network.transmit = as_older  # type: ignore[method-assign]
        await c.start()
        await asyncio.sleep(20)
        for i in range(4):
            op = "create" if i == 0 else "update"
            assert await c.write(c.nodes[weak], op, "lease", {"k": f"v{i}", "pad": "x" * 300})
            await asyncio.sleep(10)
        assert _value(c, old, "lease") == _value(c, new, "lease") == "v3"
        assert pushes[old] and all(len(p) <= 4 for p in pushes[old])
        assert any(len(p) >= 7 for p in pushes[new])
        await c.stop()

    virtual_run(main())
