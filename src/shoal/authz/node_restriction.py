"""NodeRestriction: what a node's request may carry in its body, which the Node authorizer
cannot see from the path. The API calls it in admission, with the object before and after:

    admit(user, resource, subresource, operation, old, new) -> str | None

``resource`` is the plural ("nodes", "pods", "leases"; a storage resource such as
``leases.coordination.k8s.io`` works too), ``operation`` one of CREATE, UPDATE, DELETE
(any case), ``old``/``new`` the stored object and the one to be stored (None where there
is none). It returns None to admit, or the refusal message (Kubernetes' wording) for a 403.
Users that are not nodes are always admitted.

A node may not: create a Node under another name, or touch another Node; set or change
labels under ``node-restriction.kubernetes.io/`` on its Node, or change its taints; change
a pod's ``spec.nodeName`` or the status of a pod bound elsewhere, delete or evict such a
pod; create a Lease named for another node.
"""

from __future__ import annotations

from typing import Any

from shoal.authz.user import UserInfo

RESTRICTED_LABEL_DOMAIN = "node-restriction.kubernetes.io"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(obj: dict[str, Any] | None) -> str:
    return str(_dict(_dict(obj).get("metadata")).get("name") or "")


def _labels(obj: dict[str, Any] | None) -> dict[str, Any]:
    return _dict(_dict(_dict(obj).get("metadata")).get("labels"))


def _node_name_of(pod: dict[str, Any] | None) -> str:
    return str(_dict(_dict(pod).get("spec")).get("nodeName") or "")


def restricted_label(key: str) -> bool:
    """``node-restriction.kubernetes.io/x`` or ``a.node-restriction.kubernetes.io/x``."""
    prefix, slash, _ = key.partition("/")
    return bool(slash) and (prefix == RESTRICTED_LABEL_DOMAIN
                            or prefix.endswith("." + RESTRICTED_LABEL_DOMAIN))


def _changed_restricted_labels(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(new) | set(old)
                  if new.get(k) != old.get(k) and restricted_label(k))


def admit(user: UserInfo, resource: str, subresource: str, operation: str,
          old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
    node = user.node_name
    if node is None:
        return None
    plural = resource.partition(".")[0]
    op = operation.upper()
    if plural == "nodes":
        return _admit_node(node, op, old, new)
    if plural == "pods":
        return _admit_pod(node, subresource, op, old, new)
    if plural == "leases" and op == "CREATE" and _name(new) != node:
        return "can only access node lease with the same name as the requesting node"
    return None


def _admit_node(node: str, op: str, old: dict[str, Any] | None,
                new: dict[str, Any] | None) -> str | None:
    requested = _name(new) or _name(old)
    if requested != node:
        return f'node "{node}" is not allowed to modify node "{requested}"'
    if op == "CREATE":
        forbidden = _changed_restricted_labels(_labels(new), {})
        if forbidden:
            return (f'node "{node}" is not allowed to set the following labels: '
                    f'{", ".join(forbidden)}')
    elif op == "UPDATE" and new is not None and old is not None:
        forbidden = _changed_restricted_labels(_labels(new), _labels(old))
        if forbidden:
            return f'node "{node}" is not allowed to modify labels: {", ".join(forbidden)}'
        if _dict(new.get("spec")).get("taints") != _dict(old.get("spec")).get("taints"):
            return f'node "{node}" is not allowed to modify taints'
    return None


def _admit_pod(node: str, subresource: str, op: str, old: dict[str, Any] | None,
               new: dict[str, Any] | None) -> str | None:
    if subresource == "status":
        if _node_name_of(old) != node:
            return (f'node "{node}" can only update pod status for pods with '
                    "spec.nodeName set to itself")
        if new is not None and _node_name_of(new) != node:
            return f'node "{node}" is not allowed to change a pod\'s spec.nodeName'
        return None
    if subresource == "eviction":
        if old is not None and _node_name_of(old) != node:
            return f'node "{node}" can only evict pods with spec.nodeName set to itself'
        return None
    if op == "DELETE":
        if old is not None and _node_name_of(old) != node:
            return f'node "{node}" can only delete pods with spec.nodeName set to itself'
        return None
    if op == "UPDATE" and old is not None and new is not None \
            and _node_name_of(new) != _node_name_of(old):
        return f'node "{node}" is not allowed to change a pod\'s spec.nodeName'
    if op == "CREATE" and _node_name_of(new) != node:
        # Kubernetes lets a node create only mirror pods bound to itself.
        return f'node "{node}" can only create pods with spec.nodeName set to itself'
    return None
