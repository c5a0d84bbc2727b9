"""Replication of the replica: eager push, then pull anti-entropy with cursors.

*Push.* Every local write is sent at once to ``push_fanout`` random live peers.
A peer that the push changed forwards it to ``push_fanout`` others, up to
``push_max_hops`` from the writer: an epidemic that reaches most peers within
a few network round trips, and costs nothing where it changes nothing.

*Pull.* Every ``pull_interval`` a peer asks ``pull_fanout`` random live peers
for everything they changed after the *cursor* it holds for them: the highest
revision of theirs it has merged. The cursors together are a version vector
over the peers' local revisions. Revisions count merges as well as writes, so a
pull carries everything the responder knows, whoever wrote it. The cursor moves
only after the documents are merged, so a lost or partial answer is pulled
again. A peer that is far behind (or new) simply pulls from cursor 0, the
full-state fallback, one page of ``pull_batch`` documents at a time. An idle
round is one tiny exchange: "what changed since N?", "nothing, I am at N".

The cursors are kept in the replica's ``meta`` table, written after the
documents they cover, so a restart resumes where it stopped.

*Lives.* A revision means something only within one history of the responder's disk: a
peer restarted from an older copy of its data dir hands out revisions again that its
partners' cursors are already past. So each start of the process is a *life*, with an id,
recorded with the revision it began at (``LIVES_META``); a puller names the life of its
cursors on its first pull in its own life and whenever the responder asks (a responder
that restarted asks every puller it has not heard from since), and a cursor of an earlier
life is worth at most where the next life began (``_since``). A normal restart begins
where the last life ended, so its partners pull nothing again.

*Coverage.* The same exchange carries the peers' coverage vectors, from which
``tombstones.py`` decides when a deletion may be forgotten.

*Scopes.* Everything above is per scope (``shoal.authz.scopes``), under one
``ReplicationPolicy``: a push carries the documents of one scope and goes only to live
members of it; a pull asks a partner for each scope both hold, with a cursor and a
coverage cursor per (partner, scope), and the partner answers only the scopes the
puller is a member of; a receiver merges only what the policy accepts, and tells the
sender of a push what it refused. When this peer stops holding a scope it drops the
scope's objects from memory and disk; when a scope it holds grows (it became a member,
a namespace moved in, a writer was added), the scope's cursors restart at 0 so that
its whole state is pulled again; and the cursors held for a partner in a scope it is
no longer a member of are forgotten.
"""



from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.authz.scopes import (
    CLUSTER,
    ScopeIndex,
    ScopeMap,
    Windows,
    admits_more,
    revoked_at,
    shown,
)
from shoal.crdt.document import Document, Node
from shoal.mesh import revocation, topology
from shoal.mesh.config import MeshConfig
from shoal.mesh.membership import Member, Membership
from shoal.mesh.messages import (
    ANSWERS_FLAG,
    CoverageRow,
    DocRecord,
    Message,
    MessageError,
    Pull,
    PullReply,
    Push,
    Refused,
    ScopeCursor,
    ScopeReply,
    State,
    decode,
    doc_digest,
    encode,
)
from shoal.mesh.replication_policy import (
    LEASES,
    NODE_LEASE_NAMESPACE,
    DenialLog,
    ReplicationPolicy,
    changed_registers,
    revoked_rule,
    tags_of,
)
from shoal.mesh.tombstones import COVERAGE_META, CoverageBook, TombstoneCollector
from shoal.mesh.transport import Transport, TransportError
from shoal.store.change_feed import Change, Subscription
from shoal.store.persistence import StorageError
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

CURSORS_META = "mesh.cursors"
"""``{scope: {peer: cursor}}`` (``{peer: cursor}`` before scopes: the cluster scope)."""
HELD_META = "mesh.scopes-held"
"""What each scope held here was made of when the cursors were last written, so that a
scope that grew while this peer was down (or before it wrote its cursors) is pulled
again in full after a restart."""
LIVES_META = "mesh.lives"
"""This node's lives, oldest first, the running one last: ``[life, the revision it started
at, the coverage revision it started at]`` (``AntiEntropy.life``)."""
PARTNER_LIVES_META = "mesh.cursor-lives"
"""``{peer: life}``: the life of each partner that the cursors held for it are from."""
MAX_LIVES = 16
"""Lives remembered: a cursor from an older one (or from a life this disk never had, a
branch that a restore from a backup abandoned) restarts at 0."""
MAX_PAGES = 64  # per pull; the next round continues from the cursor
MAX_REASONS = 8  # per Refused message
CAME_FROM = 4096
"""Objects new here whose sender is remembered (``AntiEntropy._came_from``)."""
HANDOFF_SECONDS = 120.0
"""How long a peer that left a scope keeps pushing the changes it made there as a writer."""
DISPLACED_KEPT = 1024
"""Objects of scopes for which the creates that lost to another create here are kept
(``AntiEntropy._displaced``); the least recently displaced goes first."""
DISPLACED_PER_OBJECT = 4
ROWS_ONLY = 1 << 62
"""The cursor a weak peer names to pull only the coverage rows of the cluster scope from a
super-peer that is not its source (past every revision: no document is due)."""
VERSIONS_KEPT = 128
"""Objects whose last versions sent in pushes that complete an answer are kept, to send the
next as a delta (``AntiEntropy._versions``); the least recently sent goes first."""
DELTA_MIN = 256
"""Bytes: a smaller document is sent whole."""
WEAK_PULL_EVERY = 10.0
"""Seconds: a super-peer pulls each weak peer of its site at most this often (``pull_round``).
With few weak peers a site, a pull per round (every ``pull_interval``) cost a weak peer
twice what its idle pushes do (0.56 kbit/s with one weak peer and two super-peers)."""
WEAK_PUSHED_FRESH = 25.0
"""Seconds: a super-peer skips its pull of a weak peer whose push completed its pull answer
from that peer (``Push.answers``) this recently: a node renews its Lease every 10 s, so
idle a lost push is pulled within WEAK_PUSHED_FRESH + WEAK_PULL_EVERY, inside its 40 s
Lease. A weak peer whose Lease declares longer (one renewing every 30 s declares 120 s)
gets the same share of it (``_pushed_fresh``)."""
WEAK_IDLE_DOUBLINGS = 2
"""A weak peer's pull rounds that bring nothing double its wait this many times at most: an
idle weak peer pulls every 4th round (16 s with its 4 s rounds), ``pull_round``. Its idle
pulls and their answers were 0.13 kbit/s at every other round, half of a real weak peer's
traffic once it renewed its Lease every 30 s. Backed off, a change would reach it up to 16 s
later, so the super-peer it would pull the change from pokes it when its next pull would
bring one (``POKE``) and it pulls at its next round: one write reaches every peer of
bench.scale in 2-3 rounds (7-8 without pokes, 3-4 before the back-off). A weak peer in a
Scope backs off too (it pulled every round: 22.5 pulls a minute, 0.52 kbit/s idle with a
renewal every 30 s in the simulator, now 5.6 and 0.35; in the cluster scope only 4.75 and
0.21, as it pulls its other super-peer's rows at every other turn but a Scope's documents
at every turn). Every 8th round (3) saved a real weak peer another
0.03 kbit/s, but pokes carry no coverage rows (they come with its pulls, the other
super-peer's at every other one) and tombstones were then still held past the bounds of
two tests of test_sim_super_peers_coverage: not taken."""
WEAK_PULL_AT_LEAST = 300.0
"""Seconds: a super-peer pulls each weak peer at least this often even while its pushes keep
coming, for its coverage row (tombstone collection, which waits an hour anyway)."""
POKE_AGAIN = 20.0
"""Seconds: a super-peer pokes a weak peer again only after it pulled since the last poke,
or after this long (the poke or the pull was lost): one poke per pull, however many
changes come meanwhile (``_to_poke``)."""
POKE = encode(Push(0, ()))
"""A poke: a super-peer tells a weak peer of its site that its next pull from it would
bring something, in a scope whose documents the weak peer pulls from it (the cluster
scope from its source, a Scope from each super-peer of its site that is a member:
``_to_poke``); the weak peer then pulls at its next round
instead of waiting out its idle back-off (``_poked_by``). Wire compatibility: it is a push
of no documents (``[7,0,[]]``, 8 bytes), a shape every peer since the first decodes and
merges as nothing, so an older weak peer ignores it safely and no capability tag is needed
(a ``caps`` tag on weak peers would add to every membership message about them, which is
most of an idle weak peer's traffic). No peer sends an empty push otherwise (``_send``)."""
SOURCE_RETRY = 30.0
"""Seconds a weak peer pulls the cluster scope from its next super-peer after its first
stopped answering, before it tries the first again (``_source``)."""


@dataclass(frozen=True, slots=True)
class PullTarget:
    """A peer to pull from that membership may not list (a writer that pulled from us)."""

    name: str
    address: str


@dataclass(slots=True)
class MergeResult:
    changed: list[DocRecord] = field(default_factory=list)
    """The documents that changed something here: as now held, or as received when what
    was held before was not yet durable."""
    transient: int = 0
    """Refused for now (maps disagree, a relay that may not relay): ask again later."""
    refused: list[str] = field(default_factory=list)
    """Why documents were refused for good (the writer rule)."""


def _new_life(rng: random.Random, replica: Replica, used: set[int]) -> int:
    """A life id: from the peer's random source (seeded in the simulator, so a run replays)
    and the wall clock, without drawing from the source (runs keep their traces)."""
    # The state's integers only: hash(None) is an address before Python 3.12.
    life = random.Random(hash((rng.getstate()[1], replica.wall.now()))).getrandbits(62) or 1
    while life in used:
        life += 1
    return life


def _delta(old: Node | None, new: Node) -> Node | None:
    """What of document node ``new`` differs from ``old``, a version it grew from: its
    register, and under it only the children that differ (whole where ``old`` has none);
    None where nothing differs. Merge is a join per register with a union of children, so
    merged into a document that holds ``old`` or anything later, it gives what merging the
    whole of ``new`` gives."""
    if old is None:
        return new
    children: dict[str, Node] = {}
    old_children = old[3] or {}
    for k, child in (new[3] or {}).items():
        d = _delta(old_children.get(k), child)
        if d is not None:
            children[k] = d
    same = old[0] == new[0] and old[1] == new[1] and old[2] == new[2]
    if not children and same:
        return None
    if same:
        # An ancestor of a change with its register unchanged: sent as an empty register
        # (stamp 0, no writer, no value), so the receiver, which holds that register or a
        # later one, keeps its own and merges only the children (a Lease renewal's delta
        # was 152 B, 90 of them its two ancestors' registers; now 80).
        return [0, "", None, children]
    return [new[0], new[1], new[2], children or None]


def _written_only_by(node: Node, writer: str) -> bool:
    """Whether every register of document node ``node`` was written by ``writer``."""
    if node[1] != writer:
        return False
    return all(_written_only_by(c, writer) for c in (node[3] or {}).values())


def _delta_worth_it(older: bytes, whole: bytes) -> bytes | None:
    """The encoded delta of document ``whole`` over ``older``, a version it grew from, when
    it is under three quarters of the whole; None when nothing differs or it would not pay."""
    delta = _delta(orjson.loads(older), orjson.loads(whole))
    if delta is None:
        return None
    data = orjson.dumps(delta)
    return data if len(data) * 4 < len(whole) * 3 else None


def _cursors(stored: object) -> dict[tuple[str, str], int]:
    if not isinstance(stored, dict):
        raise ValueError("not a cursor map")
    if all(isinstance(v, int) for v in stored.values()):
        return {(str(p), CLUSTER): int(c) for p, c in stored.items()}
    return {(str(p), str(s)): int(c) for s, per in stored.items() for p, c in per.items()}


class AntiEntropy:
    def __init__(
        self,
        replica: Replica,
        transport: Transport,
        config: MeshConfig,
        rng: random.Random,
        membership: Membership,
    ) -> None:
        self.replica = replica
        self.transport = transport
        self.config = config
        self.rng = rng
        self.membership = membership
        self.policy = ReplicationPolicy(membership.name, ScopeIndex(replica), membership,
                                        config.pull_partners)
        self._round = 0
        self.cursors: dict[tuple[str, str], int] = {}
        """(partner, scope) -> the partner's revision up to which the scope is merged here."""
        stored = replica.persistence.get_meta(CURSORS_META)
        if stored:
            try:
                self.cursors = _cursors(orjson.loads(stored))
            except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError):
                log.warning("ignoring unreadable anti-entropy cursors")
        # Revisions produced by merges here: the change feed reports them like local
        # writes, but pulls are not pushed on and pushes are forwarded by the handler.
        self._merged_rvs: set[int] = set()
        self._came_from: dict[int, list[str]] = {}
        """Revision -> the peers known to hold an object of the cluster scope as it is here
        since that revision (the latest ``CAME_FROM``, oldest first): the one whose
        document made it new here (we hold at most what it sent), then any that sent the
        same bytes again. Their pulls skip the object while it is unchanged here: a
        super-peer that pulls a weak peer is not sent back what it or its site-mate
        served it (``serve_pull``)."""
        self.coverage = CoverageBook(membership.name, replica, replica.hlc)
        # -- lives: a cursor names a revision of one life of the responder ----------------
        lives: list[tuple[int, int, int]] = []
        stored_lives = replica.persistence.get_meta(LIVES_META)
        if stored_lives:
            try:
                lives = [(int(a), int(b), int(c)) for a, b, c in orjson.loads(stored_lives)]
            except (orjson.JSONDecodeError, TypeError, ValueError):
                log.warning("ignoring an unreadable record of this node's lives")
        self.life = _new_life(rng, replica, {life for life, _, _ in lives})
        """Chosen at every start of the process. A restart from an older copy of the data
        dir hands out its revisions again from an older one: a cursor from the life that
        copy was taken in is worth at most the revision the next life started at."""
        self.lives = [*lives[-(MAX_LIVES - 1):],
                      (self.life, replica.loaded_revision, self.coverage.revisions.last)]
        self._partner_lives: dict[str, int] = {}
        """Per partner: the life of it that our cursors for it are from."""
        stored_partners = replica.persistence.get_meta(PARTNER_LIVES_META)
        if stored_partners:
            try:
                self._partner_lives = {str(p): int(v)
                                       for p, v in orjson.loads(stored_partners).items()}
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                log.warning("ignoring an unreadable record of the partners' lives")
        self._told: set[str] = set()
        """Partners this life has named their life to (a pull names it until then)."""
        self._trusted: set[str] = set()
        """Pullers whose cursors are known to be of this life (they named a life, or were
        told ours): a pull naming no life from anyone else is asked to name one."""
        self._answers_ok: set[str] = set()
        """Pullers that take a push which completes their next pull answer (``Push.answers``):
        they said so on their last pull naming a life."""
        self._answer_base: dict[tuple[str, str], int] = {}
        """(puller, scope) -> our revision its cursor stands at once it merged our last
        answer to it, or our last push that completed one (``_answering``)."""
        self._versions: OrderedDict[tuple[str, str, str], list[tuple[int, bytes]]] = (
            OrderedDict())
        """Object -> its last two versions (our revision, the document) sent in a push that
        completes an answer, for up to ``VERSIONS_KEPT`` objects of the cluster scope: a
        puller whose cursor is at or past such a revision holds that version or a later
        one (merges only join), so the next can be sent to it as a delta."""
        self.deltas_sent = 0
        self.deltas_rebuilt = 0
        """Deltas outside an answer merged here as the whole they checked out to."""
        self._own_lease_pushed: bytes | None = None
        """Our own Lease as we last pushed it (``_own_lease_delta``)."""
        self.pushes_answering = 0
        """Pushes sent as a receiver's next pull answer (``Push.answers``)."""
        self.cursors_pushed = 0
        """Cursors moved here by such a push (its sender then does not send it again)."""
        self.collector = TombstoneCollector(replica, self.coverage, membership, config,
                                            self.policy)
        # Per (partner, scope): the coverage revision of theirs whose rows we hold (memory
        # only: after a restart the first pull fetches every row once).
        # The third part: whether we asked for entries about us only; a cursor held in
        # one mode says nothing about the rows of the other.
        self._coverage_cursors: dict[tuple[str, str, bool], int] = {}
        self._partner_revision: dict[str, int] = {}
        self._answered: dict[tuple[str, str], float] = {}
        """(partner, scope) -> loop time of its last pull answer for the scope."""
        self._relayed_cut: dict[tuple[str, str], tuple[str, ...]] = {}
        """On a weak peer, (super-peer, scope) -> the writers of the scope that super-peer
        said in its last answer for the scope it cannot reach (``ScopeReply.unreachable``)."""
        self._missed: set[str] = set()
        """Weak peers of this super-peer's site, and super-peers that push their Lease to
        its holders themselves, whose answering push showed that one of theirs was missed
        here, or weak peers back in the live list: pulled at the next round
        (``pull_round``), not in their turn."""
        self._weak_seen: set[str] | None = None
        """The weak peers ``weak_pulls`` listed at our last round (None before the first)."""
        self._leases_checked = -1
        """The member list version whose tags the node Leases held here were last checked
        against (``_forget_withheld_leases``)."""
        self._durable_vectors: dict[str, dict[str, int]] | None = None
        self._publish_timer: asyncio.TimerHandle | None = None
        self._last_publish = float("-inf")
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._map_serial = -1
        self._resets: Counter[str] = Counter()
        """Per scope: how many times its cursors restarted (a pull answered across a restart
        must not move them)."""
        self._held_view: dict[str, tuple[Any, ...]] | None = None
        stored_view = replica.persistence.get_meta(HELD_META)
        if stored_view:
            try:
                self._held_view = {
                    str(s): (frozenset(v[0]), None if v[1] is None else frozenset(v[1]))
                    for s, v in orjson.loads(stored_view).items()}
            except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError, IndexError):
                log.warning("ignoring an unreadable record of the scopes held")
        self._deny_log = DenialLog()
        self._pull_back: dict[str, PullTarget] = {}
        """Per scope with no pull partner: a writer that pulled it from us, to pull back."""
        replica.rollback_listeners.append(self._rolled_back)
        self.docs_unstored = 0
        """Documents this node could not store (its disk full): asked for again later."""
        self._handoff: dict[str, dict[tuple[str, str, str], tuple[DocRecord, float]]] = {}
        """Per scope no longer held: documents with this peer's own writer-time changes,
        and until when they are pushed to the scope's members (``_keep_for_handoff``)."""
        self.docs_merged = 0
        self.docs_pushed = 0
        self.docs_sent: Counter[str] = Counter()
        """Documents sent per scope (pushes and pull answers)."""
        self.docs_refused = 0
        """Documents refused for good (the writer rule)."""
        self.docs_deferred = 0
        """Documents refused for now (maps disagree, a relay that may not relay)."""
        self.refusals_received = 0
        self.docs_forgotten = 0
        self.docs_revoked = 0
        """Documents that held changes a writer's removal revoked (``_revoke``)."""
        self._revocations: dict[str, Windows] = {}
        """Per scope: the revoked windows (peer -> windows) its documents were last stripped
        under."""
        self._held_back: dict[str, dict[tuple[str, str, str], tuple[Document, float]]] = {}
        """Per scope: documents holding this peer's own changes that were revoked when it
        dropped or stripped them, and until when they are kept (``HANDOFF_SECONDS``), in
        memory only: made a writer again by a Scope whose windows no longer cover them, it
        merges them back (``_bring_back``). Never pushed while revoked."""
        self._displaced: OrderedDict[tuple[str, str, str], list[Document]] = OrderedDict()
        """Objects of scopes (not the cluster's) whose create lost to another create of the
        same name in a merge here: the losing creates, newest last (``_note_displaced``),
        in memory only, for at most DISPLACED_KEPT objects."""
        self.garbage = 0
        self._rows_turn = 0
        self._pushed_at: dict[str, float] = {}
        """A super-peer: when each weak peer's push last completed our pull answer from it
        (``_answered_by_push``): its pulls of that peer wait while they keep coming."""
        self._weak_pulled_at: dict[str, float] = {}
        self._idle_pulls = 0
        self._weak_rounds = 0
        """A weak peer: its pulls in a row that brought nothing (``pull_round`` backs off)."""
        self._cluster_source: str | None = None
        """On a weak peer, the super-peer it pulled the cluster scope's documents from last
        (``_source``): from the others it takes only rows, and no cursor of theirs moves."""
        """Turns of a weak peer's other super-peers in its pull rounds (``pull_round``)."""
        self._sourced: dict[str, dict[str, None]] = {}
        """A super-peer: per weak peer of its site, the scopes whose documents its last pull
        from us took: the cluster scope where we are its source (``_source``; from the
        others it takes rows only), and each Scope it is a member of (it pulls those from
        every super-peer of its site that is one too); what we poke it for (``_to_poke``).
        Dicts for their order: the simulator's trace must not depend on string hashing."""
        self._poked: dict[str, float] = {}
        """A super-peer: weak peer -> loop time of our poke to it that no pull followed yet."""
        self.pokes_sent = 0
        self.pokes_received = 0
        """A weak peer: pokes from a super-peer of its site (``_poked_by``)."""
        self._pokers: dict[str, None] = {}
        """A weak peer: the super-peers that poked it since its last pull round, pulled at
        the next one (``pull_round``) even when not in their turn."""
        self._unanswered: dict[str, float] = {}
        """Partner -> loop time of its last pull that got no answer (cleared by one that
        did): a weak peer pulls the cluster scope from another super-peer meanwhile."""
        self.pull_listeners: list[Callable[[str, bool], None]] = []
        """Told (partner, complete) after a pull: complete when every scope was pulled to
        the partner's end, False when the partner could not be reached (``catch_up``)."""

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Not awaited: if it is lost, cursors from this life are unknown to the next one and
        # restart at 0 (slower, never unsafe).
        written = self.replica.persistence.write(
            [], {LIVES_META: orjson.dumps([list(x) for x in self.lives]).decode()}, loop)
        written.add_done_callback(_lives_written)
        self._sub = self.replica.subscribe(lambda c: True)
        self.check_scopes()
        self._tasks = [loop.create_task(self._push_loop()), loop.create_task(self._pull_loop())]
        if self.config.gc_interval > 0:
            self._tasks.append(loop.create_task(self.collector.run()))

    async def stop(self) -> None:
        if self._publish_timer is not None:
            self._publish_timer.cancel()
            self._publish_timer = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    # -- scope changes ---------------------------------------------------------------

    def _view(self, m: ScopeMap) -> dict[str, tuple[Any, ...]]:
        """Per scope held: what it is made of (namespaces, writers). The cluster scope
        holds every namespace that is in no Scope."""
        held = m.scopes_of(self.membership.name)
        out: dict[str, tuple[Any, ...]] = {}
        for scope in held:
            if scope == CLUSTER:
                scoped = frozenset(ns for s in m.names() for ns in m.namespaces_of(s))
                out[scope] = (scoped, None)
            else:
                out[scope] = (m.namespaces_of(scope), m.writers(scope))
        return out

    def check_scopes(self) -> None:
        """On a change of the scope map: drop what this peer no longer holds, and restart
        the cursors of every scope that grew. Costs one identity check otherwise."""
        serial = self.policy.serial
        if serial == self._map_serial:
            return
        self._map_serial = serial
        m = self.policy.map()
        view = self._view(m)
        before = self._held_view
        self._held_view = view
        if before is None:
            before = view  # at start: nothing grew since the cursors were written
        grew: list[str] = []
        for scope, (namespaces, writers) in view.items():
            old = before.get(scope)
            if old is None:
                grew.append(scope)
            elif scope == CLUSTER:
                if not namespaces >= old[0]:  # a namespace left a Scope for the cluster's
                    grew.append(scope)
            elif not namespaces <= old[0] or not (writers or frozenset()) <= (old[1] or
                                                                            frozenset()):
                grew.append(scope)
        for scope in set(before) - set(view):
            self._reset_scope(scope)
            log.info("%s: no longer a member of scope %r", self.membership.name, shown(scope))
        stale = self._drop_non_member_cursors(m)
        for scope in grew:
            self._reset_scope(scope)
            log.info("%s: scope %r grew here: pulling its whole state", self.membership.name,
                     shown(scope))
        if view != before or stale:
            self._persist_cursors()
        self._forget_withheld_leases()
        gone = [key for key, _ in self.replica.all_entries()
                if not m.is_member(m.scope_of(key[0], key[1]), self.membership.name)]
        gone += [key for key, f in self.replica.fences.items()
                 if not m.is_member(m.scope_of(key[0], key[1]), self.membership.name)]
        if gone:
            self._keep_for_handoff(m, gone)
            for key in gone:
                self._displaced.pop(key, None)
            n = self.replica.forget(gone)
            self.docs_forgotten += n
            log.info("%s: dropped %d objects of scopes it no longer holds",
                     self.membership.name, n)
        self._revoke(m)
        if self._held_back:
            self._bring_back(m)

    def _forget_withheld_leases(self) -> None:
        """Forget the node Leases this peer does not hold (``ReplicationPolicy.withheld``):
        held from before it was weak or a super-peer, or before membership told it the
        node's site or region. Checked at start and when the member list changed; a full
        peer holds them all."""
        version = self.membership.version
        if version == self._leases_checked or self.policy.holds_every_lease():
            self._leases_checked = version
            return
        self._leases_checked = version
        me = self.membership.name
        keys = [(LEASES, ns, name) for (ns, name), _ in self.replica.iter_entries(LEASES)
                if self.policy.withheld(me, LEASES, ns, name)]
        if keys:
            self.docs_forgotten += self.replica.forget(keys)

    def _drop_non_member_cursors(self, m: ScopeMap) -> bool:
        """Forget the cursors (and coverage cursors, and last answers) held for a partner in
        a scope it is no longer a member of: that scope is never pulled from it again, and
        a cursor left behind would read as a lag that only grows with the partner's
        revision (issue 10: n4 removed from tenant-a read 1,068 behind and rising on its
        old partners). Made a member again, it is pulled from 0: it dropped the scope's
        objects when it left and holds them under new revisions. Whether anything went."""
        gone = [k for k in self.cursors if not m.is_member(k[1], k[0])]
        for key in gone:
            del self.cursors[key]
        for ckey in [k for k in self._coverage_cursors if not m.is_member(k[1], k[0])]:
            del self._coverage_cursors[ckey]
        for akey in [k for k in self._answered if not m.is_member(k[1], k[0])]:
            del self._answered[akey]
        for rkey in [k for k in self._relayed_cut if not m.is_member(k[1], k[0])]:
            del self._relayed_cut[rkey]
        if gone:
            log.info("%s: dropped the cursors of %s, no longer members of those scopes",
                     self.membership.name,
                     ", ".join(f"{p} in {shown(s)!r}" for p, s in sorted(gone)))
        return bool(gone)

    def _hold_back(self, m: ScopeMap, scope: str, key: tuple[str, str, str],
                   doc: Document, windows: Windows | None = None) -> None:
        """Keep ``doc`` if it holds a change of this peer's that is revoked now."""
        me = self.membership.name
        windows = m.revoked_after(scope) if windows is None else windows
        if me not in windows:
            return
        if any(w == me and revoked_at(windows, me, stamp)
               for _, w, stamp in changed_registers(None, doc.root)):
            until = asyncio.get_running_loop().time() + HANDOFF_SECONDS
            self._held_back.setdefault(scope, {})[key] = (doc.copy(), until)

    def _bring_back(self, m: ScopeMap) -> None:
        """Merge back what this peer held back of its own revoked changes, for each scope it
        holds again, once the Scope no longer revokes them (it was made a writer again
        with a span that ends before them): what is still revoked is stripped first, and
        a document left with none of its changes stays held back until it expires."""
        me = self.membership.name
        now = asyncio.get_running_loop().time()
        for scope in list(self._held_back):
            kept = {k: v for k, v in self._held_back[scope].items() if v[1] > now}
            if kept and m.is_member(scope, me):
                windows = m.revoked_after(scope)
                back: list[DocRecord] = []
                for key, (doc, _) in list(kept.items()):
                    out = revocation.strip(doc, revoked_rule(windows, *key, doc.value(),
                                                             doc.deleted))
                    if out is None or not any(w == me for _, w, _ in
                                              changed_registers(None, out.root)):
                        continue
                    back.append(self._record(*key, out.to_bytes()))
                    del kept[key]
                if back:
                    log.info("%s: %d documents with its changes are no longer revoked in "
                             "scope %r: merged back", me, len(back), shown(scope))
                    self.merge(back, scope)
            if kept:
                self._held_back[scope] = kept
            else:
                del self._held_back[scope]

    def _revoke(self, m: ScopeMap) -> None:
        """Take out of what each scope held here holds the changes that a writer's removal
        revoked (``mesh.revocation``), whenever the removals a scope records change (and
        once at start). A scope where something was taken out is pulled again in full: the
        values those changes overwrote come back from members that never merged them, and
        the coverage claims made while holding them are dropped. So is one where a removal
        was recorded later than before, or a writer made one again (what was refused may be
        admitted now)."""
        me = self.membership.name
        todo: dict[str, Windows] = {}
        later: set[str] = set()
        for scope in sorted(m.scopes_of(me) - {CLUSTER}):
            after = m.revoked_after(scope)
            known = self._revocations.get(scope)
            if known != after:
                todo[scope] = after
                if known is not None and admits_more(known, after):
                    later.add(scope)
        if not todo:
            return
        changed: Counter[str] = Counter()
        try:
            self._strip_revoked(m, {s: a for s, a in todo.items() if a}, changed)
        except StorageError as e:
            log.warning("%s: could not take revoked changes out (%s): trying again at the "
                        "next change", me, e)
            self._map_serial = -1
            todo = {}  # all stripped again next time; what changed is pulled again below
        for scope, windows in todo.items():
            self._revocations[scope] = windows
        for scope in sorted(set(changed) | later):
            self.docs_revoked += changed[scope]
            log.info("%s: took revoked changes out of %d documents of scope %r; pulling it "
                     "again in full", me, changed[scope], shown(scope))
            self._reset_scope(scope)
        if changed or later:
            self._persist_cursors()

    def _strip_revoked(self, m: ScopeMap, revoked: dict[str, Windows],
                       changed: Counter[str]) -> None:
        """Strip every document and fence of the scopes in ``revoked`` (scope -> its
        revoked windows), counting per scope what changed in ``changed``."""
        if not revoked:
            return
        drop: list[tuple[str, str, str]] = []
        for key, entry in self.replica.all_entries():
            scope = m.scope_of(key[0], key[1])
            after = revoked.get(scope)
            if after is None:
                continue
            # Parsed for this check only: most entries keep only their bytes (replica).
            doc = entry.doc
            if doc is None:
                doc = (Document.from_bytes(entry.doc_bytes) if entry.doc_bytes is not None
                       else entry.document())
            rule = revoked_rule(after, *key, entry.value, doc.deleted)
            out = revocation.strip(doc, rule)
            if out is doc:
                continue
            self._hold_back(m, scope, key, doc, after)
            if ((out is None or (out.deleted and not doc.deleted))
                    and m.is_writer(scope, self.membership.name)):
                restored = self._restore(key, doc, rule, after)
                if restored is not None:
                    if out is not None:
                        # The deletion a revoked re-create replaced: it wins over an
                        # older create, and a later one wins over it.
                        restored.merge(out)
                    out = restored
            if out is None:
                drop.append(key)
            else:
                self.replica.replace(*key, out)
                self._merged_rvs.add(self.replica.revision)  # not a local write: never pushed
            changed[scope] += 1
        for key, f in self.replica.fences.items():
            scope = m.scope_of(key[0], key[1])
            after = revoked.get(scope)
            if after is not None and revoked_at(after, f.writer, f.stamp):
                # A collected deletion that was revoked: its fence must not hide the object.
                drop.append(key)
                changed[scope] += 1
        if drop:
            self.replica.forget(drop)

    def _restore(self, key: tuple[str, str, str], doc: Document, rule: revocation.Revoked,
                 after: Windows) -> Document | None:
        """The object a revoked create displaced here, if this peer kept it: the newest
        create it displaced that is not revoked itself, with the valid changes made over
        the revoked one since (``revocation.over``). Only a writer restores one (a
        non-writer gets it from the writers by the full pull, as it could relay nothing
        that writers would accept); if no writer kept it, the object is dropped as before
        (docs/semantics.md, Limits)."""
        for lost in reversed(self._displaced.get(key, ())):
            base = revocation.strip(lost, revoked_rule(after, *key, lost.value(), lost.deleted))
            if base is not None and not base.deleted:
                return revocation.over(base, doc, rule)
        return None

    def _keep_for_handoff(self, m: ScopeMap, gone: list[tuple[str, str, str]]) -> None:
        """Of the documents this peer drops, those holding a change it made while it was a
        writer (the Scope records until when): it may be their only holder, so they are
        kept in memory, never on disk, and pushed to the scope's members every pull round
        for ``HANDOFF_SECONDS``, who accept them from a former writer. A document that
        also holds a change of its own that is revoked (made after its removal) is handed
        off without it, as every member would strip it (a member refuses a document that
        would bring one in, and the valid changes in it went with it); the whole is held
        back (``_hold_back``)."""
        me = self.membership.name
        until = asyncio.get_running_loop().time() + HANDOFF_SECONDS
        for key in gone:
            entry = self.replica.entry(*key)
            if entry is None:
                continue
            scope = m.scope_of(key[0], key[1])
            doc = entry.document()
            if not any(w == me and m.was_writer(scope, me, stamp)
                       for _, w, stamp in changed_registers(None, doc.root)):
                self._hold_back(m, scope, key, doc)
                continue
            data = entry.doc_bytes
            windows = m.revoked_after(scope)
            if windows:
                out = revocation.strip(doc, revoked_rule(windows, *key, entry.value,
                                                         doc.deleted))
                if out is not doc:
                    self._hold_back(m, scope, key, doc, windows)
                    if out is None:
                        continue
                    data = out.to_bytes()
            self._handoff.setdefault(scope, {})[key] = (self._record(*key, data), until)
        if self._handoff and self._tasks:
            # Hand off at once too, not only at the next pull round: a peer killed
            # meanwhile loses what it kept.
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.get_running_loop().create_task(self._hand_off()))

    def handing_off(self) -> dict[str, list[tuple[str, str, str]]]:
        """Per scope no longer held: the objects this peer still pushes to its members."""
        return {scope: sorted(kept) for scope, kept in self._handoff.items()}

    async def _hand_off(self) -> None:
        """Push what this peer keeps for handoff to the members of its scope, until it
        expires."""
        now = asyncio.get_running_loop().time()
        for scope in list(self._handoff):
            kept = {k: v for k, v in self._handoff[scope].items() if v[1] > now}
            if not kept:
                del self._handoff[scope]
                continue
            self._handoff[scope] = kept
            docs = [d for d, _ in kept.values()]
            if self.policy.holds(scope):
                # A member again: its own changes are its own again, and pulls carry them.
                del self._handoff[scope]
                self.merge(docs, scope)
                continue
            await self.push(docs, self.config.push_max_hops, scope)

    def _rolled_back(self, lowest_rv: int) -> None:
        """A commit failed here and documents merged since were undone: the cursors and
        coverage claims may count them, so every scope starts over from its partners."""
        for scope in {s for _, s in self.cursors}:
            self._reset_scope(scope)

    def _reset_scope(self, scope: str) -> None:
        self._resets[scope] += 1
        for key in [k for k in self.cursors if k[1] == scope]:
            del self.cursors[key]
        for ckey in [k for k in self._coverage_cursors if k[1] == scope]:
            del self._coverage_cursors[ckey]
        self.coverage.drop(scope)

    # -- merging ---------------------------------------------------------------------

    def _holds_as_sent(self, d: DocRecord, remote: Document, digest: str | None = None) -> bool:
        """Whether what we hold of ``d``'s object now is exactly the sender's document (the
        one whose digest is ``digest``, for a delta)."""
        after = self.replica.entry(d.resource, d.namespace, d.name)
        if after is None or after.doc_bytes is None:
            return False
        if digest is not None:
            return doc_digest(after.doc_bytes) == digest
        return after.doc_bytes == remote.to_bytes()

    def merge(self, docs: Iterable[DocRecord], scope: str = CLUSTER,
              sender: str | None = None, deltas: dict[int, str] | None = None,
              ) -> MergeResult:
        """Merge a peer's documents of ``scope`` under the replication policy. ``deltas``:
        index -> digest of the whole, for documents that are deltas (``Push.deltas``),
        which only a receiver that holds their base may be given (``handle``)."""
        self.check_scopes()
        out = MergeResult()
        me = self.membership.name
        local = sender is None or self.policy.holds_every_lease()
        for i, d in enumerate(docs):
            if not local and d.resource == LEASES and self.policy.withheld(
                    me, d.resource, d.namespace, d.name):
                continue  # a node's Lease not held here, sent anyway (an older peer): dropped
            digest = deltas.get(i) if deltas else None
            if digest is not None and self.replica.entry(d.resource, d.namespace,
                                                         d.name) is None:
                # A delta of something not held here (forgotten since): the next pull
                # brings the whole, so no cursor may move over it.
                out.transient += 1
                continue
            try:
                remote = d.document()
                if sender is not None:
                    refusal = self.policy.accept(d.resource, d.namespace, d.name, remote,
                                                 functools.partial(self._held, d), scope,
                                                 sender)
                    if refusal is not None:
                        if refusal.transient:
                            self.docs_deferred += 1
                            log.debug("%s: deferring %s/%s/%s from %s: %s", self.membership.name,
                                      d.resource, d.namespace, d.name, sender, refusal.reason)
                        else:
                            self.docs_refused += 1
                            what = f"{d.resource} {d.namespace}/{d.name}".replace(" /", " ")
                            self._deny_log("%s: refused %s from %s: %s", self.membership.name,
                                           what, sender, refusal.reason)
                            out.refused.append(f"{what}: {refusal.reason}")
                        out.transient += refusal.transient
                        continue
                prior = self.replica.entry(d.resource, d.namespace, d.name)
                if scope != CLUSTER and prior is not None and prior.value is not None:
                    self._note_displaced((d.resource, d.namespace, d.name), prior.document(),
                                         remote)
                result = self.replica.merge(d.resource, d.namespace, d.name, remote)
            except StorageError as e:
                # Not stored here (a full disk): as a deferral, the cursor stays put.
                self.docs_unstored += 1
                out.transient += 1
                self._deny_log("%s: refused documents from %s: %s", self.membership.name,
                               sender, e)
                continue
            except (TypeError, ValueError, KeyError, IndexError, AttributeError):
                self.garbage += 1
                log.warning("dropping a malformed document for %s/%s", d.resource, d.name)
                continue
            if result is None:
                held = self._came_from.get(prior.rv) if prior is not None else None
                if (held is not None and sender is not None and sender not in held
                        and prior is not None and prior.doc_bytes is not None
                        and (remote.to_bytes() == prior.doc_bytes if digest is None
                             else doc_digest(prior.doc_bytes) == digest)):
                    held.append(sender)  # it holds exactly what we hold
                continue
            self.docs_merged += 1
            self._merged_rvs.add(self.replica.revision)
            if sender is not None and scope == CLUSTER and (
                    prior is None or self._holds_as_sent(d, remote, digest)):
                # (Not in a Scope, where a revoked create may leave here another one.) An
                # update counts when the merge left exactly the sender's document: a weak
                # peer then no longer answers one super-peer's pull with the Lease renewal
                # that super-peer (or its site-mate, below) sent it.
                self._came_from[self.replica.revision] = [sender]
                if len(self._came_from) > 2 * CAME_FROM:
                    for rv in list(itertools.islice(self._came_from, CAME_FROM)):
                        del self._came_from[rv]
            # Passed on as merged here when what we held before was durable, so the sender
            # and the others learn the outcome at once (a stale side would otherwise act on
            # its old copy until its next pull: a CronJob's Job recreating its pods). Else as
            # received: the merged document would hold a local write still being
            # committed, which must not leave this node before it is durable (a kill would
            # tear it here and leave it alive elsewhere).
            entry = self.replica.entry(d.resource, d.namespace, d.name)
            if entry is not None and (prior is None
                                      or prior.rv <= self.replica.durable_revision):
                out.changed.append(self._record(d.resource, d.namespace, d.name,
                                                entry.doc_bytes))
            elif digest is None:
                out.changed.append(d)
            # (A delta is never passed on as received: others may not hold its base.)
        return out

    def _note_displaced(self, key: tuple[str, str, str], local: Document,
                        remote: Document) -> None:
        """Keep the create that loses when two creates of one object meet here: should the
        winner be revoked (its writer had been removed), taking it out would leave nothing
        of the loser, whose every field it overwrote (``_strip_revoked`` brings it back)."""
        lost = revocation.displaced(local, remote)
        if lost is None:
            return
        kept = self._displaced.setdefault(key, [])
        self._displaced.move_to_end(key)
        kept.append(lost)
        del kept[:-DISPLACED_PER_OBJECT]
        while len(self._displaced) > DISPLACED_KEPT:
            self._displaced.popitem(last=False)

    def _held(self, d: DocRecord) -> tuple[Any, Any]:
        entry = self.replica.entry(d.resource, d.namespace, d.name)
        if entry is None:
            return None, None
        return entry.document(), entry.value

    def _record(self, resource: str, ns: str, name: str, data: bytes | None) -> DocRecord:
        if data is None:
            entry = self.replica.entry(resource, ns, name)
            assert entry is not None
            data = entry.document().to_bytes()
        return DocRecord(resource, ns, name, data)

    # -- push ------------------------------------------------------------------------

    async def push(self, docs: list[DocRecord], hops: int, scope: str = CLUSTER,
                   exclude: str | None = None, origin: str | None = None) -> None:
        """Send documents of ``scope`` to ``push_fanout`` live members of it (a weak peer:
        to each of its site's live super-peers). ``origin``: the peer they came from."""
        peers = self.policy.push_targets(scope)
        leases = [d for d in docs if d.resource == LEASES
                  and d.namespace == NODE_LEASE_NAMESPACE]

        def lease_for(peer: str, d: DocRecord) -> bool:
            # Nobody is sent a node's Lease it does not hold (``withheld``), nor, passed on
            # from the node or another peer it pushes it to, one that the node pushes to it
            # itself (``from_its_node``).
            return not (self.policy.withheld(peer, d.resource, d.namespace, d.name)
                        or (origin is not None and (origin == d.name or self.policy.from_its_node(
                            origin, d.resource, d.namespace, d.name))
                            and self.policy.from_its_node(peer, d.resource, d.namespace,
                                                          d.name)))

        if leases:
            # Node Leases go to peers that hold at least one of them: a renewal spreads
            # among its holders, not to a random backbone peer that drops it.
            peers = [p for p in peers if len(leases) < len(docs)
                     or any(lease_for(p.name, d) for d in leases)]
        me = self.membership.name
        own = [d for d in leases if d.name == me]
        if own and origin is None and self.policy.pushes_lease_itself():
            # A super-peer's own Lease: to each of its holders (``from_its_node``), the rest
            # as any push.
            await self._send(own, hops, scope, [p for p in peers if p.address != exclude
                                                and lease_for(p.name, own[0])], None,
                             checked=self._own_lease_delta(own, scope))
            docs = [d for d in docs if d.resource != LEASES or d.name != me]
            if not docs:
                return
            leases = [d for d in leases if d.name != me]
        fanout = self.config.push_fanout
        if self.policy.is_weak():
            fanout = max(fanout, len(peers))  # its site's super-peers: each gets it from it
        # Sample one extra instead of filtering the whole list: O(fanout), not O(N).
        picked = self.rng.sample(peers, min(fanout + 1, len(peers)))
        targets = [p for p in picked if p.address != exclude][:fanout]
        await self._send(docs, hops, scope, targets, lease_for if leases else None,
                         origin is not None)

    def _own_lease_delta(self, own: list[DocRecord], scope: str) -> bytes | None:
        """Our own Lease's push as a delta over the version of it we pushed last (a renewal
        changes one field), checked by the receiver against the whole's digest
        (``_rebuilt``); None to push it whole (the first, or too small to gain)."""
        whole = own[0].data if len(own) == 1 else None
        if not isinstance(whole, bytes):
            return None
        d = own[0]
        last, self._own_lease_pushed = self._own_lease_pushed, whole
        data = None if last is None or len(whole) < DELTA_MIN else _delta_worth_it(last, whole)
        if data is None:
            return None
        return encode(Push(0, (DocRecord(d.resource, d.namespace, d.name, data),), scope,
                           None, ((0, doc_digest(whole)),)))

    async def _send(self, docs: list[DocRecord], hops: int, scope: str, targets: list[Any],
                    lease_for: Callable[[str, DocRecord], bool] | None,
                    forwarded: bool = False, checked: bytes | None = None) -> None:
        """Push ``docs`` to each of ``targets``, each sent only the node Leases
        ``lease_for`` lets it have, as its next pull answer when it can be, else as
        ``checked`` (a delta the receiver checks) when given."""
        if not targets or not docs:
            return
        step = max(1, self.config.pull_batch)
        payloads = [encode(Push(hops, tuple(docs[i:i + step]), scope))
                    for i in range(0, len(docs), step)]
        self.docs_pushed += len(docs) * len(targets)
        self.docs_sent[scope] += len(docs) * len(targets)
        for t in targets:
            sent = payloads
            kept = docs
            if lease_for is not None and (forwarded
                                          or not self.policy.holds_every_lease(t.name)):
                kept = [d for d in docs if d.resource != LEASES or lease_for(t.name, d)]
                if not kept:
                    continue
                sent = [encode(Push(hops, tuple(kept[i:i + step]), scope))
                        for i in range(0, len(kept), step)]
            answering = self._answering(t.name, scope, kept)
            if answering is not None:
                # It pulls from us: sent as its next pull answer, which then is not sent
                # again (a weak peer's Lease renewal crossed to each super-peer twice).
                self.pushes_answering += 1
                sent = [encode(dataclasses.replace(answering, hops=hops))]
            elif checked is not None and self.policy.takes_checked_deltas(t.name):
                self.deltas_sent += 1
                sent = [checked]
            for payload in sent:
                try:
                    await self.transport.send(t.address, payload)
                except TransportError:
                    self.membership.unheard(t.name)

    def _local_changes(self, batch: list[Change]) -> dict[str, list[DocRecord]]:
        """This peer's own changes in ``batch``, by scope."""
        seen: set[tuple[str, str, str]] = set()
        out: dict[str, list[DocRecord]] = {}
        for c in batch:
            if c.rv in self._merged_rvs:
                self._merged_rvs.discard(c.rv)
                continue
            key = (c.resource, c.namespace, c.name)
            entry = self.replica.entry(*key)
            if key in seen or entry is None:
                continue
            seen.add(key)
            scope = self.policy.scope_of(c.resource, c.namespace)
            out.setdefault(scope, []).append(self._record(*key, entry.doc_bytes))
        if batch and len(self._merged_rvs) > 1024:
            # The feed publishes in revision order: older merged revisions never will be.
            last = batch[-1].rv
            self._merged_rvs = {rv for rv in self._merged_rvs if rv > last}
        return out

    def _to_poke(self, batch: list[Change]) -> list[Member]:
        """The weak peers to poke for ``batch``: each weak peer whose next pull from us would
        bring one of the changes in ``batch`` (the feed's, merges and local writes), in a
        scope whose documents it pulls from us (``_sourced``) and that it is a member of
        by our map (the one we answer its pulls by: a poke, however empty, tells it of
        nothing it would not be sent), unless we poked it already and it has not pulled
        since (``POKE_AGAIN``), or, for a Scope's change, we are not its source and its
        source pokes it instead (``_source_pokes``). As ``_answer`` would leave out: node
        Leases ``withheld`` from it (every one but its own), its own writes echoed back in
        the cluster scope (``_came_from``: it sent us the version we hold) and its own
        Lease as it wrote it. Idle nothing is sent, so its idle pulls can stay backed off
        (``_poke``). A weak peer's own write in a Scope is echoed back by its next pull
        (``_came_from`` is kept for the cluster scope only), so it pokes it too."""
        now = asyncio.get_running_loop().time()
        waiting = {w: scopes for w, scopes in self._sourced.items()
                   if now - self._poked.get(w, float("-inf")) >= POKE_AGAIN}
        if not waiting:
            return []
        due: set[str] = set()
        by_source: dict[tuple[str, str], bool] = {}
        for c in batch:
            scope = self.policy.scope_of(c.resource, c.namespace)
            came = self._came_from.get(c.rv, ())
            lease = c.resource == LEASES and c.namespace == NODE_LEASE_NAMESPACE
            # Whether the weak peers other than the Lease's node hold it: the same for
            # each (their tags differ only in their names), so asked once, not per peer.
            others_hold = lease and not self.policy.withheld(
                next((w for w in waiting if w != c.name), c.name), c.resource, c.namespace,
                c.name)
            for w, scopes in waiting.items():
                if (w in due or w in came or scope not in scopes
                        or not self.policy.may_send(scope, w)):
                    continue
                if scope != CLUSTER and CLUSTER not in scopes:
                    if (w, scope) not in by_source:
                        by_source[(w, scope)] = self._source_pokes(w, scope)
                    if by_source[(w, scope)]:
                        continue
                if lease:
                    if c.name != w and not others_hold:
                        continue
                    if c.name == w:
                        entry = self.replica.entry(c.resource, c.namespace, c.name)
                        if (entry is None or entry.doc_bytes is None
                                or _written_only_by(orjson.loads(entry.doc_bytes), w)):
                            continue
                due.add(w)
            if len(due) == len(waiting):
                break
        members = self.membership.members
        out: list[Member] = []
        for w in waiting:
            m = members.get(w)
            if m is None:
                self._sourced.pop(w, None)
                continue
            if w not in due or m.state != State.ALIVE:
                continue
            if not self.policy.is_weak(w) or not self.policy.may_sync(w):
                self._sourced.pop(w, None)  # no longer a weak peer of our site
                continue
            self._poked[w] = now
            out.append(m)
        return out

    def _source_pokes(self, weak: str, scope: str) -> bool:
        """On a super-peer that is not ``weak``'s source: whether its source pokes it for a
        change of ``scope`` instead of us, as every other live super-peer of its site is a
        member of the scope (its source is one of them, and it pulls the scope from its
        source at every round). Else we poke it too, and it pulls from us at its next
        round (``_poked_by``): one poke and one pull a change, not one per super-peer."""
        mates = [p.name for p in self.policy.sync_peers() if self.policy.vouches(p.name, weak)]
        return bool(mates) and all(self.policy.may_send(scope, n) for n in mates)

    async def _poke(self, weak: list[Member]) -> None:
        """Send ``POKE`` to each of ``weak`` at once (one slow link holds up no other)."""
        self.pokes_sent += len(weak)

        async def one(m: Member) -> None:
            try:
                await self.transport.send(m.address, POKE)
            except TransportError:
                self.membership.unheard(m.name)

        await asyncio.gather(*(one(m) for m in weak))

    def _poked_by(self, name: str | None) -> None:
        """A poke (``POKE``) from ``name``: on a weak peer, from a super-peer of its site, its
        idle back-off ends and it pulls at its next round (``pull_round``; so a storm of
        pokes adds no pull, and the simulator keeps its schedule), from ``name`` too if
        it is not in its turn (a Scope's change poked by a super-peer that is not the
        source); anything else is dropped."""
        if (name is None or not self.policy.is_weak() or self.policy.is_weak(name)
                or not self.policy.may_sync(name)):
            log.debug("%s: dropping a poke from %s, not a super-peer of its site",
                      self.membership.name, name)
            return
        self.pokes_received += 1
        self._idle_pulls = 0
        self._pokers[name] = None

    async def _push_loop(self) -> None:
        while True:
            sub = self._sub
            assert sub is not None
            first = await sub.queue.get()
            if first is None:
                # The feed dropped us for falling behind; pulls repair what we skipped.
                self._sub = self.replica.subscribe(lambda c: True)
                continue
            batch = [first]
            while not sub.queue.empty():
                c = sub.queue.get_nowait()
                if c is not None:
                    batch.append(c)
            self.check_scopes()
            # Chosen before the pushes (which may wait on a slow link), sent after them.
            poke = self._to_poke(batch) if self._sourced else []
            for scope, docs in self._local_changes(batch).items():
                if self.policy.holds(scope):
                    await self.push(docs, 0, scope)
                else:
                    # Written here in a scope this peer does not hold (the API refuses
                    # that; a component that bypassed it): never kept, never sent.
                    log.warning("%s: dropping %d local writes in scope %r, which it does "
                                "not hold", self.membership.name, len(docs), shown(scope))
                    self.docs_forgotten += self.replica.forget(
                        (d.resource, d.namespace, d.name) for d in docs)
            if poke:
                await self._poke(poke)

    # -- pull ------------------------------------------------------------------------

    def serve_pull(self, msg: Pull, puller: str | None = None) -> PullReply:
        """Answer a pull by ``puller`` (None: trusted, as a test's direct call)."""
        self.check_scopes()
        asked = msg.limit - ANSWERS_FLAG if msg.limit >= ANSWERS_FLAG else msg.limit
        limit = max(1, min(asked, self.config.pull_batch))
        if msg.life is not None and puller is not None:
            # Said on every pull that names a life, so a puller restarted as an older
            # version stops being sent the longer Push.
            if msg.limit >= ANSWERS_FLAG:
                self._answers_ok.add(puller)
            else:
                self._answers_ok.discard(puller)
        served: list[ScopeCursor] = []
        refused: list[tuple[str, str]] = []
        for c in msg.scopes:
            if not self.policy.holds(c.scope):
                refused.append((c.scope, "not a member here"))
            elif puller is not None and not self.policy.may_send(c.scope, puller):
                refused.append((c.scope, f"{puller} is not a member"))
            else:
                served.append(c)
        if (msg.life is None and puller is not None and puller not in self._trusted
                and any(c.cursor or c.coverage_cursor for c in served)):
            # Cursors of a life not named, from a puller not heard since this life began
            # (we restarted): they may be from a life whose revisions we hand out again.
            return PullReply((), tuple(refused), self.life, True)
        since = {c.scope: (c.cursor, c.coverage_cursor) if msg.life is None
                 else self._since(msg.life, c.cursor, c.coverage_cursor) for c in served}
        # A puller that sent us an object holds it as we do, unless it lost it since: it
        # then pulls from cursor 0 (a scope dropped, revoked or rolled back there), or
        # names a life (it restarted, perhaps from an older copy of its data), and is sent
        # everything again.
        skip = puller is not None and msg.life is None and puller in self._trusted
        if msg.life is not None and puller is not None:
            for peers in self._came_from.values():
                if puller in peers:
                    peers.remove(puller)
        if msg.life is not None:
            life = None if msg.life == self.life else self.life
        else:  # cursors all 0 if untrusted: the puller learns our life from this answer
            life = self.life if puller is not None and puller not in self._trusted else None
        if puller is not None:
            self._trusted.add(puller)
        # Only what is durable here: a write whose commit may yet fail never leaves.
        revision = self.replica.durable_revision
        cursors = {s: c for s, (c, _) in since.items()}
        docs, cut = self._answer(puller, cursors, limit, revision, skip)
        weak_puller = puller if puller is not None and self.policy.is_weak(puller) else None
        parts = []
        for c in served:
            cursor, coverage_cursor = since[c.scope]
            cov = self.coverage.scope(c.scope)
            about: tuple[tuple[str, int, int], ...] = ()
            base = 0
            if c.about_me_only and puller is not None:
                rows, about, base = cov.about(puller, coverage_cursor)
            else:
                rows = cov.since(coverage_cursor, puller)
            # Also when nothing learnt since concerns the puller: its cursor moves on.
            told = self.coverage.servable(cov.revision)
            cov_rev = told if rows or about or told > coverage_cursor else 0
            sent = tuple(docs[c.scope])
            self.docs_sent[c.scope] += len(sent)
            # A weak puller knows no writer beyond its site's super-peers: tell it which of
            # the scope's writers we cannot reach (empty, and not sent, while we reach all).
            cut_off = (self._unreachable_writers(c.scope)
                       if weak_puller is not None and c.scope != CLUSTER else ())
            if cut is None:
                parts.append(ScopeReply(c.scope, revision, False, sent, cov_rev, rows, about,
                                        base, cut_off))
            else:
                parts.append(ScopeReply(c.scope, max(cursor, cut), True, sent, cov_rev, rows,
                                        about, base, cut_off))
            if weak_puller is not None:
                pulled = self._sourced.setdefault(weak_puller, {})
                if c.cursor >= ROWS_ONLY:  # rows only: we are not its source (now)
                    pulled.pop(c.scope, None)
                else:
                    pulled[c.scope] = None
            if puller is not None:
                if cut is None and cursor <= revision and puller in self._answers_ok:
                    # Where its cursor stands once it merged this answer: a push of ours
                    # may complete its next one (``_answering``).
                    self._answer_base[(puller, c.scope)] = revision
                else:
                    self._answer_base.pop((puller, c.scope), None)
        if weak_puller is not None:
            self._poked.pop(weak_puller, None)
            took = self._sourced.setdefault(weak_puller, {})
            for scope, _ in refused:
                took.pop(scope, None)
            if not took:
                del self._sourced[weak_puller]
        return PullReply(tuple(parts), tuple(refused), life)

    def _answer(self, puller: str | None, cursors: dict[str, int], limit: int, revision: int,
                skip_known: bool, rvs: list[int] | None = None,
                ) -> tuple[dict[str, list[DocRecord]], int | None]:
        """The documents of a pull answer to ``puller``: per scope, those changed here after
        its cursor up to ``revision`` (durable), at most ``limit`` in all, and the revision a
        full page stopped at (None: complete). ``skip_known``: the puller's cursors are of
        this life and it lost nothing since it sent us what we merged from it, so what it
        (or, to a weak peer, a site-mate) sent us is left out."""
        skip = self._came_from if skip_known else None
        # A weak peer answers its site's super-peers with what it wrote, not with what one
        # of them sent it (held exactly as sent): they share that over the backbone.
        from_site = skip is not None and self.policy.is_weak()
        # Nobody is sent a node's Lease it does not hold (``withheld``): only a full
        # puller holds them all. A push sent as a pull answer (``_answering``) is built
        # here too, so it leaves out exactly what the pull answer would.
        lease_puller = (puller if puller is not None
                        and not self.policy.holds_every_lease(puller) else None)
        docs: dict[str, list[DocRecord]] = {s: [] for s in cursors}
        cut: int | None = None  # the revision a full page stopped at
        low = min(cursors.values(), default=revision)
        if low < revision:
            n = 0
            last = low
            for r, ns, name, e in self.replica.changed_since(low, 1 << 62, up_to=revision):
                scope = self.policy.scope_of(r, ns)
                cursor = cursors.get(scope)
                if cursor is None or e.rv <= cursor:
                    continue
                if skip and cursor and (puller in skip.get(e.rv, ())
                                        or (from_site and e.rv in skip)):
                    continue
                if (skip_known and cursor and name == puller and r == LEASES
                        and ns == NODE_LEASE_NAMESPACE and e.doc_bytes is not None
                        and _written_only_by(orjson.loads(e.doc_bytes), puller)):
                    # The puller's own node Lease, every register of it written by the
                    # puller (in this life of its, which it has not lost): it holds all
                    # of it, also when it came to us through another peer (``_came_from``
                    # knows only the sender), so it is not sent back.
                    continue
                if r == LEASES and puller is not None and (
                        (lease_puller is not None
                         and self.policy.withheld(lease_puller, r, ns, name))
                        or self._from_its_node(puller, r, ns, name, e.rv)):
                    continue
                if n >= limit:
                    cut = last
                    break
                docs[scope].append(self._record(r, ns, name, e.doc_bytes))
                if rvs is not None:
                    rvs.append(e.rv)
                n += 1
                last = e.rv
        return docs, cut

    def _from_its_node(self, puller: str, resource: str, ns: str, name: str, rv: int) -> bool:
        """Whether ``puller`` gets this node's Lease, held here as the node holds it (at
        revision ``rv``: the node sent it), from the node itself
        (``ReplicationPolicy.from_its_node``): then it is left out of our answers to it."""
        came = self._came_from.get(rv)
        return (came is not None and name in came
                and self.policy.from_its_node(puller, resource, ns, name))

    def _answering(self, target: str, scope: str, sent: list[DocRecord]
                   ) -> Push | None:
        """A push of ``sent`` to ``target`` as its next pull answer (``Push.answers``): the
        documents that pull of ``scope`` would be answered with now, from where our last
        answer (or answering push) left its cursor, if they are complete, hold every one of
        ``sent`` exactly and fit in one page; else None (a plain push)."""
        base = self._answer_base.get((target, scope))
        if base is None or target not in self._answers_ok:
            return None
        revision = self.replica.durable_revision
        if revision <= base:
            return None
        rvs: list[int] = []
        docs, cut = self._answer(target, {scope: base}, self.config.pull_batch, revision,
                                 target in self._trusted, rvs)
        if cut is not None:
            return None
        held = {(d.resource, d.namespace, d.name): d.data for d in docs[scope]}
        if any(held.get((d.resource, d.namespace, d.name)) != d.data for d in sent):
            return None  # not all of it (or not as it is durably here): a plain push
        self._answer_base[(target, scope)] = revision
        out = docs[scope]
        deltas: list[tuple[int, str]] = []
        if scope == CLUSTER:
            for i, (d, rv) in enumerate(zip(out, rvs, strict=True)):
                delta = self._as_delta(d, rv, base)
                if delta is not None:
                    out[i] = delta
                    deltas.append((i, doc_digest(d.data)))  # type: ignore[arg-type]
        self.deltas_sent += len(deltas)
        return Push(0, tuple(out), scope, (self.life, base, revision), tuple(deltas))

    def _as_delta(self, d: DocRecord, rv: int, base: int) -> DocRecord | None:
        """``d`` (our version at revision ``rv``) as a delta over the newest version of it
        kept (``_versions``) at or below ``base``, if one is and the delta is worth it; the
        version is kept for the next."""
        if not isinstance(d.data, bytes) or len(d.data) < DELTA_MIN:
            return None
        key = (d.resource, d.namespace, d.name)
        kept = self._versions.get(key, [])
        older = next((data for at, data in reversed(kept) if at <= base), None)
        if not kept or kept[-1][0] != rv:
            self._versions[key] = [*kept, (rv, d.data)][-2:]
        self._versions.move_to_end(key)
        while len(self._versions) > VERSIONS_KEPT:
            self._versions.popitem(last=False)
        data = None if older is None else _delta_worth_it(older, d.data)
        return None if data is None else DocRecord(d.resource, d.namespace, d.name, data)

    def _since(self, life: int, cursor: int, coverage_cursor: int) -> tuple[int, int]:
        """What a puller's cursors from ``life`` of ours are worth now. This disk's history
        is that life's up to where the next life began (a restart from an older copy of
        the data dir begins below where that life ended); a life this disk never had (a
        branch a restore abandoned) or no longer remembers shares nothing known: 0."""
        if life == self.life:
            return cursor, coverage_cursor
        for i, (known, _, _) in enumerate(self.lives[:-1]):
            if known == life:
                later = self.lives[i + 1:]
                return (min(cursor, *(start for _, start, _ in later)),
                        min(coverage_cursor, *(cov for _, _, cov in later)))
        return 0, 0

    def _note_puller(self, name: str, address: str, msg: Pull) -> None:
        """A writer pulling a scope from us that we have no partner for: we pull it back
        from that writer, if we may sync with it at all (a weak peer only with its site's
        super-peers, which are its partners in every scope they are members of: a weak
        peer none of whose site's super-peers is a member of a scope is stranded in it,
        ``ReplicationPolicy.stranded``)."""
        if not self.policy.may_sync(name):
            return
        for c in msg.scopes:
            # The latest such writer: it was alive a moment ago.
            if (c.scope != CLUSTER and self.policy.holds(c.scope)
                    and self.policy.is_writer(c.scope, name)
                    and not self._has_partner(c.scope)):
                self._pull_back[c.scope] = PullTarget(name, address)

    def _has_partner(self, scope: str) -> bool:
        return any(scope in self.policy.scopes_for(p.name) for p in self.partners())

    def _pulls_back(self) -> list[PullTarget]:
        """The writers to pull back from, one per scope that still has no partner."""
        for scope in [s for s in self._pull_back
                      if not self.policy.holds(s) or self._has_partner(s)]:
            del self._pull_back[scope]
        return list({t.name: t for t in self._pull_back.values()}.values())

    async def pull_from(self, peer: Member | PullTarget, cluster: bool = True) -> int:
        """Pull every scope both hold that ``peer`` changed since our cursors; returns
        documents merged. Not ``cluster``: of the cluster scope only the coverage rows (a
        weak peer's super-peer that is not its source, ``_source``: its collection reads
        the entries about it in their rows), with no cursor or coverage claim moved."""
        self.check_scopes()
        scopes = self.policy.scopes_for(peer.name)
        rows_only = CLUSTER if not cluster and CLUSTER in scopes else None
        merged = 0
        name_life = peer.name not in self._told
        for _ in range(MAX_PAGES):
            if not scopes:
                break
            # The partner's rows as of before the request: published before it answers.
            rows_before: dict[str, CoverageRow | None] = {
                s: self.coverage.scope(s).row(peer.name) for s in scopes}
            resets = {s: self._resets[s] for s in scopes}
            leaf = self._relays_no_rows()
            asked = {s: self.cursors.get((peer.name, s), 0) for s in scopes}
            request = Pull(self.config.pull_batch + (ANSWERS_FLAG if name_life else 0), tuple(
                ScopeCursor(s, ROWS_ONLY if s == rows_only else asked[s],
                            self._coverage_cursors.get((peer.name, s, leaf and s == CLUSTER), 0),
                            leaf and s == CLUSTER) for s in scopes),
                self._partner_lives.get(peer.name, 0) if name_life else None)
            try:
                raw = await self.transport.request(peer.address, encode(request),
                                                   self.config.request_timeout)
                reply = decode(raw)
            except TransportError:
                self._unanswered[peer.name] = asyncio.get_running_loop().time()
                self.membership.unheard(peer.name)
                self._pulled(peer.name, False)
                return merged
            except MessageError:
                self.garbage += 1
                return merged
            if not isinstance(reply, PullReply):
                self.garbage += 1
                return merged
            if reply.ask_life:
                name_life = True  # it restarted: ask again, naming the life of our cursors
                continue
            self._told.add(peer.name)
            self._unanswered.pop(peer.name, None)
            self.membership.heard(peer.name)
            name_life = False
            for scope, reason in reply.refused:
                log.debug("%s: %s will not serve scope %r: %s", self.membership.name,
                          peer.name, shown(scope), reason)
            self.check_scopes()  # merging may have changed the map (a Scope arrived)
            covered = False
            if reply.life is not None and reply.life != self._partner_lives.get(peer.name):
                # A new life of the partner: the answer starts where our cursors from its
                # last life are still worth something there, so our claims over its
                # revisions restart from what this answer brings, and a scope it did not
                # answer is pulled from 0.
                self._new_partner_life(peer.name, reply.life)
                covered = True
            again: list[str] = []
            relay: list[tuple[str, list[DocRecord]]] = []
            for part in reply.scopes:
                scope = part.scope
                if scope not in scopes or not self.policy.holds(scope):
                    continue
                cov = self.coverage.scope(scope)
                row = rows_before.get(scope)
                if part.coverage_revision:
                    ckey = (peer.name, scope, leaf and scope == CLUSTER)
                    self._coverage_cursors[ckey] = part.coverage_revision
                    if part.own_row_base:
                        for r in part.coverage:
                            if r.owner == peer.name and not cov.receive_delta(
                                    r, part.own_row_base):
                                # Nothing to apply it to: the whole row at the next pull.
                                self._coverage_cursors[ckey] = 0
                        row = cov.row(peer.name)
                    else:
                        cov.receive(part.coverage)
                        for r in part.coverage:
                            if r.owner == peer.name:
                                row = r
                    cov.receive_about_me(part.about_you)
                if scope == rows_only:
                    # Rows only: what it sent anyway (it answered from an older life's
                    # cursor) is merged, but no cursor or claim moves.
                    merged += len(self.merge(part.docs, scope, peer.name).changed)
                    continue
                key = (peer.name, scope)
                cursor = asked.get(scope, 0)
                pushed = self.cursors.get(key, 0)
                if pushed != cursor:
                    # A push that completed an answer moved it while we waited: this answer
                    # starts from where it stood when we asked, so it never moves it back.
                    if pushed > part.revision:
                        self._answered[key] = asyncio.get_running_loop().time()
                        result = self.merge(part.docs, scope, peer.name)
                        merged += len(result.changed)
                        if result.changed:
                            relay.append((scope, result.changed))
                        continue
                    cursor = pushed
                self._partner_revision[peer.name] = part.revision
                self._answered[key] = asyncio.get_running_loop().time()
                if part.unreachable:
                    self._relayed_cut[key] = part.unreachable
                else:
                    self._relayed_cut.pop(key, None)
                if part.revision < cursor:
                    # The peer's revisions went back (it lost its state): start over.
                    log.info("peer %s went back from revision %d to %d", peer.name, cursor,
                             part.revision)
                    self.cursors.pop(key, None)
                    cov.reset(peer.name)
                    again.append(scope)
                    continue
                result = self.merge(part.docs, scope, peer.name)
                merged += len(result.changed)
                if result.changed:
                    relay.append((scope, result.changed))
                if (result.transient or result.refused
                        or self._resets[scope] != resets[scope]):
                    # Ask for these again from the same cursor (from a writer, or once the
                    # maps agree), or the scope restarted meanwhile: neither the cursor nor
                    # the coverage claim moves. A document refused for good holds them
                    # back too: we do not hold all the partner holds, so claiming to cover
                    # it (or what it covers) could let a deletion be collected while the
                    # partner keeps a live copy. The price: that partner's scope is asked
                    # again every round until the document changes.
                    continue
                # Before any await: the coverage claims match exactly what was just merged.
                covered = cov.advance(peer.name, part.revision) or covered
                if not part.more and not (scope == CLUSTER and self.policy.is_weak(peer.name)):
                    # We now hold all the partner held: what it covered, we cover. Not a
                    # weak peer's row in the cluster scope: it answers without what its
                    # site's super-peers sent it (``serve_pull``) and holds no other
                    # node's Lease, so we may not hold all it covers.
                    covered = cov.absorb(row) or covered
                if part.revision != cursor:
                    self.cursors[key] = part.revision
                    covered = True
                if part.more:
                    again.append(scope)
            if covered:
                self._persist_cursors()
            for scope, changed in relay:
                if self.policy.relays(scope) and not (leaf and scope == CLUSTER):
                    # News that reached us by pull spreads on by push, as if pushed to us.
                    # Not from a weak peer in the cluster scope: it pulls from its site's
                    # super-peers, which hold what they answer and spread it over the
                    # backbone, where its other super-peers get it (and they pull this
                    # peer in turn). Relayed, each document reached each super-peer once
                    # per weak peer of its site (bench/scale: 49 copies a write at 100).
                    await self.push(changed, 1, scope, exclude=peer.address, origin=peer.name)
            scopes = again
        if not scopes and cluster:
            self._pulled(peer.name, True)
        return merged

    def _new_partner_life(self, partner: str, life: int) -> None:
        """``partner`` answers from a life our cursors are not from: forget them (and the
        coverage claims over its revisions, which may name revisions it hands out again);
        the answer in hand sets them again."""
        self._partner_lives[partner] = life
        for key in [k for k in self.cursors if k[0] == partner]:
            del self.cursors[key]
        for ckey in [k for k in self._coverage_cursors if k[0] == partner]:
            del self._coverage_cursors[ckey]
        for cov in self.coverage.scopes.values():
            if cov.vector.get(partner):
                cov.reset(partner)

    def _pulled(self, partner: str, complete: bool) -> None:
        for listener in self.pull_listeners:
            listener(partner, complete)

    def _relays_no_rows(self) -> bool:
        """A weak peer: in the cluster scope only super-peers pull from it, and they learn
        every row over the backbone, so it needs, of other peers' rows, only the entries
        about itself (for collection) and its partners' whole rows (to absorb them).
        Other scopes keep whole rows: their pull graph may run through weak peers."""
        me = self.membership.members.get(self.membership.name)
        return me is not None and topology.role_in(tags_of(me)) == topology.Role.WEAK

    def _persist_cursors(self) -> None:
        vectors = self.coverage.vectors()
        stored: dict[str, dict[str, int]] = {}
        for (peer, scope), cursor in self.cursors.items():
            stored.setdefault(scope, {})[peer] = cursor
        held = {s: [sorted(ns), None if w is None else sorted(w)]
                for s, (ns, w) in (self._held_view or {}).items()}
        fut = self.replica.persistence.write(
            [], {CURSORS_META: orjson.dumps(stored).decode(),
                 PARTNER_LIVES_META: orjson.dumps(self._partner_lives).decode(),
                 COVERAGE_META: orjson.dumps(vectors).decode(),
                 HELD_META: orjson.dumps(held).decode()},
            asyncio.get_running_loop(),
        )

        def done(f: asyncio.Future[None]) -> None:
            # A lost cursor write only means pulling some documents again; only a durable
            # vector may be published, or a crash could break a claim others act on.
            if not f.cancelled() and f.exception() is None:
                self._publish_later(vectors)

        fut.add_done_callback(done)

    def _publish_later(self, durable: dict[str, dict[str, int]]) -> None:
        """Publish the newest durable vectors, at most once per coverage_publish_interval:
        every publication reaches every member of the scope, so a burst of writes must not
        become a burst of vectors."""
        if self.config.gc_interval <= 0:
            return  # no collection, so nobody needs our coverage
        self._durable_vectors = durable
        if self._publish_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = max(0.0, self._last_publish + self.config.coverage_publish_interval - loop.time())

        def publish() -> None:
            self._publish_timer = None
            self._last_publish = loop.time()
            if self._durable_vectors is not None:
                self.coverage.published(self._durable_vectors)

        self._publish_timer = loop.call_later(wait, publish)

    def partners(self) -> list[Member]:
        """The stable peers this one pulls from (``ReplicationPolicy.pull_partners``)."""
        self.check_scopes()
        return self.policy.pull_partners()

    def _source(self, partners: list[Member]) -> Member | None:
        """The super-peer a weak peer pulls the cluster scope from this round: the first of
        its partners (its site's live super-peers, in ring order: the same one every round)
        whose last pull did not go unanswered in the last ``SOURCE_RETRY`` seconds; if all
        did, each in turn. So a change reaches it once, not once per super-peer, and it
        keeps syncing through the next when one dies."""
        if not partners:
            return None
        now = asyncio.get_running_loop().time()
        for p in partners:
            if now - self._unanswered.get(p.name, float("-inf")) >= SOURCE_RETRY:
                return p
        return partners[self._round % len(partners)]

    def _pushed_fresh(self, peer: str) -> float:
        """How recent ``peer``'s last answering push must be for its pull to be skipped:
        WEAK_PUSHED_FRESH, or its share of a longer Lease the peer declares (its renewals
        come further apart, so they would not keep a 25 s window fresh)."""
        entry = self.replica.entry(LEASES, NODE_LEASE_NAMESPACE, peer)
        value = None if entry is None else entry.value
        spec = value.get("spec") if isinstance(value, dict) else None
        seconds = spec.get("leaseDurationSeconds") if isinstance(spec, dict) else None
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 40:
            return WEAK_PUSHED_FRESH
        return WEAK_PUSHED_FRESH * seconds / 40

    async def pull_round(self) -> None:
        if self._handoff:
            await self._hand_off()
        if self.membership.version != self._leases_checked:
            self._forget_withheld_leases()
        partners = self.partners()
        n = min(self.config.pull_fanout, len(partners))
        start = self._round * n
        source = self._source(partners) if self._relays_no_rows() else None
        backs_off = source is not None
        if backs_off:
            # A weak peer, in Scopes or not: after pulls in a row that brought nothing,
            # every 2nd, then 4th round (a Scope's status reads its partners' answers
            # against the wait it backs off to, ``_pull_spacing``). Its super-peers push
            # nothing to it but a poke when there is something to pull (``_poked_by``),
            # which resets it, as does the first pull that brings something.
            self._weak_rounds += 1
            if self._weak_rounds % (1 << min(self._idle_pulls, WEAK_IDLE_DOUBLINGS)):
                return
        self._cluster_source = source.name if source is not None else None
        self._round += 1
        targets = [partners[(start + i) % len(partners)] for i in range(n)]
        weak = self.policy.weak_pulls()
        # One weak peer per round, but each at most every WEAK_PULL_EVERY seconds: a weak
        # peer pushes what it writes to each of its super-peers as their next pull answer
        # (``Push.answers``), so these pulls only repair a lost push and bring its coverage
        # row; at 98 weak peers a site (bench/scale) each is pulled every 98th round.
        cycle = len(weak) * self.config.pull_interval
        every = max(1, math.ceil(WEAK_PULL_EVERY / cycle)) if cycle > 0 else 1
        if weak and (self._round - 1) % every == 0:
            turn = weak[(self._round - 1) // every % len(weak)]
            now = asyncio.get_running_loop().time()
            if turn not in targets and not (
                    now - self._pushed_at.get(turn.name, float("-inf"))
                    < self._pushed_fresh(turn.name)
                    and now - self._weak_pulled_at.get(turn.name, float("-inf"))
                    < WEAK_PULL_AT_LEAST):
                # Not while its pushes keep completing our answer from it (they moved the
                # cursor: a pull would bring nothing, 84 B a pull idle), but at least every
                # WEAK_PULL_AT_LEAST for its coverage row (collection reads it).
                self._weak_pulled_at[turn.name] = now
                targets.append(turn)
        seen = {p.name for p in weak}
        if self._weak_seen is not None:
            # A weak peer of our site back in the live list (or new): pulled at once, for
            # what it wrote while we held it dead (its pushes were lost on the way).
            self._missed.update(seen - self._weak_seen)
        self._weak_seen = seen
        if self._missed:
            missed = {p.name: p for p in (*partners, *weak) if p.name in self._missed}
            self._missed.clear()
            targets += [p for p in missed.values() if p not in targets]
        if source is not None and self._pokers:
            # Whoever poked it is pulled now, in turn or not: a super-peer that is not its
            # source pokes it for a Scope's change (``_to_poke``).
            poked = {p.name: p for p in partners if p.name in self._pokers}
            targets += [p for name, p in poked.items()
                        if p not in targets and name != source.name]
        self._pokers.clear()
        if source is None:
            pulls = [self.pull_from(t) for t in targets]
        else:
            # A weak peer: the cluster scope's documents from its source only; the other
            # scopes, and the cluster scope's rows, from the partners in turn as before.
            others = [t for t in targets if t is not source]
            if others:
                self._rows_turn += 1
            # Rows only, every other turn (collection waits a few seconds more, and an
            # idle weak peer sends a third fewer pulls); other scopes at every turn.
            pulls = [self.pull_from(t, cluster=False) for t in others
                     if self._rows_turn % 2 or any(s != CLUSTER
                                                   for s in self.policy.scopes_for(t.name))]
            pulls.append(self.pull_from(source))
        names = {p.name for p in targets} | ({source.name} if source is not None else set())
        pulls += [self.pull_from(t) for t in self._pulls_back() if t.name not in names]
        if pulls:
            merged = await asyncio.gather(*pulls)
            if backs_off:
                self._idle_pulls = 0 if any(merged) else self._idle_pulls + 1

    async def _pull_loop(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.config.pull_interval))
        while True:
            start = asyncio.get_running_loop().time()
            await self.pull_round()
            elapsed = asyncio.get_running_loop().time() - start
            await asyncio.sleep(max(0.0, self.config.pull_interval - elapsed))

    # -- what an operator sees -------------------------------------------------------

    def _unreachable_writers(self, scope: str) -> tuple[str, ...]:
        """The writers of ``scope`` this peer knows and finds suspect, dead or left: they
        may hold writes it lacks. One lookup per writer of the scope."""
        writers = self.policy.map().writers(scope)
        if not writers:
            return ()
        members = self.membership.members
        return tuple(sorted(w for w in writers if w != self.membership.name
                            and (mb := members.get(w)) is not None and mb.state != State.ALIVE))

    def _pulls_documents(self, partner: str, scope: str, asked: dict[str, list[str]]) -> bool:
        """Whether this peer pulls the documents of ``scope`` from ``partner`` now, so that
        the cursor it holds for them says how far behind it is: the scope is asked of it
        (``ReplicationPolicy.scopes_for``), and, on a weak peer in the cluster scope, it is
        the source (the others answer rows only). ``asked`` caches ``scopes_for``."""
        if partner not in asked:
            asked[partner] = self.policy.scopes_for(partner)
        if scope not in asked[partner]:
            return False
        return (scope != CLUSTER or self._cluster_source is None
                or partner == self._cluster_source)

    def lags(self) -> dict[tuple[str, str], tuple[int, int | None]]:
        """(partner, scope) -> (cursor, revisions behind: the partner's last reported
        revision minus the cursor, None before it reported one), for each scope whose
        documents this peer pulls from that partner (``_pulls_documents``). A cursor kept
        for a scope not pulled from it (it is no writer of it now, or the cluster scope
        of a weak peer's other super-peer) is left out: it stands still while the
        partner's revision grows, and would read as a lag that only rises."""
        self.check_scopes()
        asked: dict[str, list[str]] = {}
        out: dict[tuple[str, str], tuple[int, int | None]] = {}
        for (peer, scope), cursor in list(self.cursors.items()):
            if self._pulls_documents(peer, scope, asked):
                reported = self._partner_revision.get(peer)
                out[(peer, scope)] = (cursor,
                                      None if reported is None else max(0, reported - cursor))
        return out

    def _relayed_unreachable(self, scope: str, partners: Iterable[str], now: float,
                             window: float) -> dict[str, tuple[str, ...]]:
        """On a weak peer: per super-peer it pulls ``scope`` from that answered it within
        ``window`` seconds, the writers that super-peer said it cannot reach. A writer is
        out of this peer's reach when every one of them says so (``scope_status``): what
        one of them reaches, this peer gets through it."""
        out: dict[str, tuple[str, ...]] = {}
        for name in partners:
            at = self._answered.get((name, scope))
            if at is not None and now - at <= window:
                out[name] = self._relayed_cut.get((name, scope), ())
        return out

    def _pull_spacing(self) -> float:
        """Seconds between this peer's pulls at most while nothing comes: its pull interval,
        on a weak peer the every ``2 ** WEAK_IDLE_DOUBLINGS``-th round it backs off to
        (``pull_round``: 16 s in 4 s rounds; a poke or a pull that brings something
        shortens it, never lengthens it). The status of a scope reads the age of its
        partners' answers against it, so a backed-off peer's quiet is not a lost link."""
        if self._relays_no_rows():
            return self.config.pull_interval * (1 << WEAK_IDLE_DOUBLINGS)
        return self.config.pull_interval

    def scope_status(self) -> dict[str, dict[str, Any]]:
        """Per scope held: its members (None: every peer), the partners it is pulled from
        with the cursor held for each and how far behind it is (the partner's last reported
        revision minus the cursor), the documents held, and documents sent; and what it
        says of how in touch this peer is: seconds since any partner last answered a pull
        of the scope (``last_answer``, None: never), the pull interval (``pull_interval``:
        the longest wait between its pulls, a weak peer's idle back-off included,
        ``_pull_spacing``) and the pull cycle (``pull_cycle``: the time in which every
        partner is asked once at that pace), how many other holders of the scope it knows
        (``holders``), and the writers of the scope it finds unreachable
        (``unreachable_writers``: suspect, dead or left)."""
        self.check_scopes()
        m = self.policy.map()
        partners = [p.name for p in self.policy.pull_partners()]
        asked = {name: self.policy.scopes_for(name) for name in partners}
        now = asyncio.get_running_loop().time()
        heard: dict[str, float] = {}
        for (_name, scope), at in self._answered.items():
            heard[scope] = max(at, heard.get(scope, at))
        known = {n: mb.state for n, mb in self.membership.members.items()
                 if n != self.membership.name}
        spacing = self._pull_spacing()
        cycle = spacing * max(1, -(-len(partners) // max(1, self.config.pull_fanout)))
        held: Counter[str] = Counter()
        for key, _ in self.replica.all_entries():
            held[m.scope_of(key[0], key[1])] += 1
        out: dict[str, dict[str, Any]] = {}
        for scope in sorted(m.scopes_of(self.membership.name)):
            members = m.members(scope)
            pulled: dict[str, dict[str, float | None]] = {}
            for name in partners:
                if not self._pulls_documents(name, scope, asked):
                    # Not pulled from it (a member that is no writer, for a non-writer; a
                    # weak peer's super-peer that is not its source in the cluster scope):
                    # its revision says nothing of what we lack.
                    continue
                cursor = self.cursors.get((name, scope), 0)
                reported = self._partner_revision.get(name)
                pulled[name] = {"cursor": cursor,
                                "behind": None if reported is None else max(0, reported - cursor)}
                if (name, scope) in self._answered:
                    pulled[name]["answered"] = round(now - self._answered[(name, scope)], 1)
            unreachable = set(self._unreachable_writers(scope)) if scope != CLUSTER else set()
            relayed = (self._relayed_unreachable(scope, pulled, now, 2 * cycle)
                       if self.policy.is_weak() and scope != CLUSTER else {})
            cut_via = {}
            if relayed and all(relayed.values()):
                beyond = set.intersection(*(set(w) for w in relayed.values()))
                cut_via = {w: sorted(relayed) for w in sorted(beyond)}
                unreachable |= beyond
            out[scope] = {
                "stranded": self.policy.stranded(scope),
                "members": None if members is None else sorted(members),
                "writer": m.is_writer(scope, self.membership.name),
                "partners": pulled,
                "documents": held[scope],
                "sent": self.docs_sent[scope],
                "last_answer": round(now - heard[scope], 1) if scope in heard else None,
                "pull_interval": spacing,
                "pull_cycle": cycle,
                "holders": sum(1 for n, state in known.items()
                               if state != State.LEFT and (members is None or n in members)),
                "unreachable_writers": sorted(unreachable),
                "unreachable_via": cut_via,
            }
        return out

    # -- incoming --------------------------------------------------------------------

    async def handle(self, sender: str, msg: Message, name: str | None = None) -> Message | None:
        """Serve ``msg`` from the peer at address ``sender``, authenticated as ``name``."""
        if isinstance(msg, Pull):
            if name is not None:
                self._note_puller(name, sender, msg)
            return self.serve_pull(msg, name if name is not None else sender)
        if isinstance(msg, Push):
            if not msg.docs and msg.answers is None and not msg.deltas:
                self._poked_by(name)
                return None
            resets = self._resets[msg.scope]
            docs, deltas = msg.docs, dict(msg.deltas)
            if (msg.answers is not None and name is not None and not self._completes(name, msg)
                    and (self.policy.is_weak(name) or (
                        self.policy.pushes_lease_itself(name)
                        and any(d.name == name and d.resource == LEASES for d in msg.docs)))
                    and not self.policy.is_weak()):
                # A push from a weak peer of our site, or of its own Lease by a super-peer
                # that pushes it to its holders itself, that does not start at our cursor:
                # one of its pushes was missed here (nobody forwards its Lease to us,
                # ``from_its_node``). Pulled at the next round.
                self._missed.add(name)
            if deltas and (name is None or not self._completes(name, msg)):
                # Deltas over versions we may not hold: each is kept only where merging it
                # into what we hold gives the sender's document exactly (its digest), as
                # that whole; the others are dropped, and the next pull brings them whole
                # (this push moves no cursor). Two answering pushes from one peer can arrive
                # crossed: the second, dropped, then reached us only through another holder,
                # which answered that peer's pulls with it (a second copy, part W).
                docs, lost = self._rebuilt(docs, deltas)
                deltas = {}
                msg = dataclasses.replace(msg, answers=None)
                if lost and name is not None and self.policy.pushes_lease_itself(name):
                    self._missed.add(name)  # nobody else sends us its Lease: pull it soon
            result = self.merge(docs, msg.scope, name if name is not None else sender, deltas)
            if msg.answers is not None and name is not None:
                self._answered_by_push(name, msg, result, resets)
            if result.refused:
                with contextlib.suppress(TransportError):
                    await self.transport.send(
                        sender, encode(Refused(tuple(result.refused[:MAX_REASONS]))))
            if (result.changed and msg.hops + 1 <= self.config.push_max_hops
                    and self.policy.relays(msg.scope)):
                await self.push(result.changed, msg.hops + 1, msg.scope, exclude=sender,
                                origin=name)
        elif isinstance(msg, Refused):
            self.refusals_received += 1
            for reason in msg.reasons:
                self._deny_log("%s: %s refused a pushed document: %s", self.membership.name,
                               name or sender, reason)
        return None


    def _rebuilt(self, docs: tuple[DocRecord, ...], deltas: dict[int, str]
                 ) -> tuple[tuple[DocRecord, ...], int]:
        """``docs`` with each delta replaced by the whole it gives merged into what we hold,
        where that whole's digest is the one sent, and left out elsewhere; and how many
        were left out."""
        out = []
        lost = 0
        for i, d in enumerate(docs):
            digest = deltas.get(i)
            if digest is None:
                out.append(d)
                continue
            entry = self.replica.entry(d.resource, d.namespace, d.name)
            whole = None
            if entry is not None and entry.doc_bytes is not None:
                try:
                    doc = Document.from_bytes(entry.doc_bytes)
                    doc.merge(d.document())
                    whole = doc.to_bytes()
                except (TypeError, ValueError, KeyError, IndexError, AttributeError):
                    self.garbage += 1
                    whole = None
            if whole is not None and doc_digest(whole) == digest:
                self.deltas_rebuilt += 1
                out.append(DocRecord(d.resource, d.namespace, d.name, whole))
            else:
                lost += 1
        return tuple(out), lost

    def _completes(self, sender: str, msg: Push) -> bool:
        """Whether ``msg`` completes our next pull answer from ``sender``: it starts at our
        cursor for it in its scope, of the life that cursor is from, and we pull that scope
        from it."""
        if msg.answers is None:
            return False
        life, start, end = msg.answers
        return (end > start and self._partner_lives.get(sender) == life
                and self.cursors.get((sender, msg.scope), 0) == start
                and self.policy.holds(msg.scope)
                and msg.scope in self.policy.scopes_for(sender))

    def _answered_by_push(self, sender: str, msg: Push, result: MergeResult,
                          resets: int) -> None:
        """Move our cursor for ``sender`` in the push's scope to where the push completes
        our next pull answer (``Push.answers``), if it is still the cursor that answer
        would start from, of the life the push is from, and every document of it merged
        here (none refused or deferred; its scope did not restart meanwhile): as for a
        pull answer, the cursor is written after the documents it covers."""
        if (result.transient or result.refused or self._resets[msg.scope] != resets
                or not self._completes(sender, msg)):
            return
        assert msg.answers is not None
        end = msg.answers[2]
        self.cursors[(sender, msg.scope)] = end
        self._partner_revision[sender] = max(end, self._partner_revision.get(sender, 0))
        self.coverage.scope(msg.scope).advance(sender, end)
        self.cursors_pushed += 1
        self._pushed_at[sender] = asyncio.get_running_loop().time()
        self._persist_cursors()


def _lives_written(fut: asyncio.Future[None]) -> None:
    """Say once why this life's record was lost (the write is not awaited), instead of
    asyncio's "Future exception was never retrieved"."""
    if not fut.cancelled() and (error := fut.exception()) is not None:
        log.warning("could not record this life (%s): after a restart, partners pull what "
                    "this life wrote from the start", error)
