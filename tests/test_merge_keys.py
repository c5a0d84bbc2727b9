"""The merge keys of the built-in kinds follow the patch tags of k8s.io/api."""

from __future__ import annotations

import pytest

from shoal.model.merge_keys import (
    is_merging_list,
    is_merging_primitive_list,
    known_kind,
    list_merge_key,
)

WORKLOADS = [
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "DaemonSet"),
    ("apps", "StatefulSet"),
    ("batch", "Job"),
]

# (case name, group, kind, path, merge key)
KEYED_CASES = [
    ("pod containers merge by name", "", "Pod", ("spec", "containers"), "name"),
    ("pod init containers merge by name", "", "Pod", ("spec", "initContainers"), "name"),
    (
        "pod ephemeral containers merge by name",
        "",
        "Pod",
        ("spec", "ephemeralContainers"),
        "name",
    ),
    (
        "container ports merge by containerPort",
        "",
        "Pod",
        ("spec", "containers", "ports"),
        "containerPort",
    ),
    ("container env merges by name", "", "Pod", ("spec", "containers", "env"), "name"),
    (
        "init container env merges by name",
        "",
        "Pod",
        ("spec", "initContainers", "env"),
        "name",
    ),
    (
        "volume mounts merge by mountPath",
        "",
        "Pod",
        ("spec", "containers", "volumeMounts"),
        "mountPath",
    ),
    (
        "volume devices merge by devicePath",
        "",
        "Pod",
        ("spec", "containers", "volumeDevices"),
        "devicePath",
    ),
    (
        "ephemeral container ports merge by containerPort",
        "",
        "Pod",
        ("spec", "ephemeralContainers", "ports"),
        "containerPort",
    ),
    ("pod volumes merge by name", "", "Pod", ("spec", "volumes"), "name"),
    ("image pull secrets merge by name", "", "Pod", ("spec", "imagePullSecrets"), "name"),
    ("host aliases merge by ip", "", "Pod", ("spec", "hostAliases"), "ip"),
    (
        "topology spread constraints merge by topologyKey",
        "",
        "Pod",
        ("spec", "topologySpreadConstraints"),
        "topologyKey",
    ),
    ("scheduling gates merge by name", "", "Pod", ("spec", "schedulingGates"), "name"),
    ("pod resource claims merge by name", "", "Pod", ("spec", "resourceClaims"), "name"),
    ("pod conditions merge by type", "", "Pod", ("status", "conditions"), "type"),
    ("pod IPs merge by ip", "", "Pod", ("status", "podIPs"), "ip"),
    ("host IPs merge by ip", "", "Pod", ("status", "hostIPs"), "ip"),
    (
        "resource claim statuses merge by name",
        "",
        "Pod",
        ("status", "resourceClaimStatuses"),
        "name",
    ),
    ("owner references merge by uid", "", "Pod", ("metadata", "ownerReferences"), "uid"),
    (
        "an ephemeral volume claim template's owner references merge by uid",
        "",
        "Pod",
        ("spec", "volumes", "ephemeral", "volumeClaimTemplate", "metadata", "ownerReferences"),
        "uid",
    ),
    ("service ports merge by port", "", "Service", ("spec", "ports"), "port"),
    ("service conditions merge by type", "", "Service", ("status", "conditions"), "type"),
    ("node conditions merge by type", "", "Node", ("status", "conditions"), "type"),
    ("node addresses merge by type", "", "Node", ("status", "addresses"), "type"),
    (
        "namespace conditions merge by type",
        "",
        "Namespace",
        ("status", "conditions"),
        "type",
    ),
    ("service account secrets merge by name", "", "ServiceAccount", ("secrets",), "name"),
    (
        "config map owner references merge by uid",
        "",
        "ConfigMap",
        ("metadata", "ownerReferences"),
        "uid",
    ),
    (
        "lease owner references merge by uid",
        "coordination.k8s.io",
        "Lease",
        ("metadata", "ownerReferences"),
        "uid",
    ),
    (
        "the core group may be spelled core",
        "core",
        "Pod",
        ("spec", "containers"),
        "name",
    ),
    ("job conditions merge by type", "batch", "Job", ("status", "conditions"), "type"),
]

# (case name, group, kind, path): lists that a patch replaces whole.
ATOMIC_CASES = [
    ("tolerations are atomic", "", "Pod", ("spec", "tolerations")),
    ("container args are atomic", "", "Pod", ("spec", "containers", "args")),
    ("container command is atomic", "", "Pod", ("spec", "containers", "command")),
    ("envFrom is atomic", "", "Pod", ("spec", "containers", "envFrom")),
    ("readiness gates are atomic", "", "Pod", ("spec", "readinessGates")),
    ("container statuses are atomic", "", "Pod", ("status", "containerStatuses")),
    (
        "lists inside an atomic list never merge",
        "",
        "Pod",
        ("status", "containerStatuses", "volumeMounts"),
    ),
    ("node taints are atomic", "", "Node", ("spec", "taints")),
    ("node images are atomic", "", "Node", ("status", "images")),
    ("namespace spec finalizers are atomic", "", "Namespace", ("spec", "finalizers")),
    ("endpoint subsets are atomic", "", "Endpoints", ("subsets",)),
    ("endpoint slice endpoints are atomic", "discovery.k8s.io", "EndpointSlice", ("endpoints",)),
    ("endpoint slice ports are atomic", "discovery.k8s.io", "EndpointSlice", ("ports",)),
    ("service external IPs are atomic", "", "Service", ("spec", "externalIPs")),
    (
        "load balancer ingress is atomic",
        "",
        "Service",
        ("status", "loadBalancer", "ingress"),
    ),
    ("service account image pull secrets are atomic", "", "ServiceAccount", ("imagePullSecrets",)),
    (
        "stateful set volume claim templates are atomic",
        "apps",
        "StatefulSet",
        ("spec", "volumeClaimTemplates"),
    ),
    (
        "a pod path is not a deployment path",
        "apps",
        "Deployment",
        ("spec", "containers"),
    ),
    ("a path that is not a list has no key", "", "Pod", ("spec", "nodeName")),
    ("the empty path has no key", "", "Pod", ()),
    ("custom resources have no merge keys", "example.com", "Widget", ("spec", "containers")),
    (
        "custom resource conditions have no merge key",
        "example.com",
        "Widget",
        ("status", "conditions"),
    ),
    (
        "custom resources have no owner reference key",
        "example.com",
        "Widget",
        ("metadata", "ownerReferences"),
    ),
    (
        "a kind is looked up in its own group",
        "apps",
        "Pod",
        ("spec", "containers"),
    ),
]


@pytest.mark.parametrize(
    ("group", "kind", "path", "key"),
    [c[1:] for c in KEYED_CASES],
    ids=[c[0] for c in KEYED_CASES],
)
def test_keyed_lists(group: str, kind: str, path: tuple[str, ...], key: str) -> None:
    assert list_merge_key(group, kind, path) == key
    assert is_merging_list(group, kind, path)
    assert not is_merging_primitive_list(group, kind, path)


@pytest.mark.parametrize(
    ("group", "kind", "path"),
    [c[1:] for c in ATOMIC_CASES],
    ids=[c[0] for c in ATOMIC_CASES],
)
def test_atomic_lists(group: str, kind: str, path: tuple[str, ...]) -> None:
    assert list_merge_key(group, kind, path) is None
    assert not is_merging_primitive_list(group, kind, path)
    assert not is_merging_list(group, kind, path)


POD_TEMPLATE_CASES = [
    (("containers",), "name"),
    (("initContainers",), "name"),
    (("containers", "ports"), "containerPort"),
    (("containers", "env"), "name"),
    (("containers", "volumeMounts"), "mountPath"),
    (("initContainers", "volumeDevices"), "devicePath"),
    (("volumes",), "name"),
    (("imagePullSecrets",), "name"),
    (("hostAliases",), "ip"),
    (("topologySpreadConstraints",), "topologyKey"),
    (("tolerations",), None),
    (("containers", "args"), None),
]


@pytest.mark.parametrize(("group", "kind"), WORKLOADS, ids=[k for _, k in WORKLOADS])
@pytest.mark.parametrize(
    ("sub", "key"), POD_TEMPLATE_CASES, ids=[".".join(s) for s, _ in POD_TEMPLATE_CASES]
)
def test_a_workload_pod_template_has_the_pod_spec_keys(
    group: str, kind: str, sub: tuple[str, ...], key: str | None
) -> None:
    assert list_merge_key(group, kind, ("spec", "template", "spec", *sub)) == key
    assert list_merge_key("", "Pod", ("spec", *sub)) == key


@pytest.mark.parametrize(("group", "kind"), WORKLOADS, ids=[k for _, k in WORKLOADS])
def test_a_workload_has_status_conditions_and_template_metadata(group: str, kind: str) -> None:
    assert list_merge_key(group, kind, ("status", "conditions")) == "type"
    assert list_merge_key(group, kind, ("spec", "template", "metadata", "ownerReferences")) == "uid"
    assert is_merging_primitive_list(group, kind, ("spec", "template", "metadata", "finalizers"))


PRIMITIVE_CASES = [
    ("object finalizers merge as a set", "", "ConfigMap", ("metadata", "finalizers")),
    ("pod finalizers merge as a set", "", "Pod", ("metadata", "finalizers")),
    ("deployment finalizers merge as a set", "apps", "Deployment", ("metadata", "finalizers")),
    ("node pod CIDRs merge as a set", "", "Node", ("spec", "podCIDRs")),
    (
        "pod template finalizers merge as a set",
        "batch",
        "Job",
        ("spec", "template", "metadata", "finalizers"),
    ),
]


@pytest.mark.parametrize(
    ("group", "kind", "path"),
    [c[1:] for c in PRIMITIVE_CASES],
    ids=[c[0] for c in PRIMITIVE_CASES],
)
def test_merging_primitive_lists(group: str, kind: str, path: tuple[str, ...]) -> None:
    assert is_merging_primitive_list(group, kind, path)
    assert is_merging_list(group, kind, path)
    assert list_merge_key(group, kind, path) is None


@pytest.mark.parametrize(
    ("group", "kind", "known"),
    [
        ("", "Pod", True),
        ("apps", "StatefulSet", True),
        ("discovery.k8s.io", "EndpointSlice", True),
        ("apiextensions.k8s.io", "CustomResourceDefinition", True),
        ("example.com", "Widget", False),
        ("", "Widget", False),
    ],
    ids=[
        "pods are known",
        "stateful sets are known",
        "endpoint slices are known",
        "custom resource definitions are known",
        "a custom resource is unknown",
        "an unknown core kind is unknown",
    ],
)
def test_known_kinds(group: str, kind: str, known: bool) -> None:
    assert known_kind(group, kind) is known


def test_custom_resources_never_merge_finalizers_as_a_set() -> None:
    assert not is_merging_primitive_list("example.com", "Widget", ("metadata", "finalizers"))
