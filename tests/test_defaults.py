"""Defaulting fills in what the Kubernetes apiserver fills in, and only that."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.model.defaults import (
    apply_defaults,
    apply_job_selector,
    image_pull_policy,
    job_selector_labels,
)
from shoal.model.kinds import Kind, KindRegistry

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
DEPLOYMENT = kind("apps/v1", "Deployment")
REPLICASET = kind("apps/v1", "ReplicaSet")
DAEMONSET = kind("apps/v1", "DaemonSet")
STATEFULSET = kind("apps/v1", "StatefulSet")
JOB = kind("batch/v1", "Job")
LEASE = kind("coordination.k8s.io/v1", "Lease")
SLICE = kind("discovery.k8s.io/v1", "EndpointSlice")
CRD = kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")

WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "default": {},
            "properties": {
                "replicas": {"type": "integer", "default": 1},
                "mode": {"type": "string", "default": "fast"},
                "note": {"type": "string", "nullable": True, "default": "n"},
                "ports": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"protocol": {"type": "string", "default": "TCP"}},
                    },
                },
                "limits": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"unit": {"type": "string", "default": "m"}},
                    },
                },
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


def widget_kind(schema: dict[str, Any] = WIDGET_SCHEMA) -> Kind:
    crd = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
    return KindRegistry().register_crd(crd)[0]


WIDGET = widget_kind()


def at(obj: Any, path: str) -> Any:
    """The value at a dotted path; ``[n]`` indexes lists. Missing gives KeyError."""
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            obj = obj[int(part[1:-1])]
        elif part:
            obj = obj[part]
    return obj


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "nginx:1.25", **extra}


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [container()], **spec},
    }


def template(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [container()], **spec},
    }


def workload(api_kind: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": api_kind,
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(), **spec},
    }


def job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default"},
        "spec": {"template": template(restartPolicy="Never"), **spec},
    }


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec},
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }


# (case, kind, object, path, expected value after defaulting)
CASES: list[tuple[str, Kind, Callable[[], dict[str, Any]], str, Any]] = [
    ("a pod restarts always", POD, pod, "spec.restartPolicy", "Always"),
    ("a pod uses cluster-first DNS", POD, pod, "spec.dnsPolicy", "ClusterFirst"),
    ("a pod goes to the default scheduler", POD, pod, "spec.schedulerName", "default-scheduler"),
    ("a pod gets thirty seconds to stop", POD, pod, "spec.terminationGracePeriodSeconds", 30),
    ("a pod gets an empty security context", POD, pod, "spec.securityContext", {}),
    ("a pod enables service links", POD, pod, "spec.enableServiceLinks", True),
    (
        "a container writes its termination message to the default path",
        POD,
        pod,
        "spec.containers[0].terminationMessagePath",
        "/dev/termination-log",
    ),
    (
        "a container reads its termination message from a file",
        POD,
        pod,
        "spec.containers[0].terminationMessagePolicy",
        "File",
    ),
    (
        "a tagged image is pulled if not present",
        POD,
        pod,
        "spec.containers[0].imagePullPolicy",
        "IfNotPresent",
    ),
    (
        "a container port is TCP",
        POD,
        lambda: pod(containers=[container(ports=[{"containerPort": 80}])]),
        "spec.containers[0].ports[0].protocol",
        "TCP",
    ),
    (
        "a pod's requests default to its limits",
        POD,
        lambda: pod(containers=[container(resources={"limits": {"cpu": "1", "memory": "1Gi"}})]),
        "spec.containers[0].resources.requests",
        {"cpu": "1", "memory": "1Gi"},
    ),
    (
        "a request that is given is not replaced by the limit",
        POD,
        lambda: pod(
            containers=[container(resources={"limits": {"cpu": "1"}, "requests": {"cpu": "100m"}})]
        ),
        "spec.containers[0].resources.requests",
        {"cpu": "100m"},
    ),
    (
        "a host-network pod's ports default their host port",
        POD,
        lambda: pod(hostNetwork=True, containers=[container(ports=[{"containerPort": 8080}])]),
        "spec.containers[0].ports[0].hostPort",
        8080,
    ),
    (
        "a liveness probe gets Kubernetes' timings",
        POD,
        lambda: pod(containers=[container(livenessProbe={"httpGet": {"port": 80}})]),
        "spec.containers[0].livenessProbe",
        {
            "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
    ),
    (
        "a volume without a source is an emptyDir",
        POD,
        lambda: pod(volumes=[{"name": "scratch"}]),
        "spec.volumes[0].emptyDir",
        {},
    ),
    (
        "a secret volume is readable by its owner and group",
        POD,
        lambda: pod(volumes=[{"name": "s", "secret": {"secretName": "x"}}]),
        "spec.volumes[0].secret.defaultMode",
        0o644,
    ),
    (
        "an env field reference is to the v1 API",
        POD,
        lambda: pod(
            containers=[
                container(
                    env=[{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
                )
            ]
        ),
        "spec.containers[0].env[0].valueFrom.fieldRef.apiVersion",
        "v1",
    ),
    (
        "an explicit restart policy is kept",
        POD,
        lambda: pod(restartPolicy="Never"),
        "spec.restartPolicy",
        "Never",
    ),
    (
        "an explicit zero grace period is kept",
        POD,
        lambda: pod(terminationGracePeriodSeconds=0),
        "spec.terminationGracePeriodSeconds",
        0,
    ),
    (
        "an empty-string policy counts as unset, as in Go",
        POD,
        lambda: pod(dnsPolicy=""),
        "spec.dnsPolicy",
        "ClusterFirst",
    ),
    (
        "a deployment runs one replica",
        DEPLOYMENT,
        lambda: workload("Deployment"),
        "spec.replicas",
        1,
    ),
    (
        "a deployment scaled to zero stays at zero",
        DEPLOYMENT,
        lambda: workload("Deployment", replicas=0),
        "spec.replicas",
        0,
    ),
    (
        "a deployment rolls 25% at a time",
        DEPLOYMENT,
        lambda: workload("Deployment"),
        "spec.strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    ),
    (
        "a recreate deployment gets no rolling update parameters",
        DEPLOYMENT,
        lambda: workload("Deployment", strategy={"type": "Recreate"}),
        "spec.strategy",
        {"type": "Recreate"},
    ),
    (
        "a deployment keeps ten old replica sets",
        DEPLOYMENT,
        lambda: workload("Deployment"),
        "spec.revisionHistoryLimit",
        10,
    ),
    (
        "a deployment has ten minutes to progress",
        DEPLOYMENT,
        lambda: workload("Deployment"),
        "spec.progressDeadlineSeconds",
        600,
    ),
    (
        "a deployment's pod template is defaulted",
        DEPLOYMENT,
        lambda: workload("Deployment"),
        "spec.template.spec.restartPolicy",
        "Always",
    ),
    (
        "a replica set runs one replica",
        REPLICASET,
        lambda: workload("ReplicaSet"),
        "spec.replicas",
        1,
    ),
    (
        "a daemon set replaces one pod at a time without surge",
        DAEMONSET,
        lambda: workload("DaemonSet"),
        "spec.updateStrategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
    ),
    (
        "a stateful set starts its pods in order",
        STATEFULSET,
        lambda: workload("StatefulSet"),
        "spec.podManagementPolicy",
        "OrderedReady",
    ),
    (
        "a stateful set rolls from partition zero",
        STATEFULSET,
        lambda: workload("StatefulSet"),
        "spec.updateStrategy",
        {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
    ),
    (
        "a stateful set retains its claims",
        STATEFULSET,
        lambda: workload("StatefulSet"),
        "spec.persistentVolumeClaimRetentionPolicy",
        {"whenDeleted": "Retain", "whenScaled": "Retain"},
    ),
    (
        "a stateful set's claim templates are filesystems",
        STATEFULSET,
        lambda: workload(
            "StatefulSet", volumeClaimTemplates=[{"metadata": {"name": "d"}, "spec": {}}]
        ),
        "spec.volumeClaimTemplates[0].spec.volumeMode",
        "Filesystem",
    ),
    ("a job completes once", JOB, job, "spec.completions", 1),
    ("a job runs one pod at a time", JOB, job, "spec.parallelism", 1),
    ("a job retries six times", JOB, job, "spec.backoffLimit", 6),
    ("a job is not indexed", JOB, job, "spec.completionMode", "NonIndexed"),
    ("a job is not suspended", JOB, job, "spec.suspend", False),
    (
        "a job replaces pods once terminating or failed",
        JOB,
        job,
        "spec.podReplacementPolicy",
        "TerminatingOrFailed",
    ),
    (
        "a job with a pod failure policy replaces only failed pods",
        JOB,
        lambda: job(podFailurePolicy={"rules": []}),
        "spec.podReplacementPolicy",
        "Failed",
    ),
    (
        "a job with a per-index backoff has no global limit",
        JOB,
        lambda: job(backoffLimitPerIndex=1, completionMode="Indexed", completions=3),
        "spec.backoffLimit",
        2147483647,
    ),
    ("a job takes its labels from its template", JOB, job, "metadata.labels", {"app": "web"}),
    ("a service is a cluster IP", SERVICE, service, "spec.type", "ClusterIP"),
    ("a service has no session affinity", SERVICE, service, "spec.sessionAffinity", "None"),
    ("a service port is TCP", SERVICE, service, "spec.ports[0].protocol", "TCP"),
    ("a service targets its own port", SERVICE, service, "spec.ports[0].targetPort", 80),
    (
        "a named target port is kept",
        SERVICE,
        lambda: service(ports=[{"port": 80, "targetPort": "http"}]),
        "spec.ports[0].targetPort",
        "http",
    ),
    (
        "a service routes internal traffic cluster-wide",
        SERVICE,
        service,
        "spec.internalTrafficPolicy",
        "Cluster",
    ),
    ("a service is single-stack", SERVICE, service, "spec.ipFamilyPolicy", "SingleStack"),
    ("a service is IPv4", SERVICE, service, "spec.ipFamilies", ["IPv4"]),
    (
        "a service with an IPv6 cluster IP is IPv6",
        SERVICE,
        lambda: service(clusterIP="fd00::10"),
        "spec.ipFamilies",
        ["IPv6"],
    ),
    (
        "a headless service without a selector asks for dual stack",
        SERVICE,
        lambda: service(clusterIP="None", selector=None),
        "spec.ipFamilyPolicy",
        "RequireDualStack",
    ),
    (
        "a node port service routes external traffic cluster-wide",
        SERVICE,
        lambda: service(type="NodePort"),
        "spec.externalTrafficPolicy",
        "Cluster",
    ),
    (
        "a load balancer allocates node ports",
        SERVICE,
        lambda: service(type="LoadBalancer"),
        "spec.allocateLoadBalancerNodePorts",
        True,
    ),
    (
        "client IP affinity sticks for three hours",
        SERVICE,
        lambda: service(sessionAffinity="ClientIP"),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        10800,
    ),
    (
        "a namespace is finalized by kubernetes",
        NAMESPACE,
        lambda: {"metadata": {"name": "team"}},
        "spec.finalizers",
        ["kubernetes"],
    ),
    (
        "a namespace whose finalizers were emptied stays empty",
        NAMESPACE,
        lambda: {"metadata": {"name": "team"}, "spec": {"finalizers": []}},
        "spec.finalizers",
        [],
    ),
    (
        "a namespace is active",
        NAMESPACE,
        lambda: {"metadata": {"name": "team"}},
        "status.phase",
        "Active",
    ),
    (
        "a terminating namespace stays terminating",
        NAMESPACE,
        lambda: {"metadata": {"name": "team"}, "status": {"phase": "Terminating"}},
        "status.phase",
        "Terminating",
    ),
    (
        "a namespace is labelled with its name",
        NAMESPACE,
        lambda: {"metadata": {"name": "team"}},
        "metadata.labels",
        {"kubernetes.io/metadata.name": "team"},
    ),
    ("a secret is opaque", SECRET, lambda: {"metadata": {"name": "s"}}, "type", "Opaque"),
    (
        "a secret's string data is merged into its data",
        SECRET,
        lambda: {"metadata": {"name": "s"}, "data": {"a": "QQ=="}, "stringData": {"b": "hi"}},
        "data",
        {"a": "QQ==", "b": base64.b64encode(b"hi").decode()},
    ),
    (
        "a node can allocate its whole capacity",
        NODE,
        lambda: {"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "4"}}},
        "status.allocatable",
        {"cpu": "4"},
    ),
    (
        "an endpoints port is TCP",
        ENDPOINTS,
        lambda: {
            "metadata": {"name": "e"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}],
        },
        "subsets[0].ports[0].protocol",
        "TCP",
    ),
    (
        "an endpoint slice port is TCP and unnamed",
        SLICE,
        lambda: {"metadata": {"name": "e"}, "addressType": "IPv4", "ports": [{"port": 80}]},
        "ports[0]",
        {"port": 80, "name": "", "protocol": "TCP"},
    ),
    ("a CRD needs no conversion", CRD, crd, "spec.conversion", {"strategy": "None"}),
    ("a CRD's singular is its lower-case kind", CRD, crd, "spec.names.singular", "widget"),
    ("a CRD's list kind is its kind and List", CRD, crd, "spec.names.listKind", "WidgetList"),
    (
        "a custom resource gets its schema's default spec",
        WIDGET,
        lambda: {"metadata": {"name": "w"}},
        "spec.replicas",
        1,
    ),
    (
        "a custom resource's given value beats the default",
        WIDGET,
        lambda: {"metadata": {"name": "w"}, "spec": {"mode": "slow"}},
        "spec.mode",
        "slow",
    ),
    (
        "a null in a non-nullable field takes the default",
        WIDGET,
        lambda: {"metadata": {"name": "w"}, "spec": {"replicas": None}},
        "spec.replicas",
        1,
    ),
    (
        "a null in a nullable field stays null",
        WIDGET,
        lambda: {"metadata": {"name": "w"}, "spec": {"note": None}},
        "spec.note",
        None,
    ),
    (
        "array items get their defaults",
        WIDGET,
        lambda: {"metadata": {"name": "w"}, "spec": {"ports": [{}, {"protocol": "UDP"}]}},
        "spec.ports",
        [{"protocol": "TCP"}, {"protocol": "UDP"}],
    ),
    (
        "map values get their defaults",
        WIDGET,
        lambda: {"metadata": {"name": "w"}, "spec": {"limits": {"cpu": {}}}},
        "spec.limits.cpu.unit",
        "m",
    ),
]


@pytest.mark.parametrize(
    ("k", "make", "path", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_defaulting_fills_in_what_kubernetes_fills_in(
    k: Kind, make: Callable[[], dict[str, Any]], path: str, expected: Any
) -> None:
    obj = make()
    apply_defaults(k, obj)
    assert at(obj, path) == expected


@pytest.mark.parametrize(
    ("k", "make", "path", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_defaulting_twice_changes_nothing(
    k: Kind, make: Callable[[], dict[str, Any]], path: str, expected: Any
) -> None:
    once = make()
    apply_defaults(k, once)
    twice = copy.deepcopy(once)
    apply_defaults(k, twice)
    assert twice == once


# (case, kind, object, path that must stay absent)
ABSENT: list[tuple[str, Kind, Callable[[], dict[str, Any]], str]] = [
    (
        "a template's requests do not default to its limits",
        DEPLOYMENT,
        lambda: workload(
            "Deployment",
            template={
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container(resources={"limits": {"cpu": "1"}})]},
            },
        ),
        "spec.template.spec.containers[0].resources.requests",
    ),
    (
        "a template does not get service links, only pods do",
        DEPLOYMENT,
        lambda: workload("Deployment"),
        "spec.template.spec.enableServiceLinks",
    ),
    (
        "no not-ready tolerations are added, that is an admission plugin",
        POD,
        pod,
        "spec.tolerations",
    ),
    ("a job's manual selector stays unset", JOB, job, "spec.manualSelector"),
    ("a job without a uid yet gets no selector", JOB, job, "spec.selector"),
    (
        "a job given parallelism only keeps completions unset",
        JOB,
        lambda: job(parallelism=3),
        "spec.completions",
    ),
    (
        "a secret's string data is not stored",
        SECRET,
        lambda: {"stringData": {"a": "b"}},
        "stringData",
    ),
    (
        "a service without client IP affinity has no affinity config",
        SERVICE,
        lambda: service(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 5}}),
        "spec.sessionAffinityConfig",
    ),
    (
        "an external name service gets no IP families",
        SERVICE,
        lambda: service(type="ExternalName", externalName="example.com"),
        "spec.ipFamilies",
    ),
    (
        "an external name service gets no internal traffic policy",
        SERVICE,
        lambda: service(type="ExternalName", externalName="example.com"),
        "spec.internalTrafficPolicy",
    ),
    (
        "a cluster IP service gets no external traffic policy",
        SERVICE,
        service,
        "spec.externalTrafficPolicy",
    ),
    (
        "a custom resource field without a default stays absent",
        WIDGET,
        lambda: {"metadata": {"name": "w"}},
        "status",
    ),
    (
        "a null without a default is dropped from a non-nullable field",
        WIDGET,
        lambda: {"metadata": {"name": "w"}, "spec": {"limits": None}},
        "spec.limits",
    ),
]


@pytest.mark.parametrize(("k", "make", "path"), [c[1:] for c in ABSENT], ids=[c[0] for c in ABSENT])
def test_defaulting_leaves_alone_what_kubernetes_leaves_alone(
    k: Kind, make: Callable[[], dict[str, Any]], path: str
) -> None:
    obj = make()
    apply_defaults(k, obj)
    with pytest.raises((KeyError, IndexError)):
        at(obj, path)


@pytest.mark.parametrize(
    "k",
    [CONFIGMAP, LEASE, kind("v1", "Event"), kind("v1", "ServiceAccount")],
    ids=lambda k: f"a {k.kind} has no defaults",
)
def test_kinds_without_defaulters_are_left_unchanged(k: Kind) -> None:
    obj = {"metadata": {"name": "x", "namespace": "default"}, "data": {"a": "b"}}
    before = copy.deepcopy(obj)
    apply_defaults(k, obj)
    assert obj == before


PULL_POLICIES = [
    ("an untagged image is always pulled", "nginx", "Always"),
    ("a latest image is always pulled", "nginx:latest", "Always"),
    ("a tagged image is pulled if not present", "nginx:1.25", "IfNotPresent"),
    ("a registry port is not a tag", "registry:5000/nginx", "Always"),
    ("a tag after a registry port is a tag", "registry:5000/nginx:1.0", "IfNotPresent"),
    (
        "an image pinned by digest is pulled if not present",
        "nginx@sha256:" + "a" * 64,
        "IfNotPresent",
    ),
    ("a latest tag with a digest is always pulled", "nginx:latest@sha256:" + "a" * 64, "Always"),
    ("an empty image is pulled if not present", "", "IfNotPresent"),
]


@pytest.mark.parametrize(
    ("image", "policy"), [c[1:] for c in PULL_POLICIES], ids=[c[0] for c in PULL_POLICIES]
)
def test_the_pull_policy_follows_the_image_tag(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy
    p = pod(containers=[container(image=image)])
    apply_defaults(POD, p)
    assert p["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_an_explicit_pull_policy_is_kept() -> None:
    p = pod(containers=[container(image="nginx", imagePullPolicy="Never")])
    apply_defaults(POD, p)
    assert p["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_the_job_selector_labels_carry_the_uid_and_the_name_in_both_spellings() -> None:
    assert job_selector_labels("u-1", "pi") == {
        "batch.kubernetes.io/controller-uid": "u-1",
        "batch.kubernetes.io/job-name": "pi",
        "controller-uid": "u-1",
        "job-name": "pi",
    }


def test_a_generated_job_selector_selects_the_uid_and_labels_the_template() -> None:
    j = job()
    j["metadata"].pop("labels", None)
    j["spec"]["template"]["metadata"]["labels"] = {"app": "web"}
    apply_defaults(JOB, j)
    apply_job_selector(j, "u-1")
    assert j["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert j["spec"]["template"]["metadata"]["labels"] == {
        "app": "web",
        **job_selector_labels("u-1", "pi"),
    }
    # The job took the template's labels before the generated ones were added.
    assert j["metadata"]["labels"] == {"app": "web"}


def test_a_job_without_labels_shows_the_generated_ones() -> None:
    j = job(template={"spec": {"containers": [container()], "restartPolicy": "Never"}})
    apply_defaults(JOB, j)
    apply_job_selector(j, "u-1")
    assert j["metadata"]["labels"] == job_selector_labels("u-1", "pi")


def test_a_manual_job_selector_is_left_to_the_user() -> None:
    j = job(manualSelector=True, selector={"matchLabels": {"app": "web"}})
    apply_job_selector(j, "u-1")
    assert j["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert "controller-uid" not in j["spec"]["template"]["metadata"]["labels"]


# Random, partly filled pod specs: defaulting any of them twice equals defaulting once.
_maybe_str = st.one_of(st.none(), st.just(""), st.sampled_from(["Always", "Never", "x"]))
_containers = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=5)},
        optional={
            "image": st.sampled_from(["nginx", "nginx:1", "a/b:latest", ""]),
            "imagePullPolicy": _maybe_str,
            "ports": st.lists(
                st.fixed_dictionaries(
                    {"containerPort": st.integers(0, 70000)},
                    optional={"protocol": _maybe_str, "hostPort": st.integers(0, 10)},
                ),
                max_size=2,
            ),
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "limits": st.dictionaries(st.sampled_from(["cpu", "memory"]), st.just("1")),
                    "requests": st.dictionaries(st.sampled_from(["cpu"]), st.just("2")),
                },
            ),
            "livenessProbe": st.fixed_dictionaries(
                {}, optional={"periodSeconds": st.integers(0, 3)}
            ),
        },
    ),
    max_size=3,
)
_pod_specs = st.fixed_dictionaries(
    {},
    optional={
        "containers": _containers,
        "initContainers": _containers,
        "restartPolicy": _maybe_str,
        "hostNetwork": st.booleans(),
        "terminationGracePeriodSeconds": st.one_of(st.none(), st.integers(-1, 60)),
        "volumes": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=3)},
                optional={"secret": st.just({}), "hostPath": st.just({"path": "/x"})},
            ),
            max_size=2,
        ),
    },
)


@given(_pod_specs, st.sampled_from([POD, DEPLOYMENT, JOB, DAEMONSET, STATEFULSET]))
def test_defaulting_any_pod_spec_twice_equals_defaulting_it_once(
    spec: dict[str, Any], k: Kind
) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "x"}}
    if k is POD:
        obj["spec"] = spec
    else:
        obj["spec"] = {"template": {"spec": spec}}
    apply_defaults(k, obj)
    once = copy.deepcopy(obj)
    apply_defaults(k, obj)
    assert obj == once


@given(
    st.recursive(
        st.one_of(st.none(), st.integers(), st.text(max_size=3)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(["spec", "replicas", "ports", "mode", "limits", "x"]),
                inner,
                max_size=3,
            ),
        ),
        max_leaves=10,
    )
)
def test_schema_defaulting_any_custom_resource_twice_equals_defaulting_it_once(spec: Any) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "w"}, "spec": spec}
    apply_defaults(WIDGET, obj)
    once = copy.deepcopy(obj)
    apply_defaults(WIDGET, obj)
    assert obj == once


def test_a_job_with_a_uid_gets_its_selector_when_defaulted() -> None:
    j = job()
    j["metadata"]["uid"] = "u-1"
    apply_defaults(JOB, j)
    assert j["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert j["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "pi"


def test_generating_a_job_selector_keeps_what_the_user_wrote() -> None:
    j = job(selector={"matchLabels": {"app": "web"}})
    j["spec"]["template"]["metadata"]["labels"]["job-name"] = "mine"
    apply_job_selector(j, "u-1")
    assert j["spec"]["selector"] == {
        "matchLabels": {"app": "web", "batch.kubernetes.io/controller-uid": "u-1"}
    }
    assert j["spec"]["template"]["metadata"]["labels"]["job-name"] == "mine"
    once = copy.deepcopy(j)
    apply_job_selector(j, "u-1")
    assert j == once


def test_a_volume_is_an_empty_dir_only_when_every_source_it_names_is_null() -> None:
    obj = pod(volumes=[{"name": "none"}, {"name": "null", "hostPath": None},
                       {"name": "nfs", "nfs": {"server": "s", "path": "/"}, "hostPath": None},
                       {"name": "other", "notASource": {}}])
    apply_defaults(POD, obj)
    assert ["emptyDir" in v for v in obj["spec"]["volumes"]] == [True, True, False, True]
