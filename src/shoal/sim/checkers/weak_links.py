"""Weak links: a weak peer exchanges state only with the super-peers of its site.

Issue 10: "A weak peer (``--sync-via super``) exchanges state only with super-peers of
its site, not with every member." Every message of the replication (push, pull, pull
answer, refusal) sent by a weak peer or to one is judged as it is sent, against
the roles and sites the simulator gave the peers: its other end must be a super-peer of
the weak peer's site. Membership messages (probes, gossip, joins, member-list digests)
are not state and are not judged here (``mesh.membership.contacts`` has its own rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from shoal.mesh import messages
from shoal.mesh.topology import Role

KINDS: dict[type[messages.Message], str] = {
    messages.Push: "push", messages.Pull: "pull", messages.PullReply: "pull answer",
    messages.Refused: "refusal"}
"""Messages of the replication, by type."""


def _kind(payload: bytes) -> str | None:
    tag = messages.tag_of(payload)
    kind = None if tag is None else messages.TAGS.get(tag)
    return None if kind is None else KINDS.get(kind)


class WeakLinkChecker:
    """Attach ``observe`` to ``SimNetwork.observers``; ``check`` lists what broke the rule."""

    def __init__(self, roles: Mapping[str, tuple[Role, str]]) -> None:
        self.roles = dict(roles)
        self.broken: Counter[tuple[str, str, str]] = Counter()
        """(weak peer, other end, kind) -> messages."""
        self.judged = 0

    @staticmethod
    def _name(address: str) -> str:
        return address.rsplit(":", 1)[0]

    def _allowed(self, weak_site: str, other: str) -> bool:
        role, site = self.roles.get(other, (Role.FULL, ""))
        return role == Role.SUPER and site == weak_site

    def observe(self, src: str, dst: str, payload: bytes) -> None:
        a, b = self._name(src), self._name(dst)
        ra, rb = self.roles.get(a), self.roles.get(b)
        weak_a = ra is not None and ra[0] == Role.WEAK
        weak_b = rb is not None and rb[0] == Role.WEAK
        if not (weak_a or weak_b):
            return
        kind = _kind(payload)
        if kind is None:
            return
        self.judged += 1
        if weak_a and ra is not None and not self._allowed(ra[1], b):
            self.broken[a, b, kind] += 1
        if weak_b and rb is not None and not self._allowed(rb[1], a):
            self.broken[b, a, kind] += 1

    def check(self, limit: int = 5) -> list[str]:
        out = []
        for (weak, other, kind), n in self.broken.most_common(limit):
            role, site = self.roles.get(other, (Role.FULL, ""))
            where = f"{role} of site {site!r}" if site else str(role)
            out.append(f"weak peer {weak} (site {self.roles[weak][1]!r}) exchanged {n} "
                       f"{kind} message(s) with {other}, a {where}")
        return out
