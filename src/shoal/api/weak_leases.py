"""A weak peer holds no Lease of ``kube-node-lease`` but its own (docs/semantics.md,
"Node Leases"): a write there to any other is refused (403), as a write to a scope this
peer does not hold is, with where to write instead. Reads answer from what it holds:
``kubectl get leases -n kube-node-lease`` lists its own Lease only, and another node's is
404 Not Found."""

from __future__ import annotations

from shoal.api.admission import AdmissionContext, AdmissionRequest
from shoal.api.authorization import forbidden

NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_GROUP = "coordination.k8s.io"


class WeakPeerLeases:
    """The admission hook of a weak peer (``--sync-via super``) named ``node_name``."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name

    def __call__(self, req: AdmissionRequest, ctx: AdmissionContext) -> None:
        if (req.namespace != NODE_LEASE_NAMESPACE or req.name == self.node_name
                or (req.kind.group, req.kind.plural) != (LEASE_GROUP, "leases")):
            return
        raise forbidden(req.kind.group, req.kind.plural, req.name,
                        f"this node ({self.node_name}) is a weak peer (--sync-via super) and "
                        f"holds no Lease of {NODE_LEASE_NAMESPACE} but its own; write it "
                        "through a full peer or a super-peer")
