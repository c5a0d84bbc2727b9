"""Roles and sites: member tags in the membership protocol, and who syncs with whom."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shoal.mesh import config as mesh_config
from shoal.mesh.messages import Join, State, Update, decode, encode
from shoal.mesh.peer import MeshPeer
from shoal.mesh.topology import Role, may_sync, role_of, site_of, sync_peers
from shoal.sim.loop import VirtualWallClock
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import SimNetwork
from shoal.store.replica import Replica

CFG = mesh_config.sim()


@dataclass
class P:
    name: str
    tags: Mapping[str, str] = field(default_factory=dict)


def full(name: str, site: str = "") -> P:
    return P(name, {"site": site} if site else {})


def super_(name: str, site: str = "") -> P:
    return P(name, {"role": "super", "site": site})


def weak(name: str, site: str = "") -> P:
    return P(name, {"role": "weak", "site": site})


# -- the rules --------------------------------------------------------------------------


def test_a_member_without_tags_is_a_full_peer_of_no_site() -> None:
    assert role_of(P("a")) == Role.FULL and site_of(P("a")) == ""
    assert role_of(P("a", {"role": "queen"})) == Role.FULL  # unknown roles from newer peers


def test_full_and_super_peers_all_sync_with_each_other() -> None:
    peers = [full("f1", "x"), full("f2", "y"), super_("s1", "x"), super_("s2", "y")]
    for a in peers:
        for b in peers:
            assert may_sync(a, b)


def test_a_weak_peer_syncs_only_with_the_super_peers_of_its_site() -> None:
    w = weak("w", "x")
    assert may_sync(w, super_("s", "x")) and may_sync(super_("s", "x"), w)
    assert not may_sync(w, super_("s", "y"))
    assert not may_sync(w, full("f", "x"))
    assert not may_sync(w, weak("w2", "x"))


def test_sync_peers_of_a_weak_peer_are_its_site_super_peers() -> None:
    w = weak("w", "x")
    peers = [w, super_("s1", "x"), super_("s2", "x"), super_("s3", "y"), full("f"), weak("v", "x")]
    assert [p.name for p in sync_peers(w, peers)] == ["s1", "s2"]


def test_a_weak_peer_without_a_live_super_peer_at_its_site_syncs_with_nobody() -> None:
    """Issue 10: a weak peer exchanges state only with its site's super-peers; it used to
    fall back to other sites' super-peers, then to full peers."""
    w = weak("w", "x")
    assert sync_peers(w, [super_("s3", "y"), full("f")]) == []
    assert sync_peers(w, [full("f"), weak("v", "x")]) == []
    assert sync_peers(w, [weak("v", "x")]) == []  # cut off: nobody, and it keeps serving
    assert [p.name for p in sync_peers(w, [super_("s3", "y"), super_("s1", "x")])] == ["s1"]


def test_a_full_peer_syncs_with_every_full_and_super_peer_but_no_weak_one() -> None:
    f = full("f")
    peers = [f, full("g"), super_("s", "x"), weak("w", "x")]
    assert [p.name for p in sync_peers(f, peers)] == ["g", "s"]


# -- tags in the membership protocol ------------------------------------------------------


def test_config_tags_leave_a_plain_full_peer_with_none() -> None:
    assert CFG.member_tags() == {}
    cfg = dataclasses.replace(CFG, role="weak", site="shop-3", tags=(("zone", "eu"),))
    assert cfg.member_tags() == {"role": "weak", "site": "shop-3", "zone": "eu"}


def test_tags_survive_the_wire_in_every_update() -> None:
    u = Update(State.ALIVE, "a", "a:1", 3, "", (("role", "super"), ("site", "x")))
    got = decode(encode(Join(u)))
    assert isinstance(got, Join) and got.member == u


async def _peers(roles: list[dict[str, str]], seed: int) -> list[MeshPeer]:
    loop = asyncio.get_running_loop()
    net = SimNetwork(random.Random(seed))
    peers = []
    for i, tags in enumerate(roles):
        cfg = dataclasses.replace(CFG, role=tags.get("role", "full"), site=tags.get("site", ""))
        name = f"p{i}"
        replica = Replica(None, name, clock=VirtualWallClock(loop))  # type: ignore[arg-type]
        peer = MeshPeer(name, net.transport(f"{name}:1"), replica, cfg, random.Random(f"{seed}{i}"))
        await peer.start()
        peers.append(peer)
    return peers


def test_joined_members_learn_each_others_tags() -> None:
    async def main() -> None:
        peers = await _peers([{}, {"role": "super", "site": "x"}, {"site": "y"}], 1)
        for p in peers[1:]:
            await p.join([peers[0].address])
        await asyncio.sleep(10)
        for p in peers:
            tags = {m.name: dict(m.tags) for m in p.members()}
            # A super-peer also says what it decodes (``caps``: checked deltas).
            assert tags == {"p0": {}, "p1": {"role": "super", "site": "x", "caps": "d"},
                            "p2": {"site": "y"}}

    virtual_run(main())


def test_changed_tags_spread_with_a_new_incarnation() -> None:
    async def main() -> None:
        peers = await _peers([{}, {}, {}], 2)
        for p in peers[1:]:
            await p.join([peers[0].address])
        await asyncio.sleep(5)
        before = peers[2].membership.incarnation
        peers[2].membership.set_tags({"site": "z"})
        assert peers[2].membership.incarnation == before + 1
        await asyncio.sleep(5)
        for p in peers:
            assert site_of(p.membership.members["p2"]) == "z"

    virtual_run(main())


def test_a_member_restored_without_tags_learns_them_at_the_same_incarnation() -> None:
    async def main() -> None:
        peers = await _peers([{}, {"role": "super", "site": "x"}], 3)
        peers[0].membership.add_known([("p1", "p1:1")])
        assert role_of(peers[0].membership.members["p1"]) == Role.FULL
        await asyncio.sleep(30)  # the next push-pull carries p1's own update
        assert role_of(peers[0].membership.members["p1"]) == Role.SUPER
        assert all(m.state == State.ALIVE for m in peers[0].members())

    virtual_run(main())


# -- the command line and the Node labels ---------------------------------------------------


def test_the_server_flags_give_the_role_and_site() -> None:
    from shoal.cli.main import _parser, peer_role

    def parse(*extra: str) -> tuple[str, str | None]:
        args = _parser().parse_args(["server", "--name", "n", "--data-dir", "/tmp/n", *extra])
        return peer_role(args), args.site

    assert parse() == ("full", None)
    assert parse("--super-peer", "--site", "shop-1") == ("super", "shop-1")
    assert parse("--sync-via", "super") == ("weak", None)


def test_a_nodes_role_and_site_are_its_node_labels_and_its_mesh_tags() -> None:
    from shoal.cli.node import mesh_settings, topology_labels
    from shoal.cli.settings import MeshSettings, NodeSettings
    from shoal.model.kinds import KindRegistry
    from shoal.node.node_status import NodeStatusReporter
    from shoal.store.objects import ObjectStore

    async def main() -> None:
        store = ObjectStore(Replica(None, "n1"), KindRegistry())
        weak = NodeSettings(name="n1", data_dir=Path("/nonexistent"),
                            mesh=MeshSettings(role="weak", site="shop-1"))
        await NodeStatusReporter(store, "n1", "127.0.0.1", labels=topology_labels(weak)).register()
        labels = store.replica.get("nodes", "", "n1")["metadata"]["labels"]  # type: ignore[index]
        assert labels["shoal.dev/role"] == "weak"
        assert labels["topology.kubernetes.io/zone"] == "shop-1"
        assert labels["kubernetes.io/hostname"] == "n1"
        # Restarted as a full peer with no --site: the role label goes, the zone stays and
        # becomes the site.
        full = NodeSettings(name="n1", data_dir=Path("/nonexistent"))
        await NodeStatusReporter(store, "n1", "127.0.0.1", labels=topology_labels(full)).register()
        labels = store.replica.get("nodes", "", "n1")["metadata"]["labels"]  # type: ignore[index]
        assert "shoal.dev/role" not in labels
        cfg = mesh_settings(full, store.replica)
        assert cfg.member_tags() == {"site": "shop-1"}
        assert mesh_settings(weak, store.replica).member_tags() == {"role": "weak",
                                                                    "site": "shop-1"}

    asyncio.run(main())


def test_the_saved_member_list_keeps_tags_and_reads_old_lists_without() -> None:
    from shoal.mesh import member_list
    from shoal.mesh.membership import Member

    async def main() -> None:
        replica = Replica(None, "me")
        keeper = member_list.MemberListKeeper(replica, "me", delay=0.01)
        keeper.on_join(Member("s1", "s1:7443", 0, State.ALIVE, 0.0, {"role": "super"}))
        keeper.on_join(Member("f1", "f1:7443", 0, State.ALIVE, 0.0))
        await asyncio.sleep(0.2)
        assert member_list.load_tagged(replica) == [("f1", "f1:7443", {}),
                                                     ("s1", "s1:7443", {"role": "super"})]
        assert member_list.load(replica) == [("f1", "f1:7443"), ("s1", "s1:7443")]
        await asyncio.sleep(0.1)
        replica.persistence.write([], {member_list.META_KEY: '[["old", "old:7443"]]'},
                                  asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        assert member_list.load_tagged(replica) == [("old", "old:7443", {})]

    asyncio.run(main())
