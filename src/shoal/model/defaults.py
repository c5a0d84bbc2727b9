"""Defaulting: fill in what the Kubernetes apiserver fills in before it validates and stores.

This mirrors the defaulters of ``pkg/apis/core/v1``, ``apps/v1``, ``batch/v1``,
``discovery/v1`` and ``apiextensions/v1``, plus the few defaults that Kubernetes sets
in its registry strategies rather than its defaulters (a namespace's ``kubernetes``
finalizer and phase, a service's IP families, a Job's selector generated from its
uid) or while decoding (a Secret's ``stringData`` merged into ``data``). Custom
resources get the ``default`` values of their structural schema.

Defaulting only fills what is unset, so :func:`apply_defaults` is idempotent. As in
Go, an empty string counts as unset for string fields; for pointer fields (numbers,
booleans, objects) only a missing key or ``null`` does. Admission plugins (service
account token volumes, the not-ready/unreachable tolerations, priority) are not
defaulting and are not done here.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

from shoal.model.kinds import Kind

__all__ = [
    "JOB_CONTROLLER_UID_LABEL",
    "JOB_NAME_LABEL",
    "LEGACY_JOB_CONTROLLER_UID_LABEL",
    "LEGACY_JOB_NAME_LABEL",
    "apply_defaults",
    "apply_job_selector",
    "apply_schema_defaults",
    "image_pull_policy",
    "job_selector_labels",
]

JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Kubernetes still writes the unprefixed labels too, for selectors written before 1.27.
LEGACY_JOB_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# Every key that selects a volume's source; a volume with none of them gets an emptyDir.
VOLUME_SOURCES = (
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
)

_DEFAULT_MODE = 0o644  # secret, configMap, downwardAPI and projected volumes
_CLIENT_IP_TIMEOUT = 10800  # three hours, Kubernetes' sessionAffinity ClientIP default


# --- small helpers -------------------------------------------------------------------


def _map(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """``parent[key]`` as a dict, created when missing or null."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _maps(parent: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The dict items of the list ``parent[key]`` (nothing when it is not a list)."""
    value = parent.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _ptr(d: dict[str, Any], key: str, value: Any) -> None:
    """Default a pointer field: only a missing key or null is unset."""
    if d.get(key) is None:
        d[key] = copy.deepcopy(value)


def _str(d: dict[str, Any], key: str, value: str) -> None:
    """Default a string field: missing, null and "" are all unset."""
    if d.get(key) in (None, ""):
        d[key] = value


def _int(d: dict[str, Any], key: str, value: int) -> None:
    """Default a non-pointer int field: Go cannot tell 0 from unset."""
    if d.get(key) in (None, 0):
        d[key] = value


# --- pods and pod templates ---------------------------------------------------------


def image_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or an untagged image without digest, else ``IfNotPresent``."""
    image = image.strip() if isinstance(image, str) else ""
    if not image:
        return "IfNotPresent"  # Kubernetes ignores the parse error and takes no tag
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ""
    if tag == "latest" or (not tag and not digest):
        return "Always"
    return "IfNotPresent"


def _default_http_get(action: Any) -> None:
    if isinstance(action, dict):
        _str(action, "path", "/")
        _str(action, "scheme", "HTTP")


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    _int(probe, "timeoutSeconds", 1)
    _int(probe, "periodSeconds", 10)
    _int(probe, "successThreshold", 1)
    _int(probe, "failureThreshold", 3)
    _default_http_get(probe.get("httpGet"))


def _default_field_ref(holder: Any) -> None:
    if isinstance(holder, dict) and isinstance(holder.get("fieldRef"), dict):
        _str(holder["fieldRef"], "apiVersion", "v1")


def _default_container(c: dict[str, Any]) -> None:
    _str(c, "imagePullPolicy", image_pull_policy(c.get("image", "")))
    _str(c, "terminationMessagePath", "/dev/termination-log")
    _str(c, "terminationMessagePolicy", "File")
    for port in _maps(c, "ports"):
        _str(port, "protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            handler = lifecycle.get(hook)
            if isinstance(handler, dict):
                _default_http_get(handler.get("httpGet"))
    for env in _maps(c, "env"):
        _default_field_ref(env.get("valueFrom"))


def _default_pvc(pvc: dict[str, Any]) -> None:
    spec = pvc.get("spec")
    if isinstance(spec, dict):
        _ptr(spec, "volumeMode", "Filesystem")


# --- stateful workloads (issue 12): claims, volumes and classes, as Kubernetes defaults them
def _default_claim(obj: dict[str, Any]) -> None:
    _default_pvc(obj)
    _str(_map(obj, "status"), "phase", "Pending")


def _default_persistent_volume(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    _str(spec, "persistentVolumeReclaimPolicy", "Retain")
    _str(spec, "volumeMode", "Filesystem")
    _str(_map(obj, "status"), "phase", "Pending")


def _default_storage_class(obj: dict[str, Any]) -> None:
    _str(obj, "reclaimPolicy", "Delete")
    _str(obj, "volumeBindingMode", "Immediate")
# --- end stateful workloads ---


_VOLUME_SOURCE_SET = frozenset(VOLUME_SOURCES)


def _default_volume(v: dict[str, Any]) -> None:
    # The volume's few keys looked up among the sources, not every source in the volume.
    if all(v[k] is None for k in v if k in _VOLUME_SOURCE_SET):
        v["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        s = v.get(source)
        if isinstance(s, dict):
            _ptr(s, "defaultMode", _DEFAULT_MODE)
    host_path = v.get("hostPath")
    if isinstance(host_path, dict):
        _ptr(host_path, "type", "")
    downward = v.get("downwardAPI")
    if isinstance(downward, dict):
        for item in _maps(downward, "items"):
            _default_field_ref(item)
    projected = v.get("projected")
    if isinstance(projected, dict):
        for src in _maps(projected, "sources"):
            token = src.get("serviceAccountToken")
            if isinstance(token, dict):
                _ptr(token, "expirationSeconds", 3600)
            projected_downward = src.get("downwardAPI")
            if isinstance(projected_downward, dict):
                for item in _maps(projected_downward, "items"):
                    _default_field_ref(item)
    ephemeral = v.get("ephemeral")
    if isinstance(ephemeral, dict) and isinstance(ephemeral.get("volumeClaimTemplate"), dict):
        _default_pvc(ephemeral["volumeClaimTemplate"])


def _default_pod_spec(spec: dict[str, Any]) -> None:
    """What every PodSpec gets, in a pod or in a template (``SetDefaults_PodSpec``)."""
    _str(spec, "dnsPolicy", "ClusterFirst")
    _str(spec, "restartPolicy", "Always")
    _ptr(spec, "securityContext", {})
    _ptr(spec, "terminationGracePeriodSeconds", 30)
    _str(spec, "schedulerName", "default-scheduler")
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in _maps(spec, key):
            _default_container(c)
    for v in _maps(spec, "volumes"):
        _default_volume(v)


def _default_template(owner_spec: dict[str, Any]) -> None:
    template = owner_spec.get("template")
    if isinstance(template, dict):
        _default_pod_spec(_map(template, "spec"))


def _requests_from_limits(c: dict[str, Any]) -> None:
    resources = c.get("resources")
    if not isinstance(resources, dict) or not isinstance(resources.get("limits"), dict):
        return
    requests = _map(resources, "requests")
    for name, value in resources["limits"].items():
        requests.setdefault(name, value)


def _default_pod(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    # Only pods, not templates, get these (SetDefaults_Pod): a template's requests stay
    # as written so that a later limit change in the template is not shadowed.
    for key in ("containers", "initContainers"):
        for c in _maps(spec, key):
            _requests_from_limits(c)
    _ptr(spec, "enableServiceLinks", True)
    if spec.get("hostNetwork") is True:
        for key in ("containers", "initContainers"):
            for c in _maps(spec, key):
                for port in _maps(c, "ports"):
                    if port.get("hostPort") in (None, 0):
                        port["hostPort"] = port.get("containerPort")
    _default_pod_spec(spec)


# --- apps/v1 and batch/v1 -----------------------------------------------------------


def _default_deployment(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    _ptr(spec, "replicas", 1)
    strategy = _map(spec, "strategy")
    _str(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _map(strategy, "rollingUpdate")
        _ptr(rolling, "maxUnavailable", "25%")
        _ptr(rolling, "maxSurge", "25%")
    _ptr(spec, "revisionHistoryLimit", 10)
    _ptr(spec, "progressDeadlineSeconds", 600)
    _default_template(spec)


def _default_replica_set(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    _ptr(spec, "replicas", 1)
    _default_template(spec)


def _default_daemon_set(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    strategy = _map(spec, "updateStrategy")
    _str(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _map(strategy, "rollingUpdate")
        _ptr(rolling, "maxUnavailable", 1)
        _ptr(rolling, "maxSurge", 0)
    _ptr(spec, "revisionHistoryLimit", 10)
    _default_template(spec)


def _default_stateful_set(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    _str(spec, "podManagementPolicy", "OrderedReady")
    strategy = _map(spec, "updateStrategy")
    if strategy.get("type") in (None, ""):
        strategy["type"] = "RollingUpdate"
        _ptr(strategy, "rollingUpdate", {})
    rolling = strategy.get("rollingUpdate")
    if strategy["type"] == "RollingUpdate" and isinstance(rolling, dict):
        _ptr(rolling, "partition", 0)
    retention = _map(spec, "persistentVolumeClaimRetentionPolicy")
    _str(retention, "whenDeleted", "Retain")
    _str(retention, "whenScaled", "Retain")
    _ptr(spec, "replicas", 1)
    _ptr(spec, "revisionHistoryLimit", 10)
    for pvc in _maps(spec, "volumeClaimTemplates"):
        _default_pvc(pvc)
        _str(_map(pvc, "status"), "phase", "Pending")
    _default_template(spec)


def _default_job(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    # A non-parallel job leaves both unset and gets 1 and 1.
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    _ptr(spec, "parallelism", 1)
    # With a per-index limit the global one is effectively off (MaxInt32).
    _ptr(spec, "backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
    template = spec.get("template")
    template_meta = template.get("metadata") if isinstance(template, dict) else None
    labels = template_meta.get("labels") if isinstance(template_meta, dict) else None
    meta = _map(obj, "metadata")
    if isinstance(labels, dict) and labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    _ptr(spec, "completionMode", "NonIndexed")
    _ptr(spec, "suspend", False)
    failure_policy = spec.get("podFailurePolicy")
    if isinstance(failure_policy, dict):
        for rule in _maps(failure_policy, "rules"):
            for pattern in _maps(rule, "onPodConditions"):
                _str(pattern, "status", "True")
    _ptr(
        spec,
        "podReplacementPolicy",
        "Failed" if isinstance(failure_policy, dict) else "TerminatingOrFailed",
    )
    _default_template(spec)
    # The selector is generated from the uid, which the server assigns before defaulting.
    uid = meta.get("uid")
    if isinstance(uid, str) and uid:
        apply_job_selector(obj, uid)


def _default_cron_job(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    _str(spec, "concurrencyPolicy", "Allow")
    _ptr(spec, "suspend", False)
    _ptr(spec, "successfulJobsHistoryLimit", 3)
    _ptr(spec, "failedJobsHistoryLimit", 1)
    _default_template(_map(_map(spec, "jobTemplate"), "spec"))


def _default_replication_controller(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    _ptr(spec, "replicas", 1)
    template = spec.get("template")
    labels = _map(template, "metadata").get("labels") if isinstance(template, dict) else None
    # An RC's selector and labels default to its template's labels.
    if isinstance(labels, dict) and labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        meta = _map(obj, "metadata")
        if not meta.get("labels"):
            meta["labels"] = dict(labels)
    _default_template(spec)


def job_selector_labels(uid: str, name: str) -> dict[str, str]:
    """The labels the server puts on a Job's pod template when it generates the selector."""
    return {
        JOB_CONTROLLER_UID_LABEL: uid,
        JOB_NAME_LABEL: name,
        LEGACY_JOB_CONTROLLER_UID_LABEL: uid,
        LEGACY_JOB_NAME_LABEL: name,
    }


def apply_job_selector(obj: dict[str, Any], uid: str) -> None:
    """Generate a Job's selector and template labels, as the Job strategy does on create.

    Skipped when ``spec.manualSelector`` is true. The template gets
    :func:`job_selector_labels` (labels the user set are not overwritten) and the
    selector gets ``batch.kubernetes.io/controller-uid: uid`` added to its
    ``matchLabels``. A wrong value the user wrote is left for validation to reject.
    A job without labels of its own then shows the template's, which is what
    Kubernetes' defaulting does when it reads the job back. Idempotent.
    """
    spec = _map(obj, "spec")
    if spec.get("manualSelector") is True:
        return
    meta = _map(obj, "metadata")
    template_labels = _map(_map(_map(spec, "template"), "metadata"), "labels")
    for key, value in job_selector_labels(uid, meta.get("name") or "").items():
        template_labels.setdefault(key, value)
    _map(_map(spec, "selector"), "matchLabels").setdefault(JOB_CONTROLLER_UID_LABEL, uid)
    if not meta.get("labels"):
        meta["labels"] = dict(template_labels)


# --- core/v1 ------------------------------------------------------------------------


def _default_service(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    _str(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        client_ip = _map(_map(spec, "sessionAffinityConfig"), "clientIP")
        _ptr(client_ip, "timeoutSeconds", _CLIENT_IP_TIMEOUT)
    _str(spec, "type", "ClusterIP")
    svc_type = spec["type"]
    for port in _maps(spec, "ports"):
        _str(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    externally_accessible = svc_type in ("NodePort", "LoadBalancer") or (
        svc_type == "ClusterIP" and bool(spec.get("externalIPs"))
    )
    if externally_accessible:
        _str(spec, "externalTrafficPolicy", "Cluster")
    if svc_type in ("ClusterIP", "NodePort", "LoadBalancer"):
        _ptr(spec, "internalTrafficPolicy", "Cluster")
    if svc_type == "LoadBalancer":
        _ptr(spec, "allocateLoadBalancerNodePorts", True)
    if svc_type != "ExternalName":
        _default_ip_families(spec)
    # The registry always answers with a status, if only an empty load balancer.
    _map(_map(obj, "status"), "loadBalancer")


def _default_ip_families(spec: dict[str, Any]) -> None:
    """What the service registry sets: IP families for a single-stack cluster.

    The family follows the cluster IP when one is given. A headless service without
    a selector asks for dual-stack, as Kubernetes does, and gets what the cluster has.
    """
    cluster_ip = spec.get("clusterIP")
    headless = cluster_ip == "None"
    if headless and not spec.get("selector"):
        _ptr(spec, "ipFamilyPolicy", "RequireDualStack")
    else:
        _ptr(spec, "ipFamilyPolicy", "SingleStack")
    if not spec.get("ipFamilies"):
        ipv6 = isinstance(cluster_ip, str) and ":" in cluster_ip
        spec["ipFamilies"] = ["IPv6" if ipv6 else "IPv4"]


def _default_namespace(obj: dict[str, Any]) -> None:
    meta = _map(obj, "metadata")
    name = meta.get("name")
    if name:
        _map(meta, "labels")[NAMESPACE_NAME_LABEL] = name
    # The registry adds this on create only. A missing list means "never set": the
    # namespace controller leaves an empty list behind when it finalizes, and the
    # server keeps spec.finalizers from the old object on update, as Kubernetes does.
    spec = _map(obj, "spec")
    if spec.get("finalizers") is None:
        spec["finalizers"] = ["kubernetes"]
    _str(_map(obj, "status"), "phase", "Active")


def _default_node(obj: dict[str, Any]) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and status.get("allocatable") is None:
        capacity = status.get("capacity")
        if isinstance(capacity, dict):
            status["allocatable"] = dict(capacity)


def _default_secret(obj: dict[str, Any]) -> None:
    _str(obj, "type", "Opaque")
    # Kubernetes merges stringData into data while decoding; it is never stored.
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _map(obj, "data")
        for key, value in string_data.items():
            text = value if isinstance(value, str) else str(value)
            data[key] = base64.b64encode(text.encode()).decode()
    _unwrap_base64(obj, "data")


def _unwrap_base64(obj: dict[str, Any], key: str) -> None:
    """Drop line breaks from base64 values: Go's decoder skips them (the TLS example in
    Kubernetes' docs wraps its certificate's base64), and the API returns them unwrapped."""
    values = obj.get(key)
    if isinstance(values, dict):
        for k, v in values.items():
            if isinstance(v, str) and ("\n" in v or "\r" in v):
                values[k] = v.replace("\r", "").replace("\n", "")


def _default_endpoints(obj: dict[str, Any]) -> None:
    for subset in _maps(obj, "subsets"):
        for port in _maps(subset, "ports"):
            _str(port, "protocol", "TCP")


def _default_endpoint_slice(obj: dict[str, Any]) -> None:
    for port in _maps(obj, "ports"):
        _ptr(port, "name", "")
        _ptr(port, "protocol", "TCP")


# --- apiextensions.k8s.io/v1 --------------------------------------------------------


def _default_crd(obj: dict[str, Any]) -> None:
    spec = _map(obj, "spec")
    conversion = _map(spec, "conversion")
    _str(conversion, "strategy", "None")
    webhook = conversion.get("webhook")
    if isinstance(webhook, dict):
        client_config = webhook.get("clientConfig")
        if isinstance(client_config, dict) and isinstance(client_config.get("service"), dict):
            _ptr(client_config["service"], "port", 443)
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str) and names["kind"]:
        _str(names, "singular", names["kind"].lower())
        _str(names, "listKind", names["kind"] + "List")


# --- custom resources: structural schema defaults -----------------------------------


def apply_schema_defaults(schema: dict[str, Any], value: Any) -> None:
    """Apply the ``default`` values of a structural schema to ``value`` in place.

    Defaults are applied top down, so a defaulted object gets its own properties'
    defaults too. As in Kubernetes, a ``null`` in a field that is not ``nullable`` is
    dropped first and the field's default (if any) takes its place.
    """
    if isinstance(value, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                if not isinstance(sub, dict):
                    continue
                if key in value and value[key] is None and not sub.get("nullable"):
                    del value[key]
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, item in list(value.items()):
            sub_schema: Any = props.get(key) if isinstance(props, dict) and key in props else extra
            if not isinstance(sub_schema, dict):
                continue
            if item is None and not sub_schema.get("nullable") and "default" in sub_schema:
                value[key] = copy.deepcopy(sub_schema["default"])
            apply_schema_defaults(sub_schema, value[key])
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                if item is None and not items.get("nullable") and "default" in items:
                    value[i] = copy.deepcopy(items["default"])
                apply_schema_defaults(items, value[i])


def _default_custom(kind: Kind, obj: dict[str, Any]) -> None:
    version = kind.crd_version or {}
    schema = (version.get("schema") or {}).get("openAPIV3Schema")
    if not isinstance(schema, dict):
        return
    # apiVersion, kind and metadata at the root belong to the server, not to the schema.
    root = {k: v for k, v in schema.items() if k != "properties"}
    props = schema.get("properties")
    if isinstance(props, dict):
        root["properties"] = {
            k: v for k, v in props.items() if k not in ("apiVersion", "kind", "metadata")
        }
    apply_schema_defaults(root, obj)


# --- quotas, priorities, autoscaling (issue 12) ---
def _default_limit_range(obj: dict[str, Any]) -> None:
    """A Container limit defaults to its max, a default request to the default limit."""
    for item in _maps(_map(obj, "spec"), "limits"):
        if item.get("type") != "Container":
            continue
        for source, target in (("max", "default"), ("default", "defaultRequest")):
            if isinstance(item.get(source), dict):
                into = _map(item, target)
                for name, value in item[source].items():
                    into.setdefault(name, value)


def _default_priority_class(obj: dict[str, Any]) -> None:
    _str(obj, "preemptionPolicy", "PreemptLowerPriority")


def _default_horizontal_pod_autoscaler(obj: dict[str, Any]) -> None:
    """One replica at least, and 80 % CPU when no metric is given (autoscaling/v2)."""
    spec = _map(obj, "spec")
    _ptr(spec, "minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
# --- end quotas, priorities, autoscaling ---


def _default_network_policy(obj: dict[str, Any]) -> None:
    """SetDefaults_NetworkPolicy: Ingress always, Egress when egress rules are given; TCP ports."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    for direction in ("ingress", "egress"):
        rules = spec.get(direction)
        for rule in rules if isinstance(rules, list) else []:
            ports = rule.get("ports") if isinstance(rule, dict) else None
            for port in ports if isinstance(ports, list) else []:
                if isinstance(port, dict) and port.get("protocol") is None:
                    port["protocol"] = "TCP"
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])


_DEFAULTERS: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("", "Pod"): _default_pod,
    ("", "Service"): _default_service,
    ("", "Namespace"): _default_namespace,
    ("", "Node"): _default_node,
    ("", "Secret"): _default_secret,
    ("", "ConfigMap"): lambda obj: _unwrap_base64(obj, "binaryData"),
    ("", "Endpoints"): _default_endpoints,
    ("apps", "Deployment"): _default_deployment,
    ("apps", "ReplicaSet"): _default_replica_set,
    ("apps", "DaemonSet"): _default_daemon_set,
    ("apps", "StatefulSet"): _default_stateful_set,
    ("batch", "Job"): _default_job,
    ("batch", "CronJob"): _default_cron_job,
    ("", "ReplicationController"): _default_replication_controller,
    ("discovery.k8s.io", "EndpointSlice"): _default_endpoint_slice,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _default_crd,
    ("", "PersistentVolumeClaim"): _default_claim,  # stateful workloads
    ("", "PersistentVolume"): _default_persistent_volume,
    ("storage.k8s.io", "StorageClass"): _default_storage_class,
    ("", "LimitRange"): _default_limit_range,  # quotas, priorities, autoscaling
    ("scheduling.k8s.io", "PriorityClass"): _default_priority_class,
    ("autoscaling", "HorizontalPodAutoscaler"): _default_horizontal_pod_autoscaler,
    ("networking.k8s.io", "NetworkPolicy"): _default_network_policy,  # issue 12
}


def apply_defaults(kind: Kind, obj: dict[str, Any]) -> None:
    """Fill in the defaults Kubernetes applies to an object of ``kind``, in place.

    Idempotent. Kinds without defaulters (ConfigMap, Event, Lease, ...) are left as
    they are. A Job that has a ``metadata.uid`` also gets its selector generated
    (:func:`apply_job_selector`); the server sets the uid before defaulting.
    """
    if kind.is_custom:
        _default_custom(kind, obj)
        return
    defaulter = _DEFAULTERS.get((kind.group, kind.kind))
    if defaulter is not None:
        defaulter(obj)
