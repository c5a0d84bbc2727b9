"""A weak peer or a super-peer holds only some Leases of ``kube-node-lease`` (docs/semantics.md,
"Node Leases"; ``mesh.topology.holds_lease``): a weak peer its own, a super-peer its own, its
site's weak nodes' and its region's super-peers', besides the full peers'. A write there to
one it does not hold is refused (403), as a write to a scope this peer does not hold is,
with where to write instead. Reads answer from what it holds: ``kubectl get leases -n
kube-node-lease`` lists the Leases it holds only, and another node's is 404 Not Found."""

from __future__ import annotations

from collections.abc import Callable

from shoal.api.admission import AdmissionContext, AdmissionRequest
from shoal.api.authorization import forbidden

NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_GROUP = "coordination.k8s.io"


class NodeLeases:
    """The admission hook of a peer named ``node_name`` that holds the Leases of
    ``kube-node-lease`` for which ``holds(name)`` is true (and its own): a weak peer
    (``--sync-via super``, by default: its own only) or a super-peer."""

    def __init__(self, node_name: str, holds: Callable[[str], bool] | None = None,
                 role: str = "weak") -> None:
        self.node_name = node_name
        self.holds = holds if holds is not None else (lambda name: False)
        self.role = role

    def __call__(self, req: AdmissionRequest, ctx: AdmissionContext) -> None:
        if (req.namespace != NODE_LEASE_NAMESPACE or req.name == self.node_name
                or (req.kind.group, req.kind.plural) != (LEASE_GROUP, "leases")
                or self.holds(req.name)):
            return
        raise forbidden(req.kind.group, req.kind.plural, req.name, self.why(req.name))

    def why(self, name: str) -> str:
        if self.role == "weak":
            return (f"this node ({self.node_name}) is a weak peer (--sync-via super) and "
                    f"holds no Lease of {NODE_LEASE_NAMESPACE} but its own; write it "
                    "through a full peer or a super-peer")
        return (f"this node ({self.node_name}) is a super-peer and holds the Leases of "
                f"{NODE_LEASE_NAMESPACE} of its site's weak nodes and its region's "
                f"super-peers only, not {name}'s; write it through a full peer or a "
                "super-peer of that node's site or region")


class WeakPeerLeases(NodeLeases):
    """The admission hook of a weak peer named ``node_name``: its own Lease only."""

    def __init__(self, node_name: str) -> None:
        super().__init__(node_name)
