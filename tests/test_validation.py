"""Validation returns the causes the Kubernetes apiserver returns, with its paths and words."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from shoal.model.defaults import apply_defaults, apply_job_selector
from shoal.model.kinds import Kind, KindRegistry
from shoal.model.validation import (
    DUPLICATE,
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    NOT_SUPPORTED,
    POD_UPDATE_FORBIDDEN,
    REQUIRED,
    STATEFULSET_UPDATE_FORBIDDEN,
    TOO_LONG,
    TOO_MANY,
    TYPE_INVALID,
    Cause,
    invalid_message,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_path_segment_name,
    prune_unknown,
    unknown_fields,
    validate,
)

REGISTRY = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REGISTRY.by_kind(api_version, name)
    assert k is not None
    return k


POD = kind("v1", "Pod")
SERVICE = kind("v1", "Service")
NAMESPACE = kind("v1", "Namespace")
SECRET = kind("v1", "Secret")
CONFIGMAP = kind("v1", "ConfigMap")
NODE = kind("v1", "Node")
ENDPOINTS = kind("v1", "Endpoints")
EVENT = kind("v1", "Event")
SERVICEACCOUNT = kind("v1", "ServiceAccount")
DEPLOYMENT = kind("apps/v1", "Deployment")
REPLICASET = kind("apps/v1", "ReplicaSet")
DAEMONSET = kind("apps/v1", "DaemonSet")
STATEFULSET = kind("apps/v1", "StatefulSet")
JOB = kind("batch/v1", "Job")
LEASE = kind("coordination.k8s.io/v1", "Lease")
SLICE = kind("discovery.k8s.io/v1", "EndpointSlice")
CRD = kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

# --- fixtures: one valid object per kind ---------------------------------------------------


def meta(name: str = "web", namespace: str | None = "default") -> dict[str, Any]:
    m: dict[str, Any] = {"name": name}
    if namespace is not None:
        m["namespace"] = namespace
    return m


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "nginx:1.25", **extra}


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(),
        "spec": {"containers": [container()]},
    }


def template() -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container()]}}


def workload(api_kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": api_kind,
        "metadata": meta(),
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()},
    }


def deployment() -> dict[str, Any]:
    return workload("Deployment")


def replicaset() -> dict[str, Any]:
    return workload("ReplicaSet")


def daemonset() -> dict[str, Any]:
    return workload("DaemonSet")


def statefulset() -> dict[str, Any]:
    sts = workload("StatefulSet")
    sts["spec"]["serviceName"] = "web"
    return sts


def job() -> dict[str, Any]:
    t = template()
    t["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**meta("pi"), "uid": "u-1"},
        "spec": {"template": t},
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(),
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def configmap() -> dict[str, Any]:
    return {"metadata": meta("cfg"), "data": {"app.conf": "x=1"}, "binaryData": {"logo": "AAEC"}}


def secret() -> dict[str, Any]:
    return {"metadata": meta("creds"), "data": {"password": "aHVudGVyMg=="}}


def namespace() -> dict[str, Any]:
    return {"metadata": meta("team-a", None)}


def node() -> dict[str, Any]:
    return {
        "metadata": meta("pi-1", None),
        "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "edge", "effect": "NoSchedule"}]},
    }


def endpoints() -> dict[str, Any]:
    return {
        "metadata": meta(),
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 8080}]}],
    }


def endpointslice() -> dict[str, Any]:
    return {
        "metadata": meta("web-abc"),
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}],
        "ports": [{"name": "http", "port": 8080}],
    }


def event() -> dict[str, Any]:
    return {
        "metadata": meta("web.17a1b2c3"),
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Started",
    }


def serviceaccount() -> dict[str, Any]:
    return {"metadata": meta("builder")}


def lease() -> dict[str, Any]:
    return {"metadata": meta("pi-1", "kube-node-lease"), "spec": {"leaseDurationSeconds": 40}}


WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1, "maxLength": 20},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "ratio": {
                    "type": "number",
                    "exclusiveMaximum": True,
                    "maximum": 1,
                    "multipleOf": 0.25,
                },
                "port": {"x-kubernetes-int-or-string": True},
                "tags": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
                "zones": {
                    "type": "array",
                    "x-kubernetes-list-type": "set",
                    "items": {"type": "string"},
                },
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "owner": {"type": "string", "nullable": True},
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


def crd(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": meta("widgets.example.com", None),
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema or WIDGET_SCHEMA},
                }
            ],
        },
    }


WIDGET = KindRegistry().register_crd(crd())[0]


def widget() -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": meta("w1"),
        "spec": {"image": "nginx", "replicas": 3, "port": "http", "tags": ["a"], "owner": None},
    }


def matches(actual: str, expected: str) -> bool:
    """Whether a message starts with ``expected``, or ends with it after a leading "..."."""
    if expected.startswith("..."):
        return actual.endswith(expected[3:])
    return actual.startswith(expected)


def prepared(k: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the server validates it: defaulted, with a Job's selector generated."""
    apply_defaults(k, obj)
    if k is JOB and obj.get("metadata", {}).get("uid"):
        apply_job_selector(obj, obj["metadata"]["uid"])
    return obj


FIXTURES: list[tuple[str, Kind, Callable[[], dict[str, Any]]]] = [
    ("a pod", POD, pod),
    ("a deployment", DEPLOYMENT, deployment),
    ("a replica set", REPLICASET, replicaset),
    ("a daemon set", DAEMONSET, daemonset),
    ("a stateful set", STATEFULSET, statefulset),
    ("a job", JOB, job),
    ("a service", SERVICE, service),
    ("a config map", CONFIGMAP, configmap),
    ("a secret", SECRET, secret),
    ("a namespace", NAMESPACE, namespace),
    ("a node", NODE, node),
    ("an endpoints object", ENDPOINTS, endpoints),
    ("an endpoint slice", SLICE, endpointslice),
    ("an event", EVENT, event),
    ("a service account", SERVICEACCOUNT, serviceaccount),
    ("a lease", LEASE, lease),
    ("a custom resource definition", CRD, crd),
    ("a custom resource", WIDGET, widget),
]


@pytest.mark.parametrize(
    ("k", "make"), [f[1:] for f in FIXTURES], ids=[f"{f[0]} is valid" for f in FIXTURES]
)
def test_a_well_formed_object_has_no_causes(k: Kind, make: Callable[[], dict[str, Any]]) -> None:
    assert validate(k, prepared(k, make())) == []


# --- create: (case, kind, fixture, change, field, reason, message) -------------------------

Change = Callable[[dict[str, Any]], Any]


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]


def c0(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["containers"][0]


def tspec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


CREATE: list[tuple[str, Kind, Callable[[], dict[str, Any]], Change, str, str, str]] = [
    # metadata
    (
        "an object without a name is rejected",
        POD,
        pod,
        lambda o: o["metadata"].pop("name"),
        "metadata.name",
        REQUIRED,
        "Required value: name or generateName is required",
    ),
    (
        "a pod name with capitals is not a DNS subdomain",
        POD,
        pod,
        lambda o: o["metadata"].update(name="Web"),
        "metadata.name",
        INVALID,
        f'Invalid value: "Web": {DNS1123_SUBDOMAIN_MSG}',
    ),
    (
        "a namespace name with a dot is not a DNS label",
        NAMESPACE,
        namespace,
        lambda o: o["metadata"].update(name="team.a"),
        "metadata.name",
        INVALID,
        f'Invalid value: "team.a": {DNS1123_LABEL_MSG}',
    ),
    (
        "a service name starting with a digit is not a DNS-1035 label",
        SERVICE,
        service,
        lambda o: o["metadata"].update(name="1web"),
        "metadata.name",
        INVALID,
        f'Invalid value: "1web": {DNS1035_LABEL_MSG}',
    ),
    (
        "a name longer than a DNS label is rejected with its limit",
        NAMESPACE,
        namespace,
        lambda o: o["metadata"].update(name="a" * 64),
        "metadata.name",
        INVALID,
        f'Invalid value: "{"a" * 64}": must be no more than 63 characters',
    ),
    (
        "an event name may not contain a slash",
        EVENT,
        event,
        lambda o: o["metadata"].update(name="a/b"),
        "metadata.name",
        INVALID,
        "Invalid value: \"a/b\": may not contain '/'",
    ),
    (
        "a generate-name prefix is checked as a prefix",
        POD,
        pod,
        lambda o: o["metadata"].update(generateName="Web-"),
        "metadata.generateName",
        INVALID,
        f'Invalid value: "Web-": {DNS1123_SUBDOMAIN_MSG}',
    ),
    (
        "a namespaced object needs a namespace",
        POD,
        pod,
        lambda o: o["metadata"].pop("namespace"),
        "metadata.namespace",
        REQUIRED,
        "Required value",
    ),
    (
        "a cluster-scoped object may not have a namespace",
        NODE,
        node,
        lambda o: o["metadata"].update(namespace="default"),
        "metadata.namespace",
        FORBIDDEN,
        "Forbidden: not allowed on this type",
    ),
    (
        "a label key with two slashes is not a qualified name",
        POD,
        pod,
        lambda o: o["metadata"].update(labels={"a/b/c": "x"}),
        "metadata.labels",
        INVALID,
        "Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', "
        "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or "
        "'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' "
        "(e.g. 'example.com/MyName')",
    ),
    (
        "a label value starting with a dash is rejected",
        POD,
        pod,
        lambda o: o["metadata"].update(labels={"app": "-x"}),
        "metadata.labels",
        INVALID,
        'Invalid value: "-x": a valid label must be an empty string or consist of alphanumeric '
        "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
        "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    ),
    (
        "annotations over 256 KiB in total are too long",
        POD,
        pod,
        lambda o: o["metadata"].update(annotations={"a": "x" * 200_000, "b": "y" * 70_000}),
        "metadata.annotations",
        TOO_LONG,
        "Too long: must have at most 262144 bytes",
    ),
    (
        "an owner reference needs a uid",
        POD,
        pod,
        lambda o: o["metadata"].update(
            ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r"}]
        ),
        "metadata.ownerReferences.uid",
        INVALID,
        'Invalid value: "": uid must not be empty',
    ),
    # pods
    (
        "a pod without an image is rejected with the field path of the image",
        POD,
        pod,
        lambda o: c0(o).pop("image"),
        "spec.containers[0].image",
        REQUIRED,
        "Required value",
    ),
    (
        "a pod needs at least one container",
        POD,
        pod,
        lambda o: spec_of(o).update(containers=[]),
        "spec.containers",
        REQUIRED,
        "Required value",
    ),
    (
        "a container needs a name",
        POD,
        pod,
        lambda o: c0(o).pop("name"),
        "spec.containers[0].name",
        REQUIRED,
        "Required value",
    ),
    (
        "a container name must be a DNS label",
        POD,
        pod,
        lambda o: c0(o).update(name="Web"),
        "spec.containers[0].name",
        INVALID,
        f'Invalid value: "Web": {DNS1123_LABEL_MSG}',
    ),
    (
        "two containers may not share a name",
        POD,
        pod,
        lambda o: spec_of(o)["containers"].append(container(image="busybox")),
        "spec.containers[1].name",
        DUPLICATE,
        'Duplicate value: "app"',
    ),
    (
        "an init container may not share a name with a container",
        POD,
        pod,
        lambda o: spec_of(o).update(initContainers=[container()]),
        "spec.containers[0].name",
        DUPLICATE,
        'Duplicate value: "app"',
    ),
    (
        "an image with surrounding spaces is rejected",
        POD,
        pod,
        lambda o: c0(o).update(image=" nginx"),
        "spec.containers[0].image",
        INVALID,
        'Invalid value: " nginx": must not have leading or trailing whitespace',
    ),
    (
        "a container port above 65535 is out of range",
        POD,
        pod,
        lambda o: c0(o).update(ports=[{"containerPort": 70000}]),
        "spec.containers[0].ports[0].containerPort",
        INVALID,
        "Invalid value: 70000: must be between 1 and 65535, inclusive",
    ),
    (
        "a container port of zero is missing",
        POD,
        pod,
        lambda o: c0(o).update(ports=[{"containerPort": 0}]),
        "spec.containers[0].ports[0].containerPort",
        REQUIRED,
        "Required value",
    ),
    (
        "a port protocol must be TCP, UDP or SCTP",
        POD,
        pod,
        lambda o: c0(o).update(ports=[{"containerPort": 80, "protocol": "HTTP"}]),
        "spec.containers[0].ports[0].protocol",
        NOT_SUPPORTED,
        'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"',
    ),
    (
        "two ports of a container may not share a name",
        POD,
        pod,
        lambda o: c0(o).update(
            ports=[{"containerPort": 80, "name": "http"}, {"containerPort": 81, "name": "http"}]
        ),
        "spec.containers[0].ports[1].name",
        DUPLICATE,
        'Duplicate value: "http"',
    ),
    (
        "a port name longer than fifteen characters is rejected",
        POD,
        pod,
        lambda o: c0(o).update(ports=[{"containerPort": 80, "name": "a" * 16}]),
        "spec.containers[0].ports[0].name",
        INVALID,
        f'Invalid value: "{"a" * 16}": must be no more than 15 characters',
    ),
    (
        "a restart policy must be Always, OnFailure or Never",
        POD,
        pod,
        lambda o: spec_of(o).update(restartPolicy="Sometimes"),
        "spec.restartPolicy",
        NOT_SUPPORTED,
        'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
    ),
    (
        "a DNS policy of None needs a DNS config",
        POD,
        pod,
        lambda o: spec_of(o).update(dnsPolicy="None"),
        "spec.dnsConfig",
        REQUIRED,
        "Required value: must provide `dnsConfig` when `dnsPolicy` is None",
    ),
    (
        "an unparsable resource quantity is rejected",
        POD,
        pod,
        lambda o: c0(o).update(resources={"limits": {"cpu": "lots"}}),
        "spec.containers[0].resources.limits[cpu]",
        INVALID,
        'Invalid value: "lots": quantities must match the regular expression '
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    ),
    (
        "a negative resource quantity is rejected",
        POD,
        pod,
        lambda o: c0(o).update(resources={"requests": {"memory": "-1Gi"}}),
        "spec.containers[0].resources.requests[memory]",
        INVALID,
        'Invalid value: "-1Gi": must be greater than or equal to 0',
    ),
    (
        "a request above its limit is rejected",
        POD,
        pod,
        lambda o: c0(o).update(resources={"limits": {"cpu": "500m"}, "requests": {"cpu": "1"}}),
        "spec.containers[0].resources.requests[cpu]",
        INVALID,
        'Invalid value: "1": must be less than or equal to cpu limit of 500m',
    ),
    (
        "a volume mount must name a volume of the pod",
        POD,
        pod,
        lambda o: c0(o).update(volumeMounts=[{"name": "data", "mountPath": "/data"}]),
        "spec.containers[0].volumeMounts[0].name",
        NOT_FOUND,
        'Not found: "data"',
    ),
    (
        "a volume mount needs a path",
        POD,
        pod,
        lambda o: (
            spec_of(o).update(volumes=[{"name": "data"}]),
            c0(o).update(volumeMounts=[{"name": "data"}]),
        ),
        "spec.containers[0].volumeMounts[0].mountPath",
        REQUIRED,
        "Required value",
    ),
    (
        "two volumes may not share a name",
        POD,
        pod,
        lambda o: spec_of(o).update(volumes=[{"name": "v"}, {"name": "v"}]),
        "spec.volumes[1].name",
        DUPLICATE,
        'Duplicate value: "v"',
    ),
    (
        "a volume may have only one source",
        POD,
        pod,
        lambda o: spec_of(o).update(
            volumes=[{"name": "v", "hostPath": {"path": "/x"}, "emptyDir": {}}]
        ),
        "spec.volumes[0].emptyDir",
        FORBIDDEN,
        "Forbidden: may not specify more than 1 volume type",
    ),
    (
        "a config map volume needs the config map's name",
        POD,
        pod,
        lambda o: spec_of(o).update(volumes=[{"name": "v", "configMap": {}}]),
        "spec.volumes[0].configMap.name",
        REQUIRED,
        "Required value",
    ),
    (
        "an environment variable needs a name",
        POD,
        pod,
        lambda o: c0(o).update(env=[{"value": "x"}]),
        "spec.containers[0].env[0].name",
        REQUIRED,
        "Required value",
    ),
    (
        "an environment variable may not have both a value and a source",
        POD,
        pod,
        lambda o: c0(o).update(
            env=[
                {
                    "name": "A",
                    "value": "x",
                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                }
            ]
        ),
        "spec.containers[0].env[0].valueFrom",
        INVALID,
        'Invalid value: "": may not be specified when `value` is not empty',
    ),
    (
        "a probe needs a handler",
        POD,
        pod,
        lambda o: c0(o).update(livenessProbe={"periodSeconds": 5}),
        "spec.containers[0].livenessProbe",
        REQUIRED,
        "Required value: must specify a handler type",
    ),
    (
        "a liveness probe succeeds after one success",
        POD,
        pod,
        lambda o: c0(o).update(livenessProbe={"tcpSocket": {"port": 80}, "successThreshold": 2}),
        "spec.containers[0].livenessProbe.successThreshold",
        INVALID,
        "Invalid value: 2: must be 1",
    ),
    (
        "a probe port must be a valid port",
        POD,
        pod,
        lambda o: c0(o).update(readinessProbe={"httpGet": {"port": 0}}),
        "spec.containers[0].readinessProbe.httpGet.port",
        INVALID,
        "Invalid value: 0: must be between 1 and 65535, inclusive",
    ),
    (
        "a toleration operator must be Equal or Exists",
        POD,
        pod,
        lambda o: spec_of(o).update(tolerations=[{"key": "k", "operator": "Is"}]),
        "spec.tolerations[0].operator",
        NOT_SUPPORTED,
        'Unsupported value: "Is": supported values: "Equal", "Exists"',
    ),
    (
        "toleration seconds need the NoExecute effect",
        POD,
        pod,
        lambda o: spec_of(o).update(
            tolerations=[
                {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}
            ]
        ),
        "spec.tolerations[0].effect",
        INVALID,
        "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
    ),
    (
        "a node selector value is a label value",
        POD,
        pod,
        lambda o: spec_of(o).update(nodeSelector={"zone": "a b"}),
        "spec.nodeSelector",
        INVALID,
        'Invalid value: "a b": a valid label must be an empty string',
    ),
    (
        "an active deadline must be positive",
        POD,
        pod,
        lambda o: spec_of(o).update(activeDeadlineSeconds=0),
        "spec.activeDeadlineSeconds",
        INVALID,
        "Invalid value: 0: must be between 1 and 2147483647, inclusive",
    ),
    (
        "a host-network pod's host port must match its container port",
        POD,
        pod,
        lambda o: (
            spec_of(o).update(hostNetwork=True),
            c0(o).update(ports=[{"containerPort": 80, "hostPort": 81}]),
        ),
        "spec.containers[0].ports[0].hostPort",
        INVALID,
        "Invalid value: 81: must match `containerPort` when `hostNetwork` is true",
    ),
    # workloads
    (
        "a deployment's selector must match its template labels",
        DEPLOYMENT,
        deployment,
        lambda o: o["spec"]["template"]["metadata"].update(labels={"app": "api"}),
        "spec.template.metadata.labels",
        INVALID,
        'Invalid value: map[string]string{"app":"api"}: `selector` does not match template `labels`',
    ),
    (
        "a deployment needs a selector",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).pop("selector"),
        "spec.selector",
        REQUIRED,
        "Required value",
    ),
    (
        "a deployment's selector may not be empty",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(selector={"matchLabels": {}}),
        "spec.selector",
        INVALID,
        "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
    ),
    (
        "a deployment's replicas may not be negative",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(replicas=-1),
        "spec.replicas",
        INVALID,
        "Invalid value: -1: must be greater than or equal to 0",
    ),
    (
        "a replica count given as a string is the wrong type",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(replicas="3"),
        "spec.replicas",
        TYPE_INVALID,
        'Invalid value: "3": must be of type integer',
    ),
    (
        "a deployment's image is required in its template",
        DEPLOYMENT,
        deployment,
        lambda o: tspec(o)["containers"][0].pop("image"),
        "spec.template.spec.containers[0].image",
        REQUIRED,
        "Required value",
    ),
    (
        "a deployment's pods must restart always",
        DEPLOYMENT,
        deployment,
        lambda o: tspec(o).update(restartPolicy="Never"),
        "spec.template.spec.restartPolicy",
        NOT_SUPPORTED,
        'Unsupported value: "Never": supported values: "Always"',
    ),
    (
        "a deployment's pods may not have a deadline",
        DEPLOYMENT,
        deployment,
        lambda o: tspec(o).update(activeDeadlineSeconds=10),
        "spec.template.spec.activeDeadlineSeconds",
        FORBIDDEN,
        "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported",
    ),
    (
        "a rolling update may not have both max unavailable and max surge at zero",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(
            strategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0},
            }
        ),
        "spec.strategy.rollingUpdate.maxUnavailable",
        INVALID,
        "Invalid value: 0: may not be 0 when `maxSurge` is 0",
    ),
    (
        "a recreate strategy may not have rolling update parameters",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(
            strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}
        ),
        "spec.strategy.rollingUpdate",
        FORBIDDEN,
        "Forbidden: may not be specified when strategy `type` is 'Recreate'",
    ),
    (
        "max unavailable may not exceed 100%",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(
            strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%"}}
        ),
        "spec.strategy.rollingUpdate.maxUnavailable",
        INVALID,
        'Invalid value: "150%": must not be greater than 100%',
    ),
    (
        "a strategy type must be Recreate or RollingUpdate",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(strategy={"type": "BlueGreen"}),
        "spec.strategy.type",
        NOT_SUPPORTED,
        'Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"',
    ),
    (
        "the progress deadline must exceed min ready seconds",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(minReadySeconds=600),
        "spec.progressDeadlineSeconds",
        INVALID,
        "Invalid value: 600: must be greater than minReadySeconds",
    ),
    (
        "a selector operator must be one Kubernetes knows",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(
            selector={
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "a", "operator": "Has"}],
            }
        ),
        "spec.selector.matchExpressions[0].operator",
        INVALID,
        'Invalid value: "Has": not a valid selector operator',
    ),
    (
        "an In selector needs values",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(
            selector={
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "a", "operator": "In"}],
            }
        ),
        "spec.selector.matchExpressions[0].values",
        REQUIRED,
        "Required value: must be specified when `operator` is 'In' or 'NotIn'",
    ),
    (
        "a replica set's selector must match its template labels",
        REPLICASET,
        replicaset,
        lambda o: spec_of(o).update(selector={"matchLabels": {"app": "api"}}),
        "spec.template.metadata.labels",
        INVALID,
        'Invalid value: map[string]string{"app":"web"}: `selector` does not match template `labels`',
    ),
    (
        "a daemon set's pods may not have a deadline",
        DAEMONSET,
        daemonset,
        lambda o: tspec(o).update(activeDeadlineSeconds=10),
        "spec.template.spec.activeDeadlineSeconds",
        FORBIDDEN,
        "Forbidden: activeDeadlineSeconds in DaemonSet is not Supported",
    ),
    (
        "a daemon set update strategy must be OnDelete or RollingUpdate",
        DAEMONSET,
        daemonset,
        lambda o: spec_of(o).update(updateStrategy={"type": "Surge"}),
        "spec.updateStrategy.type",
        NOT_SUPPORTED,
        'Unsupported value: "Surge": supported values: "OnDelete", "RollingUpdate"',
    ),
    (
        "a stateful set's selector may not be empty",
        STATEFULSET,
        statefulset,
        lambda o: spec_of(o).update(selector={}),
        "spec.selector",
        INVALID,
        "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is not valid for statefulset.",
    ),
    (
        "a stateful set's pod management policy must be OrderedReady or Parallel",
        STATEFULSET,
        statefulset,
        lambda o: spec_of(o).update(podManagementPolicy="Random"),
        "spec.podManagementPolicy",
        INVALID,
        "Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
    ),
    # jobs
    (
        "a job's pods may not restart always",
        JOB,
        job,
        lambda o: tspec(o).update(restartPolicy="Always"),
        "spec.template.spec.restartPolicy",
        NOT_SUPPORTED,
        'Unsupported value: "Always": supported values: "OnFailure", "Never"',
    ),
    (
        "a job whose pods have no restart policy is rejected, as in Kubernetes",
        JOB,
        job,
        lambda o: tspec(o).pop("restartPolicy"),
        "spec.template.spec.restartPolicy",
        NOT_SUPPORTED,
        'Unsupported value: "Always": supported values: "OnFailure", "Never"',
    ),
    (
        "a job's backoff limit may not be negative",
        JOB,
        job,
        lambda o: spec_of(o).update(backoffLimit=-1),
        "spec.backoffLimit",
        INVALID,
        "Invalid value: -1: must be greater than or equal to 0",
    ),
    (
        "an indexed job needs completions",
        JOB,
        job,
        lambda o: spec_of(o).update(completionMode="Indexed", completions=None, parallelism=2),
        "spec.completions",
        REQUIRED,
        "Required value: when completion mode is Indexed",
    ),
    (
        "a job completion mode must be NonIndexed or Indexed",
        JOB,
        job,
        lambda o: spec_of(o).update(completionMode="Sparse"),
        "spec.completionMode",
        NOT_SUPPORTED,
        'Unsupported value: "Sparse": supported values: "NonIndexed", "Indexed"',
    ),
    (
        "a job whose selector was not generated needs one",
        JOB,
        job,
        lambda o: o["metadata"].pop("uid"),
        "spec.selector",
        REQUIRED,
        "Required value",
    ),
    # services
    (
        "a service port must be in range",
        SERVICE,
        service,
        lambda o: spec_of(o).update(ports=[{"port": 0}]),
        "spec.ports[0].port",
        INVALID,
        "Invalid value: 0: must be between 1 and 65535, inclusive",
    ),
    (
        "a service needs ports",
        SERVICE,
        service,
        lambda o: spec_of(o).pop("ports"),
        "spec.ports",
        REQUIRED,
        "Required value",
    ),
    (
        "a service type must be one Kubernetes knows",
        SERVICE,
        service,
        lambda o: spec_of(o).update(type="Internal"),
        "spec.type",
        NOT_SUPPORTED,
        'Unsupported value: "Internal": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
    ),
    (
        "a service with several ports must name them",
        SERVICE,
        service,
        lambda o: spec_of(o).update(ports=[{"port": 80}, {"port": 443, "name": "https"}]),
        "spec.ports[0].name",
        REQUIRED,
        "Required value",
    ),
    (
        "a service may not expose one port twice",
        SERVICE,
        service,
        lambda o: spec_of(o).update(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]),
        "spec.ports[1]",
        DUPLICATE,
        'Duplicate value: {"port":80,"protocol":"TCP"}',
    ),
    (
        "a cluster IP service may not ask for a node port",
        SERVICE,
        service,
        lambda o: spec_of(o).update(ports=[{"port": 80, "nodePort": 30080}]),
        "spec.ports[0].nodePort",
        FORBIDDEN,
        "Forbidden: may not be used when `type` is 'ClusterIP'",
    ),
    (
        "a named target port must be a valid port name",
        SERVICE,
        service,
        lambda o: spec_of(o).update(ports=[{"port": 80, "targetPort": "HTTP"}]),
        "spec.ports[0].targetPort",
        INVALID,
        'Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)',
    ),
    (
        "an external name service needs an external name",
        SERVICE,
        service,
        lambda o: spec_of(o).update(type="ExternalName"),
        "spec.externalName",
        REQUIRED,
        "Required value",
    ),
    (
        "a cluster IP must be an IP address",
        SERVICE,
        service,
        lambda o: spec_of(o).update(clusterIP="10.0.0.300"),
        "spec.clusterIPs[0]",
        INVALID,
        "Invalid value: \"10.0.0.300\": must be empty, 'None', or a valid IP address",
    ),
    (
        "a session affinity must be ClientIP or None",
        SERVICE,
        service,
        lambda o: spec_of(o).update(sessionAffinity="Cookie"),
        "spec.sessionAffinity",
        NOT_SUPPORTED,
        'Unsupported value: "Cookie": supported values: "ClientIP", "None"',
    ),
    # config maps and secrets
    (
        "a config map key may not contain a space",
        CONFIGMAP,
        configmap,
        lambda o: o["data"].update({"a b": "x"}),
        "data[a b]",
        INVALID,
        "Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', "
        "'_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
        "'[-._a-zA-Z0-9]+')",
    ),
    (
        "a config map key may not be ..",
        CONFIGMAP,
        configmap,
        lambda o: o["data"].update({"..": "x"}),
        "data[..]",
        INVALID,
        "Invalid value: \"..\": must not be '..'",
    ),
    (
        "a config map key may not be in both data and binary data",
        CONFIGMAP,
        configmap,
        lambda o: o["binaryData"].update({"app.conf": "AAEC"}),
        "binaryData[app.conf]",
        INVALID,
        'Invalid value: "app.conf": duplicate of key present in data',
    ),
    (
        "a config map over 1 MiB is too long",
        CONFIGMAP,
        configmap,
        lambda o: o["data"].update(big="x" * (1024 * 1024)),
        "data",
        TOO_LONG,
        "Too long: must have at most 1048576 bytes",
    ),
    (
        "a secret key may not contain a slash",
        SECRET,
        secret,
        lambda o: o["data"].update({"a/b": "eA=="}),
        "data[a/b]",
        INVALID,
        'Invalid value: "a/b": a valid config key must consist',
    ),
    (
        "secret data must be base64",
        SECRET,
        secret,
        lambda o: o["data"].update(token="not base64!"),
        "data[token]",
        INVALID,
        'Invalid value: "<secret contents redacted>": illegal base64 data',
    ),
    (
        "a secret over 1 MiB is too long",
        SECRET,
        secret,
        lambda o: o.update(stringData={"big": "x" * (1024 * 1024)}),
        "data",
        TOO_LONG,
        "Too long: must have at most 1048576 bytes",
    ),
    (
        "a TLS secret needs a key",
        SECRET,
        secret,
        lambda o: o.update(type="kubernetes.io/tls", data={"tls.crt": "eA=="}),
        "data[tls.key]",
        REQUIRED,
        "Required value",
    ),
    # other kinds
    (
        "a namespace finalizer must be a qualified name",
        NAMESPACE,
        namespace,
        lambda o: o.update(spec={"finalizers": ["a/b/c"]}),
        "spec.finalizers[0]",
        INVALID,
        'Invalid value: "a/b/c": a qualified name must consist',
    ),
    (
        "a node taint effect must be one Kubernetes knows",
        NODE,
        node,
        lambda o: spec_of(o).update(taints=[{"key": "k", "effect": "Evict"}]),
        "spec.taints[0].effect",
        NOT_SUPPORTED,
        'Unsupported value: "Evict": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"',
    ),
    (
        "an endpoint address must be an IP",
        ENDPOINTS,
        endpoints,
        lambda o: o["subsets"][0]["addresses"][0].update(ip="web"),
        "subsets[0].addresses[0].ip",
        INVALID,
        'Invalid value: "web": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
    ),
    (
        "an endpoint slice address type must be one Kubernetes knows",
        SLICE,
        endpointslice,
        lambda o: o.update(addressType="IPv5"),
        "addressType",
        NOT_SUPPORTED,
        'Unsupported value: "IPv5": supported values: "IPv4", "IPv6", "FQDN"',
    ),
    (
        "an IPv4 endpoint slice holds only IPv4 addresses",
        SLICE,
        endpointslice,
        lambda o: o["endpoints"][0].update(addresses=["fd00::1"]),
        "endpoints[0].addresses[0]",
        INVALID,
        'Invalid value: "fd00::1": must be a valid IPv4 address',
    ),
    (
        "an endpoint needs an address",
        SLICE,
        endpointslice,
        lambda o: o["endpoints"][0].update(addresses=[]),
        "endpoints[0].addresses",
        REQUIRED,
        "Required value: must contain at least 1 address",
    ),
    (
        "an event lives in its object's namespace",
        EVENT,
        event,
        lambda o: o["involvedObject"].update(namespace="other"),
        "involvedObject.namespace",
        INVALID,
        'Invalid value: "other": does not match event.namespace',
    ),
    (
        "a lease lasts longer than zero seconds",
        LEASE,
        lease,
        lambda o: spec_of(o).update(leaseDurationSeconds=0),
        "spec.leaseDurationSeconds",
        INVALID,
        "Invalid value: 0: must be greater than 0",
    ),
    # custom resource definitions
    (
        "a CRD's name is its plural and group",
        CRD,
        crd,
        lambda o: o["metadata"].update(name="gadgets.example.com"),
        "metadata.name",
        INVALID,
        'Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group',
    ),
    (
        "a CRD's group has a dot",
        CRD,
        crd,
        lambda o: (
            spec_of(o).update(group="example"),
            o["metadata"].update(name="widgets.example"),
        ),
        "spec.group",
        INVALID,
        'Invalid value: "example": should be a domain with at least one dot',
    ),
    (
        "a CRD needs a plural",
        CRD,
        crd,
        lambda o: spec_of(o)["names"].pop("plural"),
        "spec.names.plural",
        REQUIRED,
        "Required value",
    ),
    (
        "a CRD's scope must be Cluster or Namespaced",
        CRD,
        crd,
        lambda o: spec_of(o).update(scope="Global"),
        "spec.scope",
        NOT_SUPPORTED,
        'Unsupported value: "Global": supported values: "Cluster", "Namespaced"',
    ),
    (
        "a CRD needs a version",
        CRD,
        crd,
        lambda o: spec_of(o).update(versions=[]),
        "spec.versions",
        REQUIRED,
        "Required value: must have at least one version",
    ),
    (
        "a CRD needs exactly one storage version",
        CRD,
        crd,
        lambda o: spec_of(o)["versions"].append(
            {**copy.deepcopy(spec_of(o)["versions"][0]), "name": "v2"}
        ),
        "spec.versions",
        INVALID,
        "...: must have exactly one version marked as storage version",
    ),
    (
        "two CRD versions may not share a name",
        CRD,
        crd,
        lambda o: spec_of(o)["versions"].append(
            {**copy.deepcopy(spec_of(o)["versions"][0]), "storage": False}
        ),
        "spec.versions[1].name",
        DUPLICATE,
        'Duplicate value: "v1"',
    ),
    (
        "a CRD version needs a schema",
        CRD,
        crd,
        lambda o: spec_of(o)["versions"][0].pop("schema"),
        "spec.versions[0].schema.openAPIV3Schema",
        REQUIRED,
        "Required value: schemas are required",
    ),
    (
        "a schema property needs a type",
        CRD,
        lambda: crd({"type": "object", "properties": {"spec": {"properties": {}}}}),
        lambda o: None,
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
        REQUIRED,
        "Required value: must not be empty for specified object fields",
    ),
    (
        "a schema root must be an object",
        CRD,
        lambda: crd({"type": "string"}),
        lambda o: None,
        "spec.versions[0].schema.openAPIV3Schema.type",
        INVALID,
        'Invalid value: "string": must be object at the root',
    ),
    # custom resources
    (
        "a custom resource field of the wrong type is rejected",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(replicas="three"),
        "spec.replicas",
        TYPE_INVALID,
        'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
    ),
    (
        "a required custom resource field is required",
        WIDGET,
        widget,
        lambda o: spec_of(o).pop("image"),
        "spec.image",
        REQUIRED,
        "Required value",
    ),
    (
        "a required top-level field is required",
        WIDGET,
        widget,
        lambda o: o.pop("spec"),
        "spec",
        REQUIRED,
        "Required value",
    ),
    (
        "a custom resource enum is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(color="pink"),
        "spec.color",
        NOT_SUPPORTED,
        'Unsupported value: "pink": supported values: "red", "blue"',
    ),
    (
        "a custom resource pattern is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(name="Web1"),
        "spec.name",
        INVALID,
        "Invalid value: \"Web1\": spec.name in body should match '^[a-z]+$'",
    ),
    (
        "a custom resource minimum is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(replicas=-1),
        "spec.replicas",
        INVALID,
        "Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
    ),
    (
        "a custom resource maximum is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(replicas=11),
        "spec.replicas",
        INVALID,
        "Invalid value: 11: spec.replicas in body should be less than or equal to 10",
    ),
    (
        "an exclusive maximum excludes the maximum",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(ratio=1),
        "spec.ratio",
        INVALID,
        "Invalid value: 1: spec.ratio in body should be less than 1",
    ),
    (
        "a multiple-of constraint is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(ratio=0.3),
        "spec.ratio",
        INVALID,
        "Invalid value: 0.3: spec.ratio in body should be a multiple of 0.25",
    ),
    (
        "a custom resource min length is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(image=""),
        "spec.image",
        INVALID,
        'Invalid value: "": spec.image in body should be at least 1 chars long',
    ),
    (
        "a custom resource max length is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(image="x" * 21),
        "spec.image",
        TOO_LONG,
        "Too long: may not be longer than 20",
    ),
    (
        "array items are checked against the item schema",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(tags=["a", 2]),
        "spec.tags[1]",
        TYPE_INVALID,
        'Invalid value: "integer": spec.tags[1] in body must be of type string: "integer"',
    ),
    (
        "a custom resource max items is enforced",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(tags=["a", "b", "c", "d"]),
        "spec.tags",
        TOO_MANY,
        "Too many: 4: must have at most 3 items",
    ),
    (
        "a set list may not repeat an item",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(zones=["a", "b", "a"]),
        "spec.zones[2]",
        DUPLICATE,
        'Duplicate value: "a"',
    ),
    (
        "an int-or-string field rejects a boolean",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(port=True),
        "spec.port",
        TYPE_INVALID,
        'Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"',
    ),
    (
        "map values are checked against additional properties",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(env={"A": 1}),
        "spec.env.A",
        TYPE_INVALID,
        'Invalid value: "integer": spec.env.A in body must be of type string: "integer"',
    ),
    (
        "a null in a non-nullable array item is rejected",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(tags=[None]),
        "spec.tags[0]",
        TYPE_INVALID,
        'Invalid value: "null": spec.tags[0] in body must be of type string: "null"',
    ),
    (
        "a custom resource's name is a DNS subdomain",
        WIDGET,
        widget,
        lambda o: o["metadata"].update(name="W1"),
        "metadata.name",
        INVALID,
        f'Invalid value: "W1": {DNS1123_SUBDOMAIN_MSG}',
    ),
]


@pytest.mark.parametrize(
    ("k", "make", "change", "field", "reason", "message"),
    [c[1:] for c in CREATE],
    ids=[c[0] for c in CREATE],
)
def test_an_invalid_object_is_rejected_with_kubernetes_cause(
    k: Kind,
    make: Callable[[], dict[str, Any]],
    change: Change,
    field: str,
    reason: str,
    message: str,
) -> None:
    obj = make()
    change(obj)
    causes = validate(k, prepared(k, obj))
    matching = [c for c in causes if c.field == field and c.reason == reason]
    assert matching, f"no {reason} at {field} in {causes}"
    assert any(matches(c.message, message) for c in matching), matching


ACCEPTED: list[tuple[str, Kind, Callable[[], dict[str, Any]], Change]] = [
    (
        "an event name need not be a DNS name",
        EVENT,
        event,
        lambda o: o["metadata"].update(name="Web_1"),
    ),
    (
        "a headless service needs no ports",
        SERVICE,
        service,
        lambda o: spec_of(o).update(clusterIP="None", ports=[]),
    ),
    (
        "an external name may end in a dot",
        SERVICE,
        service,
        lambda o: spec_of(o).update(type="ExternalName", externalName="db.example.com.", ports=[]),
    ),
    (
        "a named target port is accepted",
        SERVICE,
        service,
        lambda o: spec_of(o).update(ports=[{"port": 80, "targetPort": "http"}]),
    ),
    (
        "an int-or-string field accepts a number",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(port=8080),
    ),
    ("a nullable field accepts null", WIDGET, widget, lambda o: spec_of(o).update(owner=None)),
    (
        "preserved unknown fields are not checked",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(extra={"anything": [1, {"x": None}]}),
    ),
    ("an integral float is an integer", WIDGET, widget, lambda o: spec_of(o).update(replicas=3.0)),
    (
        "an exclusive maximum accepts values below it",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(ratio=0.75),
    ),
    (
        "a quantity given as a JSON number is accepted",
        POD,
        pod,
        lambda o: c0(o).update(resources={"limits": {"cpu": 2}}),
    ),
    (
        "a request equal to its limit in other units is accepted",
        POD,
        pod,
        lambda o: c0(o).update(resources={"limits": {"cpu": "1"}, "requests": {"cpu": "1000m"}}),
    ),
    (
        "a prefixed annotation key is accepted",
        POD,
        pod,
        lambda o: o["metadata"].update(annotations={"example.com/Note": "x"}),
    ),
    (
        "a sidecar init container may have probes",
        POD,
        pod,
        lambda o: spec_of(o).update(
            initContainers=[
                container(
                    name="proxy", restartPolicy="Always", readinessProbe={"tcpSocket": {"port": 1}}
                )
            ]
        ),
    ),
    (
        "a job with a manual selector need not carry the generated labels",
        JOB,
        job,
        lambda o: (
            o["metadata"].pop("uid"),
            spec_of(o).update(manualSelector=True, selector={"matchLabels": {"app": "web"}}),
        ),
    ),
]


@pytest.mark.parametrize(
    ("k", "make", "change"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_an_unusual_but_valid_object_is_accepted(
    k: Kind, make: Callable[[], dict[str, Any]], change: Change
) -> None:
    obj = make()
    change(obj)
    assert validate(k, prepared(k, obj)) == []


def test_a_job_whose_template_lost_its_generated_label_is_rejected() -> None:
    obj = prepared(JOB, job())
    obj["spec"]["template"]["metadata"]["labels"]["controller-uid"] = "other"
    causes = validate(JOB, obj)
    assert [(c.field, c.reason) for c in causes] == [
        ("spec.template.metadata.labels[controller-uid]", INVALID)
    ]
    assert causes[0].message.endswith(": must be 'u-1'")


def test_a_job_selector_that_is_not_the_generated_one_is_rejected() -> None:
    obj = prepared(JOB, job())
    obj["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    causes = validate(JOB, obj)
    assert (
        Cause(
            INVALID,
            'Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web"}, '
            "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: `selector` not auto-generated",
            "spec.selector",
        )
        in causes
    )


# --- update: (case, kind, fixture, change to the new object, field, reason, message) -------

UPDATE: list[tuple[str, Kind, Callable[[], dict[str, Any]], Change, str, str, str]] = [
    (
        "a pod may not move to another node by update",
        POD,
        pod,
        lambda o: spec_of(o).update(nodeName="pi-2"),
        "spec",
        FORBIDDEN,
        f"Forbidden: {POD_UPDATE_FORBIDDEN}",
    ),
    (
        "a pod's resources may not change by update",
        POD,
        pod,
        lambda o: c0(o).update(resources={"limits": {"cpu": "2"}}),
        "spec",
        FORBIDDEN,
        f"Forbidden: {POD_UPDATE_FORBIDDEN}",
    ),
    (
        "a pod may not gain a container",
        POD,
        pod,
        lambda o: spec_of(o)["containers"].append(container(name="b")),
        "spec",
        FORBIDDEN,
        f"Forbidden: {POD_UPDATE_FORBIDDEN}",
    ),
    (
        "a pod's deadline may not grow",
        POD,
        lambda: {**pod(), "spec": {**pod()["spec"], "activeDeadlineSeconds": 10}},
        lambda o: spec_of(o).update(activeDeadlineSeconds=20),
        "spec.activeDeadlineSeconds",
        INVALID,
        "Invalid value: 20: must be less than or equal to previous value",
    ),
    (
        "a pod's deadline may not be removed",
        POD,
        lambda: {**pod(), "spec": {**pod()["spec"], "activeDeadlineSeconds": 10}},
        lambda o: spec_of(o).pop("activeDeadlineSeconds"),
        "spec.activeDeadlineSeconds",
        INVALID,
        'Invalid value: "null": must not update from a positive integer to nil value',
    ),
    (
        "a pod's tolerations may not be removed",
        POD,
        lambda: {
            **pod(),
            "spec": {**pod()["spec"], "tolerations": [{"key": "k", "operator": "Exists"}]},
        },
        lambda o: spec_of(o).update(tolerations=[]),
        "spec.tolerations",
        FORBIDDEN,
        "Forbidden: existing toleration can not be modified except its tolerationSeconds",
    ),
    (
        "an object may not be renamed",
        POD,
        pod,
        lambda o: o["metadata"].update(name="web2"),
        "metadata.name",
        INVALID,
        'Invalid value: "web2": field is immutable',
    ),
    (
        "a deployment's selector is immutable",
        DEPLOYMENT,
        deployment,
        lambda o: (
            spec_of(o).update(selector={"matchLabels": {"app": "api"}}),
            o["spec"]["template"]["metadata"].update(labels={"app": "api"}),
        ),
        "spec.selector",
        INVALID,
        'Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"api"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
    ),
    (
        "a replica set's selector is immutable",
        REPLICASET,
        replicaset,
        lambda o: spec_of(o)["selector"].update(
            matchExpressions=[{"key": "tier", "operator": "Exists"}]
        ),
        "spec.selector",
        INVALID,
        "Invalid value: v1.LabelSelector{",
    ),
    (
        "a daemon set's selector is immutable",
        DAEMONSET,
        daemonset,
        lambda o: spec_of(o)["selector"]["matchLabels"].update(tier="fe"),
        "spec.selector",
        INVALID,
        "Invalid value: v1.LabelSelector{",
    ),
    (
        "a stateful set's service name is immutable",
        STATEFULSET,
        statefulset,
        lambda o: spec_of(o).update(serviceName="other"),
        "spec",
        FORBIDDEN,
        f"Forbidden: {STATEFULSET_UPDATE_FORBIDDEN}",
    ),
    (
        "a job's template is immutable",
        JOB,
        job,
        lambda o: tspec(o)["containers"][0].update(image="busybox"),
        "spec.template",
        INVALID,
        "Invalid value: {",
    ),
    (
        "a job's selector is immutable",
        JOB,
        job,
        lambda o: spec_of(o)["selector"]["matchLabels"].update(extra="x"),
        "spec.selector",
        INVALID,
        "Invalid value: v1.LabelSelector{",
    ),
    (
        "a job's completions are immutable",
        JOB,
        job,
        lambda o: spec_of(o).update(completions=5),
        "spec.completions",
        INVALID,
        "Invalid value: 5: field is immutable",
    ),
    (
        "a service's cluster IP may not change once set",
        SERVICE,
        lambda: {**service(), "spec": {**service()["spec"], "clusterIP": "10.96.0.10"}},
        lambda o: spec_of(o).update(clusterIP="10.96.0.11", ipFamilies=["IPv4"]),
        "spec.clusterIPs[0]",
        INVALID,
        'Invalid value: "10.96.0.11": may not change once set',
    ),
    (
        "an immutable config map's data may not change",
        CONFIGMAP,
        lambda: {**configmap(), "immutable": True},
        lambda o: o["data"].update({"app.conf": "x=2"}),
        "data",
        FORBIDDEN,
        "Forbidden: field is immutable when `immutable` is set",
    ),
    (
        "an immutable config map may not become mutable",
        CONFIGMAP,
        lambda: {**configmap(), "immutable": True},
        lambda o: o.update(immutable=False),
        "immutable",
        FORBIDDEN,
        "Forbidden: field is immutable when `immutable` is set",
    ),
    (
        "an immutable secret's data may not change",
        SECRET,
        lambda: {**secret(), "immutable": True},
        lambda o: o["data"].update(password="eA=="),
        "data",
        FORBIDDEN,
        "Forbidden: field is immutable when `immutable` is set",
    ),
    (
        "a secret's type is immutable",
        SECRET,
        secret,
        lambda o: o.update(type="example.com/token"),
        "type",
        INVALID,
        'Invalid value: "example.com/token": field is immutable',
    ),
    (
        "a CRD's scope is immutable",
        CRD,
        crd,
        lambda o: spec_of(o).update(scope="Cluster"),
        "spec.scope",
        INVALID,
        'Invalid value: "Cluster": field is immutable',
    ),
    (
        "a node's pod CIDR may not change",
        NODE,
        node,
        lambda o: spec_of(o).update(podCIDR="10.244.2.0/24"),
        "spec.podCIDRs",
        FORBIDDEN,
        'Forbidden: node updates may not change podCIDR except from "" to valid',
    ),
]


@pytest.mark.parametrize(
    ("k", "make", "change", "field", "reason", "message"),
    [c[1:] for c in UPDATE],
    ids=[c[0] for c in UPDATE],
)
def test_a_forbidden_update_is_rejected_with_kubernetes_cause(
    k: Kind,
    make: Callable[[], dict[str, Any]],
    change: Change,
    field: str,
    reason: str,
    message: str,
) -> None:
    old = prepared(k, make())
    new = copy.deepcopy(old)
    change(new)
    apply_defaults(k, new)
    causes = validate(k, new, old)
    matching = [c for c in causes if c.field == field and c.reason == reason]
    assert matching, f"no {reason} at {field} in {causes}"
    assert any(matches(c.message, message) for c in matching), matching


ALLOWED_UPDATES: list[tuple[str, Kind, Callable[[], dict[str, Any]], Change]] = [
    ("a pod's image may change", POD, pod, lambda o: c0(o).update(image="nginx:1.26")),
    ("a pod's labels may change", POD, pod, lambda o: o["metadata"].update(labels={"v": "2"})),
    ("a pod may gain a deadline", POD, pod, lambda o: spec_of(o).update(activeDeadlineSeconds=30)),
    (
        "a pod may gain a toleration",
        POD,
        pod,
        lambda o: spec_of(o).update(tolerations=[{"key": "k", "operator": "Exists"}]),
    ),
    (
        "a pod's resources may be rewritten in other units",
        POD,
        lambda: {**pod(), "spec": {"containers": [container(resources={"limits": {"cpu": "1"}})]}},
        lambda o: c0(o).update(resources={"limits": {"cpu": "1000m"}, "requests": {"cpu": "1"}}),
    ),
    (
        "a pod update that omits defaulted fields is the same pod",
        POD,
        pod,
        lambda o: spec_of(o).pop("schedulerName"),
    ),
    ("a deployment may scale", DEPLOYMENT, deployment, lambda o: spec_of(o).update(replicas=5)),
    (
        "a deployment's template may change",
        DEPLOYMENT,
        deployment,
        lambda o: tspec(o)["containers"][0].update(image="x"),
    ),
    ("a stateful set may scale", STATEFULSET, statefulset, lambda o: spec_of(o).update(replicas=3)),
    ("a job may be suspended", JOB, job, lambda o: spec_of(o).update(suspend=True)),
    (
        "a suspended job that never ran may change its node selector",
        JOB,
        lambda: {**job(), "spec": {**job()["spec"], "suspend": True}},
        lambda o: tspec(o).update(nodeSelector={"zone": "b"}),
    ),
    (
        "an elastic indexed job may scale",
        JOB,
        lambda: {
            **job(),
            "spec": {
                **job()["spec"],
                "completionMode": "Indexed",
                "completions": 2,
                "parallelism": 2,
            },
        },
        lambda o: spec_of(o).update(completions=4, parallelism=4),
    ),
    (
        "a service update may leave its allocated cluster IP out",
        SERVICE,
        lambda: {**service(), "spec": {**service()["spec"], "clusterIP": "10.96.0.10"}},
        lambda o: spec_of(o).pop("clusterIP"),
    ),
    (
        "a mutable config map's data may change",
        CONFIGMAP,
        configmap,
        lambda o: o["data"].update(x="y"),
    ),
    ("a config map may become immutable", CONFIGMAP, configmap, lambda o: o.update(immutable=True)),
]


@pytest.mark.parametrize(
    ("k", "make", "change"), [c[1:] for c in ALLOWED_UPDATES], ids=[c[0] for c in ALLOWED_UPDATES]
)
def test_an_allowed_update_has_no_causes(
    k: Kind, make: Callable[[], dict[str, Any]], change: Change
) -> None:
    old = prepared(k, make())
    new = copy.deepcopy(old)
    change(new)
    apply_defaults(k, new)
    assert validate(k, new, old) == []


# --- the Invalid status message -------------------------------------------------------------


def test_a_deployment_without_an_image_reads_like_the_apiserver() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0].pop("image")
    causes = validate(DEPLOYMENT, prepared(DEPLOYMENT, obj))
    assert invalid_message(DEPLOYMENT, "web", causes) == (
        'Deployment.apps "web" is invalid: spec.template.spec.containers[0].image: Required value'
    )


MESSAGES = [
    (
        "a core kind is not qualified by a group",
        POD,
        [Cause(REQUIRED, "Required value", "spec.containers")],
        'Pod "web" is invalid: spec.containers: Required value',
    ),
    (
        "several causes are listed in brackets",
        DEPLOYMENT,
        [
            Cause(REQUIRED, "Required value", "spec.selector"),
            Cause(INVALID, "Invalid value: -1: x", "spec.replicas"),
        ],
        'Deployment.apps "web" is invalid: [spec.selector: Required value, spec.replicas: Invalid value: -1: x]',
    ),
    (
        "a repeated cause is shown once",
        POD,
        [Cause(REQUIRED, "Required value", "spec.containers")] * 2,
        'Pod "web" is invalid: spec.containers: Required value',
    ),
    (
        "a CRD is qualified by its API group",
        CRD,
        [Cause(REQUIRED, "Required value", "spec.group")],
        'CustomResourceDefinition.apiextensions.k8s.io "web" is invalid: spec.group: Required value',
    ),
    (
        "a custom resource is qualified by its group",
        WIDGET,
        [Cause(REQUIRED, "Required value", "spec.image")],
        'Widget.example.com "web" is invalid: spec.image: Required value',
    ),
]


@pytest.mark.parametrize(
    ("k", "causes", "expected"), [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES]
)
def test_the_invalid_message_is_formatted_like_the_apiservers(
    k: Kind, causes: list[Cause], expected: str
) -> None:
    assert invalid_message(k, "web", causes) == expected


# --- names ------------------------------------------------------------------------------------

NAMES: list[tuple[str, Callable[[str], list[str]], str, bool]] = [
    ("a DNS label may contain digits and dashes", is_dns1123_label, "123-abc", True),
    ("a DNS label may not contain a dot", is_dns1123_label, "a.b", False),
    ("a DNS label may not end with a dash", is_dns1123_label, "a-", False),
    ("a DNS subdomain may contain dots", is_dns1123_subdomain, "example.com", True),
    (
        "a DNS subdomain may be 253 characters",
        is_dns1123_subdomain,
        ("a" * 63 + ".") * 3 + "a" * 61,
        True,
    ),
    (
        "a DNS subdomain may not be 254 characters",
        is_dns1123_subdomain,
        ("a" * 63 + ".") * 3 + "a" * 62,
        False,
    ),
    ("a DNS-1035 label may not start with a digit", is_dns1035_label, "1a", False),
    ("a DNS-1035 label may start with a letter", is_dns1035_label, "a1", True),
    ("a path segment may not be ..", is_path_segment_name, "..", False),
    ("a path segment may not contain a percent sign", is_path_segment_name, "a%b", False),
    ("a path segment may contain capitals", is_path_segment_name, "Ab_C", True),
]


@pytest.mark.parametrize(("check", "name", "ok"), [n[1:] for n in NAMES], ids=[n[0] for n in NAMES])
def test_name_rules_follow_kubernetes(
    check: Callable[[str], list[str]], name: str, ok: bool
) -> None:
    assert (check(name) == []) is ok


# --- pruning and unknown fields ---------------------------------------------------------------

PRUNE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer"},
                "ports": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"port": {"type": "integer"}}},
                },
                "labels": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"v": {"type": "string"}},
                    },
                },
                "free": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"known": {"type": "object", "properties": {}}},
                },
                "opaque": {"type": "object"},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": {"type": "object", "properties": {}}},
                },
            },
        },
    },
}

PRUNE = [
    (
        "an unknown spec field is pruned",
        {"spec": {"size": 1, "color": "red"}},
        ["spec.color"],
        {"spec": {"size": 1}},
    ),
    ("an unknown top-level field is pruned", {"extra": 1, "spec": {}}, ["extra"], {"spec": {}}),
    (
        "apiVersion and kind are kept",
        {"apiVersion": "example.com/v1", "kind": "Widget"},
        [],
        {"apiVersion": "example.com/v1", "kind": "Widget"},
    ),
    (
        "metadata is pruned to object metadata",
        {"metadata": {"name": "w", "bogus": 1}},
        ["metadata.bogus"],
        {"metadata": {"name": "w"}},
    ),
    (
        "unknown fields in array items are pruned",
        {"spec": {"ports": [{"port": 1, "name": "x"}]}},
        ["spec.ports[0].name"],
        {"spec": {"ports": [{"port": 1}]}},
    ),
    (
        "map keys are kept and their values pruned",
        {"spec": {"labels": {"a": {"v": "1", "w": "2"}}}},
        ["spec.labels.a.w"],
        {"spec": {"labels": {"a": {"v": "1"}}}},
    ),
    (
        "preserve-unknown-fields keeps unknown fields but prunes inside known ones",
        {"spec": {"free": {"x": 1, "known": {"y": 2}}}},
        ["spec.free.known.y"],
        {"spec": {"free": {"x": 1, "known": {}}}},
    ),
    (
        "an object with no properties is pruned empty",
        {"spec": {"opaque": {"a": 1}}},
        ["spec.opaque.a"],
        {"spec": {"opaque": {}}},
    ),
    (
        "an embedded resource keeps its type and metadata",
        {
            "spec": {
                "template": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p", "x": 1},
                    "spec": {},
                    "y": 2,
                }
            }
        },
        ["spec.template.metadata.x", "spec.template.y"],
        {
            "spec": {
                "template": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p"},
                    "spec": {},
                }
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("obj", "paths", "after"), [p[1:] for p in PRUNE], ids=[p[0] for p in PRUNE]
)
def test_pruning_drops_and_reports_unknown_fields(
    obj: dict[str, Any], paths: list[str], after: dict[str, Any]
) -> None:
    assert prune_unknown(PRUNE_SCHEMA, obj) == paths
    assert obj == after


UNKNOWN: list[tuple[str, Kind, Callable[[], dict[str, Any]], Change, list[str]]] = [
    ("a well-formed pod has no unknown fields", POD, pod, lambda o: None, []),
    (
        "a misspelt container field is unknown",
        POD,
        pod,
        lambda o: c0(o).update(imagePullPolicyy="Always"),
        ["spec.containers[0].imagePullPolicyy"],
    ),
    (
        "a misspelt deployment field is unknown",
        DEPLOYMENT,
        deployment,
        lambda o: spec_of(o).update(replica=3),
        ["spec.replica"],
    ),
    (
        "an unknown metadata field is unknown",
        POD,
        pod,
        lambda o: o["metadata"].update(labelz={}),
        ["metadata.labelz"],
    ),
    (
        "label keys are free-form",
        POD,
        pod,
        lambda o: o["metadata"].update(labels={"anything": "x"}),
        [],
    ),
    ("an int-or-string field is not walked", SERVICE, service, lambda o: None, []),
    ("CRD schema property names are free-form", CRD, crd, lambda o: None, []),
    (
        "a custom resource's unknown fields come from its schema",
        WIDGET,
        widget,
        lambda o: spec_of(o).update(colour="red"),
        ["spec.colour"],
    ),
]


@pytest.mark.parametrize(
    ("k", "make", "change", "paths"), [u[1:] for u in UNKNOWN], ids=[u[0] for u in UNKNOWN]
)
def test_strict_field_validation_finds_unknown_fields(
    k: Kind, make: Callable[[], dict[str, Any]], change: Change, paths: list[str]
) -> None:
    obj = prepared(k, make())
    change(obj)
    before = copy.deepcopy(obj)
    assert unknown_fields(k, obj) == paths
    assert obj == before  # reporting does not prune


def test_binding_a_pod_to_a_node_is_not_a_forbidden_pod_update() -> None:
    old = prepared(POD, pod())
    bound = copy.deepcopy(old)
    bound["spec"]["nodeName"] = "pi-2"
    assert validate(POD, bound, old, subresource="binding") == []
    assert [c.field for c in validate(POD, bound, old)] == ["spec"]


def test_a_status_update_is_not_held_to_the_spec_rules() -> None:
    old = prepared(DEPLOYMENT, deployment())
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "x": "y"}}
    new["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    assert validate(DEPLOYMENT, new, old, subresource="status") == []
    assert [c.field for c in validate(DEPLOYMENT, new, old, subresource="scale")] == [
        "spec.selector"
    ]


def test_a_map_list_may_not_repeat_a_key() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "ports": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["port"],
                        "items": {
                            "type": "object",
                            "properties": {"port": {"type": "integer"}, "name": {"type": "string"}},
                        },
                    }
                },
            }
        },
    }
    k = KindRegistry().register_crd(crd(schema))[0]
    obj = {
        "metadata": meta("w"),
        "spec": {"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]},
    }
    assert validate(k, obj) == [
        Cause(DUPLICATE, 'Duplicate value: map[string]interface {}{"port":80}', "spec.ports[1]")
    ]


def test_a_remembered_valid_pod_spec_lets_no_invalid_pod_through() -> None:
    """Pod specs that passed are remembered by their bytes (issue 11): the same spec under an
    invalid name, or a spec one character away from a valid one, is still rejected."""
    pod = kind("v1", "Pod")
    spec = {"containers": [{"name": "web", "image": "nginx"}], "restartPolicy": "Always"}
    for name in ("a", "b"):
        assert validate(pod, {"metadata": {"name": name, "namespace": "default"},
                              "spec": copy.deepcopy(spec)}, None) == []
    bad_meta = validate(pod, {"metadata": {"name": "Not_A_Name", "namespace": "default"},
                              "spec": copy.deepcopy(spec)}, None)
    assert [c.field for c in bad_meta] == ["metadata.name"]
    bad_spec = {**spec, "containers": [{"name": "Web", "image": "nginx"}]}
    for _ in range(2):
        causes = validate(pod, {"metadata": {"name": "c", "namespace": "default"},
                                "spec": copy.deepcopy(bad_spec)}, None)
        assert [c.field for c in causes] == ["spec.containers[0].name"]


def test_a_spec_remembered_free_of_unknown_fields_hides_none_elsewhere() -> None:
    """Specs with no unknown field are remembered by their bytes (issue 11): the same spec
    beside an unknown field of the object, or with one of its own, is still reported."""
    pod = kind("v1", "Pod")
    spec = {"containers": [{"name": "web", "image": "nginx"}]}
    assert unknown_fields(pod, {"metadata": {"name": "a"}, "spec": copy.deepcopy(spec)}) == []
    assert unknown_fields(pod, {"metadata": {"name": "b"}, "spec": copy.deepcopy(spec)}) == []
    assert unknown_fields(pod, {"metadata": {"name": "c", "colour": "red"},
                                "spec": copy.deepcopy(spec)}) == ["metadata.colour"]
    assert unknown_fields(pod, {"metadata": {"name": "d"}, "spec": copy.deepcopy(spec),
                                "extra": 1}) == ["extra"]
    odd = {"containers": [{"name": "web", "image": "nginx", "colour": "red"}]}
    for _ in range(2):
        assert unknown_fields(pod, {"metadata": {"name": "e"}, "spec": copy.deepcopy(odd)}) \
            == ["spec.containers[0].colour"]
