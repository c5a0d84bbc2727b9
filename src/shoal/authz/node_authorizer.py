"""The Node authorizer: what a node's credential (``system:node:<name>`` in
``system:nodes``) may do from the request's path alone, as Kubernetes' Node authorizer
with the ``system:node`` role folded in.

- read (get, list, watch) nodes, services, endpoints, endpointslices and pods;
- create, update and patch events (core and ``events.k8s.io``);
- get, update, patch and delete its own Node and ``nodes/status``, create a Node (the
  body's name is NodeRestriction's: :mod:`shoal.authz.node_restriction`);
- any verb on its own Lease in ``kube-node-lease`` (create by name in admission);
- update and patch ``pods/status``, delete pods and create ``pods/eviction``, only for
  pods bound to it (``spec.nodeName``);
- get Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccounts, and create
  ``serviceaccounts/token``, only when a pod bound to it references them.

Anything else gets no opinion (``Decision(False, reason)``): the request then goes to
RBAC, so a binding a user made for the node still counts.
"""

from __future__ import annotations

from shoal.authz.attributes import Attributes, Decision
from shoal.authz.node_graph import (
    CONFIGMAPS,
    PVCS,
    SECRETS,
    SERVICEACCOUNTS,
    pods_bound_to,
    referenced_by_node,
)
from shoal.authz.reader import ObjectReader
from shoal.authz.rules import Rule

NODE_LEASE_NAMESPACE = "kube-node-lease"
REASON_ALLOWED = "allowed by the Node authorizer"

_READ = frozenset({"get", "list", "watch"})
_EVENT_WRITE = frozenset({"create", "update", "patch"})
_OWN_NODE = frozenset({"get", "update", "patch", "delete"})
_REFERENCED = frozenset({SECRETS, CONFIGMAPS, PVCS, SERVICEACCOUNTS})

# (group, resource) a node reads without conditions.
_READABLE = frozenset({("", "nodes"), ("", "services"), ("", "endpoints"), ("", "pods"),
                       ("discovery.k8s.io", "endpointslices")})
_EVENTS = frozenset({("", "events"), ("events.k8s.io", "events")})

# What any node may do whatever it asks about (reported by SelfSubjectRulesReview).
STATIC_RULES = (
    Rule(_READ, frozenset({""}), frozenset({"nodes", "services", "endpoints", "pods"})),
    Rule(_READ, frozenset({"discovery.k8s.io"}), frozenset({"endpointslices"})),
    Rule(_EVENT_WRITE, frozenset({"", "events.k8s.io"}), frozenset({"events"})),
)


def _no_relationship(node: str) -> Decision:
    return Decision(False, f"no relationship found between node '{node}' and this object")


def _allow() -> Decision:
    return Decision(True, REASON_ALLOWED)


def authorize(reader: ObjectReader, node: str, attrs: Attributes) -> Decision:
    """The Node authorizer's decision for a request by ``node``; a refusal is "no opinion"."""
    if not attrs.resource_request:
        return Decision(False, "")
    group, resource, sub, verb = attrs.api_group, attrs.resource, attrs.subresource, attrs.verb
    if (group, resource) in _READABLE and verb in _READ and sub in ("", "status"):
        return _allow()
    if (group, resource) in _EVENTS and verb in _EVENT_WRITE and not sub:
        return _allow()
    if group == "coordination.k8s.io" and resource == "leases":
        return _lease(node, attrs)
    if group != "":
        return Decision(False, "")
    if resource == "nodes":
        return _node(node, attrs)
    if resource == "pods":
        return _pod(reader, node, attrs)
    if resource == SERVICEACCOUNTS and sub == "token":
        if verb == "create" and _referenced(reader, node, attrs):
            return _allow()
        return _no_relationship(node)
    if resource in _REFERENCED and not sub:
        if verb == "get" and _referenced(reader, node, attrs):
            return _allow()
        if verb != "get":
            return Decision(False, f"can only get individual resources of this type ({resource})")
        return _no_relationship(node)
    return Decision(False, "")


def _referenced(reader: ObjectReader, node: str, attrs: Attributes) -> bool:
    return referenced_by_node(reader.list("pods", attrs.namespace), node, attrs.resource,
                              attrs.namespace, attrs.name)


def _node(node: str, attrs: Attributes) -> Decision:
    if attrs.subresource not in ("", "status"):
        return Decision(False, "")
    if attrs.verb == "create" and not attrs.subresource and attrs.name in ("", node):
        return _allow()
    if attrs.verb in _OWN_NODE and attrs.name == node:
        return _allow()
    return Decision(False, f"node '{node}' cannot {attrs.verb} node '{attrs.name}'")


def _lease(node: str, attrs: Attributes) -> Decision:
    if attrs.namespace != NODE_LEASE_NAMESPACE or attrs.subresource:
        return Decision(False, "")
    if attrs.name == node or (attrs.verb == "create" and not attrs.name):
        return _allow()
    return Decision(False, "can only access node lease with the same name as the requesting node")


def _pod(reader: ObjectReader, node: str, attrs: Attributes) -> Decision:
    sub, verb = attrs.subresource, attrs.verb
    wants_bound = ((sub == "status" and verb in ("update", "patch"))
                   or (not sub and verb == "delete")
                   or (sub == "eviction" and verb == "create"))
    if not wants_bound or not attrs.name:
        return Decision(False, "")
    pod = reader.get("pods", attrs.namespace, attrs.name)
    if pod is None:  # the store answers 404, which tells the node nothing it may not know
        return _allow()
    if any(True for _ in pods_bound_to([pod], node)):
        return _allow()
    return _no_relationship(node)
