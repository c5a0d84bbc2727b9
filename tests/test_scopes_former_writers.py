"""A writer removed from a Scope: what it wrote while it was one still replicates, relayed
by members that are not writers; what it writes afterwards, or what anyone forges in its
name after its removal, does not, and members that merged such a change before they learnt
of the removal take it out (``shoal.mesh.revocation``)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.authz.scopes import (
    FORMER_WRITER_PREFIX,
    SCOPES,
    WRITER_AGAIN_PREFIX,
    WRITERS_SINCE,
    RecordFormerWriters,
    ScopeIndex,
    ScopeMap,
    ScopeRule,
    revoked_at,
)
from shoal.crdt.document import Document
from shoal.mesh import revocation
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
        assert set(annotations) == {FORMER_WRITER_PREFIX + "n1", WRITERS_SINCE}
        until = int(annotations[FORMER_WRITER_PREFIX + "n1"])
        assert before < until <= replica.hlc.last
        assert int(annotations[WRITERS_SINCE]) == until  # the writers list's own stamp
        # A body without the annotations (a PUT of the spec alone) keeps the record, and a
        # member removed while writers defaults to every member is recorded too.
        await store.update(kind, scope(["n0", "n3"]), "", "t")
        await store.update(kind, scope(["n0"]), "", "t")
        annotations = store.get(kind, "", "t")["metadata"]["annotations"]
        assert int(annotations[FORMER_WRITER_PREFIX + "n1"]) == until
        assert int(annotations[FORMER_WRITER_PREFIX + "n3"]) > until
        replica.close()

    asyncio.run(main())


def test_a_writer_added_back_is_recorded_with_the_span_it_was_none_and_only_that_is_revoked(
) -> None:
    """Issue 10's membership-change seed 88 (6 changes): a writer removed and added back
    as one was not revoked at all, so what it wrote at about the instant of its removal,
    which it did not hand off (revoked then), was expected again once it was a writer
    again, and lost. Now the Scope keeps when it became one again: its changes between the
    two are revoked, those before the removal and after the re-adding are not, alike on
    every member (they read the same annotations)."""
    async def main() -> None:
        replica, store = store_on("n0")
        kind = store.registry.by_kind("shoal.dev/v1alpha1", "Scope")
        assert kind is not None
        await store.create(kind, scope(["n0", "n1"]))
        await store.update(kind, scope(["n0"]), "", "t")  # n1 leaves: no writer
        gone = ScopeMap.build(replica)
        until = gone.former_writers("t")["n1"]
        assert gone.revoked_after("t") == {"n1": ((until, None),)}
        await store.update(kind, scope(["n0", "n1"]), "", "t")  # back, a writer again
        obj = store.get(kind, "", "t")
        annotations = obj["metadata"]["annotations"]
        removed, again = (int(x) for x in annotations[WRITER_AGAIN_PREFIX + "n1"].split(":"))
        assert removed == until < again == int(annotations[WRITERS_SINCE])
        m = ScopeMap.build(replica)
        windows = m.revoked_after("t")
        assert windows == {"n1": ((until, again),)}
        assert not revoked_at(windows, "n1", until)  # written while it was a writer
        assert revoked_at(windows, "n1", until + 1)  # after its removal, before it learnt
        assert not revoked_at(windows, "n1", again + 1)  # a writer again
        assert m.was_writer("t", "n1", until) and not m.was_writer("t", "n1", until + 1)
        # Removed once more: both spans it was no writer are revoked, the one between not.
        await store.update(kind, scope(["n0"]), "", "t")
        m = ScopeMap.build(replica)
        until2 = m.former_writers("t")["n1"]
        assert m.revoked_after("t") == {"n1": ((until, again), (until2, None))}
        assert m.was_writer("t", "n1", again + 1) and not m.was_writer("t", "n1", until + 1)
        # A PUT without the annotations keeps every span.
        await store.update(kind, scope(["n0", "n2"]), "", "t")
        assert ScopeMap.build(replica).revoked_after("t")["n1"][0] == (until, again)
        replica.close()

    asyncio.run(main())


def test_a_writer_named_again_by_a_concurrent_edit_is_revoked_until_that_edit() -> None:
    """Two sides edit one Scope apart: one removes n1 (recorded until U), the other, which
    never saw that, keeps n1 a writer and its later list wins the merge. n1's changes from
    U to the stamp of the winning edit (``WRITERS_SINCE``) are revoked, none after."""
    def rule(since: int) -> ScopeMap:
        obj = scope(["n0", "n1"], ["n0", "n1"])
        obj["metadata"]["annotations"] = {FORMER_WRITER_PREFIX + "n1": "1000",
                                          WRITERS_SINCE: str(since)}
        parsed = ScopeRule.parse(obj)
        assert parsed is not None
        return ScopeMap([parsed])

    assert rule(1500).revoked_after("t") == {"n1": ((1000, 1500),)}
    assert rule(900).revoked_after("t") == {}  # the list is older than the removal

    async def main() -> None:
        # A later update that changes who writes moves writers-since: n1's window is
        # written down as a span first, so it stays where it was.
        replica, store = store_on("n0")
        kind = store.registry.by_kind("shoal.dev/v1alpha1", "Scope")
        assert kind is not None
        obj = scope(["n0", "n1"], ["n0", "n1"])
        obj["metadata"]["annotations"] = {FORMER_WRITER_PREFIX + "n1": "1000",
                                          WRITERS_SINCE: "1500"}
        await store.create(kind, obj)
        await store.update(kind, scope(["n0", "n1", "n2"], ["n0", "n1", "n2"]), "", "t")
        m = ScopeMap.build(replica)
        assert m.revoked_after("t") == {"n1": ((1000, 1500),)}
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


# -- revoked changes: stamped after the writer's recorded removal -----------------------

UNTIL = 1000  # n1 was a writer until this stamp


def _revoked(path: tuple[str, ...], writer: str, stamp: int) -> bool:
    return writer == "n1" and stamp > UNTIL


def test_a_create_that_a_revoked_create_of_the_same_name_overwrote_comes_back() -> None:
    """Issue 10's membership-change seed 114 (6 changes): n0, a writer, creates s; n1,
    removed but not knowing, creates s too with a larger stamp, which overwrites every
    field n0's create wrote, on every member (n0 included). Taking the revoked create out
    left nothing. The create that lost a merge is kept (``displaced``) and comes back,
    with the valid changes made over the revoked one since (``over``)."""
    valid = Document.create({"metadata": {"name": "s", "uid": "u0"}, "data": {"k": "a"}},
                            UNTIL + 5, "n0")
    late = Document.create({"metadata": {"name": "s", "uid": "u1"}, "data": {"k": "b"}},
                           UNTIL + 9, "n1")
    held = valid.copy()
    lost = revocation.displaced(held, late)
    assert lost is not None and lost.root == valid.root
    assert revocation.displaced(late, valid) is not None  # either order: the smaller
    held.merge(late)
    assert held.value() == late.value()  # n0's create is gone from the merged document
    held.write({"metadata": {"name": "s", "uid": "u1"}, "data": {"k": "b", "j": "c"}},
               UNTIL + 12, "n0")  # n0 updates it before it learns of n1's removal
    assert revocation.displaced(held, held.copy()) is None  # the same create: nothing
    assert revocation.strip(held, _revoked) is None  # the revoked create: nothing left
    base = revocation.strip(lost, _revoked)
    assert base is lost
    back = revocation.over(base, held, _revoked)
    assert back.value() == {"metadata": {"name": "s", "uid": "u0"},
                            "data": {"k": "a", "j": "c"}}
    assert revocation.strip(back, _revoked) is back


def test_a_revoked_create_over_a_valid_deletion_leaves_the_deletion() -> None:
    """The scoped soak's seed 1956: n1 deleted s while it was a writer, then (removed, not
    knowing) created it again over its own deletion. Taking the late create out dropped
    the whole document, so the deletion was lost wherever it had been overwritten, and
    the older create (held by a writer that never saw the deletion) came back. What
    stays is the deletion, as a tombstone at its stamp; a later valid create still wins
    over it, and a deletion that was itself revoked goes with the create."""
    created = Document.create({"metadata": {"name": "s", "uid": "u0"}, "data": {"k": "a"}},
                              900, "n0")
    member = created.copy()
    member.delete(UNTIL - 10, "n1")  # before its removal: valid
    member.write({"metadata": {"name": "s", "uid": "u1"}, "data": {"k": "b"}},
                 UNTIL + 5, "n1")  # after it: revoked
    kept = revocation.strip(member, _revoked)
    assert kept is not None and kept.deleted and kept.stamp == (UNTIL - 10, "n1")
    assert revocation.strip(kept, _revoked) is kept
    for other in (created, member):  # a member that never saw the deletion, or both
        merged = kept.copy()
        merged.merge(revocation.strip(other, _revoked) or Document.empty())
        assert merged.value() is None
    later = Document.create({"metadata": {"name": "s", "uid": "u2"}, "data": {"k": "c"}},
                            UNTIL + 20, "n0")
    later.merge(kept)
    assert later.value() == {"metadata": {"name": "s", "uid": "u2"}, "data": {"k": "c"}}

    late_deletion = created.copy()
    late_deletion.delete(UNTIL + 1, "n1")
    late_deletion.write({"metadata": {"name": "s", "uid": "u1"}}, UNTIL + 5, "n1")
    assert revocation.strip(late_deletion, _revoked) is None


def test_a_removed_writers_late_create_goes_and_its_late_update_gives_way_to_the_old_value(
) -> None:
    created = Document.create({"metadata": {"name": "s", "uid": "u0"}, "data": {"a": "1"}},
                              900, "n0")
    assert revocation.strip(created, _revoked) is created  # nothing revoked: untouched
    late = Document.create({"metadata": {"name": "l", "uid": "u1"}}, UNTIL + 1, "n1")
    assert revocation.strip(late, _revoked) is None  # it should not exist at all
    on_time = Document.create({"metadata": {"name": "t", "uid": "u2"}}, UNTIL, "n1")
    assert revocation.strip(on_time, _revoked) is on_time

    updated = created.copy()
    updated.write({"metadata": {"name": "s", "uid": "u0"}, "data": {"a": "2", "b": "3"}},
                  UNTIL + 5, "n1")
    later = updated.copy()
    later.write({"metadata": {"name": "s", "uid": "u0"}, "data": {"a": "2", "b": "3", "c": "4"}},
                UNTIL + 9, "n0")  # a writer that had not learnt either, on top of it
    stripped = revocation.strip(later, _revoked)
    assert stripped is not None and stripped is not later
    assert stripped.value() == {"metadata": {"name": "s", "uid": "u0"}, "data": {"c": "4"}}
    # The value the late update overwrote comes back from a member that never merged it.
    stripped.merge(created)
    assert stripped.value() == {"metadata": {"name": "s", "uid": "u0"},
                                "data": {"a": "1", "c": "4"}}

    deleted = created.copy()
    deleted.delete(UNTIL + 1, "n1")
    undone = revocation.strip(deleted, _revoked)
    assert undone is not None and undone.value() == created.value()
    assert undone.stamp == created.stamp  # the create's root again, as on the writers


_KEYS = ("a", "b", "c")
_step = st.tuples(st.sampled_from(["writer", "writer", "removed", "merge"]),
                  st.dictionaries(st.sampled_from(_KEYS), st.sampled_from("xyz"), max_size=3),
                  st.booleans())


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_step, max_size=12))
def test_a_member_that_took_out_a_removed_writers_late_changes_holds_what_the_writer_holds(
    steps: list[tuple[str, dict[str, str], bool]],
) -> None:
    """Whatever late changes n1 (a writer until UNTIL) made on the member's side, and
    whenever the member merged the writer's copies, once the member takes them out and
    merges the writer's copy it holds exactly what the writer holds; and taking out
    twice changes nothing."""
    def value(data: dict[str, str], uid: str = "u0") -> dict[str, Any]:
        return {"metadata": {"name": "s", "uid": uid}, "data": data}

    writer = Document.create(value({"a": "0"}), 100, "n0")
    member = writer.copy()
    stamp = UNTIL
    for i, (who, data, delete) in enumerate(steps):
        stamp += 1
        if who == "writer":  # n0, which never merges n1's late changes
            writer.write(value(data), stamp, "n0")
        elif who == "merge":
            member.merge(writer)
        elif member.deleted:
            member.write(value(data, f"u{i + 1}"), stamp, "n1")  # created again
        elif delete:
            member.delete(stamp, "n1")
        else:
            member.write(value(data, (member.value() or {})["metadata"]["uid"]), stamp, "n1")
    kept = revocation.strip(member, _revoked)
    if kept is not None:
        assert revocation.strip(kept, _revoked) is kept
    after = kept.copy() if kept is not None else Document.empty()
    after.merge(writer)
    assert after.root == writer.root
    assert after.value() == writer.value()


def test_a_writer_relaying_a_change_stamped_after_a_removal_is_refused_for_now() -> None:
    async def main() -> None:
        r = Replica(None, "n0")
        obj = scope(["n0", "n1", "n2"], ["n0", "n2"])
        obj["metadata"]["annotations"] = {FORMER_WRITER_PREFIX + "n1": str(UNTIL)}
        _, fut = r.put(SCOPES, "", "t", obj, lambda _: None)
        await fut
        policy = ReplicationPolicy("n0", ScopeIndex(r), Members(), 8)
        held = Document.create({"metadata": {"name": "s"}, "data": {"k": "a"}}, 900, "n2")

        def judge(doc: Document, sender: str) -> Any:
            return policy.accept("secrets", NS, "s", doc, lambda: (held, held.value()), "t",
                                 sender)

        late = held.copy()
        late.write({"metadata": {"name": "s"}, "data": {"k": "b"}}, UNTIL + 1, "n1")
        refusal = judge(late, "n2")  # n2 is a writer, but had merged it before it learnt
        assert refusal is not None and refusal.transient
        assert "stamped after its removal" in refusal.reason
        on_time = held.copy()
        on_time.write({"metadata": {"name": "s"}, "data": {"k": "c"}}, UNTIL, "n1")
        assert judge(on_time, "n2") is None
        # What the merge would not change is not judged: a later write by a writer won.
        both = late.copy()
        both.write({"metadata": {"name": "s"}, "data": {"k": "d"}}, UNTIL + 2, "n2")
        mine = both.copy()
        assert policy.accept("secrets", NS, "s", late, lambda: (mine, mine.value()), "t",
                             "n2") is None
        r.close()

    asyncio.run(main())


def test_a_removed_writers_late_writes_never_become_the_scopes_state_anywhere() -> None:
    """Issue 10's membership-change seed 198, on purpose: n1, cut off with n2 (a member,
    no writer), is removed as a writer on n0's side; before either learns, n1 creates an
    object and updates one that n0 wrote, and n2 merges both. After the heal every member
    (n1 stays one) takes them out: the late create is nowhere, the update gives way to
    n0's value again, and the three hold the same."""
    from shoal.sim.loop import run as virtual_run
    from tests.test_mesh_scopes import Mesh, has, until

    async def main() -> None:
        m = Mesh(3, 7)
        await m.start()
        await m.put("n0", SCOPES, "", "t", scope(["n0", "n1", "n2"], ["n0", "n1"]))
        await until(lambda: all(has(m, n, SCOPES, "t", "") for n in m.names), 30)
        await m.put("n0", "configmaps", NS, "old", {"metadata": {"name": "old"},
                                                     "data": {"v": "n0"}})
        await until(lambda: all(has(m, n, "configmaps", "old") for n in m.names), 30)
        m.network.partition([["n0:7443"], ["n1:7443", "n2:7443"]])
        removed = scope(["n0", "n1", "n2"], ["n0"])
        old = m.replicas["n0"].get(SCOPES, "", "t")
        assert old is not None
        RecordFormerWriters(m.replicas["n0"], m.replicas["n0"].hlc.now)(SCOPES, old, removed)
        await m.put("n0", SCOPES, "", "t", removed)
        await asyncio.sleep(1)  # n1's clock is past the removal's stamp
        await m.put("n1", "configmaps", NS, "late", {"metadata": {"name": "late"},
                                                      "data": {"v": "n1"}})
        await m.put("n1", "configmaps", NS, "old", {"metadata": {"name": "old"},
                                                     "data": {"v": "n1"}})
        await until(lambda: has(m, "n2", "configmaps", "late"), 30)
        m.network.heal()

        def settled() -> bool:
            values = [m.replicas[n].get("configmaps", NS, "old") for n in m.names]
            return (not any(has(m, n, "configmaps", "late") for n in m.names)
                    and all(v is not None and v["data"] == {"v": "n0"} for v in values))

        await until(settled, 120)
        docs = {n: sorted((k, e.document().root) for k, e in m.replicas[n].all_entries()
                          if k[1] == NS) for n in m.names}
        assert docs["n0"] == docs["n1"] == docs["n2"]
        assert m.peers["n2"].anti_entropy.docs_revoked >= 2
        await m.stop()

    virtual_run(main())


def _late_create_over_n1s_deletion(seed: int, created_again_on_n0: bool
                                   ) -> dict[str, tuple[bool, Any]]:
    """n2 creates s in a scope of n0, n1, n2 (all writers); n1, cut off with n0, deletes
    it while a writer; n3, a peer of neither side, removes n1; n1, not knowing, creates s
    again (after n0 did on its own, cut off from n1 too, if ``created_again_on_n0``), and
    every member merges that (n1's create displaces n2's create, which n2 never saw
    deleted, and n0's). Then the three learn of the removal. Per member n0 and n2, 30 s
    after both took the late create out: (whether it holds s at all, s's data)."""
    from shoal.sim.loop import run as virtual_run
    from tests.test_mesh_scopes import Mesh, until

    def secret(k: str) -> dict[str, Any]:
        return {"metadata": {"name": "s"}, "data": {"k": k}}

    out: dict[str, tuple[bool, Any]] = {}

    async def main() -> None:
        m = Mesh(4, seed)

        def data(n: str) -> Any:
            value = m.replicas[n].get("secrets", NS, "s")
            return None if value is None else value["data"]

        await m.start()
        await m.put("n0", SCOPES, "", "t", scope(["n0", "n1", "n2"]))
        await until(lambda: all(m.replicas[n].get(SCOPES, "", "t") for n in m.names), 30)
        await m.put("n2", "secrets", NS, "s", secret("YQ=="))
        await until(lambda: all(data(n) for n in ("n0", "n1", "n2")), 30)
        m.network.partition([["n0:7443", "n1:7443"], ["n2:7443"], ["n3:7443"]])
        await m.put("n1", "secrets", NS, "s", None)
        await until(lambda: data("n0") is None, 30)
        m.network.partition([["n0:7443"], ["n1:7443"], ["n2:7443"], ["n3:7443"]])
        removed = scope(["n0", "n2"])
        old = m.replicas["n3"].get(SCOPES, "", "t")
        assert old is not None
        RecordFormerWriters(m.replicas["n3"], m.replicas["n3"].hlc.now)(SCOPES, old, removed)
        await m.put("n3", SCOPES, "", "t", removed)
        await asyncio.sleep(1)  # the clocks are past the removal's stamp
        if created_again_on_n0:
            await m.put("n0", "secrets", NS, "s", secret("Yw=="))
            await asyncio.sleep(1)  # n1's create is the later one
        await m.put("n1", "secrets", NS, "s", secret("Yg=="))
        m.network.partition([["n0:7443", "n1:7443", "n2:7443"], ["n3:7443"]])
        await until(lambda: all(data(n) == {"k": "Yg=="} for n in ("n0", "n1", "n2")), 30)
        m.network.heal()
        await until(lambda: all(m.peers[n].anti_entropy.docs_revoked for n in ("n0", "n2")),
                    60)
        await asyncio.sleep(30)  # the full pulls that follow bring nothing else back
        for n in ("n0", "n2"):
            out[n] = (m.replicas[n].entry("secrets", NS, "s") is not None, data(n))
        await m.stop()

    virtual_run(main())
    return out


def test_a_deletion_a_removed_writers_late_create_overwrote_stays_deleted_everywhere() -> None:
    """The scoped soak's seed 1956, on purpose: once the members learn, s must stay
    deleted (a tombstone) on all of them. Taking the late create out dropped s on n0,
    n2 brought back its own create (the displaced one), and the deletion was lost."""
    assert _late_create_over_n1s_deletion(11, False) == {"n0": (True, None),
                                                         "n2": (True, None)}


def test_a_valid_create_after_the_deletion_that_a_late_create_displaced_comes_back() -> None:
    """As above, but n0 created s again after n1's deletion, on its own, before n1's late
    create displaced it on every member: the writers that restore n0's create merge the
    deletion into it, and the later create wins (the deletion alone would lose it)."""
    assert _late_create_over_n1s_deletion(12, True) == {"n0": (True, {"k": "Yw=="}),
                                                        "n2": (True, {"k": "Yw=="})}


def test_a_super_peer_relaying_a_weak_writers_change_from_its_revoked_span_is_refused() -> None:
    """n1, a weak peer, was removed as a writer at 1000 and made one again at 2000; a
    change it stamped in between is revoked, also when n2 (a super-peer of its site, no
    writer) relays it: a super-peer vouches for its weak peers only as far as they wrote
    as writers. The same relay of a change from after 2000 is taken."""
    from types import SimpleNamespace

    async def main() -> None:
        r = Replica(None, "n0")
        obj = scope(["n0", "n1", "n2"], ["n0", "n1"])
        obj["metadata"]["annotations"] = {FORMER_WRITER_PREFIX + "n1": "1000",
                                          WRITER_AGAIN_PREFIX + "n1": "1000:2000",
                                          WRITERS_SINCE: "2000"}
        _, fut = r.put(SCOPES, "", "t", obj, lambda _: None)
        await fut

        class Tagged(Members):
            members = {"n1": SimpleNamespace(name="n1", tags={"role": "weak", "site": "s"}),
                       "n2": SimpleNamespace(name="n2", tags={"role": "super", "site": "s"})}

        policy = ReplicationPolicy("n0", ScopeIndex(r), Tagged(), 8)
        held = Document.create({"metadata": {"name": "s"}, "data": {"k": "a"}}, 900, "n0")

        def relayed(stamp: int) -> Any:
            doc = held.copy()
            doc.write({"metadata": {"name": "s"}, "data": {"k": str(stamp)}}, stamp, "n1")
            return policy.accept("secrets", NS, "s", doc, lambda: (held, held.value()), "t",
                                 "n2")

        assert relayed(2500) is None
        refusal = relayed(1500)
        assert refusal is not None and "n1" in refusal.reason
        r.close()

    asyncio.run(main())
