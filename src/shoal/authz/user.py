"""The authenticated caller of a request, as Kubernetes' ``user.Info``."""

from __future__ import annotations

from dataclasses import dataclass, field

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
NODES = "system:nodes"
NODE_PREFIX = "system:node:"
SERVICE_ACCOUNTS = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class UserInfo:
    """A username, its groups and the extra fields an authenticator attaches."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups

    @property
    def node_name(self) -> str | None:
        """The node a credential belongs to (``system:node:<name>`` in ``system:nodes``)."""
        if NODES in self.groups and self.username.startswith(NODE_PREFIX):
            return self.username[len(NODE_PREFIX):] or None
        return None

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) of a ServiceAccount's user."""
        if not self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        ns, sep, name = self.username[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
        return (ns, name) if sep and ns and name else None


def authenticated(username: str, groups: tuple[str, ...] = (), uid: str = "",
                  extra: dict[str, tuple[str, ...]] | None = None) -> UserInfo:
    """A user as an authenticator returns it: ``system:authenticated`` added once."""
    gs = tuple(dict.fromkeys([*groups, AUTHENTICATED]))
    return UserInfo(username, gs, uid, dict(extra or {}))


def node_user(node: str) -> UserInfo:
    return authenticated(NODE_PREFIX + node, (NODES,))


def service_account_user(namespace: str, name: str, uid: str = "",
                         extra: dict[str, tuple[str, ...]] | None = None) -> UserInfo:
    return authenticated(f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
                         (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}"), uid, extra)


ANONYMOUS = UserInfo("system:anonymous", (UNAUTHENTICATED,))
