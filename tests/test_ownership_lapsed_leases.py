"""The acting peer of an object leaves out the live peers whose node Lease ran out.

Across a partition membership holds the far peers alive until it has probed and suspected
them (tens of seconds on real peers); their Leases run out after the grace period. The
objects they were the preferred actor for get one on this side then, as node lifecycle's
judges do (``ownership.LeaseAges``, docs/semantics.md "Who acts")."""

from __future__ import annotations

from shoal.control.ownership import LeaseAges, actors, preferred_actor, should_act
from shoal.store.objects import ObjectStore
from tests import test_node_lifecycle_grace as lifecycle_tests
from tests.tools.stores import ManualClock

GRACE = 6.0
peer = lifecycle_tests.peer
"""A replica of peer ``a`` on a clock the test moves (the node lifecycle tests' fixture)."""
PEERS = ["a", "b", "c"]


class LeaseView:
    """A view as the node's and the simulator's: live peers a test sets, and their Leases
    in ``store``."""

    def __init__(self, name: str, live: list[str], store: ObjectStore,
                 weak: list[str] | None = None) -> None:
        self._name, self._live, self._weak = name, live, weak or []
        self._leases = LeaseAges(store, GRACE)

    @property
    def name(self) -> str:
        return self._name

    def live(self) -> list[str]:
        return list(self._live)

    def weak(self) -> list[str]:
        return self._weak

    def lapsed(self) -> frozenset[str]:
        return self._leases.lapsed(self.live())


async def _renew(store: ObjectStore, clock: ManualClock, *names: str) -> None:
    for name in names:
        await lifecycle_tests._renew(store, clock, name)


def _key(first: str, then: str, peers: list[str] = PEERS) -> str:
    """A key whose preferred actor is ``first``, and ``then`` without it."""
    return next(k for k in (f"obj-{i}" for i in range(1000))
                if preferred_actor(k, peers) == first
                and preferred_actor(k, [p for p in peers if p != first]) == then)


async def test_a_peer_whose_lease_ran_out_is_passed_over_though_membership_holds_it_alive(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    store, clock = peer
    key = _key("b", "a")
    view = LeaseView("a", PEERS, store)
    await _renew(store, clock, *PEERS)
    assert not should_act(view, key), "b acts while its Lease is fresh"
    clock.t += GRACE - 1
    await _renew(store, clock, "a", "c")
    assert not should_act(view, key), "b's Lease has not run out yet"
    clock.t += 1.5  # the cut: b's last renewal is grace old, and membership still lists it
    await _renew(store, clock, "a", "c")
    assert "b" in view.live()
    assert should_act(view, key)
    assert actors(view) == ["a", "c"]
    # The heal: b's renewal arrives, and b acts for its objects again.
    await _renew(store, clock, "b")
    assert not should_act(view, key)


async def test_every_peer_that_holds_the_same_leases_picks_the_same_actor(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """Connected peers (one replica here) decide alike, whether or not a Lease ran out: one
    actor per object. A renewal delayed by less than the grace changes nothing."""
    store, clock = peer
    views = [LeaseView(p, PEERS, store) for p in PEERS]
    keys = [f"obj-{i}" for i in range(60)]
    await _renew(store, clock, *PEERS)
    for view in views:
        actors(view)  # each view starts counting its peers' live time
    for step, renewing in enumerate([PEERS, PEERS, ["a", "b"], ["a", "b"], ["a", "b"]]):
        clock.t += GRACE * 0.9
        await _renew(store, clock, *renewing)
        for key in keys:
            acting = [v.name for v in views if should_act(v, key)]
            assert len(acting) == 1, (step, key, acting)
    assert "c" not in actors(views[0]), "c stopped renewing for over the grace period"


async def test_a_peer_just_back_in_the_live_list_gets_the_grace_to_bring_its_renewals(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """A heal after membership gave b up: b is live again with the Lease it renewed last
    before the cut, and is not passed over before its renewals had the grace to arrive.
    A peer with no Lease here (joining) is not passed over either."""
    store, clock = peer
    key = _key("b", "a")
    await _renew(store, clock, "a", "b", "c")
    view = LeaseView("a", ["a", "c"], store)
    assert should_act(view, key), "membership gave b up"
    clock.t += 60
    await _renew(store, clock, "a", "c")
    view._live = [*PEERS, "d"]  # the heal; d joins and has written no Lease yet
    assert set(actors(view)) == {*PEERS, "d"}
    clock.t += GRACE - 1
    await _renew(store, clock, "a", "c")
    assert not should_act(view, key)
    clock.t += 1.5  # b's renewals never came
    await _renew(store, clock, "a", "c")
    assert should_act(view, key)
    assert "d" in actors(view)


async def test_a_peer_whose_own_lease_ran_out_defers_unless_no_lease_is_fresh(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """As the others see it: its agent stopped renewing, so the others passed it over and it
    must not act as well. When no Lease is fresh at all, the Leases choose nobody."""
    store, clock = peer
    key = _key("a", "b")
    views = {p: LeaseView(p, PEERS, store) for p in PEERS}
    await _renew(store, clock, *PEERS)
    for v in views.values():
        actors(v)
    assert should_act(views["a"], key)
    clock.t += GRACE + 1
    await _renew(store, clock, "b", "c")
    assert not should_act(views["a"], key)
    assert [p for p, v in views.items() if should_act(v, key)] == ["b"]
    clock.t += GRACE + 1  # nobody renews: membership alone decides, as before
    assert [p for p, v in views.items() if should_act(v, key)] == ["a"]


async def test_a_weak_peer_does_not_judge_by_leases_it_does_not_hold(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """Cut off from its super-peers with another weak peer: whatever Lease of it this
    replica once held proves nothing (weak peers are sent none but their own)."""
    store, clock = peer
    await _renew(store, clock, "w", "x")
    view = LeaseView("w", ["w", "x"], store, weak=["w", "x"])
    actors(view)
    clock.t += GRACE + 1
    await _renew(store, clock, "w")
    assert set(actors(view)) == {"w", "x"}


async def test_a_peer_whose_lease_declares_longer_than_the_grace_lapses_by_its_lease(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """A weak peer renewing every 30 s declares a Lease four times that (120 s, three times
    the kubelet's 40 s): it is given three times the grace period."""
    store, clock = peer
    view = LeaseView("a", PEERS, store)
    await _renew(store, clock, "a", "c")
    await lifecycle_tests._renew(store, clock, "b", duration=120)
    assert view.lapsed() == set()  # all live from here on
    clock.t += GRACE + 1
    await _renew(store, clock, "a")
    assert view.lapsed() == {"c"}
    clock.t += 3 * GRACE - (GRACE + 1) - 0.5
    await _renew(store, clock, "a")
    assert view.lapsed() == {"c"}
    clock.t += 1
    await _renew(store, clock, "a")
    assert view.lapsed() == {"b", "c"}


async def test_a_peer_that_resumed_from_standing_still_counts_every_lease_from_its_resume(
    peer: tuple[ObjectStore, ManualClock],
) -> None:
    """Frozen for a minute, this peer missed every renewal meanwhile: on its resume b's
    Lease looks a minute old, but b is not passed over until the grace has run from the
    resume (``LoopStalls``) without a renewal arriving."""
    store, clock = peer
    await _renew(store, clock, *PEERS)
    resumed = -float("inf")
    leases = LeaseAges(store, GRACE, resumed=lambda: resumed)
    assert leases.lapsed(PEERS) == frozenset()
    clock.t += 60  # frozen: no renewal merged here meanwhile
    resumed = clock.t
    assert leases.lapsed(PEERS) == frozenset(), "judged on the renewals it missed"
    clock.t += GRACE + 0.5
    await _renew(store, clock, "a", "c")
    assert leases.lapsed(PEERS) == frozenset({"b"}), "b renewed nothing since the resume"
