"""Scopes: which peers may hold, and which may write, each object.

A ``Scope`` (``shoal.dev/v1alpha1``, cluster-scoped) names namespaces (a list, or a
selector on Namespace labels) and the peers that hold them (a list, or a selector on
Node labels), and among those the *writers* that may accept user writes (default:
every member). Every other object is in the *cluster scope* (``CLUSTER``), which every
full peer holds. A namespace that several Scopes name belongs to the one whose name
sorts first, so every peer decides the same from the same Scope objects.

The Namespace object itself stays in the cluster scope (every peer may know that a
namespace exists); what is inside it does not.

``ScopeMap`` is an immutable answer built from one replica state; ``ScopeIndex``
keeps one current for a reader whose per-resource revisions it can check cheaply.

*Former writers.* A write that removes writers from a Scope (from ``writers`` or from
``members``) records, per removed peer, the hybrid-logical-clock stamp until which it was
one: an annotation ``writer-until.shoal.dev/<peer>: "<stamp>"`` (``RecordFormerWriters``,
run on every update of a Scope). Replication then accepts a change that peer made while
it was a writer, relayed by a member that is not one (``ScopeMap.was_writer``). One
annotation per peer is one register per peer, so concurrent removals on two sides both
survive the merge; every update keeps the larger stamp of the old and new objects, so the
record only grows.

*Writers again.* A recorded former writer that an update makes a writer again (added back
to ``writers``, or to ``members`` while every member writes) is recorded with the span it
was not one: ``writer-again.shoal.dev/<peer>: "<until>:<since>,..."``, the stamp of the
removal and the stamp of the update that made it a writer again, one pair per time. Its
changes stamped inside a span, or after its last removal while it is no writer, are
revoked (``ScopeMap.revoked_after``: the *windows* of each peer); those stamped before its
first removal or inside a span it was a writer again are not. The spans of the old and
new objects are kept too (their union), so this record only grows as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.authz.reader import ObjectReader
from shoal.model.selectors import LabelSelector, SelectorError, is_qualified_name
from shoal.model.validation.scope import UNSCOPED_NAMESPACES

CLUSTER = ""
"""The cluster scope: every object not in a Scope. Every full peer is a member."""

SCOPES = "scopes.shoal.dev"


def shown(scope: str) -> str:
    """A scope's name for logs and tables: the cluster scope as ``shoal scopes`` shows it."""
    return scope or "<cluster>"

NAMESPACES = "namespaces"
NODES = "nodes"
FORMER_WRITER_PREFIX = "writer-until.shoal.dev/"
"""Annotation key prefix of a former writer: the value is the stamp until which it was one."""
WRITERS_SINCE = "shoal.dev/writers-since"
"""Annotation: the stamp of the last update that changed who writes (written only once a
former writer is recorded). Two concurrent edits keep the writers list and this stamp of
the same one (the later), so it says since when the list names whom it names."""
WRITER_AGAIN_PREFIX = "writer-again.shoal.dev/"
"""Annotation key prefix of a former writer made a writer again: the value lists
``<removed>:<again>`` stamp pairs, the spans during which it was no writer."""

Span = tuple[int, int]
"""(removed, again): a former writer was no writer for the stamps strictly between."""
Window = tuple[int, int | None]
"""(after, before): stamps strictly between are revoked; ``before`` None: no end."""
Windows = Mapping[str, tuple[Window, ...]]
"""Per former writer, the windows in which its changes are revoked (``revoked_after``)."""


def revoked_at(windows: Windows, peer: str, stamp: int) -> bool:
    """Whether a change ``peer`` stamped ``stamp`` falls in one of its revoked windows."""
    return any(after < stamp and (before is None or stamp < before)
               for after, before in windows.get(peer, ()))


def admits_more(before: Windows, after: Windows) -> bool:
    """Whether some stamp revoked under ``before`` is not under ``after`` (a window shrank
    or went: what was refused may be admitted now)."""
    for peer, windows in before.items():
        for lo, hi in windows:
            if not any(lo2 <= lo and (hi2 is None or (hi is not None and hi <= hi2))
                       for lo2, hi2 in after.get(peer, ())):
                return True
    return False


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """One Scope object, parsed."""

    name: str
    namespaces: frozenset[str]
    namespace_selector: LabelSelector | None
    members: frozenset[str]
    member_selector: LabelSelector | None
    writers: frozenset[str] | None  # None: every member
    former_writers: tuple[tuple[str, int], ...] = ()
    """(peer, stamp until which it was a writer), from the annotations."""
    writer_again: tuple[tuple[str, tuple[Span, ...]], ...] = ()
    """(peer, the spans it was no writer before it became one again), from the annotations."""
    writers_since: int = 0
    """The ``WRITERS_SINCE`` annotation (0: none)."""

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ScopeRule | None:
        """None for an object too malformed to mean anything (validation refuses those)."""
        name = (obj.get("metadata") or {}).get("name")
        spec = obj.get("spec")
        if not isinstance(name, str) or not isinstance(spec, Mapping):
            return None
        try:
            return cls(
                name=name,
                namespaces=_names(spec.get("namespaces")),
                namespace_selector=_selector(spec.get("namespaceSelector")),
                members=_names(spec.get("members")),
                member_selector=_selector(spec.get("memberSelector")),
                writers=_names(spec["writers"]) if spec.get("writers") is not None else None,
                former_writers=tuple(sorted(former_writers(obj).items())),
                writer_again=tuple(sorted(writer_again(obj).items())),
                writers_since=_stamp(((obj.get("metadata") or {}).get("annotations") or {})
                                     .get(WRITERS_SINCE)),
            )
        except SelectorError:
            return None


def former_writers(obj: Mapping[str, Any]) -> dict[str, int]:
    """The former writers a Scope object records: peer -> the stamp until which it was one."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    out: dict[str, int] = {}
    if not isinstance(annotations, Mapping):
        return out
    for key, value in annotations.items():
        if isinstance(key, str) and key.startswith(FORMER_WRITER_PREFIX):
            try:
                out[key[len(FORMER_WRITER_PREFIX):]] = int(value)
            except (TypeError, ValueError):
                continue  # an operator's typo: ignored, as a selector that matches nothing
    return out


def _stamp(value: Any) -> int:
    try:
        return int(value) if isinstance(value, str) else 0
    except ValueError:
        return 0


def writer_again(obj: Mapping[str, Any]) -> dict[str, tuple[Span, ...]]:
    """The spans a Scope object records per former writer made a writer again: peer ->
    (removed, again) stamp pairs, sorted."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    out: dict[str, tuple[Span, ...]] = {}
    if not isinstance(annotations, Mapping):
        return out
    for key, value in annotations.items():
        if isinstance(key, str) and key.startswith(WRITER_AGAIN_PREFIX) and isinstance(value,
                                                                                     str):
            spans: set[Span] = set()
            for part in value.split(","):
                removed, _, again = part.partition(":")
                try:
                    span = (int(removed), int(again))
                except ValueError:
                    continue  # an operator's typo: ignored
                if span[0] < span[1]:
                    spans.add(span)
            if spans:
                out[key[len(WRITER_AGAIN_PREFIX):]] = tuple(sorted(spans))
    return out


def _format_spans(spans: Iterable[Span]) -> str:
    return ",".join(f"{a}:{b}" for a, b in sorted(spans))


def _names(value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str))


def _selector(value: Any) -> LabelSelector | None:
    return None if value is None else LabelSelector.from_api(value)


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, Mapping) else {}


class ScopeMap:
    """Scope membership and writer rules as of one replica state."""

    def __init__(self, rules: Iterable[ScopeRule],
                 namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
                 node_labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.rules: dict[str, ScopeRule] = {r.name: r for r in sorted(rules, key=lambda r: r.name)}
        ns_labels = namespace_labels or {}
        node_lbls = node_labels or {}
        self._ns_scope: dict[str, str] = {}
        self._members: dict[str, frozenset[str]] = {}
        self._writers: dict[str, frozenset[str]] = {}
        self._former: dict[str, dict[str, int]] = {}
        self._again: dict[str, dict[str, tuple[Span, ...]]] = {}
        self._since: dict[str, int] = {}
        for rule in self.rules.values():  # sorted by name: the first claim wins
            for ns in rule.namespaces:
                if ns not in UNSCOPED_NAMESPACES:  # (stored before validation refused it)
                    self._ns_scope.setdefault(ns, rule.name)
            if rule.namespace_selector is not None and not rule.namespace_selector.empty:
                for ns, labels in ns_labels.items():
                    if rule.namespace_selector.matches(labels) and ns not in UNSCOPED_NAMESPACES:
                        self._ns_scope.setdefault(ns, rule.name)
            members = set(rule.members)
            if rule.member_selector is not None and not rule.member_selector.empty:
                members.update(n for n, labels in node_lbls.items()
                               if rule.member_selector.matches(labels))
            self._members[rule.name] = frozenset(members)
            writers = members if rule.writers is None else rule.writers & members
            self._writers[rule.name] = frozenset(writers)
            if rule.former_writers:
                self._former[rule.name] = dict(rule.former_writers)
            if rule.writer_again:
                self._again[rule.name] = dict(rule.writer_again)
            if rule.writers_since:
                self._since[rule.name] = rule.writers_since
        self._by_peer: dict[str, frozenset[str]] = {}

    @classmethod
    def build(cls, reader: ObjectReader) -> ScopeMap:
        rules = [r for r in (ScopeRule.parse(o) for o in reader.list(SCOPES)) if r is not None]
        ns_labels: dict[str, Mapping[str, str]] = {}
        node_labels: dict[str, Mapping[str, str]] = {}
        if any(r.namespace_selector is not None for r in rules):
            ns_labels = {o["metadata"]["name"]: _labels(o) for o in reader.list(NAMESPACES)}
        if any(r.member_selector is not None for r in rules):
            node_labels = {o["metadata"]["name"]: _labels(o) for o in reader.list(NODES)}
        return cls(rules, ns_labels, node_labels)

    # -- which scope ---------------------------------------------------------------

    def scope_of(self, resource: str, namespace: str) -> str:
        """The scope of an object (its namespace's; ``CLUSTER`` for cluster-scoped ones)."""
        if not namespace or resource == SCOPES:
            return CLUSTER
        return self._ns_scope.get(namespace, CLUSTER)

    def scope_of_namespace(self, namespace: str) -> str:
        return self._ns_scope.get(namespace, CLUSTER)

    def names(self) -> list[str]:
        """Every scope but the cluster scope, sorted."""
        return list(self.rules)

    # -- who ------------------------------------------------------------------------

    def members(self, scope: str) -> frozenset[str] | None:
        """The peers that hold ``scope``; None for the cluster scope (every full peer).

        A scope that no longer exists has no members: whoever still holds its objects
        drops them once it learns which scope they are in now."""
        if scope == CLUSTER:
            return None
        return self._members.get(scope, frozenset())

    def is_member(self, scope: str, peer: str) -> bool:
        if scope == CLUSTER:
            return True
        return peer in self._members.get(scope, frozenset())

    def is_writer(self, scope: str, peer: str) -> bool:
        """Whether ``peer`` may accept user writes for ``scope`` (and so originate them)."""
        if scope == CLUSTER:
            return True
        return peer in self._writers.get(scope, frozenset())

    def was_writer(self, scope: str, peer: str, stamp: int) -> bool:
        """Whether the Scope records ``peer`` as a former writer of ``scope`` until a stamp
        at or after ``stamp``, and as a writer at ``stamp`` (not inside a span it was none
        before it became one again); whether it is one now is ``is_writer``'s question."""
        until = self._former.get(scope, {}).get(peer)
        if until is None or stamp > until:
            return False
        return not any(a < stamp < b for a, b in self._again.get(scope, {}).get(peer, ()))

    def former_writers(self, scope: str) -> Mapping[str, int]:
        return self._former.get(scope, {})

    def revoked_after(self, scope: str) -> dict[str, tuple[Window, ...]]:
        """The former writers of ``scope`` whose changes are revoked in some window
        (``shoal.mesh.revocation``), each with its windows: every span it was no writer
        before it became one again, and, if it is no writer now, the stamps after its last
        removal. A writer now whose last removal no span closes was made one again by an
        edit that never saw the removal (two concurrent edits of the Scope, the later
        naming it): its changes are revoked from that removal to ``WRITERS_SINCE``, the
        stamp of the edit whose writers list the Scope keeps (none if that is earlier, as
        when a Node's labels made it a writer again)."""
        writers = self._writers.get(scope, frozenset())
        again = self._again.get(scope, {})
        since = self._since.get(scope, 0)
        out: dict[str, tuple[Window, ...]] = {}
        for p, until in self._former.get(scope, {}).items():
            spans = again.get(p, ())
            windows: list[Window] = [(a, b) for a, b in spans if a <= until]
            if p not in writers:
                windows.append((until, None))
            elif since > until and not any(a == until for a, _ in spans):
                windows.append((until, since))
            if windows:
                out[p] = tuple(windows)
        return out

    def writers(self, scope: str) -> frozenset[str] | None:
        if scope == CLUSTER:
            return None
        return self._writers.get(scope, frozenset())

    def scopes_of(self, peer: str) -> frozenset[str]:
        """The scopes ``peer`` holds, the cluster scope included."""
        held = self._by_peer.get(peer)
        if held is None:
            held = frozenset([CLUSTER, *(s for s, m in self._members.items() if peer in m)])
            self._by_peer[peer] = held
        return held

    def namespaces_of(self, scope: str) -> frozenset[str]:
        """The namespaces that are in ``scope`` now (not meaningful for ``CLUSTER``)."""
        return frozenset(ns for ns, s in self._ns_scope.items() if s == scope)

    def fingerprint(self) -> tuple[Any, ...]:
        """Equal for two maps that place and admit everything the same."""
        return (tuple(sorted(self._ns_scope.items())),
                tuple(sorted(self._members.items(), key=lambda kv: kv[0])),
                tuple(sorted(self._writers.items(), key=lambda kv: kv[0])),
                tuple(sorted((s, tuple(sorted(f.items()))) for s, f in self._former.items())),
                tuple(sorted((s, tuple(sorted(f.items()))) for s, f in self._again.items())),
                tuple(sorted(self._since.items())))


EMPTY = ScopeMap(())
"""No Scope objects: everything is in the cluster scope."""


class VersionedReader(ObjectReader, Protocol):
    def resource_revision(self, resource: str) -> int:
        """The last local revision that changed an object of ``resource`` (0: never)."""
        ...


class ScopeIndex:
    """The current ``ScopeMap`` of a reader, rebuilt only when what it is made of changed.

    Checking costs a few dict lookups, so the mesh may ask on every document."""

    def __init__(self, reader: VersionedReader) -> None:
        self.reader = reader
        self._map = EMPTY
        self._key: tuple[int, int, int] | None = None
        self.rebuilds = 0

    def _key_for(self, m: ScopeMap) -> tuple[int, int, int]:
        r = self.reader
        rules = m.rules.values()
        return (
            r.resource_revision(SCOPES),
            r.resource_revision(NAMESPACES)
            if any(x.namespace_selector is not None for x in rules) else 0,
            r.resource_revision(NODES) if any(x.member_selector is not None for x in rules) else 0,
        )

    def current(self) -> ScopeMap:
        if self._key_for(self._map) != self._key:
            self._map = ScopeMap.build(self.reader)
            self.rebuilds += 1
            # A new rule may bring a selector: key the next check on what this map reads.
            self._key = self._key_for(self._map)
        return self._map


class RecordFormerWriters:
    """An update hook for Scope objects (``ObjectStore.update_admission``): every peer that
    the update removes from the scope's writers (from ``writers``, or from ``members``
    with it) is recorded as a writer until ``stamp()``, every recorded former writer that
    it makes a writer again is recorded with the span (its last removal, ``stamp()``), and
    every record of the old object is kept, at the larger of the two stamps and with the
    spans of both, whatever the new body says (a PUT that leaves the annotations out must
    not make a former writer's changes forgeries, nor revoke again what it wrote as a
    writer again)."""

    def __init__(self, reader: ObjectReader, stamp: Callable[[], int]) -> None:
        self.reader = reader
        self.stamp = stamp

    def __call__(self, resource: str, old: Mapping[str, Any], new: dict[str, Any]) -> None:
        if resource != SCOPES:
            return
        before, after = ScopeRule.parse(old), ScopeRule.parse(new)
        if before is None:
            return
        record = former_writers(old)
        for peer, until in former_writers(new).items():
            record[peer] = max(until, record.get(peer, 0))
        spans = {p: set(v) for p, v in writer_again(old).items()}
        for peer, more in writer_again(new).items():
            spans.setdefault(peer, set()).update(more)
        was, now_writers = self._writers(before), (self._writers(after) if after is not None
                                                   else frozenset())
        removed = was - now_writers
        again = [p for p in now_writers - was if p in record]
        # A writer of the old object whose last removal no span closes was named again by
        # an edit that never saw the removal: its window ends at that edit's stamp, which
        # this update would move (``WRITERS_SINCE``), so it is written down as a span.
        old_since = _stamp(((old.get("metadata") or {}).get("annotations") or {})
                           .get(WRITERS_SINCE))
        for peer, until in former_writers(old).items():
            if (peer in was and until < old_since
                    and not any(a == until for a, _ in spans.get(peer, ()))):
                spans.setdefault(peer, set()).add((until, old_since))
        now = 0
        if was != now_writers:
            now = self.stamp()
            for peer in again:
                if record[peer] < now:
                    spans.setdefault(peer, set()).add((record[peer], now))
            for peer in removed:
                record[peer] = max(now, record.get(peer, 0))
        if not record:
            return
        meta = new.setdefault("metadata", {})
        annotations = meta.get("annotations")
        if not isinstance(annotations, dict):
            annotations = meta["annotations"] = {}
        kept = max(old_since, _stamp(annotations.get(WRITERS_SINCE)))
        if now or kept:
            annotations[WRITERS_SINCE] = str(now or kept)
        for peer, until in sorted(record.items()):
            key = FORMER_WRITER_PREFIX + peer
            if not is_qualified_name(key):  # a node name over 63 characters: not recorded
                annotations[key] = str(until)
        for peer, pairs in sorted(spans.items()):
            key = WRITER_AGAIN_PREFIX + peer
            if pairs and not is_qualified_name(key):
                annotations[key] = _format_spans(pairs)

    def _writers(self, rule: ScopeRule) -> frozenset[str]:
        labels: dict[str, Mapping[str, str]] = {}
        if rule.member_selector is not None:
            labels = {o["metadata"]["name"]: _labels(o) for o in self.reader.list(NODES)}
        return ScopeMap([rule], {}, labels).writers(rule.name) or frozenset()
