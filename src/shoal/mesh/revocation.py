"""Revoked changes: what a member takes out of a document once it learns that a writer
was removed before it made them.

A Scope records each writer it removes with the stamp of the removal
(``authz.scopes``: ``writer-until.shoal.dev/<peer>``), and when it became a writer again
(``writer-again.shoal.dev/<peer>``). A change that peer made stamped in a window between
the two, or after its last removal while it is no writer (it was cut off and had not
learnt: ``ScopeMap.revoked_after``), is *revoked*: no member may hold it
(docs/semantics.md, "Scopes in replication", "Revoked changes"). Members that merged one
before they learnt take it out when they learn (``strip``), and no member merges one
after that (``ReplicationPolicy.accept``).

``strip`` is a pure function of the document and of which registers are revoked, so
every member that holds the same document and the same Scope object strips it to the
same document:

- a revoked register with nothing valid under it goes, so that the valid register it
  overwrote, held by a writer that never merged it, takes its place again at the next
  merge (a register of stamp 0 would lose to it too, but would read as a value);
- a revoked register over valid children becomes a map register of stamp 0 (it loses
  to every real register) keeping those children;
- a revoked root: a deletion is undone by giving the root back the register of the
  create it deleted (that of ``metadata.uid``, which every create writes and nothing
  else changes); a create means the object should not exist here, so the whole document
  goes, without a tombstone (nothing was deleted);
- a revoked re-create over a deletion (a live root whose cleared stamp is a deletion it
  replaced) leaves that deletion: a tombstone at the cleared stamp. Dropping the
  document lost a valid deletion that the re-create had overwritten on every member
  that held it, and a writer's displaced older create came back in its place (scoped
  soak seed 1956). A create keeps only the stamp of the deletion it replaces, not its
  writer, so the tombstone is charged to the re-create's writer, the likeliest deleter
  (a peer re-creating what it deleted), and the deletion goes too when that writer's
  revoked window holds its stamp.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.crdt.document import DEL, MAP, Document, Node, cleared

Revoked = Callable[[tuple[str, ...], str, int], bool]
"""Whether the register at this path, written by this peer at this stamp, is revoked."""

S, W, V, C = 0, 1, 2, 3


def _deleted(node: Node) -> bool:
    v = node[V]
    return type(v) is dict and v.get("$") == "d"


def _strip_node(node: Node, path: tuple[str, ...], revoked: Revoked) -> Node | None:
    children = node[C]
    kept: dict[str, Node] | None = None
    if children is not None:
        kept = {}
        for k, child in children.items():
            out = _strip_node(child, (*path, k), revoked)
            if out is not None:
                kept[k] = out
    if not revoked(path, node[W], node[S]):
        return [node[S], node[W], node[V], kept]
    if not kept:
        return None
    v = node[V]
    marker = v if type(v) is dict and v.get("$") == "l" else MAP
    return [0, "", marker, kept]


def strip(doc: Document, revoked: Revoked) -> Document | None:
    """``doc`` without its revoked registers: the same object if none is, a new document
    if some are, None if the object should not be held at all."""
    root = doc.root
    if not _any_revoked(root, (), revoked):
        return doc
    if revoked((), root[W], root[S]):
        if not _deleted(root):
            deletion = cleared(root)
            if deletion and not revoked((), root[W], deletion):
                # Created again by a revoked change over a valid deletion: that stays.
                return Document([deletion, root[W], DEL, _strip_children(root, revoked)])
            return None  # created by a revoked change
        children = _strip_children(root, revoked)
        metadata = children.get("metadata")
        create = (metadata[C] or {}).get("uid") if metadata is not None else None
        if create is None:
            return None
        # The deletion undone: the root holds the create's register again.
        return Document([create[S], create[W], MAP, children])
    out = _strip_node(root, (), revoked)
    assert out is not None  # the root itself is not revoked
    return Document(out)


def displaced(local: Document, remote: Document) -> Document | None:
    """The create that loses when ``remote`` is merged into ``local`` and the two hold
    different creates of one object (two peers created its name while apart, or one
    created it again after a deletion the other never saw), both live: a copy of the one
    whose root register is smaller. The larger create's registers overwrite every field
    both wrote, so if it is revoked, taking it out (``strip``) leaves nothing of the
    smaller one; ``over`` brings that one back. None when they share their create."""
    a, b = local.root, remote.root
    if _deleted(a) or _deleted(b) or (a[S], a[W]) == (b[S], b[W]):
        return None
    return (local if (b[S], b[W]) > (a[S], a[W]) else remote).copy()


def over(base: Document, doc: Document, revoked: Revoked) -> Document:
    """``base`` (a create that a revoked create displaced, already stripped) with what of
    ``doc`` (the object as the revoked create left it) is not revoked: the changes that
    writers which had not learnt made over it since, merged as they would have been had
    they been made over ``base``."""
    out = base.copy()
    out.merge(Document([0, "", MAP, _strip_children(doc.root, revoked)]))
    return out


def _strip_children(node: Node, revoked: Revoked) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for k, child in (node[C] or {}).items():
        kept = _strip_node(child, (k,), revoked)
        if kept is not None:
            out[k] = kept
    return out


def _any_revoked(node: Node, path: tuple[str, ...], revoked: Revoked) -> bool:
    if revoked(path, node[W], node[S]):
        return True
    return any(_any_revoked(c, (*path, k), revoked) for k, c in (node[C] or {}).items())
