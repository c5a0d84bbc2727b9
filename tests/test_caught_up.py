"""When a peer counts as caught up (``shoal.mesh.catch_up``), and the controllers wait for it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from shoal.control import manager
from shoal.mesh import catch_up
from shoal.mesh.catch_up import CatchUp
from shoal.mesh.messages import State


@dataclass
class _Member:
    name: str


@dataclass
class _Membership:
    names: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    name: str = "me"
    suspect: list[str] = field(default_factory=list)
    unroutable: list[str] = field(default_factory=list)  # suspect past the routing window

    @property
    def members(self) -> dict[str, _Member]:
        return {n: _Member(n) for n in [self.name, *self.names, *self.suspect, *self.dead]}

    def live(self) -> list[_Member]:
        return [_Member(n) for n in self.names]

    def routable(self, name: str) -> bool:
        return name not in self.dead and name not in self.unroutable

    def others(self, states: tuple[State, ...]) -> list[_Member]:
        return [_Member(n) for n, state in [*((n, State.ALIVE) for n in self.names),
                                             *((n, State.SUSPECT) for n in self.suspect),
                                             *((n, State.DEAD) for n in self.dead)]
                if state in states]


@dataclass
class _AntiEntropy:
    pull_listeners: list[Any] = field(default_factory=list)

    def pulled(self, partner: str, complete: bool) -> None:
        for listener in self.pull_listeners:
            listener(partner, complete)


def _catch_up(live: list[str], dead: list[str] | None = None,
              **kw: Any) -> tuple[CatchUp, _AntiEntropy]:
    ae = _AntiEntropy()
    return CatchUp(ae, _Membership(live, dead or []), **kw), ae  # type: ignore[arg-type]


async def test_a_first_node_with_no_seeds_is_caught_up_at_once() -> None:
    c, _ = _catch_up([], expect_peers=False)
    assert c.done() and c.status()["reason"].startswith("alone")


async def test_only_a_pull_completed_to_the_partners_end_catches_up() -> None:
    c, ae = _catch_up(["a", "b"])
    assert not c.done()
    ae.pulled("a", False)  # a is unreachable, b is not tried yet
    assert not c.done() and c.status()["unreachable"] == ["a"]
    ae.pulled("b", True)
    assert c.done() and "b" in c.reason


async def test_a_peer_whose_live_members_all_fail_to_answer_acts_alone() -> None:
    c, ae = _catch_up(["a", "b"])
    ae.pulled("a", False)
    ae.pulled("b", False)
    assert c.done() and "no live member answered" in c.reason


async def test_a_peer_whose_known_members_are_all_dead_acts_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(catch_up, "CHECK_INTERVAL", 0.01)
    c, _ = _catch_up([], dead=["a"])
    await asyncio.wait_for(c.wait(), 1.0)
    assert "dead or gone" in c.reason


async def test_a_peer_whose_only_member_is_suspect_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A joiner over a slow link: its first probes of the seed time out, so the seed is
    # suspect, not dead. Acting as cut off then ran the controllers on an empty replica.
    monkeypatch.setattr(catch_up, "CHECK_INTERVAL", 0.01)
    ms = _Membership([], suspect=["seed"])
    ae = _AntiEntropy()
    c = CatchUp(ae, ms)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not c.done()
    ms.names, ms.suspect = ["seed"], []  # it refuted, and a pull completes
    ae.pulled("seed", True)
    assert c.done() and "seed" in c.reason
    ms2 = _Membership([], suspect=["seed"])
    c2 = CatchUp(_AntiEntropy(), ms2)  # type: ignore[arg-type]
    ms2.suspect, ms2.dead = [], ["seed"]  # or it is declared dead: now it is cut off
    await asyncio.wait_for(c2.wait(), 1.0)
    assert "dead or gone" in c2.reason
    # Nor does a failed pull of the one live member make it cut off while a seed is suspect.
    ms3 = _Membership(["a"], suspect=["seed"])
    ae3 = _AntiEntropy()
    c3 = CatchUp(ae3, ms3)  # type: ignore[arg-type]
    ae3.pulled("a", False)
    assert not c3.done()
    # A suspect that stays so (a peer restarted behind a cut link) stops counting once it is
    # no longer routable: the peer acts as cut off then, not after the suspicion timeout.
    ms3.unroutable = ["seed"]
    ae3.pulled("a", False)
    assert c3.done() and "no live member answered" in c3.reason


async def test_a_joining_peer_that_knows_no_member_yet_waits_for_its_join() -> None:
    c, ae = _catch_up([], max_wait=0.2)
    ae.pulled("seed", False)  # no member known yet: that proves nothing
    assert not c.done()
    await asyncio.wait_for(c.wait(), 1.0)  # only the bound ends the wait
    assert "gave up" in c.reason


async def test_the_controllers_start_only_once_caught_up() -> None:
    c, ae = _catch_up(["a"])
    ran = asyncio.Event()

    class _Probe:
        async def run(self) -> None:
            ran.set()

    task = asyncio.create_task(manager.run_when_caught_up(_Probe(), c))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not ran.is_set()
    ae.pulled("a", True)
    await asyncio.wait_for(ran.wait(), 1.0)
    await task


@pytest.mark.parametrize("complete", [True, False])
async def test_once_caught_up_it_stays_so(complete: bool) -> None:
    c, ae = _catch_up(["a"])
    ae.pulled("a", True)
    seconds = c.seconds
    ae.pulled("a", complete)
    assert c.done() and c.seconds == seconds


def _readyz(query: str = "", name: str | None = None, ready: bool = False) -> tuple[int, str]:
    from aiohttp.test_utils import make_mocked_request

    from shoal.api.health import HealthChecks

    health = HealthChecks()
    health.ready["caught-up"] = lambda: None if ready else "not caught up with the mesh yet"
    r = health.response(make_mocked_request("GET", f"/readyz{query}"), "readyz", name)
    return r.status, r.text or ""


def test_readyz_fails_until_caught_up_and_names_the_check_as_the_apiserver_does() -> None:
    status, text = _readyz()
    assert status == 500
    assert "[+]ping ok\n[-]caught-up failed: not caught up" in text
    assert text.endswith("readyz check failed\n")
    assert _readyz("?exclude=caught-up")[0] == 200
    assert _readyz(name="caught-up")[0] == 500
    assert _readyz(name="nonesuch")[0] == 404
    assert _readyz(ready=True) == (200, "ok")
    assert _readyz("?verbose", ready=True) == (
        200, "[+]ping ok\n[+]caught-up ok\nreadyz check passed\n")


def test_shoal_status_says_whether_the_node_has_caught_up() -> None:
    from shoal.cli.status import format_report

    text = format_report({"node": "b", "revision": 3, "catchUp": {
        "caughtUp": False, "reason": "catching up", "seconds": 1.2, "unreachable": []}})
    assert "caught up: NO (its controllers and /readyz wait): catching up (1.2s" in text
    # Once caught up, how it did so then, not as a state now: a first node caught up
    # "alone" is not alone once others joined.
    text = format_report({"node": "a", "revision": 3, "catchUp": {
        "caughtUp": True, "reason": "alone at start: no other member known", "seconds": 0.0,
        "unreachable": []}})
    assert "caught up: yes, 0.0s after start (alone at start: no other member known)" in text


async def test_a_peer_caught_up_as_cut_off_is_synced_only_once_a_pull_completes() -> None:
    # A joiner that holds its seed dead (a slow link) acts on its replica, but that replica
    # is empty: the cluster-wide defaults it lacks wait for a pull (CatchUp.synced).
    c, ae = _catch_up(["a"])
    ae.pulled("a", False)
    assert c.done() and not c.synced
    ae.pulled("a", True)
    assert c.synced


async def test_a_first_node_alone_is_synced_at_once() -> None:
    c, _ = _catch_up([], expect_peers=False)
    assert c.synced
