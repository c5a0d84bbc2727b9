"""The member list kept on disk, so a restarted peer rejoins without ``--join``.

Saved in the replica's meta table (``mesh.members``) whenever a member joins,
leaves or changes address; read back at start and handed to
:meth:`MeshPeer.restore_members`. Even when every seed is down, a restarted
peer then knows whom to probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import orjson

from shoal.mesh.membership import Member
from shoal.mesh.messages import State
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

META_KEY = "mesh.members"


def load(replica: Replica) -> list[tuple[str, str]]:
    return [(n, a) for n, a, _ in load_tagged(replica)]


def load_tagged(replica: Replica) -> list[tuple[str, str, Mapping[str, str]]]:
    """(name, address, tags) of the saved members: a restarted weak peer knows at once
    which of them are its super-peers. Lists saved before tags existed load without."""
    raw = replica.persistence.get_meta(META_KEY)
    if not raw:
        return []
    try:
        out: list[tuple[str, str, Mapping[str, str]]] = []
        for row in orjson.loads(raw):
            tags = row[2] if len(row) > 2 and isinstance(row[2], dict) else {}
            out.append((str(row[0]), str(row[1]), {str(k): str(v) for k, v in tags.items()}))
        return out
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError, AttributeError):
        log.warning("ignoring an unreadable saved member list")
        return []


class MemberListKeeper:
    """Membership hooks that save the list of known members (debounced)."""

    def __init__(self, replica: Replica, self_name: str, delay: float = 1.0) -> None:
        self.replica = replica
        self.self_name = self_name
        self.delay = delay
        self.members: dict[str, tuple[str, Mapping[str, str]]] = {
            n: (a, t) for n, a, t in load_tagged(replica)}
        self._pending: asyncio.TimerHandle | None = None

    def _changed(self, member: Member, keep: bool) -> None:
        if member.name == self.self_name:
            return
        before = self.members.get(member.name)
        if keep:
            self.members[member.name] = (member.address, member.tags)
        else:
            self.members.pop(member.name, None)
        if self.members.get(member.name) != before and self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(self.delay, self._save)

    def _save(self) -> None:
        self._pending = None
        rows = [[n, a, dict(t)] if t else [n, a] for n, (a, t) in sorted(self.members.items())]
        data = orjson.dumps(rows).decode()
        loop = asyncio.get_running_loop()
        self.replica.persistence.write([], {META_KEY: data}, loop)

    def on_join(self, member: Member) -> None:
        self._changed(member, True)

    def on_leave(self, member: Member) -> None:
        # A dead member may come back; only a graceful leave removes it for good.
        self._changed(member, member.state != State.LEFT)

    def on_update(self, member: Member) -> None:
        self._changed(member, True)
