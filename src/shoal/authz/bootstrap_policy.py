"""The default RBAC policy every peer keeps, as Kubernetes' bootstrap policy
(``plugin/pkg/auth/authorizer/rbac/bootstrappolicy``): the user-facing ClusterRoles
(cluster-admin; admin, edit and view aggregated by label from the
``system:aggregate-to-*`` roles, with Kubernetes' rule sets), the ``system:`` roles a
client needs to discover the API and ask what it may do, ``system:node`` (informational:
nodes are authorized by the Node authorizer, and nothing binds it, as in Kubernetes), and
the bindings to ``system:masters``, ``system:authenticated`` and ``system:unauthenticated``.

The content is a pure function of nothing, so peers that create an object concurrently
create the same one and the merge keeps it single.
"""

from __future__ import annotations

from typing import Any

from shoal.authz.rbac import GROUP
from shoal.authz.user import AUTHENTICATED, MASTERS, UNAUTHENTICATED

BOOTSTRAPPING_LABEL = "kubernetes.io/bootstrapping"
BOOTSTRAPPING_VALUE = "rbac-defaults"
AUTOUPDATE_ANNOTATION = "rbac.authorization.kubernetes.io/autoupdate"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]
READ_WRITE = READ + WRITE

_API_VERSION = f"{GROUP}/v1"
MONITORING = "system:monitoring"
"""The group Kubernetes binds to the system:monitoring role (scrapers of /metrics)."""


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> dict[str, Any]:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


def _urls(verbs: list[str], urls: list[str]) -> dict[str, Any]:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _metadata(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name,
            "labels": {BOOTSTRAPPING_LABEL: BOOTSTRAPPING_VALUE, **(labels or {})},
            "annotations": {AUTOUPDATE_ANNOTATION: "true"}}


def _cluster_role(name: str, rules: list[dict[str, Any]],
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": _API_VERSION, "kind": "ClusterRole",
            "metadata": _metadata(name, labels), "rules": rules}


def _aggregated(name: str, aggregates_from: str,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A ClusterRole whose rules are the union of those labelled aggregate-to-<from>;
    ``rules`` starts empty and the aggregation controller fills it."""
    return {"apiVersion": _API_VERSION, "kind": "ClusterRole",
            "metadata": _metadata(name, labels),
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {AGGREGATE_TO + aggregates_from: "true"}}]},
            "rules": []}


def _binding(role: str, *groups: str) -> dict[str, Any]:
    return {"apiVersion": _API_VERSION, "kind": "ClusterRoleBinding",
            "metadata": _metadata(role),
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups]}


_AGGREGATE_TO_ADMIN = [
    _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    _rule(READ_WRITE, [GROUP], ["roles", "rolebindings"]),
]

_AGGREGATE_TO_EDIT = [
    # Read on the resources that can reach further than the namespace.
    _rule(READ, [""], ["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets",
                       "services/proxy"]),
    _rule(["impersonate"], [""], ["serviceaccounts"]),
    _rule(WRITE, [""], ["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
    _rule(["create"], [""], ["pods/eviction"]),
    _rule(WRITE, [""], ["replicationcontrollers", "replicationcontrollers/scale",
                        "serviceaccounts", "services", "services/proxy",
                        "persistentvolumeclaims", "configmaps", "secrets", "events"]),
    _rule(["create"], [""], ["serviceaccounts/token"]),
    _rule(WRITE, ["apps"], ["statefulsets", "statefulsets/scale", "daemonsets", "deployments",
                            "deployments/scale", "deployments/rollback", "replicasets",
                            "replicasets/scale"]),
    _rule(WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
    _rule(WRITE, ["batch"], ["jobs", "cronjobs"]),
    _rule(WRITE, ["extensions"], ["daemonsets", "deployments", "deployments/scale",
                                  "deployments/rollback", "ingresses", "replicasets",
                                  "replicasets/scale", "replicationcontrollers/scale",
                                  "networkpolicies"]),
    _rule(WRITE, ["policy"], ["poddisruptionbudgets"]),
    _rule(WRITE, ["networking.k8s.io"], ["networkpolicies", "ingresses"]),
]

_AGGREGATE_TO_VIEW = [
    _rule(READ, [""], ["pods", "replicationcontrollers", "replicationcontrollers/scale",
                       "serviceaccounts", "services", "services/status", "endpoints",
                       "persistentvolumeclaims", "persistentvolumeclaims/status",
                       "configmaps"]),
    _rule(READ, [""], ["limitranges", "resourcequotas", "bindings", "events", "pods/status",
                       "resourcequotas/status", "namespaces/status",
                       "replicationcontrollers/status", "pods/log"]),
    # Reading the namespace tells a user which namespaces it may work in.
    _rule(READ, [""], ["namespaces"]),
    _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    _rule(READ, ["apps"], ["controllerrevisions", "statefulsets", "statefulsets/scale",
                           "statefulsets/status", "daemonsets", "daemonsets/status",
                           "deployments", "deployments/scale", "deployments/status",
                           "replicasets", "replicasets/scale", "replicasets/status"]),
    _rule(READ, ["autoscaling"], ["horizontalpodautoscalers",
                                  "horizontalpodautoscalers/status"]),
    _rule(READ, ["batch"], ["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
    _rule(READ, ["extensions"], ["daemonsets", "daemonsets/status", "deployments",
                                 "deployments/scale", "deployments/status", "ingresses",
                                 "ingresses/status", "replicasets", "replicasets/scale",
                                 "replicasets/status", "replicationcontrollers/scale",
                                 "networkpolicies"]),
    _rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    _rule(READ, ["networking.k8s.io"], ["networkpolicies", "ingresses", "ingresses/status"]),
]

# Kubernetes' NodeRules(): what a kubelet needs; the Node authorizer narrows it per object.
_NODE = [
    _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
    _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews",
                                                 "localsubjectaccessreviews"]),
    _rule(READ, [""], ["services"]),
    _rule(["create", "get", "list", "watch"], [""], ["nodes"]),
    _rule(["update", "patch"], [""], ["nodes/status"]),
    _rule(["update", "patch"], [""], ["nodes"]),
    _rule(["create", "update", "patch"], [""], ["events"]),
    _rule(READ, [""], ["pods"]),
    _rule(["create", "delete"], [""], ["pods"]),
    _rule(["update", "patch"], [""], ["pods/status"]),
    _rule(["create"], [""], ["pods/eviction"]),
    _rule(READ, [""], ["secrets", "configmaps"]),
    _rule(["get"], [""], ["persistentvolumeclaims", "persistentvolumes"]),
    _rule(["get"], [""], ["endpoints"]),
    _rule(["get", "create", "update", "patch", "delete"], ["coordination.k8s.io"], ["leases"]),
    _rule(["create"], [""], ["serviceaccounts/token"]),
]

_HEALTH = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def cluster_roles() -> list[dict[str, Any]]:
    return [
        _cluster_role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
        _aggregated("admin", "admin"),
        _aggregated("edit", "edit", {AGGREGATE_TO + "admin": "true"}),
        _aggregated("view", "view", {AGGREGATE_TO + "edit": "true"}),
        _cluster_role("system:aggregate-to-admin", _AGGREGATE_TO_ADMIN,
                      {AGGREGATE_TO + "admin": "true"}),
        _cluster_role("system:aggregate-to-edit", _AGGREGATE_TO_EDIT,
                      {AGGREGATE_TO + "edit": "true"}),
        _cluster_role("system:aggregate-to-view", _AGGREGATE_TO_VIEW,
                      {AGGREGATE_TO + "view": "true"}),
        _cluster_role("system:basic-user", [
            _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews",
                                                         "selfsubjectrulesreviews"]),
            _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
        ]),
        _cluster_role("system:discovery", [_urls(["get"], [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
            "/openapi/*", "/readyz", "/version", "/version/"])]),
        _cluster_role("system:public-info-viewer", [_urls(["get"], _HEALTH)]),
        _cluster_role("system:node", _NODE),
        # --- metrics: kubectl top for view, edit and admin (metrics-server's role), and
        # Kubernetes' system:monitoring (with Shoal's status paths) for a scraper ---
        _cluster_role("system:aggregated-metrics-reader",
                      [_rule(READ, ["metrics.k8s.io"], ["pods", "nodes"])],
                      {AGGREGATE_TO + "view": "true", AGGREGATE_TO + "edit": "true",
                       AGGREGATE_TO + "admin": "true"}),
        _cluster_role("system:monitoring", [_urls(["get"], [
            "/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/readyz", "/readyz/*",
            "/shoal/v1/status", "/shoal/v1/status/*"])]),
        # --- end metrics ---
    ]


def cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        _binding("cluster-admin", MASTERS),
        _binding("system:basic-user", AUTHENTICATED),
        _binding("system:discovery", AUTHENTICATED),
        _binding("system:public-info-viewer", AUTHENTICATED, UNAUTHENTICATED),
        _binding("system:monitoring", MONITORING),  # metrics
    ]
