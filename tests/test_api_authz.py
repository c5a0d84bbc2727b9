"""Authorization of every request: what a request asks (as kube-apiserver's RequestInfo), the
403 Status and message kubectl prints, RBAC escalation prevention in admission, the review
kinds' protobuf bodies, and (marked slow) real kubectl and the Python client per credential.

The protobuf fixtures are real request bodies: kubectl 1.37.1 ``-v=10`` hex dumps of the
commands named above each one, run against Shoal.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from multidict import MultiDict

from shoal.api.admission import (
    Admission,
    AdmissionRequest,
    compact_rule,
    only_gc_fields_change,
)
from shoal.api.authorization import (
    DENIAL_LOG_BURST,
    DENIAL_LOG_WINDOW,
    DenialLog,
    ForbiddenError,
    denial_message,
    forbidden_for,
    impersonate,
    request_attributes,
)
from shoal.api.discovery import REVIEW_KINDS
from shoal.api.errors import ApiError
from shoal.api.protobuf import decode
from shoal.api.reviews import answer
from shoal.authz.attributes import Attributes, Decision
from shoal.authz.user import UserInfo, authenticated
from shoal.model.kinds import KindRegistry
from tests.conftest import ShoalProcess
from tests.test_api_authn import kubectl, node_cert_args, user_kubeconfig

ALICE = authenticated("alice", ("team",))
REGISTRY = KindRegistry()

# -- what a request asks -----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/default/pods", {}, ("list", "", "pods", "", "default", "")),
    ("GET", "/api/v1/namespaces/default/pods", {"watch": "1"},
     ("watch", "", "pods", "", "default", "")),
    ("GET", "/api/v1/watch/namespaces/default/pods", {}, ("watch", "", "pods", "", "default", "")),
    ("GET", "/api/v1/namespaces/default/pods/p1", {}, ("get", "", "pods", "", "default", "p1")),
    ("POST", "/apis/apps/v1/namespaces/a/deployments", {},
     ("create", "apps", "deployments", "", "a", "")),
    ("PUT", "/api/v1/nodes/n1/status", {}, ("update", "", "nodes", "status", "", "n1")),
    ("PATCH", "/apis/apps/v1/namespaces/a/deployments/web/scale", {},
     ("patch", "apps", "deployments", "scale", "a", "web")),
    ("DELETE", "/api/v1/nodes/n2", {}, ("delete", "", "nodes", "", "", "n2")),
    ("DELETE", "/api/v1/namespaces/a/pods", {}, ("deletecollection", "", "pods", "", "a", "")),
    ("GET", "/api/v1/namespaces/a/pods/p/log", {}, ("get", "", "pods", "log", "a", "p")),
    ("GET", "/api/v1/namespaces/a/pods/p/exec", {"command": "sh"},
     ("create", "", "pods", "exec", "a", "p")),
    ("POST", "/api/v1/namespaces/a/pods/p/portforward", {},
     ("create", "", "pods", "portforward", "a", "p")),
    ("POST", "/api/v1/namespaces/a/serviceaccounts/default/token", {},
     ("create", "", "serviceaccounts", "token", "a", "default")),
    ("GET", "/api/v1/namespaces/team-a", {}, ("get", "", "namespaces", "", "team-a", "team-a")),
    ("PUT", "/api/v1/namespaces/team-a/finalize", {},
     ("update", "", "namespaces", "finalize", "team-a", "team-a")),
    ("GET", "/api/v1/nodes", {"fieldSelector": "metadata.name=n1", "watch": "true"},
     ("watch", "", "nodes", "", "", "n1")),
    ("GET", "/api/v1/pods", {"labelSelector": "app=web"}, ("list", "", "pods", "", "", "")),
])
def test_a_request_is_authorized_as_the_apiserver_reads_its_path_and_method(
        method: str, path: str, query: dict[str, str],
        expected: tuple[str, str, str, str, str, str]) -> None:
    a = request_attributes(ALICE, method, path, MultiDict(query))
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == expected


@pytest.mark.parametrize("path", ["/api", "/apis", "/apis/apps", "/apis/apps/v1",
                                  "/openapi/v2", "/metrics"])
def test_discovery_and_plain_paths_are_non_resource_requests(path: str) -> None:
    a = request_attributes(ALICE, "GET", path, MultiDict())
    assert not a.resource_request
    assert (a.verb, a.path) == ("get", path)



def test_a_repeated_request_reuses_its_attributes_and_only_an_identical_one_does() -> None:
    path = "/api/v1/namespaces/default/pods"
    first = request_attributes(ALICE, "GET", path, MultiDict())
    assert request_attributes(ALICE, "GET", path, MultiDict()) is first
    assert first.verb == "list"
    # Another user object (even an equal one), method, path, watch or name selector: its own.
    bob = authenticated("alice", ("team",))
    assert request_attributes(bob, "GET", path, MultiDict()).user is bob
    assert request_attributes(ALICE, "POST", path, MultiDict()).verb == "create"
    assert request_attributes(ALICE, "GET", path, MultiDict(watch="true")).verb == "watch"
    assert request_attributes(ALICE, "GET", path, MultiDict(
        fieldSelector="metadata.name=p")).name == "p"
    assert request_attributes(ALICE, "GET", path + "/q", MultiDict()).name == "q"
    assert request_attributes(ALICE, "GET", path, MultiDict()) is first


def test_the_admin_token_is_one_user_object_so_its_requests_reuse_their_attributes() -> None:
    from shoal.api.authentication import Authenticator, Credentials

    auth = Authenticator(Credentials({"s3cret": "shoal-admin"}), reader=None)  # type: ignore[arg-type]
    user = auth.user_for_token("s3cret")
    assert user.username == "shoal-admin" and user.is_admin
    assert auth.user_for_token("s3cret") is user
    with pytest.raises(ApiError):
        auth.user_for_token("wrong")

# -- the 403 ---------------------------------------------------------------------------------


def _status(attrs: Attributes, reason: str = "") -> dict[str, Any]:
    return forbidden_for(attrs, Decision(False, reason)).status()


def test_a_denied_list_names_the_user_verb_resource_group_and_namespace() -> None:
    body = _status(Attributes(ALICE, "list", True, "", "v1", "pods", namespace="default"))
    assert body["code"] == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('pods is forbidden: User "alice" cannot list resource "pods" in '
                               'API group "" in the namespace "default"')
    assert body["details"] == {"kind": "pods"}


def test_a_denied_named_object_of_a_group_is_qualified_and_carries_the_authorizers_reason(
        ) -> None:
    node = authenticated("system:node:n2", ("system:nodes",))
    body = _status(Attributes(node, "get", True, "", "v1", "secrets", namespace="default",
                              name="s1"), "no relationship found between node 'n2' and this object")
    assert body["message"] == (
        'secrets "s1" is forbidden: User "system:node:n2" cannot get resource "secrets" in API '
        'group "" in the namespace "default": no relationship found between node \'n2\' and '
        "this object")
    assert body["details"] == {"name": "s1", "kind": "secrets"}
    deploy = _status(Attributes(ALICE, "create", True, "apps", "v1", "deployments",
                                namespace="default"))
    assert deploy["message"].startswith("deployments.apps is forbidden: ")
    assert deploy["details"] == {"group": "apps", "kind": "deployments"}


def test_a_cluster_scoped_denial_says_at_the_cluster_scope_and_a_subresource_is_named() -> None:
    msg = denial_message(Attributes(ALICE, "update", True, "", "v1", "nodes", "status",
                                    name="n1"))
    assert msg == ('User "alice" cannot update resource "nodes/status" in API group "" at the '
                   "cluster scope")


def test_a_denied_path_has_no_details() -> None:
    body = _status(Attributes(ALICE, "get", False, path="/apis"))
    assert body["message"] == 'forbidden: User "alice" cannot get path "/apis"'
    assert "details" not in body


# -- impersonation ---------------------------------------------------------------------------


class ListAuthorizer:
    """Allows exactly the (verb, resource, name) triples it is given; records the asks."""

    def __init__(self, allowed: set[tuple[str, str, str]] = frozenset(),  # type: ignore[assignment]
                 held: list[dict[str, Any]] | None = None) -> None:
        self.allowed = allowed
        self.held = held
        self.asked: list[Attributes] = []

    def authorize(self, attrs: Attributes) -> Decision:
        self.asked.append(attrs)
        return Decision((attrs.verb, attrs.resource, attrs.name) in self.allowed)

    def uncovered(self, user: UserInfo, namespace: str, rules: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
        return [] if self.held is None else [r for r in rules if r not in self.held]

    def rules_review(self, user: UserInfo, namespace: str
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        return [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}], [], False


def test_impersonating_needs_the_impersonate_verb_on_the_user_and_each_group() -> None:
    authz = ListAuthorizer({("impersonate", "users", "bob")})
    headers = MultiDict([("Impersonate-User", "bob"), ("Impersonate-Group", "ops")])
    with pytest.raises(ForbiddenError) as e:
        impersonate(authz, ALICE, headers)  # type: ignore[arg-type]
    assert e.value.message == ('groups "ops" is forbidden: User "alice" cannot impersonate '
                               'resource "groups" in API group "" at the cluster scope')
    authz.allowed.add(("impersonate", "groups", "ops"))
    bob = impersonate(authz, ALICE, headers)  # type: ignore[arg-type]
    assert bob.username == "bob" and bob.groups == ("ops", "system:authenticated")


def test_impersonating_a_service_account_checks_it_and_gives_its_groups() -> None:
    authz = ListAuthorizer({("impersonate", "serviceaccounts", "robot")})
    sa = impersonate(authz, ALICE,  # type: ignore[arg-type]
                     MultiDict([("Impersonate-User", "system:serviceaccount:a:robot")]))
    assert sa.service_account == ("a", "robot")
    assert "system:serviceaccounts:a" in sa.groups
    assert authz.asked[0].namespace == "a"


# -- RBAC escalation prevention --------------------------------------------------------------

ROLE_KIND = REGISTRY.by_kind("rbac.authorization.k8s.io/v1", "Role")
BINDING_KIND = REGISTRY.by_kind("rbac.authorization.k8s.io/v1", "RoleBinding")
SECRETS_RULE = {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}


class FakeReader:
    def __init__(self, objects: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        self.objects = objects

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((resource, namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (r, _, _), o in self.objects.items() if r == resource]


def _admit(authz: ListAuthorizer, kind: Any, obj: dict[str, Any], user: UserInfo = ALICE,
           old: dict[str, Any] | None = None, reader: FakeReader | None = None) -> None:
    admission = Admission(authz, reader or FakeReader({}))  # type: ignore[arg-type]
    admission.admit(AdmissionRequest(user, "UPDATE" if old else "CREATE", kind, "team-a",
                                     obj["metadata"]["name"], "", obj, old))


def test_a_role_granting_rules_the_user_lacks_is_refused_with_kubernetes_message() -> None:
    role = {"metadata": {"name": "r"}, "rules": [SECRETS_RULE]}
    with pytest.raises(ApiError) as e:
        _admit(ListAuthorizer(held=[]), ROLE_KIND, role)
    assert e.value.code == 403
    assert e.value.message == (
        'roles.rbac.authorization.k8s.io "r" is forbidden: user "alice" '
        '(groups=["team" "system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}')


def test_a_role_is_allowed_to_whoever_holds_its_rules_or_may_escalate_and_to_admins() -> None:
    role = {"metadata": {"name": "r"}, "rules": [SECRETS_RULE]}
    _admit(ListAuthorizer(held=[SECRETS_RULE]), ROLE_KIND, role)
    _admit(ListAuthorizer({("escalate", "roles", "r")}, held=[]), ROLE_KIND, role)
    _admit(ListAuthorizer(held=[]), ROLE_KIND, role, user=authenticated("root",
                                                                          ("system:masters",)))


def test_a_binding_needs_bind_on_the_role_or_all_of_its_rules() -> None:
    reader = FakeReader({("clusterroles.rbac.authorization.k8s.io", "", "cluster-admin"): {
        "metadata": {"name": "cluster-admin"},
        "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}})
    binding = {"metadata": {"name": "esc"}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "alice"}]}
    with pytest.raises(ApiError) as e:
        _admit(ListAuthorizer(held=[]), BINDING_KIND, binding, reader=reader)
    assert e.value.message.startswith(
        'rolebindings.rbac.authorization.k8s.io "esc" is forbidden: user "alice" ')
    assert e.value.message.endswith('{APIGroups:["*"], Resources:["*"], Verbs:["*"]}')
    authz = ListAuthorizer({("bind", "clusterroles", "cluster-admin")}, held=[])
    _admit(authz, BINDING_KIND, binding, reader=reader)
    assert authz.asked[0].namespace == "team-a"


def test_an_update_that_only_touches_owner_references_and_finalizers_is_not_checked() -> None:
    old = {"metadata": {"name": "r", "resourceVersion": "1"}, "rules": [SECRETS_RULE]}
    new = {"metadata": {"name": "r", "finalizers": ["x"], "ownerReferences": [{"uid": "u"}]},
           "rules": [SECRETS_RULE]}
    assert only_gc_fields_change(new, old)
    _admit(ListAuthorizer(held=[]), ROLE_KIND, new, old=old)
    assert not only_gc_fields_change({**new, "rules": []}, old)


def test_a_missing_rule_prints_like_kubernetes_compact_string() -> None:
    assert compact_rule({"verbs": ["get", "list"], "nonResourceURLs": ["/logs"]}) == (
        '{NonResourceURLs:["/logs"], Verbs:["get" "list"]}')
    assert compact_rule({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"],
                         "resourceNames": ["a"]}) == (
        '{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["get"]}')


# -- the review kinds ------------------------------------------------------------------------

# kubectl auth can-i create pods -n x
SSAR = bytes.fromhex(
    "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a656374"
    "41636365737352657669657712390a100a0012001a0022002a00320038004200121b0a190a01781206637265"
    "6174651a0022002a04706f647332003a001a08080012001a0020001a002200"
)
# kubectl auth can-i get pods/log -n team-a
SSAR_LOG = bytes.fromhex(
    "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a656374"
    "416363657373526576696577123e0a100a0012001a0022002a0032003800420012200a1e0a067465616d2d61"
    "12036765741a0022002a04706f647332003a036c6f671a08080012001a0020001a002200"
)
# kubectl auth can-i get /logs
SSAR_NONRESOURCE = bytes.fromhex(
    "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a656374"
    "416363657373526576696577122c0a100a0012001a0022002a00320038004200120e120c0a052f6c6f677312"
    "036765741a08080012001a0020001a002200"
)
# kubectl auth can-i --list -n team-a
SSRR = bytes.fromhex(
    "6b3873000a310a17617574686f72697a6174696f6e2e6b38732e696f2f7631121653656c665375626a656374"
    "52756c657352657669657712220a100a0012001a0022002a0032003800420012080a067465616d2d611a0418"
    "0022001a002200"
)
# kubectl auth whoami
SSR = bytes.fromhex(
    "6b3873000a2d0a1861757468656e7469636174696f6e2e6b38732e696f2f7631121153656c665375626a6563"
    "74526576696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a002200"
)
# kubectl create rolebinding rb --clusterrole=edit --user=alice --group=g --serviceaccount=ns:sa -n team-a --dry-run=server
ROLEBINDING = bytes.fromhex(
    "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b526f6c654269"
    "6e64696e6712bb010a180a02726212001a067465616d2d6122002a00320038004200122a0a04557365721219"
    "726261632e617574686f72697a6174696f6e2e6b38732e696f1a05616c696365220012270a0547726f757012"
    "19726261632e617574686f72697a6174696f6e2e6b38732e696f1a01672200121a0a0e536572766963654163"
    "636f756e7412001a02736122026e731a2e0a19726261632e617574686f72697a6174696f6e2e6b38732e696f"
    "120b436c7573746572526f6c651a04656469741a002200"
)
# kubectl create clusterrole cr --verb=get,list --resource=pods,deployments.apps --resource-name=x --dry-run=server
CLUSTERROLE = bytes.fromhex(
    "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c75737465"
    "72526f6c65124f0a120a02637212001a0022002a0032003800420012160a036765740a046c69737412001a04"
    "706f647322017812210a036765740a046c6973741204617070731a0b6465706c6f796d656e74732201781a00"
    "2200"
)
# kubectl create clusterrole agg --aggregation-rule=a=b --dry-run=server
CLUSTERROLE_AGG = bytes.fromhex(
    "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c75737465"
    "72526f6c6512210a130a0361676712001a0022002a003200380042001a0a0a080a060a01611201621a002200"
)
# kubectl create role r --verb=get --resource=pods -n team-a --dry-run=server
ROLE = bytes.fromhex(
    "6b3873000a240a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311204526f6c651228"
    "0a170a017212001a067465616d2d6122002a00320038004200120d0a0367657412001a04706f64731a002200"
)
# kubectl create clusterrolebinding crb --clusterrole=view --group=g --dry-run=server
CLUSTERROLEBINDING = bytes.fromhex(
    "6b3873000a320a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311212436c75737465"
    "72526f6c6542696e64696e67126e0a130a0363726212001a0022002a0032003800420012270a0547726f7570"
    "1219726261632e617574686f72697a6174696f6e2e6b38732e696f1a016722001a2e0a19726261632e617574"
    "686f72697a6174696f6e2e6b38732e696f120b436c7573746572526f6c651a04766965771a002200"
)
# kubectl create token sa1 --duration=1h --bound-object-kind=Pod --bound-object-name=p --bound-object-uid=u1 --audience=a1
TOKEN = bytes.fromhex(
    "6b3873000a280a1861757468656e7469636174696f6e2e6b38732e696f2f7631120c546f6b656e5265717565"
    "737412330a100a0012001a0022002a0032003800420012190a0261311a100a03506f64120276311a01702202"
    "753120901c1a040a0012001a002200"
)


def _review(kind_name: str) -> Any:
    return next(k for k in REVIEW_KINDS if k.kind == kind_name)


@pytest.mark.parametrize(("body", "expected"), [
    (ROLEBINDING, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "rb", "namespace": "team-a"}, "subjects": [
                       {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                       {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g"},
                       {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "edit"}}),
    (CLUSTERROLE, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "cr"}, "rules": [
                       {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
                        "resourceNames": ["x"]},
                       {"verbs": ["get", "list"], "apiGroups": ["apps"],
                        "resources": ["deployments"], "resourceNames": ["x"]}]}),
    (CLUSTERROLE_AGG, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": "agg"}, "aggregationRule": {
                           "clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}),
    (TOKEN, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {},
             "spec": {"audiences": ["a1"], "expirationSeconds": 3600, "boundObjectRef": {
                 "kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u1"}},
             "status": {"token": ""}}),
])
def test_kubectl_create_role_binding_and_token_bodies_decode(body: bytes,
                                                             expected: dict[str, Any]) -> None:
    assert decode(body) == expected


def test_can_i_asks_a_self_subject_access_review_answered_for_the_caller() -> None:
    authz = ListAuthorizer({("create", "pods", "")})
    out = answer(_review("SelfSubjectAccessReview"), decode(SSAR), ALICE,
                 authz, None)  # type: ignore[arg-type]
    assert out["status"] == {"allowed": True}
    assert out["spec"]["resourceAttributes"] == {"namespace": "x", "verb": "create",
                                                 "resource": "pods"}
    assert authz.asked[0].user is ALICE and authz.asked[0].namespace == "x"
    out = answer(_review("SelfSubjectAccessReview"), decode(SSAR_NONRESOURCE), ALICE,
                 authz, None)  # type: ignore[arg-type]
    assert out["status"] == {"allowed": False}
    assert not authz.asked[-1].resource_request and authz.asked[-1].path == "/logs"


def test_whoami_and_can_i_list_answer_from_the_caller_and_its_rules() -> None:
    out = answer(_review("SelfSubjectReview"), decode(SSR), ALICE,
                 ListAuthorizer(), None)  # type: ignore[arg-type]
    assert out["status"] == {"userInfo": {"username": "alice",
                                          "groups": ["team", "system:authenticated"]}}
    out = answer(_review("SelfSubjectRulesReview"), decode(SSRR), ALICE,
                 ListAuthorizer(), None)  # type: ignore[arg-type]
    assert out["status"]["resourceRules"] == [{"verbs": ["get"], "apiGroups": [""],
                                               "resources": ["pods"]}]
    assert out["status"]["incomplete"] is False


def test_a_subject_access_review_asks_about_the_named_subject_not_the_caller() -> None:
    authz = ListAuthorizer()
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
            "spec": {"user": "bob", "groups": ["ops"], "resourceAttributes": {
                "verb": "get", "resource": "secrets"}}}
    out = answer(_review("LocalSubjectAccessReview"), body, ALICE, authz,
                 "team-a")  # type: ignore[arg-type]
    assert out["status"] == {"allowed": False}
    asked = authz.asked[0]
    assert (asked.user.username, asked.user.groups, asked.namespace) == ("bob", ("ops",), "team-a")
    body["spec"]["resourceAttributes"]["namespace"] = "other"
    with pytest.raises(ApiError) as e:
        answer(_review("LocalSubjectAccessReview"), body, ALICE, authz,
               "team-a")  # type: ignore[arg-type]
    assert e.value.code == 400
    with pytest.raises(ApiError) as e:
        answer(_review("SubjectAccessReview"), {"spec": {"resourceAttributes": {}}}, ALICE,
               authz, None)  # type: ignore[arg-type]
    assert e.value.code == 422 and "at least one of user or group" in e.value.message


POD_KIND = REGISTRY.by_kind("v1", "Pod")


def test_a_node_may_not_write_the_status_of_a_pod_bound_elsewhere() -> None:
    node = authenticated("system:node:n2", ("system:nodes",))
    pod = {"metadata": {"name": "p", "namespace": "team-a"}, "spec": {"nodeName": "n1"}}
    admission = Admission(ListAuthorizer(), FakeReader({}))  # type: ignore[arg-type]
    with pytest.raises(ApiError) as e:
        admission.admit(AdmissionRequest(node, "UPDATE", POD_KIND, "team-a", "p", "status",
                                         pod, pod))
    assert e.value.code == 403
    assert e.value.message == ('pods "p" is forbidden: node "n2" can only update pod status for '
                               "pods with spec.nodeName set to itself")
    admission.admit(AdmissionRequest(node, "UPDATE", POD_KIND, "team-a", "p", "status",
                                     {**pod, "spec": {"nodeName": "n2"}},
                                     {**pod, "spec": {"nodeName": "n2"}}))


# -- real kubectl and the Python client, per credential (slow) -------------------------------


@pytest.fixture(scope="module")
def team_a(shoal_module: ShoalProcess) -> dict[str, Path]:
    """team-a with alice bound to edit and bob to admin there; their kubeconfigs."""
    shoal_module.kubectl("create", "namespace", "team-a")
    shoal_module.kubectl("-n", "team-a", "create", "rolebinding", "alice-edit",
                         "--clusterrole=edit", "--user=alice")
    shoal_module.kubectl("-n", "team-a", "create", "rolebinding", "bob-admin",
                         "--clusterrole=admin", "--user=bob")
    return {u: user_kubeconfig(shoal_module, u) for u in ("alice", "bob")}


def _denied(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    return r.stderr.strip()


@pytest.mark.slow
def test_edit_in_team_a_can_create_deployments_and_read_secrets_there(
        shoal_module: ShoalProcess, team_a: dict[str, Path]) -> None:
    alice = team_a["alice"]
    assert kubectl(alice, "-n", "team-a", "create", "deployment", "web",
                   "--image=busybox").returncode == 0
    shoal_module.kubectl("-n", "team-a", "create", "secret", "generic", "s1",
                         "--from-literal=k=v")
    r = kubectl(alice, "-n", "team-a", "get", "secret", "s1", "-o", "jsonpath={.data.k}")
    assert (r.returncode, r.stdout) == (0, "dg==")


@pytest.mark.slow
def test_edit_in_team_a_is_refused_elsewhere_with_the_apiservers_messages(
        team_a: dict[str, Path]) -> None:
    alice = team_a["alice"]
    assert _denied(kubectl(alice, "create", "deployment", "web", "--image=busybox")) == (
        'error: failed to create deployment: deployments.apps is forbidden: User "alice" cannot '
        'create resource "deployments" in API group "apps" in the namespace "default"')
    assert _denied(kubectl(alice, "get", "secrets")) == (
        'Error from server (Forbidden): secrets is forbidden: User "alice" cannot list resource '
        '"secrets" in API group "" in the namespace "default"')
    assert _denied(kubectl(alice, "get", "nodes")) == (
        'Error from server (Forbidden): nodes is forbidden: User "alice" cannot list resource '
        '"nodes" in API group "" at the cluster scope')
    # edit grants no RBAC writes at all: refused before escalation is even asked about.
    assert _denied(kubectl(alice, "-n", "team-a", "create", "rolebinding", "esc",
                           "--clusterrole=cluster-admin", "--user=alice")) == (
        "error: failed to create rolebinding: rolebindings.rbac.authorization.k8s.io is "
        'forbidden: User "alice" cannot create resource "rolebindings" in API group '
        '"rbac.authorization.k8s.io" in the namespace "team-a"')


@pytest.mark.slow
def test_admin_in_a_namespace_can_grant_what_it_holds_and_not_cluster_admin(
        team_a: dict[str, Path]) -> None:
    bob = team_a["bob"]
    assert kubectl(bob, "-n", "team-a", "create", "rolebinding", "carol-view",
                   "--clusterrole=view", "--user=carol").returncode == 0
    assert _denied(kubectl(bob, "-n", "team-a", "create", "rolebinding", "esc",
                           "--clusterrole=cluster-admin", "--user=bob")) == (
        'error: failed to create rolebinding: rolebindings.rbac.authorization.k8s.io "esc" is '
        'forbidden: user "bob" (groups=["system:authenticated"]) is attempting to grant RBAC '
        'permissions not currently held:\n{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n'
        '{NonResourceURLs:["*"], Verbs:["*"]}')
    assert _denied(kubectl(bob, "-n", "team-a", "create", "role", "nodes", "--verb=get",
                           "--resource=nodes")) == (
        'Error from server (Forbidden): roles.rbac.authorization.k8s.io "nodes" is forbidden: '
        'user "bob" (groups=["system:authenticated"]) is attempting to grant RBAC permissions '
        'not currently held:\n{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}')


def _flatten(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups") or []
            for r in rule.get("resources") or [] for v in rule.get("verbs") or []
            if not rule.get("resourceNames")}


@pytest.mark.slow
def test_can_i_list_in_team_a_is_what_the_bindings_grant(
        shoal_module: ShoalProcess, team_a: dict[str, Path]) -> None:
    def role(name: str) -> list[dict[str, Any]]:
        out = shoal_module.kubectl("get", "clusterrole", name, "-o", "json").stdout
        rules: list[dict[str, Any]] = json.loads(out).get("rules") or []
        return rules
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(team_a["alice"]), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        review = client.AuthorizationV1Api(api).create_self_subject_rules_review(
            client.V1SelfSubjectRulesReview(
                spec=client.V1SelfSubjectRulesReviewSpec(namespace="team-a")))
    got = _flatten([api.sanitize_for_serialization(r) for r in review.status.resource_rules])
    assert got == _flatten(role("edit")) | _flatten(role("system:basic-user"))
    table = kubectl(team_a["alice"], "auth", "can-i", "--list", "-n", "team-a").stdout
    assert "deployments.apps " in table and "secrets " in table and "\nnodes " not in table
    elsewhere = kubectl(team_a["alice"], "auth", "can-i", "--list", "-n", "default").stdout
    assert "deployments.apps " not in elsewhere


@pytest.mark.slow
def test_can_i_answers_yes_and_no_per_namespace(team_a: dict[str, Path]) -> None:
    alice = team_a["alice"]
    yes = kubectl(alice, "auth", "can-i", "create", "pods", "-n", "team-a")
    no = kubectl(alice, "auth", "can-i", "create", "pods", "-n", "default")
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes")
    assert (no.returncode, no.stdout.strip()) == (1, "no")
    log = kubectl(alice, "auth", "can-i", "get", "pods", "--subresource=log", "-n", "team-a")
    assert log.stdout.strip() == "yes"


@pytest.mark.slow
def test_a_node_certificate_reads_and_updates_its_own_node_only(
        shoal_module: ShoalProcess) -> None:
    args = node_cert_args(shoal_module)
    r = kubectl(None, *args, "get", "node", "node-1", "-o", "name", node=shoal_module)
    assert (r.returncode, r.stdout.strip()) == (0, "node/node-1")
    patch = '{"status":{"capacity":{"example.com/dongle":"1"}}}'
    r = kubectl(None, *args, "patch", "node", "node-1", "--subresource=status", "--type=merge",
                "-p", patch, node=shoal_module)
    assert r.returncode == 0, r.stderr
    shoal_module.kubectl("create", "-f", "-",
                         input='{"apiVersion":"v1","kind":"Node","metadata":{"name":"other"}}')
    assert _denied(kubectl(None, *args, "delete", "node", "other", node=shoal_module)) == (
        'Error from server (Forbidden): nodes "other" is forbidden: User "system:node:node-1" '
        'cannot delete resource "nodes" in API group "" at the cluster scope: '
        "node 'node-1' cannot delete node 'other'")
    assert shoal_module.kubectl("get", "node", "other", "-o", "name").stdout.strip() == "node/other"


@pytest.mark.slow
def test_kubectl_creates_a_review_from_a_manifest_and_explains_it(
        shoal_module: ShoalProcess) -> None:
    manifest = json.dumps({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "nobody", "resourceAttributes": {"verb": "list", "resource": "nodes"}}})
    r = shoal_module.kubectl("create", "-f", "-", "-o", "json", input=manifest)
    assert json.loads(r.stdout)["status"] == {"allowed": False}
    r = shoal_module.kubectl("explain", "selfsubjectaccessreview.spec")
    assert "resourceAttributes" in r.stdout
    assert shoal_module.kubectl("get", "--raw", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                check=False).returncode != 0  # create-only


def test_denials_are_logged_with_user_verb_and_target_but_a_flood_is_summed_up(
        caplog: pytest.LogCaptureFixture) -> None:
    denials = DenialLog()
    attrs = Attributes(ALICE, "get", True, "", "v1", "secrets", namespace="default", name="s1")
    with caplog.at_level("INFO", logger="shoal.api.authz"):
        for _ in range(DENIAL_LOG_BURST + 5):
            denials(attrs, Decision(False))
        assert len(caplog.records) == DENIAL_LOG_BURST
        assert caplog.records[0].getMessage() == (
            "denied: user=alice groups=team,system:authenticated verb=get "
            "target=secrets/ns=default/s1")
        denials.window_start -= DENIAL_LOG_WINDOW
        denials(attrs, Decision(False))
    assert caplog.records[-2].getMessage().startswith("5 more denials in the last ")
    assert len(caplog.records) == DENIAL_LOG_BURST + 2
