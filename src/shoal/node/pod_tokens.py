"""The tokens of the projected volumes of this node's pods, signed with this node's key
(:class:`shoal.authz.service_account_tokens.TokenIssuer`): what the kubelet gets from
TokenRequest, made locally so that a pod gets its token on a node cut off from the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shoal.authz.service_account_tokens import Binding, NotASigner, TokenIssuer
from shoal.node.env import Lookup
from shoal.node.volumes import TokenUnavailable


class PodTokens:
    """A :data:`shoal.node.volumes.TokenSource` for the pods bound to this node."""

    def __init__(self, issuer: Callable[[], TokenIssuer], lookup: Lookup,
                 clock: Callable[[], float] = time.time) -> None:
        self.issuer = issuer  # the current one: the node's certificate is renewed
        self.lookup = lookup
        self.clock = clock

    def __call__(self, pod: dict[str, Any], audience: str, expiration_seconds: int) -> str:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        ns = str(meta.get("namespace") or "default")
        sa_name = str(spec.get("serviceAccountName") or "default")
        sa = self.lookup("serviceaccounts", ns, sa_name)
        if sa is None:
            raise TokenUnavailable(f'serviceaccount "{sa_name}" not found in namespace {ns}')
        issuer = self.issuer()
        node = self.lookup("nodes", "", issuer.node_name) or {}
        binding = Binding(str(meta.get("name", "")), str(meta.get("uid", "")),
                          str(spec.get("nodeName") or ""),
                          str((node.get("metadata") or {}).get("uid") or ""))
        if binding.node_name != issuer.node_name:
            raise TokenUnavailable(f"pod is bound to {binding.node_name!r}, not this node")
        try:
            return issuer.issue(ns, sa_name, str(sa["metadata"].get("uid") or ""),
                                     now=self.clock(), audiences=[audience] if audience else None,
                                     expiration_seconds=expiration_seconds,
                                     binding=binding).token
        except NotASigner as e:  # not reached: a pod of this node is signed by its key
            raise TokenUnavailable(str(e)) from e
