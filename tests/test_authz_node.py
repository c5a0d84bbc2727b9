"""The Node authorizer and NodeRestriction: what a node's own credential may do."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.authz import node_restriction
from shoal.authz.attributes import Attributes
from shoal.authz.authorizer import Authorizer
from shoal.authz.rbac import ROLE_BINDINGS
from shoal.authz.user import authenticated, node_user
from tests.tools.readers import DictReader, binding

N1 = node_user("n1")


def _pod(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "apps"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}], **spec}}


@pytest.fixture
def authz() -> Authorizer:
    reader = DictReader()
    reader.put("pods", _pod("mine", "n1", serviceAccountName="runner",
                            volumes=[{"name": "v", "secret": {"secretName": "mounted"}},
                                     {"name": "p", "projected": {"sources": [
                                         {"configMap": {"name": "projected-cm"}}]}},
                                     {"name": "d", "persistentVolumeClaim": {
                                         "claimName": "data"}}],
                            imagePullSecrets=[{"name": "registry"}],
                            containers=[{"name": "c", "image": "i",
                                         "env": [{"name": "X", "valueFrom": {"secretKeyRef": {
                                             "name": "env-secret", "key": "k"}}}],
                                         "envFrom": [{"configMapRef": {"name": "env-cm"}}]}]))
    reader.put("pods", _pod("theirs", "n2", volumes=[
        {"name": "v", "secret": {"secretName": "their-secret"}}]))
    return Authorizer(reader)


def _ask(user: Any, verb: str, resource: str, namespace: str = "", name: str = "",
         group: str = "", sub: str = "") -> Attributes:
    return Attributes(user, verb, True, group, "v1", resource, sub, namespace, name)


ALLOWED = [
    ("a node reads its own Node", ("get", "nodes", "", "n1")),
    ("a node lists Nodes", ("list", "nodes", "", "")),
    ("a node updates its own Node's status", ("update", "nodes", "", "n1", "", "status")),
    ("a node patches its own Node", ("patch", "nodes", "", "n1")),
    ("a node creates a Node (its name is checked in admission)", ("create", "nodes", "", "")),
    ("a node renews its own Lease", ("update", "leases", "kube-node-lease", "n1",
                                     "coordination.k8s.io")),
    ("a node creates a Lease in kube-node-lease", ("create", "leases", "kube-node-lease", "",
                                                   "coordination.k8s.io")),
    ("a node writes the status of a pod bound to it", ("patch", "pods", "apps", "mine", "",
                                                       "status")),
    ("a node deletes a pod bound to it", ("delete", "pods", "apps", "mine")),
    ("a node evicts a pod bound to it", ("create", "pods", "apps", "mine", "", "eviction")),
    ("a node watches pods", ("watch", "pods", "", "")),
    ("a node lists Services and EndpointSlices", ("list", "endpointslices", "", "",
                                                  "discovery.k8s.io")),
    ("a node creates events", ("create", "events", "apps", "")),
    ("a node patches events.k8s.io events", ("patch", "events", "apps", "e", "events.k8s.io")),
    ("a node reads a Secret its pod mounts", ("get", "secrets", "apps", "mounted")),
    ("a node reads an image pull Secret of its pod", ("get", "secrets", "apps", "registry")),
    ("a node reads a Secret its pod's env names", ("get", "secrets", "apps", "env-secret")),
    ("a node reads a ConfigMap from envFrom", ("get", "configmaps", "apps", "env-cm")),
    ("a node reads a projected ConfigMap", ("get", "configmaps", "apps", "projected-cm")),
    ("a node reads a claim its pod mounts", ("get", "persistentvolumeclaims", "apps", "data")),
    ("a node reads its pod's ServiceAccount", ("get", "serviceaccounts", "apps", "runner")),
    ("a node asks a token for its pod's ServiceAccount", ("create", "serviceaccounts", "apps",
                                                          "runner", "", "token")),
]

REFUSED = [
    ("a node cannot write another node's status", ("update", "nodes", "", "n2", "", "status")),
    ("a node cannot delete another Node", ("delete", "nodes", "", "n2")),
    ("a node cannot renew another node's Lease", ("update", "leases", "kube-node-lease", "n2",
                                                  "coordination.k8s.io")),
    ("a node cannot write Leases elsewhere", ("update", "leases", "default", "n1",
                                              "coordination.k8s.io")),
    ("a node cannot write the status of a pod bound elsewhere",
     ("update", "pods", "apps", "theirs", "", "status")),
    ("a node cannot delete a pod bound elsewhere", ("delete", "pods", "apps", "theirs")),
    ("a node certificate cannot read a Secret of a pod bound elsewhere",
     ("get", "secrets", "apps", "their-secret")),
    ("a node cannot read a Secret no pod references", ("get", "secrets", "apps", "other")),
    ("a node cannot list Secrets", ("list", "secrets", "apps", "")),
    ("a node cannot watch Secrets", ("watch", "secrets", "", "")),
    ("a node cannot read a same-named Secret in another namespace",
     ("get", "secrets", "default", "mounted")),
    ("a node cannot ask tokens for other ServiceAccounts",
     ("create", "serviceaccounts", "apps", "default", "", "token")),
    ("a node cannot create pods' workloads", ("create", "deployments", "apps", "", "apps")),
    ("a node cannot read RBAC", ("list", "clusterroles", "", "", "rbac.authorization.k8s.io")),
    ("a node cannot exec into pods", ("create", "pods", "apps", "mine", "", "exec")),
]


@pytest.mark.parametrize(("case", "request_"), ALLOWED, ids=[c for c, _ in ALLOWED])
def test_node_authorizer_allows(authz: Authorizer, case: str, request_: tuple[str, ...]) -> None:
    assert authz.authorize(_ask(N1, *request_)).allowed


@pytest.mark.parametrize(("case", "request_"), REFUSED, ids=[c for c, _ in REFUSED])
def test_node_authorizer_refuses(authz: Authorizer, case: str, request_: tuple[str, ...]) -> None:
    decision = authz.authorize(_ask(N1, *request_))
    assert not decision.allowed


def test_a_refused_secret_says_there_is_no_relationship(authz: Authorizer) -> None:
    decision = authz.authorize(_ask(N1, "get", "secrets", "apps", "their-secret"))
    assert decision.reason == "no relationship found between node 'n1' and this object"


def test_a_user_named_like_a_node_but_outside_system_nodes_is_not_a_node(
        authz: Authorizer) -> None:
    impostor = authenticated("system:node:n1")
    assert not authz.authorize(_ask(impostor, "get", "secrets", "apps", "mounted")).allowed
    assert not authz.authorize(_ask(impostor, "get", "nodes", "", "n1")).allowed


def test_rbac_bindings_made_for_a_node_still_count(authz: Authorizer) -> None:
    reader = authz.reader
    assert isinstance(reader, DictReader)
    reader.put("roles.rbac.authorization.k8s.io", {
        "metadata": {"name": "cm-reader", "namespace": "apps"},
        "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["configmaps"]}]})
    reader.put(ROLE_BINDINGS, binding("RoleBinding", "n1-cm", "Role", "cm-reader",
                                       [{"kind": "User", "name": "system:node:n1"}], "apps"))
    assert authz.authorize(_ask(N1, "list", "configmaps", "apps")).allowed
    assert not authz.authorize(_ask(node_user("n2"), "list", "configmaps", "apps")).allowed


def test_a_nodes_rules_review_is_incomplete(authz: Authorizer) -> None:
    rules, _, incomplete = authz.rules_review(N1, "apps")
    assert incomplete
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""],
            "resources": ["endpoints", "nodes", "pods", "services"]} in rules
    assert not any("secrets" in r["resources"] for r in rules)


# -- NodeRestriction ---------------------------------------------------------------------------


def _node(name: str, labels: dict[str, str] | None = None,
          taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "labels": labels or {}}, "spec": {}}
    if taints is not None:
        obj["spec"]["taints"] = taints
    return obj


def test_a_node_cannot_create_a_node_under_another_name() -> None:
    assert node_restriction.admit(N1, "nodes", "", "CREATE", None, _node("n2")) == \
        'node "n1" is not allowed to modify node "n2"'
    assert node_restriction.admit(N1, "nodes", "", "CREATE", None, _node("n1")) is None


def test_a_node_cannot_set_node_restriction_labels_on_its_own_node() -> None:
    label = "node-restriction.kubernetes.io/trusted"
    assert node_restriction.admit(N1, "nodes", "", "CREATE", None,
                                  _node("n1", {label: "yes"})) == \
        f'node "n1" is not allowed to set the following labels: {label}'
    old, new = _node("n1", {"zone": "a"}), _node("n1", {"zone": "a", "x." + label: "1"})
    assert node_restriction.admit(N1, "nodes", "", "UPDATE", old, new) == \
        f'node "n1" is not allowed to modify labels: x.{label}'
    assert node_restriction.admit(N1, "nodes", "", "UPDATE", old,
                                  _node("n1", {"zone": "b"})) is None
    kept = _node("n1", {label: "set-by-admin"})
    assert node_restriction.admit(N1, "nodes", "status", "UPDATE", kept, kept) is None


def test_a_node_cannot_change_its_taints() -> None:
    old = _node("n1", taints=[{"key": "k", "effect": "NoSchedule"}])
    assert node_restriction.admit(N1, "nodes", "", "UPDATE", old, _node("n1", taints=[])) == \
        'node "n1" is not allowed to modify taints'


def test_a_node_cannot_move_a_pod_or_write_the_status_of_one_bound_elsewhere() -> None:
    mine, theirs = _pod("mine", "n1"), _pod("theirs", "n2")
    moved = _pod("mine", "n2")
    assert node_restriction.admit(N1, "pods", "status", "UPDATE", mine, moved) == \
        'node "n1" is not allowed to change a pod\'s spec.nodeName'
    assert node_restriction.admit(N1, "pods", "", "UPDATE", mine, moved) == \
        'node "n1" is not allowed to change a pod\'s spec.nodeName'
    assert node_restriction.admit(N1, "pods", "status", "UPDATE", theirs, theirs) == \
        'node "n1" can only update pod status for pods with spec.nodeName set to itself'
    assert node_restriction.admit(N1, "pods", "status", "UPDATE", mine, mine) is None
    assert node_restriction.admit(N1, "pods", "", "DELETE", theirs, None) == \
        'node "n1" can only delete pods with spec.nodeName set to itself'


def test_a_node_cannot_create_a_lease_named_for_another_node() -> None:
    lease = {"metadata": {"name": "n2", "namespace": "kube-node-lease"}}
    assert node_restriction.admit(N1, "leases.coordination.k8s.io", "", "create", None,
                                  lease) == \
        "can only access node lease with the same name as the requesting node"
    lease["metadata"]["name"] = "n1"
    assert node_restriction.admit(N1, "leases", "", "CREATE", None, lease) is None


def test_node_restriction_leaves_other_users_alone() -> None:
    assert node_restriction.admit(authenticated("alice"), "nodes", "", "CREATE", None,
                                  _node("n2")) is None
