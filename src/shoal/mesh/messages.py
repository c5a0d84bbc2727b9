"""The wire messages between peers, as compact JSON arrays (orjson).

Every message is ``[tag, field, ...]``; the tags are below. Decoding checks shape
and types and raises :class:`MessageError` for anything malformed, so a caller
logs, counts and drops garbage with one ``except``.

=====  ==========  ==========================================================
tag    message     fields
=====  ==========  ==========================================================
0      Ping        target name, updates
1      Ack         updates
2      PingReq     target name, target address, updates
3      Nack        (none): the intermediary could not reach the target
4      Gossip      updates
5      Join        the joiner's own alive update
6      State       every member this node knows (a push-pull exchange)
7      Push        hops, documents[, scope[, life, from, to][, deltas]]: the documents
                   of one scope; with ``life, from, to``, exactly what the receiver's
                   next pull of the scope from cursor ``from`` would be answered, up to
                   revision ``to`` of the sender's life ``life`` (``Push.answers``);
                   ``deltas``: ``[[index, digest], ...]``, the documents that hold only
                   what changed since a version the receiver holds (``Push.deltas``);
                   ``hops, documents, scope, deltas`` (no answer): deltas the receiver
                   keeps only where they check out to the digest (sent only to
                   peers whose ``caps`` tag says they decode it)
8      Pull        limit, [[scope, cursor, coverage cursor[, 1]], ...]: per scope, the
                   responder's revision and coverage revision already held; 1: send
                   only the rows' entries about the puller (it relays no rows); a
                   limit of ``ANSWERS_FLAG`` or more says the puller takes pushes
                   with ``life, from, to`` (the limit is what is left)
9      PullReply   [[scope, revision reached, more follows, documents[, coverage
                   revision, coverage rows[, entries about the puller[, the
                   version of the responder's row that its row in this answer
                   holds the changes since[, writers the responder cannot
                   reach]]]]], ...][, [[scope, reason], ...] refused]
10     Digest      a hash of every member's (name, incarnation, state): a push-pull
                   that costs a few bytes when both sides already agree
11     Refused     [reason, ...]: why documents pushed to the receiver were dropped
=====  ==========  ==========================================================

An update is ``[state, name, address, incarnation, source[, tags]]``; a document is
``[resource, namespace, name, node]`` with the node of ``shoal.crdt.document``.
A coverage row is ``[owner, version, {peer: revision, ...}]``: the owner's version
vector in the scope of the reply part that carries it (``shoal.mesh.tombstones``);
the optional trailing fields are omitted when empty, and the cluster scope is ``""``,
so an idle pull stays a few bytes. An entry about the puller is ``[owner, version,
revision]``: row ``owner`` at ``version`` covers the puller at ``revision``.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from shoal.crdt.document import Document


class MessageError(Exception):
    """A payload that is not a well-formed mesh message."""


class State(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Update:
    """A membership fact: ``name`` at ``address`` is in ``state`` at ``incarnation``.

    ``source`` is who asserts a suspicion or death (empty for alive)."""

    state: State
    name: str
    address: str
    incarnation: int
    source: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    """The member's tags (role, site, ...), sorted by key; they change with the incarnation."""

    def encode(self) -> list[Any]:
        out: list[Any] = [int(self.state), self.name, self.address, self.incarnation, self.source]
        if self.tags:
            out.append(dict(self.tags))
        return out


@dataclass(frozen=True, slots=True)
class DocRecord:
    """One object's document. ``data`` is the encoded document when sending (spliced in
    without re-parsing) and the decoded node once received."""

    resource: str
    namespace: str
    name: str
    data: bytes | list[Any]

    def document(self) -> Document:
        if isinstance(self.data, bytes):
            return Document.from_bytes(self.data)
        return Document(self.data)

    def encode(self) -> list[Any]:
        data = orjson.Fragment(self.data) if isinstance(self.data, bytes) else self.data
        return [self.resource, self.namespace, self.name, data]


@dataclass(frozen=True, slots=True)
class Ping:
    target: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    target: str
    address: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    pass


@dataclass(frozen=True, slots=True)
class Gossip:
    updates: tuple[Update, ...]


@dataclass(frozen=True, slots=True)
class Join:
    member: Update


@dataclass(frozen=True, slots=True)
class StateSync:
    members: tuple[Update, ...]


ANSWERS_FLAG = 1 << 20
"""Added to a Pull's limit by a puller that takes ``Push.answers``; sent only on a pull that
names a life (so once per life of either side). An older responder caps the limit at its
page size, so reads it as a full page; an older puller never sets it, and is never sent
the longer Push, which its decoder would drop."""


@dataclass(frozen=True, slots=True)
class Push:
    hops: int
    docs: tuple[DocRecord, ...]
    scope: str = ""
    """The scope every one of ``docs`` is in, as the sender's scope map places them."""
    answers: tuple[int, int, int] | None = None
    """(life, from, to): ``docs`` are exactly what the sender, in its life ``life``, would
    answer the receiver's pull of ``scope`` from cursor ``from``, complete up to its
    revision ``to``. A receiver whose cursor for the sender in ``scope`` is still ``from``
    (of that life) and that merged every one of them moves it to ``to``, so its next pull
    is not answered with them again (``AntiEntropy.handle``)."""
    deltas: tuple[tuple[int, str], ...] = ()
    """With ``answers``: (index in ``docs``, digest of the whole document) of each document
    sent as a delta: its nodes that differ from a version of it the sender held at or below
    revision ``from`` (whole where that version has none), with their ancestors' registers.
    A receiver whose cursor is ``from`` holds that version or a later one, so merging the
    delta gives what merging the whole would; any other receiver drops it (its next pull
    brings the whole). The digest (``doc_digest``) says whether it then holds the sender's
    document exactly. Without ``answers`` (a node's own Lease renewal, over the version it
    pushed last), a receiver keeps a delta only where merging it into what it holds gives
    a document of that digest, and merges that whole."""


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """``owner`` has merged every peer's state up to ``vector[peer]`` (its revision),
    durably. ``version`` (the owner's clock when it published the row) orders rows."""

    owner: str
    version: int
    vector: dict[str, int]

    def encode(self) -> list[Any]:
        return [self.owner, self.version, self.vector]


@dataclass(frozen=True, slots=True)
class ScopeCursor:
    """What a puller holds of one scope from the responder."""

    scope: str
    cursor: int
    """The responder's revision up to which this scope's documents are merged."""
    coverage_cursor: int = 0
    """The responder's coverage revision in this scope whose rows the puller holds."""
    about_me_only: bool = False
    """The puller relays no rows (a weak peer in the cluster scope): send it the
    responder's own row and, of the other rows, only the entry about the puller."""


@dataclass(frozen=True, slots=True)
class Pull:
    limit: int
    scopes: tuple[ScopeCursor, ...]
    life: int | None = None
    """The responder's life (``AntiEntropy.life``) the cursors are from, 0 for one not
    known; sent on a puller's first pull in its own life, and when the responder asks."""


@dataclass(frozen=True, slots=True)
class ScopeReply:
    scope: str
    revision: int
    more: bool
    docs: tuple[DocRecord, ...]
    coverage_revision: int = 0
    coverage: tuple[CoverageRow, ...] = ()
    """The rows of this scope the responder learnt after the puller's coverage cursor."""
    about_you: tuple[tuple[str, int, int], ...] = ()
    """To a puller that asked ``about_me_only``, for each other row learnt since its
    cursor that covers it: (owner, row version, the puller's revision the row covers)."""
    own_row_base: int = 0
    """When not 0, the responder's own row in ``coverage`` holds only the entries that
    changed since its row of this version (to a puller that asked ``about_me_only``);
    a puller that does not hold that version asks for the whole row again."""
    unreachable: tuple[str, ...] = ()
    """To a weak puller, from a super-peer of its site: the writers of this scope the
    responder cannot reach (suspect, dead or left to it), so may hold writes neither has.
    Empty (and not sent) while it reaches them all: an idle answer costs nothing more."""


@dataclass(frozen=True, slots=True)
class PullReply:
    scopes: tuple[ScopeReply, ...]
    refused: tuple[tuple[str, str], ...] = ()
    """(scope, reason) for each scope asked for that the responder will not serve."""
    life: int | None = None
    """The responder's life, when it is not the one the pull named (or asked for)."""
    ask_life: bool = False
    """Nothing served: name the life your cursors are from (the responder restarted)."""

    def part(self, scope: str) -> ScopeReply | None:
        return next((p for p in self.scopes if p.scope == scope), None)


@dataclass(frozen=True, slots=True)
class Refused:
    """Sent back to the sender of a Push: why some of its documents were dropped."""

    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Digest:
    digest: str


Message = (Digest | Ping | Ack | PingReq | Nack | Gossip | Join | StateSync | Push | Pull | PullReply
           | Refused)

TAGS: dict[int, type[Message]] = {
    0: Ping, 1: Ack, 2: PingReq, 3: Nack, 4: Gossip, 5: Join, 6: StateSync, 7: Push, 8: Pull,
    9: PullReply, 10: Digest, 11: Refused}
"""Each message's type by its tag, the first element of its encoding (the table above)."""
TAG = {t: tag for tag, t in TAGS.items()}
MEMBERSHIP_TAGS = frozenset(TAG[t] for t in (Ping, Ack, PingReq, Nack, Gossip, Join, StateSync,
                                                Digest))
"""The tags of membership's messages (the rest carry replication)."""


def doc_digest(data: bytes) -> str:
    """A short digest of an encoded document (``Push.deltas``)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def tag_of(payload: bytes) -> int | None:
    """The tag of an encoded message, read without decoding the rest (for observers of
    the wire, such as the simulator's checkers); None when it does not open with one."""
    end = payload.find(b",", 1, 5)
    digits = payload[1:end] if end > 0 else payload[1:-1]
    return int(digits) if payload[:1] == b"[" and digits.isdigit() else None


def _updates(us: tuple[Update, ...]) -> list[Any]:
    return [u.encode() for u in us]


def _docs(ds: tuple[DocRecord, ...]) -> list[Any]:
    return [d.encode() for d in ds]


def encode(msg: Message) -> bytes:
    body: list[Any]
    match msg:
        case Ping():
            body = [0, msg.target, _updates(msg.updates)]
        case Ack():
            body = [1, _updates(msg.updates)]
        case PingReq():
            body = [2, msg.target, msg.address, _updates(msg.updates)]
        case Nack():
            body = [3]
        case Gossip():
            body = [4, _updates(msg.updates)]
        case Join():
            body = [5, msg.member.encode()]
        case StateSync():
            body = [6, _updates(msg.members)]
        case Push():
            body = [7, msg.hops, _docs(msg.docs)]
            if msg.scope or msg.answers is not None or msg.deltas:
                body.append(msg.scope)
            if msg.answers is not None:
                body += list(msg.answers)
            if msg.deltas:
                body.append([list(d) for d in msg.deltas])
        case Pull():
            body = [8, msg.limit, [[c.scope, c.cursor, c.coverage_cursor, 1]
                                   if c.about_me_only else [c.scope, c.cursor, c.coverage_cursor]
                                   for c in msg.scopes]]
            if msg.life is not None:
                body.append(msg.life)
        case PullReply():
            body = [9, [_scope_reply(p) for p in msg.scopes]]
            if msg.refused or msg.life is not None:
                body.append([list(r) for r in msg.refused])
            if msg.life is not None:
                body.append(msg.life)
                if msg.ask_life:
                    body.append(1)
        case Digest():
            body = [10, msg.digest]
        case Refused():
            body = [11, list(msg.reasons)]
    return orjson.dumps(body)


def _scope_reply(p: ScopeReply) -> list[Any]:
    out: list[Any] = [p.scope, p.revision, 1 if p.more else 0, _docs(p.docs)]
    if p.coverage_revision or p.coverage or p.about_you or p.own_row_base:
        out += [p.coverage_revision, [r.encode() for r in p.coverage]]
    if p.about_you or p.own_row_base:
        out.append([list(e) for e in p.about_you])
    if p.own_row_base:
        out.append(p.own_row_base)
    if p.unreachable:  # only while the responder is cut off from a writer of the scope
        if len(out) == 4:
            out += [p.coverage_revision, []]
        if len(out) == 6:
            out.append([])
        if len(out) == 7:
            out.append(p.own_row_base)
        out.append(list(p.unreachable))
    return out


# -- decoding -----------------------------------------------------------------


def _int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise MessageError(f"expected a non-negative integer, got {type(v).__name__}")
    return v


def _str(v: Any) -> str:
    if type(v) is not str or len(v) > 1024:
        raise MessageError(f"expected a short string, got {type(v).__name__}")
    return v


def _list(v: Any, n: int | None = None) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise MessageError("expected a list" + ("" if n is None else f" of {n}"))
    return v


MAX_TAGS = 16


def _tags(v: Any) -> tuple[tuple[str, str], ...]:
    if type(v) is not dict or len(v) > MAX_TAGS:
        raise MessageError("malformed member tags")
    return tuple(sorted((_str(k), _str(t)) for k, t in v.items()))


def _update(v: Any) -> Update:
    f = _list(v)
    if len(f) == 6:
        u = _update(f[:5])
        return Update(u.state, u.name, u.address, u.incarnation, u.source, _tags(f[5]))
    _list(f, 5)
    try:
        state = State(_int(f[0]))
    except ValueError as e:
        raise MessageError(f"unknown member state {f[0]!r}") from e
    name = _str(f[1])
    if not name:
        raise MessageError("empty member name")
    return Update(state, name, _str(f[2]), _int(f[3]), _str(f[4]))


def _update_list(v: Any) -> tuple[Update, ...]:
    return tuple(_update(u) for u in _list(v))


_MAX_DEPTH = 64


def _node(v: Any, depth: int = 0) -> list[Any]:
    """Check a whole document node: a malformed one must never reach a merge, which would
    copy it into the replica."""
    if depth > _MAX_DEPTH:
        raise MessageError("document too deep")
    if type(v) is not list or len(v) != 4 or type(v[0]) is not int or type(v[1]) is not str:
        raise MessageError("malformed document node")
    reg, children = v[2], v[3]
    if type(reg) is dict:
        tag = reg.get("$")
        if tag == "l":
            if type(reg.get("k")) is not str or type(reg.get("o")) is not list or any(
                type(k) is not str for k in reg["o"]
            ):
                raise MessageError("malformed keyed list")
        elif tag not in ("m", "d"):
            raise MessageError("unknown document marker")
    if children is not None:
        if type(children) is not dict:
            raise MessageError("malformed document children")
        for c in children.values():
            _node(c, depth + 1)
    return v


def _coverage_rows(v: Any) -> tuple[CoverageRow, ...]:
    out = []
    for r in _list(v):
        f = _list(r, 3)
        vector = f[2]
        if type(vector) is not dict:
            raise MessageError("malformed coverage vector")
        out.append(CoverageRow(_str(f[0]), _int(f[1]),
                               {_str(k): _int(n) for k, n in vector.items()}))
    return tuple(out)


def _doc_list(v: Any) -> tuple[DocRecord, ...]:
    out = []
    for d in _list(v):
        f = _list(d, 4)
        out.append(DocRecord(_str(f[0]), _str(f[1]), _str(f[2]), _node(f[3])))
    return tuple(out)


def _scope_reply_of(v: Any) -> ScopeReply:
    f = _list(v)
    if len(f) in (7, 8, 9):
        about = tuple((_str(e[0]), _int(e[1]), _int(e[2])) for e in (_list(x, 3) for x in _list(f[6])))
        return ScopeReply(_str(f[0]), _int(f[1]), bool(_int(f[2])), _doc_list(f[3]),
                          _int(f[4]), _coverage_rows(f[5]), about,
                          _int(f[7]) if len(f) >= 8 else 0,
                          tuple(_str(w) for w in _list(f[8])) if len(f) == 9 else ())
    if len(f) == 6:
        return ScopeReply(_str(f[0]), _int(f[1]), bool(_int(f[2])), _doc_list(f[3]),
                          _int(f[4]), _coverage_rows(f[5]))
    _list(f, 4)
    return ScopeReply(_str(f[0]), _int(f[1]), bool(_int(f[2])), _doc_list(f[3]))


def decode(data: bytes) -> Message:
    """Parse a payload; raises MessageError for anything that is not a valid message."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise MessageError(f"not JSON: {e}") from e
    if type(body) is not list or not body:
        raise MessageError("not a message")
    tag = body[0]
    try:
        match tag:
            case 0:
                _list(body, 3)
                return Ping(_str(body[1]), _update_list(body[2]))
            case 1:
                _list(body, 2)
                return Ack(_update_list(body[1]))
            case 2:
                _list(body, 4)
                return PingReq(_str(body[1]), _str(body[2]), _update_list(body[3]))
            case 3:
                _list(body, 1)
                return Nack()
            case 4:
                _list(body, 2)
                return Gossip(_update_list(body[1]))
            case 5:
                _list(body, 2)
                return Join(_update(body[1]))
            case 6:
                _list(body, 2)
                return StateSync(_update_list(body[1]))
            case 7:
                if len(body) in (7, 8):
                    docs = _doc_list(body[2])
                    deltas = tuple((_int(d[0]), _str(d[1])) for d in
                                   (_list(x, 2) for x in _list(body[7]))) if len(body) == 8 else ()
                    if any(i >= len(docs) for i, _ in deltas):
                        raise MessageError("a delta index past the documents")
                    return Push(_int(body[1]), docs, _str(body[3]),
                                (_int(body[4]), _int(body[5]), _int(body[6])), deltas)
                if len(body) == 4:
                    return Push(_int(body[1]), _doc_list(body[2]), _str(body[3]))
                if len(body) == 5:  # checked deltas, no answer (to peers with caps "d")
                    docs = _doc_list(body[2])
                    deltas = tuple((_int(d[0]), _str(d[1])) for d in
                                   (_list(x, 2) for x in _list(body[4])))
                    if not deltas or any(i >= len(docs) for i, _ in deltas):
                        raise MessageError("a delta index past the documents")
                    return Push(_int(body[1]), docs, _str(body[3]), None, deltas)
                _list(body, 3)
                return Push(_int(body[1]), _doc_list(body[2]))
            case 8:
                if len(body) != 4:
                    _list(body, 3)
                cursors = []
                for c in _list(body[2]):
                    f = _list(c)
                    if len(f) != 4:
                        _list(c, 3)
                    cursors.append(ScopeCursor(_str(f[0]), _int(f[1]), _int(f[2]),
                                               len(f) == 4 and bool(_int(f[3]))))
                return Pull(_int(body[1]), tuple(cursors),
                            _int(body[3]) if len(body) == 4 else None)
            case 9:
                refused: tuple[tuple[str, str], ...] = ()
                if len(body) not in (3, 4, 5):
                    _list(body, 2)
                if len(body) >= 3:
                    refused = tuple((_str(r[0]), _str(r[1])) for r in
                                    (_list(x, 2) for x in _list(body[2])))
                return PullReply(tuple(_scope_reply_of(p) for p in _list(body[1])), refused,
                                 _int(body[3]) if len(body) >= 4 else None,
                                 len(body) == 5 and bool(_int(body[4])))
            case 10:
                _list(body, 2)
                return Digest(_str(body[1]))
            case 11:
                _list(body, 2)
                return Refused(tuple(_str(r) for r in _list(body[1])))
    except MessageError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as e:  # belt and braces
        raise MessageError(str(e)) from e
    raise MessageError(f"unknown message tag {tag!r}")
