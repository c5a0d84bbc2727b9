"""Token Secrets: a ``kubernetes.io/service-account-token`` Secret gets its token.

As kube-controller-manager's token controller, a Secret of that type annotated with
``kubernetes.io/service-account.name`` gets ``data.token`` (a token of that
ServiceAccount), ``data.ca.crt`` (the cluster CA) and ``data.namespace``, and the
annotation ``kubernetes.io/service-account.uid``. This is how users get a token that
does not expire (``kubectl create token`` tokens do).

The token is signed with the cluster CA key (``shoal.authz.service_account_tokens``), so
only a signer peer fills a Secret; elsewhere the Secret waits for one, as a TokenRequest
does. It is bound to the Secret: deleting the Secret (or the ServiceAccount) revokes it,
as Kubernetes revokes a legacy token whose Secret is gone. It lasts as long as a cluster
CA, where Kubernetes' has no expiry at all.

Every signer fills a Secret it sees without a token (of a Scope: every signer that is
one of its writers). Two signers that do so while apart
write two tokens; the merge keeps one, and both verify, since each is bound to the same
Secret. A Secret whose ServiceAccount is missing, or has another uid than the annotation
names, is left as it is (Kubernetes deletes it): on a peer that has not seen the
ServiceAccount yet, deleting would lose a Secret another peer just made.
"""

from __future__ import annotations

import base64
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

from shoal.authz.service_account_tokens import ISSUER, Binding, TokenIssuer
from shoal.control.controller import Controller
from shoal.control.ownership import scope_of
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

TOKEN_SECRET = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"
LIFETIME = 3650 * 24 * 3600  # a cluster CA's (shoal.mesh.pki.CA_DAYS)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TokenSecrets(Controller):
    """Fills the token Secrets of this replica, on a signer peer."""

    name = "token-secrets"

    def __init__(self, store: ObjectStore, issuer: Callable[[], TokenIssuer], ca_cert_pem: bytes,
                 clock: Callable[[], float] = time.time, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.issuer = issuer
        self.ca_b64 = base64.b64encode(ca_cert_pem).decode()
        self.clock = clock
        kind = store.registry.by_kind("v1", "Secret")
        assert kind is not None
        self.secret_kind = kind

    def relevant(self, change: Change) -> bool:
        # A ServiceAccount that arrives may be the one a waiting Secret names.
        return (change.resource == "serviceaccounts" and change.type != "DELETED") or (
            change.resource == "secrets" and change.type != "DELETED"
            and change.obj.get("type") == TOKEN_SECRET)

    async def sync(self) -> bool:
        issuer = self.issuer()
        if not issuer.is_signer:
            return False
        pending = False
        scopes, me = self.scopes.current(), self.store.replica.node_id
        for secret in self.store.replica.list("secrets"):
            # Only a scope's writers write its objects (a signer outside it waits for one).
            if secret.get("type") != TOKEN_SECRET or not scopes.is_writer(
                    scope_of(scopes, "secrets", secret), me):
                continue
            filled = self._filled(secret, issuer)
            if filled is None:
                continue
            meta = filled["metadata"]
            try:
                await self.store.update(self.secret_kind, filled, meta["namespace"], meta["name"])
            except StoreError as e:  # a conflict: the next pass sees the new version
                log.debug("token secret %s/%s: %s", meta["namespace"], meta["name"], e)
                pending = True
        return pending

    def _filled(self, secret: dict[str, Any], issuer: TokenIssuer) -> dict[str, Any] | None:
        """The Secret with what it lacks, or None when it lacks nothing or must wait."""
        meta = secret["metadata"]
        if meta.get("deletionTimestamp"):
            return None
        ns = str(meta.get("namespace") or "")
        annotations = meta.get("annotations") or {}
        sa = self.store.replica.get("serviceaccounts", ns, str(annotations.get(NAME_ANNOTATION)
                                                              or ""))
        if sa is None:
            return None
        sa_uid = str(sa["metadata"].get("uid") or "")
        if annotations.get(UID_ANNOTATION, sa_uid) != sa_uid:
            return None
        data = secret.get("data") or {}
        wanted = {"ca.crt": self.ca_b64, "namespace": _b64(ns)}
        if not data.get("token"):
            wanted["token"] = _b64(issuer.issue(
                ns, sa["metadata"]["name"], sa_uid, now=self.clock(), audiences=[ISSUER],
                expiration_seconds=LIFETIME,
                binding=Binding(secret_name=meta["name"], secret_uid=str(meta.get("uid") or "")),
            ).token)
        if all(data.get(k) == v for k, v in wanted.items()) and UID_ANNOTATION in annotations:
            return None
        out = copy.deepcopy(secret)
        out["data"] = {**data, **wanted}
        out["metadata"].setdefault("annotations", {})[UID_ANNOTATION] = sa_uid
        return out
