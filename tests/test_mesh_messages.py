"""Wire messages: every message survives a round trip, and garbage raises one MessageError."""

from __future__ import annotations

import contextlib
import dataclasses
import typing

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.crdt.document import Document
from shoal.mesh.messages import (
    TAGS,
    Ack,
    CoverageRow,
    Digest,
    DocRecord,
    Gossip,
    Join,
    Message,
    MessageError,
    Nack,
    Ping,
    PingReq,
    Pull,
    PullReply,
    Push,
    Refused,
    ScopeCursor,
    ScopeReply,
    State,
    StateSync,
    Update,
    decode,
    encode,
    tag_of,
)

names = st.text(min_size=1, max_size=20)
updates = st.builds(
    Update, st.sampled_from(list(State)), names, st.text(max_size=30),
    st.integers(0, 2**40), st.text(max_size=20),
)
update_lists = st.lists(updates, max_size=5).map(tuple)


@settings(max_examples=200)
@given(st.one_of(
    st.builds(Ping, names, update_lists),
    st.builds(Ack, update_lists),
    st.builds(PingReq, names, st.text(max_size=30), update_lists),
    st.just(Nack()),
    st.builds(Gossip, update_lists),
    st.builds(Join, updates),
    st.builds(StateSync, update_lists),
    st.builds(Pull, st.integers(0, 10_000), st.lists(st.builds(
        ScopeCursor, st.text(max_size=10), st.integers(0, 2**50), st.integers(0, 2**20),
    ), max_size=3).map(tuple)),
    st.builds(Refused, st.lists(st.text(max_size=40), max_size=3).map(tuple)),
    st.builds(Digest, st.text(max_size=16)),
))
def test_every_membership_and_pull_message_survives_a_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


def test_documents_are_spliced_in_as_sent_and_come_back_as_nodes() -> None:
    doc = Document.create({"metadata": {"name": "a"}, "data": {"k": "v"}}, 7, "n1")
    msg = Push(2, (DocRecord("configmaps", "default", "a", doc.to_bytes()),), "tenant-a")
    back = decode(encode(msg))
    assert isinstance(back, Push) and back.hops == 2 and back.scope == "tenant-a"
    assert back.docs[0].document().root == doc.root
    reply = decode(encode(PullReply((ScopeReply("tenant-a", 9, True, back.docs),),
                                    (("tenant-b", "n3 is not a member"),))))
    assert isinstance(reply, PullReply)
    part = reply.part("tenant-a")
    assert part is not None and part.more and part.revision == 9
    assert reply.refused == (("tenant-b", "n3 is not a member"),)


@pytest.mark.parametrize("answers", [None, (5, 1, 9)])
def test_a_push_carries_deltas_with_or_without_an_answer(
        answers: tuple[int, int, int] | None) -> None:
    doc = DocRecord("leases", "kube-node-lease", "n1", b'[1,"n1",{"$":"m"},null]')
    msg = Push(0, (doc, doc), "", answers, ((1, "00ff00ff00ff00ff"),))
    back = decode(encode(msg))
    assert isinstance(back, Push) and back.answers == answers
    assert back.deltas == ((1, "00ff00ff00ff00ff"),)
    with pytest.raises(MessageError):  # a delta index past the documents
        decode(encode(dataclasses.replace(msg, deltas=((2, "00"),))))


@settings(max_examples=200)
@given(st.integers(0, 2**20), st.booleans(),
       st.lists(st.tuples(names, st.integers(0, 9), st.integers(0, 9)), max_size=2).map(tuple),
       st.integers(0, 50), st.lists(names, max_size=3).map(tuple))
def test_a_scope_replys_optional_fields_survive_a_round_trip_in_any_combination(
        coverage_revision: int, rows: bool, about: tuple[tuple[str, int, int], ...],
        base: int, unreachable: tuple[str, ...]) -> None:
    coverage = (CoverageRow("n1", 3, {"n2": 4}),) if rows else ()
    part = ScopeReply("s", 9, False, (), coverage_revision, coverage, about, base, unreachable)
    back = decode(encode(PullReply((part,))))
    assert isinstance(back, PullReply) and back.scopes == (part,)


def test_a_reply_that_reaches_every_writer_costs_no_byte_more() -> None:
    plain = encode(PullReply((ScopeReply("tenant-a", 9, False, ()),)))
    assert plain == b'[9,[["tenant-a",9,0,[]]]]'
    cut = encode(PullReply((ScopeReply("tenant-a", 9, False, (), unreachable=("n1",)),)))
    assert len(cut) - len(plain) < 20  # a few bytes, and only while a writer is cut off


def test_the_tag_table_names_each_message_by_the_tag_encode_writes() -> None:
    """``TAGS`` and ``tag_of`` serve observers of the wire (the simulator's weak-links
    checker): the table must follow ``encode`` for every message."""
    doc = DocRecord("configmaps", "default", "a", Document.create({"a": 1}, 1, "n1").to_bytes())
    one_of_each: list[Message] = [
        Ping("a", (Update(State.ALIVE, "a", "x:1", 1),)), Ack(), PingReq("a", "x:1"), Nack(),
        Gossip(()), Join(Update(State.ALIVE, "b", "y:1", 2)), StateSync(()),
        Push(0, (doc,), "tenant-a"), Pull(10, (ScopeCursor("", 3),)),
        PullReply((ScopeReply("", 9, False, (doc,)),)), Digest("ab"), Refused(("why",))]
    assert {type(m) for m in one_of_each} == set(typing.get_args(Message)) == set(TAGS.values())
    for msg in one_of_each:
        tag = tag_of(encode(msg))
        assert tag is not None and TAGS[tag] is type(msg), msg
    assert [tag_of(p) for p in (b"", b"[]", b"{}", b'["7"]', b"null")] == [None] * 5


@pytest.mark.parametrize("payload", [
    b"", b"\x00\xff", b"{}", b"[]", b"[99]", b"[0]", b"[0, 1, []]", b"[1, [[9, \"a\", \"\", 0, \"\"]]]",
    b"[8, -1, 10]", b"[8, true, 10]", b"[7, 0, [[\"r\", \"ns\", \"n\", [1, \"w\", {\"$\": \"x\"}, null]]]]",
    b"[7, 0, [[\"r\", \"ns\", \"n\", [1, \"w\", {\"$\": \"m\"}, {\"a\": [1]}]]]]",
    b"[5, [0, \"\", \"a\", 0, \"\"]]", b"[\"ping\"]", b"null", b"[3, 1]",
])
def test_malformed_payloads_raise_message_error(payload: bytes) -> None:
    with pytest.raises(MessageError):
        decode(payload)


@settings(max_examples=300)
@given(st.one_of(
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers(-5, 12) | st.text(max_size=4),
        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=20,
    ).map(orjson.dumps),
))
def test_decoding_anything_either_succeeds_or_raises_message_error(payload: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode(payload)
