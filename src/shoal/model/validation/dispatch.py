"""The per-kind checks, and :func:`validate`, which runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.model.kinds import Kind
from shoal.model.scope_schema import HAND_WRITTEN_SCHEMAS
from shoal.model.validation.autoscaling import _validate_horizontal_pod_autoscaler
from shoal.model.validation.causes import Cause, _Errors
from shoal.model.validation.cluster import (
    _validate_event,
    _validate_lease,
    _validate_namespace,
    _validate_node,
    _validate_node_update,
)
from shoal.model.validation.config import (
    _validate_config_map,
    _validate_config_map_update,
    _validate_secret,
    _validate_secret_update,
)
from shoal.model.validation.crd import _validate_crd, _validate_crd_update
from shoal.model.validation.devices import _validate_device, _validate_device_model
from shoal.model.validation.disruption_budgets import _validate_pod_disruption_budget
from shoal.model.validation.ingress import (  # ingress (issue 12)
    _validate_ingress,
    _validate_ingress_class,
    _validate_ingress_class_update,
)
from shoal.model.validation.network_policies import _validate_network_policy  # issue 12
from shoal.model.validation.object_meta import _name_check, _object_meta, _object_meta_update
from shoal.model.validation.pod_spec import _validate_pod, _validate_pod_update
from shoal.model.validation.replication_controllers import _validate_replication_controller
from shoal.model.validation.resource_policies import (  # quotas and priorities (issue 12)
    _validate_limit_range,
    _validate_priority_class,
    _validate_priority_class_update,
    _validate_resource_quota,
)
from shoal.model.validation.scheduled_work import _validate_cron_job
from shoal.model.validation.schema import _crd_schema, validate_schema
from shoal.model.validation.scope import _validate_scope
from shoal.model.validation.services import (
    _validate_endpoint_slice,
    _validate_endpoints,
    _validate_service,
    _validate_service_update,
)
from shoal.model.validation.storage import (  # stateful workloads (issue 12)
    _validate_persistent_volume,
    _validate_persistent_volume_claim,
    _validate_persistent_volume_claim_update,
    _validate_persistent_volume_update,
    _validate_storage_class,
    _validate_storage_class_update,
)
from shoal.model.validation.workloads import (
    _selector_immutable,
    _validate_daemon_set,
    _validate_deployment,
    _validate_job,
    _validate_job_update,
    _validate_replica_set,
    _validate_stateful_set,
    _validate_stateful_set_update,
)

# --- dispatch -------------------------------------------------------------------------

_Check = Callable[[_Errors, dict[str, Any]], None]
_UpdateCheck = Callable[[_Errors, dict[str, Any], dict[str, Any]], None]

_CHECKS: dict[tuple[str, str], _Check] = {
    ("", "Pod"): _validate_pod,
    ("", "Service"): _validate_service,
    ("", "ConfigMap"): _validate_config_map,
    ("", "Secret"): _validate_secret,
    ("", "Namespace"): _validate_namespace,
    ("", "Node"): _validate_node,
    ("", "Endpoints"): _validate_endpoints,
    ("", "Event"): _validate_event,
    ("apps", "Deployment"): _validate_deployment,
    ("apps", "ReplicaSet"): _validate_replica_set,
    ("apps", "DaemonSet"): _validate_daemon_set,
    ("apps", "StatefulSet"): _validate_stateful_set,
    ("batch", "Job"): _validate_job,
    ("batch", "CronJob"): _validate_cron_job,
    ("policy", "PodDisruptionBudget"): _validate_pod_disruption_budget,
    ("", "ReplicationController"): _validate_replication_controller,
    ("coordination.k8s.io", "Lease"): _validate_lease,
    ("discovery.k8s.io", "EndpointSlice"): _validate_endpoint_slice,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _validate_crd,
    ("shoal.dev", "Scope"): _validate_scope,
    ("", "PersistentVolumeClaim"): _validate_persistent_volume_claim,
    ("", "PersistentVolume"): _validate_persistent_volume,
    ("storage.k8s.io", "StorageClass"): _validate_storage_class,
    ("", "ResourceQuota"): _validate_resource_quota,
    ("", "LimitRange"): _validate_limit_range,
    ("scheduling.k8s.io", "PriorityClass"): _validate_priority_class,
    ("autoscaling", "HorizontalPodAutoscaler"): _validate_horizontal_pod_autoscaler,
    ("networking.k8s.io", "Ingress"): _validate_ingress,
    ("networking.k8s.io", "IngressClass"): _validate_ingress_class,
    ("networking.k8s.io", "NetworkPolicy"): _validate_network_policy,
    ("devices.shoal.dev", "DeviceModel"): _validate_device_model,
    ("devices.shoal.dev", "Device"): _validate_device,
}

_UPDATE_CHECKS: dict[tuple[str, str], _UpdateCheck] = {
    ("", "Pod"): _validate_pod_update,
    ("", "Service"): _validate_service_update,
    ("", "ConfigMap"): _validate_config_map_update,
    ("", "Secret"): _validate_secret_update,
    ("", "Node"): _validate_node_update,
    ("apps", "Deployment"): _selector_immutable,
    ("apps", "ReplicaSet"): _selector_immutable,
    ("apps", "DaemonSet"): _selector_immutable,
    ("apps", "StatefulSet"): _validate_stateful_set_update,
    ("batch", "Job"): _validate_job_update,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _validate_crd_update,
    ("", "PersistentVolumeClaim"): _validate_persistent_volume_claim_update,
    ("", "PersistentVolume"): _validate_persistent_volume_update,
    ("storage.k8s.io", "StorageClass"): _validate_storage_class_update,
    ("scheduling.k8s.io", "PriorityClass"): _validate_priority_class_update,
    ("networking.k8s.io", "IngressClass"): _validate_ingress_class_update,
}


def validate(
    kind: Kind,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    *,
    subresource: str | None = None,
) -> list[Cause]:
    """The field errors of ``obj``, and of the change from ``old`` when it is an update.

    Call it after defaulting (and, for Jobs, after the selector is generated), as the
    apiserver does. The server fills ``metadata.name`` from ``generateName`` first,
    so a name is required here. ``uid`` and ``creationTimestamp`` are the server's.

    ``subresource`` names the subresource an update goes through. The update rules of
    the kind (immutable fields, the pod spec) apply to the object itself and to
    ``scale``; ``status``, ``binding`` (which sets a pod's ``spec.nodeName``),
    ``resize`` and ``ephemeralcontainers`` write fields those rules protect, so
    Kubernetes skips them there and so does this.
    """
    e = _Errors()
    _object_meta(e, obj.get("metadata"), kind.namespaced, _name_check(kind))
    if kind.is_custom:
        schema = _crd_schema(kind)
        if schema is not None:
            e.causes.extend(validate_schema(schema, obj))
    else:
        own = HAND_WRITTEN_SCHEMAS.get((kind.group, kind.kind))
        if own is not None:
            e.causes.extend(validate_schema(own, obj))
        check = _CHECKS.get((kind.group, kind.kind))
        if check is not None:
            check(e, obj)
    if old is not None:
        _object_meta_update(e, obj.get("metadata"), old.get("metadata"))
        update_check = _UPDATE_CHECKS.get((kind.group, kind.kind))
        if update_check is not None and not kind.is_custom and subresource in (None, "scale"):
            update_check(e, obj, old)
    return e.causes
