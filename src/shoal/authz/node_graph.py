"""What the pods bound to a node reference: the Secrets, ConfigMaps, PersistentVolumeClaims
and ServiceAccounts a kubelet must read to run them (Kubernetes' node authorizer graph,
computed from the pods on demand rather than kept as a graph)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Resource plurals of the objects a pod can reference.
SECRETS = "secrets"
CONFIGMAPS = "configmaps"
PVCS = "persistentvolumeclaims"
SERVICEACCOUNTS = "serviceaccounts"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _named(value: Any, key: str = "name") -> str:
    name = _dict(value).get(key)
    return name if isinstance(name, str) else ""


def pods_bound_to(reader_pods: list[dict[str, Any]], node: str) -> Iterator[dict[str, Any]]:
    for pod in reader_pods:
        if _dict(pod.get("spec")).get("nodeName") == node:
            yield pod


def _volume_refs(pod_name: str, volume: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "secret" in volume:
        yield SECRETS, _named(volume["secret"], "secretName")
    if "configMap" in volume:
        yield CONFIGMAPS, _named(volume["configMap"])
    if "persistentVolumeClaim" in volume:
        yield PVCS, _named(volume["persistentVolumeClaim"], "claimName")
    if "ephemeral" in volume:  # the claim a generic ephemeral volume creates
        yield PVCS, f"{pod_name}-{_named(volume)}"
    for source in _list(_dict(volume.get("projected")).get("sources")):
        source = _dict(source)
        if "secret" in source:
            yield SECRETS, _named(source["secret"])
        if "configMap" in source:
            yield CONFIGMAPS, _named(source["configMap"])
    # Volume plugins that name a Secret for their credentials.
    for plugin, field in (("csi", "nodePublishSecretRef"), ("cephfs", "secretRef"),
                          ("rbd", "secretRef"), ("iscsi", "secretRef"),
                          ("flexVolume", "secretRef"), ("scaleIO", "secretRef"),
                          ("storageos", "secretRef")):
        if plugin in volume:
            yield SECRETS, _named(_dict(volume[plugin]).get(field))
    if "azureFile" in volume:
        yield SECRETS, _named(volume["azureFile"], "secretName")


def _container_refs(container: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for env in _list(container.get("env")):
        value_from = _dict(_dict(env).get("valueFrom"))
        if "secretKeyRef" in value_from:
            yield SECRETS, _named(value_from["secretKeyRef"])
        if "configMapKeyRef" in value_from:
            yield CONFIGMAPS, _named(value_from["configMapKeyRef"])
    for env_from in _list(container.get("envFrom")):
        env_from = _dict(env_from)
        if "secretRef" in env_from:
            yield SECRETS, _named(env_from["secretRef"])
        if "configMapRef" in env_from:
            yield CONFIGMAPS, _named(env_from["configMapRef"])


def references(pod: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(resource, name) of every object, in the pod's namespace, the pod needs."""
    spec = _dict(pod.get("spec"))
    pod_name = _named(pod.get("metadata"))
    yield SERVICEACCOUNTS, str(spec.get("serviceAccountName") or "default")
    for ref in _list(spec.get("imagePullSecrets")):
        yield SECRETS, _named(ref)
    for volume in _list(spec.get("volumes")):
        yield from _volume_refs(pod_name, _dict(volume))
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in _list(spec.get(key)):
            yield from _container_refs(_dict(container))


def referenced_by_node(pods: list[dict[str, Any]], node: str, resource: str,
                       namespace: str, name: str) -> bool:
    """Whether a pod bound to ``node`` in ``namespace`` references ``resource``/``name``."""
    if not name:
        return False
    for pod in pods_bound_to(pods, node):
        if _dict(pod.get("metadata")).get("namespace") != namespace:
            continue
        if (resource, name) in references(pod):
            return True
    return False
