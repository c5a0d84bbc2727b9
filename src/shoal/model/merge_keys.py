"""The strategic-merge-patch metadata of the built-in Kubernetes kinds.

Kubernetes tags some list fields of its Go types with ``patchStrategy:"merge"`` and a
``patchMergeKey``. Such a list is merged element by element, matching elements by the
value of the merge key (containers by ``name``, conditions by ``type``). A list of
primitives tagged ``merge`` (``metadata.finalizers``) is merged as a set. Every other
list is atomic: a patch replaces it whole.

The tables below follow the tags of k8s.io/api and k8s.io/apimachinery (ObjectMeta).
A path names the fields from the object root with list indices dropped, so
``("spec", "template", "spec", "containers", "ports")`` is the ports of every container
of a Deployment's pod template.

Only lists that a patch can reach by merging are listed: a keyed list nested inside an
atomic list (``status.containerStatuses[].volumeMounts``) is replaced with its parent, so
it never merges. Custom resources have no tags, so every lookup for them is ``None``.
The strategic-merge patch and the CRDT both read these functions, so they must agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Path = tuple[str, ...]

# metav1.ObjectMeta, wherever an object or a pod template carries metadata.
_OBJECT_META_KEYED: dict[Path, str] = {("ownerReferences",): "uid"}
_OBJECT_META_PRIMITIVE: frozenset[Path] = frozenset({("finalizers",)})

# core/v1 Container and EphemeralContainerCommon share these tags.
_CONTAINER: dict[Path, str] = {
    ("ports",): "containerPort",
    ("env",): "name",
    ("volumeMounts",): "mountPath",
    ("volumeDevices",): "devicePath",
}

_POD_SPEC_LISTS: dict[Path, str] = {
    ("volumes",): "name",  # merge,retainKeys
    ("initContainers",): "name",
    ("containers",): "name",
    ("ephemeralContainers",): "name",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
    ("topologySpreadConstraints",): "topologyKey",
    ("schedulingGates",): "name",
    ("resourceClaims",): "name",  # merge,retainKeys
    ("evictionResponders",): "name",  # alpha (EvictionRequestAPI)
}


# A generic ephemeral volume embeds a PersistentVolumeClaimTemplate, with its own ObjectMeta.
_EPHEMERAL_CLAIM_META: Path = ("volumes", "ephemeral", "volumeClaimTemplate", "metadata")


def _pod_spec() -> dict[Path, str]:
    table = dict(_POD_SPEC_LISTS)
    for containers in ("initContainers", "containers", "ephemeralContainers"):
        for sub, key in _CONTAINER.items():
            table[(containers, *sub)] = key
    for sub, key in _OBJECT_META_KEYED.items():
        table[_EPHEMERAL_CLAIM_META + sub] = key
    return table


_POD_SPEC = _pod_spec()
_POD_SPEC_PRIMITIVE: frozenset[Path] = frozenset(
    _EPHEMERAL_CLAIM_META + sub for sub in _OBJECT_META_PRIMITIVE
)

_POD_STATUS: dict[Path, str] = {
    ("conditions",): "type",
    ("hostIPs",): "ip",
    ("podIPs",): "ip",
    ("resourceClaimStatuses",): "name",  # merge,retainKeys
    # Alpha fields (DRA node-allocatable resources).
    ("nodeAllocatableResourceClaimStatuses",): "resourceClaimName",
    ("nodeAllocatableResourceClaimStatuses", "mapping"): "name",
    ("nodeAllocatableResourceClaimStatuses", "overhead"): "name",
}

_CONDITIONS: dict[Path, str] = {("conditions",): "type"}


# The kinds that embed a pod template at spec.template.
_WORKLOADS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        ("apps", "StatefulSet"),
        ("batch", "Job"),
    }
)


def _under(prefix: Path, table: Mapping[Path, str]) -> dict[Path, str]:
    return {prefix + sub: key for sub, key in table.items()}


def _under_set(prefix: Path, paths: Iterable[Path]) -> frozenset[Path]:
    return frozenset(prefix + sub for sub in paths)


def _kind_tables() -> tuple[
    dict[tuple[str, str], dict[Path, str]], dict[tuple[str, str], frozenset[Path]]
]:
    meta = _under(("metadata",), _OBJECT_META_KEYED)
    meta_primitive = _under_set(("metadata",), _OBJECT_META_PRIMITIVE)
    # A workload embeds a PodTemplateSpec (metadata + spec) at spec.template.
    template = {
        **_under(("spec", "template", "metadata"), _OBJECT_META_KEYED),
        **_under(("spec", "template", "spec"), _POD_SPEC),
    }
    template_primitive = _under_set(
        ("spec", "template", "metadata"), _OBJECT_META_PRIMITIVE
    ) | _under_set(("spec", "template", "spec"), _POD_SPEC_PRIMITIVE)
    status_conditions = _under(("status",), _CONDITIONS)

    keyed: dict[tuple[str, str], dict[Path, str]] = {
        ("", "Pod"): {**_under(("spec",), _POD_SPEC), **_under(("status",), _POD_STATUS)},
        ("", "Service"): {("spec", "ports"): "port", **status_conditions},
        ("", "Endpoints"): {},
        ("", "Node"): {("status", "conditions"): "type", ("status", "addresses"): "type"},
        ("", "Namespace"): dict(status_conditions),
        ("", "ConfigMap"): {},
        ("", "Secret"): {},
        ("", "Event"): {},
        ("", "ServiceAccount"): {("secrets",): "name"},
        ("apps", "Deployment"): {**template, **status_conditions},
        ("apps", "ReplicaSet"): {**template, **status_conditions},
        ("apps", "DaemonSet"): {**template, **status_conditions},
        ("apps", "StatefulSet"): {**template, **status_conditions},
        ("batch", "Job"): {
            **template,
            **status_conditions,
            ("spec", "scheduling", "resourceClaims"): "name",  # alpha
        },
        ("coordination.k8s.io", "Lease"): {},
        ("discovery.k8s.io", "EndpointSlice"): {},
        # Served by Shoal itself; its conditions carry no patch tags.
        ("apiextensions.k8s.io", "CustomResourceDefinition"): {},
        # Devices (issue 15): a property's desired value set on one side of a partition
        # and another's on the other side both survive the merge; so do twins.
        ("devices.shoal.dev", "DeviceModel"): {("spec", "properties"): "name"},
        ("devices.shoal.dev", "Device"): {("spec", "properties"): "name",
                                          ("status", "twins"): "propertyName"},
    }
    primitive: dict[tuple[str, str], frozenset[Path]] = {}
    for gk, table in keyed.items():
        table.update(meta)
        extra: frozenset[Path] = frozenset()
        if gk in _WORKLOADS:
            extra = template_primitive
        elif gk == ("", "Pod"):
            extra = _under_set(("spec",), _POD_SPEC_PRIMITIVE)
        elif gk == ("", "Node"):
            extra = frozenset({("spec", "podCIDRs")})
        primitive[gk] = meta_primitive | extra
    return keyed, primitive


_KEYED, _PRIMITIVE = _kind_tables()


def _group(group: str) -> str:
    # The core group is "" in apiVersion terms; accept the spelling "core" as well.
    return "" if group == "core" else group


def list_merge_key(group: str, kind: str, path: tuple[str, ...]) -> str | None:
    """The ``patchMergeKey`` of the list of maps at ``path`` in a ``group``/``kind`` object.

    ``None`` means the list is not merged by key: it is atomic, a list of primitives, not
    a list at all, or the kind is unknown (a custom resource).
    """
    table = _KEYED.get((_group(group), kind))
    if table is None:
        return None
    return table.get(path)


def is_merging_primitive_list(group: str, kind: str, path: tuple[str, ...]) -> bool:
    """Whether the list of primitives at ``path`` merges as a set (``patchStrategy:"merge"``)."""
    paths = _PRIMITIVE.get((_group(group), kind))
    return paths is not None and path in paths


def is_merging_list(group: str, kind: str, path: tuple[str, ...]) -> bool:
    """Whether the list at ``path`` is merged at all (keyed or as a set of primitives)."""
    return list_merge_key(group, kind, path) is not None or is_merging_primitive_list(
        group, kind, path
    )


def known_kind(group: str, kind: str) -> bool:
    """Whether strategic-merge metadata exists for the kind (false for custom resources)."""
    return (_group(group), kind) in _KEYED
