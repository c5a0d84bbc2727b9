"""Decoding Kubernetes protobuf request bodies into the JSON form of the object.

client-go's typed clients (kubectl 1.31 and later for `create namespace`, `create deployment`,
`create secret` and the rest) send ``application/vnd.kubernetes.protobuf`` and do not fall back
to JSON on a 415, so the API server has to read these bodies. A body is the magic ``k8s\\x00``
and a ``runtime.Unknown`` whose ``raw`` is the object's message (proto2, as go-to-protobuf
writes it).

Field numbers and types come from the descriptors that the ``k8s-proto`` package ships
(core/v1 and apimachinery, a 2019 build), read by ``scripts/generate_schemas.py`` into
:mod:`shoal.model.schemas` (``protobuf.json.gz``): neither k8s-proto nor a protobuf runtime
is needed at run time. Messages it lacks (apps/v1, batch/v1, autoscaling/v1 Scale,
coordination/v1 Lease, discovery/v1 EndpointSlice, policy/v1 Eviction, rbac/v1, the review
kinds of authentication/v1 and authorization/v1, TokenRequest) and fields added to core/v1 and meta/v1
since then are in :data:`_OWN`, checked against kubernetes/api's ``generated.proto``. A field number that neither knows is an error, never dropped silently.

JSON is not a plain rendering of the message: Go writes every non-pointer scalar, zero or not,
where JSON's ``omitempty`` would leave it out, so zero scalars are dropped unless the Go field
is a pointer or has no ``omitempty`` (:data:`_KEEP_ZERO`, from kubernetes/api's ``types.go``);
embedded structs are inlined (:data:`_INLINE`); and Time, MicroTime, IntOrString, Quantity,
FieldsV1 and RawExtension have JSON forms of their own.
"""

from __future__ import annotations

import base64
import datetime
import functools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from shoal.model import schemas

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

MAX_DEPTH = 64  # far deeper than any Kubernetes object; bounds the recursion on hostile input


class ProtobufError(Exception):
    """A body that cannot be decoded: 400 when malformed, 415 when this server cannot read it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- the message model -----------------------------------------------------------------------

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_CORE = "k8s.io.api.core.v1."
_RUNTIME = "k8s.io.apimachinery.pkg.runtime."
TIME = _META + "Time"
MICROTIME = _META + "MicroTime"
FIELDS_V1 = _META + "FieldsV1"
INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
RAW_EXTENSION = _RUNTIME + "RawExtension"
UNKNOWN = _RUNTIME + "Unknown"

# Scalar types by wire type: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.
_WIRE: dict[str, int] = {
    "int32": 0, "int64": 0, "uint32": 0, "uint64": 0, "sint32": 0, "sint64": 0, "bool": 0,
    "enum": 0, "fixed64": 1, "sfixed64": 1, "double": 1, "fixed32": 5, "sfixed32": 5,
    "float": 5, "string": 2, "bytes": 2,
}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message, in the terms its JSON form needs."""

    name: str  # the JSON name; go-to-protobuf names proto fields after the JSON tags
    type: str  # a scalar type from _WIRE, or a message's full name
    repeated: bool = False
    map: bool = False  # map<string, type>
    keep_zero: bool = False  # a Go pointer or a field without omitempty: zero is a value
    inline: bool = False  # a Go embedded struct: its fields go into the parent's JSON object


@dataclass(slots=True)
class Message:
    name: str
    fields: dict[int, Field] = field(default_factory=dict)


# -- messages and fields that k8s-proto lacks ------------------------------------------------
# Every number below was checked against kubernetes/api's apps/v1, batch/v1, autoscaling/v1
# and core/v1 generated.proto, and apimachinery's meta/v1 generated.proto. Types: a scalar
# name, or a message as "pkg.Name"; "[]" before it is a repeated field, "{}" a map<string, it>.

_PACKAGES = {
    "meta": _META,
    "core": _CORE,
    "apps": "k8s.io.api.apps.v1.",
    "batch": "k8s.io.api.batch.v1.",
    "autoscaling": "k8s.io.api.autoscaling.v1.",
    "autoscalingv2": "k8s.io.api.autoscaling.v2.",  # part W3
    "scheduling": "k8s.io.api.scheduling.v1.",  # part W3
    "coordination": "k8s.io.api.coordination.v1.",
    "discovery": "k8s.io.api.discovery.v1.",
    "policy": "k8s.io.api.policy.v1.",
    "networking": "k8s.io.api.networking.v1.",  # part W5
    "rbac": "k8s.io.api.rbac.v1.",
    "authentication": "k8s.io.api.authentication.v1.",
    "authorization": "k8s.io.api.authorization.v1.",
    "intstr": "k8s.io.apimachinery.pkg.util.intstr.",
    "resource": "k8s.io.apimachinery.pkg.api.resource.",
    "runtime": _RUNTIME,
}

_OBJECT = "meta.ObjectMeta"
_SELECTOR = "meta.LabelSelector"
_TEMPLATE = "core.PodTemplateSpec"
_TIME = "meta.Time"
_IOS = "intstr.IntOrString"
_RESOURCES = "{}resource.Quantity"

_OWN: dict[str, dict[int, tuple[str, str]]] = {
    # apps/v1
    "apps.Deployment": {1: ("metadata", _OBJECT), 2: ("spec", "apps.DeploymentSpec"),
                        3: ("status", "apps.DeploymentStatus")},
    "apps.DeploymentSpec": {
        1: ("replicas", "int32"), 2: ("selector", _SELECTOR), 3: ("template", _TEMPLATE),
        4: ("strategy", "apps.DeploymentStrategy"), 5: ("minReadySeconds", "int32"),
        6: ("revisionHistoryLimit", "int32"), 7: ("paused", "bool"),
        9: ("progressDeadlineSeconds", "int32"),
    },
    "apps.DeploymentStrategy": {1: ("type", "string"),
                                2: ("rollingUpdate", "apps.RollingUpdateDeployment")},
    "apps.RollingUpdateDeployment": {1: ("maxUnavailable", _IOS), 2: ("maxSurge", _IOS)},
    "apps.DeploymentStatus": {
        1: ("observedGeneration", "int64"), 2: ("replicas", "int32"),
        3: ("updatedReplicas", "int32"), 4: ("availableReplicas", "int32"),
        5: ("unavailableReplicas", "int32"), 6: ("conditions", "[]apps.DeploymentCondition"),
        7: ("readyReplicas", "int32"), 8: ("collisionCount", "int32"),
        9: ("terminatingReplicas", "int32"),
    },
    "apps.DeploymentCondition": {
        1: ("type", "string"), 2: ("status", "string"), 4: ("reason", "string"),
        5: ("message", "string"), 6: ("lastUpdateTime", _TIME), 7: ("lastTransitionTime", _TIME),
    },
    "apps.ReplicaSet": {1: ("metadata", _OBJECT), 2: ("spec", "apps.ReplicaSetSpec"),
                        3: ("status", "apps.ReplicaSetStatus")},
    "apps.ReplicaSetSpec": {1: ("replicas", "int32"), 2: ("selector", _SELECTOR),
                            3: ("template", _TEMPLATE), 4: ("minReadySeconds", "int32")},
    "apps.ReplicaSetStatus": {
        1: ("replicas", "int32"), 2: ("fullyLabeledReplicas", "int32"),
        3: ("observedGeneration", "int64"), 4: ("readyReplicas", "int32"),
        5: ("availableReplicas", "int32"), 6: ("conditions", "[]apps.ReplicaSetCondition"),
        7: ("terminatingReplicas", "int32"),
    },
    "apps.ReplicaSetCondition": {
        1: ("type", "string"), 2: ("status", "string"), 3: ("lastTransitionTime", _TIME),
        4: ("reason", "string"), 5: ("message", "string"),
    },
    "apps.DaemonSet": {1: ("metadata", _OBJECT), 2: ("spec", "apps.DaemonSetSpec"),
                       3: ("status", "apps.DaemonSetStatus")},
    "apps.DaemonSetSpec": {
        1: ("selector", _SELECTOR), 2: ("template", _TEMPLATE),
        3: ("updateStrategy", "apps.DaemonSetUpdateStrategy"), 4: ("minReadySeconds", "int32"),
        6: ("revisionHistoryLimit", "int32"),
    },
    "apps.DaemonSetUpdateStrategy": {1: ("type", "string"),
                                     2: ("rollingUpdate", "apps.RollingUpdateDaemonSet")},
    "apps.RollingUpdateDaemonSet": {1: ("maxUnavailable", _IOS), 2: ("maxSurge", _IOS)},
    "apps.DaemonSetStatus": {
        1: ("currentNumberScheduled", "int32"), 2: ("numberMisscheduled", "int32"),
        3: ("desiredNumberScheduled", "int32"), 4: ("numberReady", "int32"),
        5: ("observedGeneration", "int64"), 6: ("updatedNumberScheduled", "int32"),
        7: ("numberAvailable", "int32"), 8: ("numberUnavailable", "int32"),
        9: ("collisionCount", "int32"), 10: ("conditions", "[]apps.DaemonSetCondition"),
    },
    "apps.DaemonSetCondition": {
        1: ("type", "string"), 2: ("status", "string"), 3: ("lastTransitionTime", _TIME),
        4: ("reason", "string"), 5: ("message", "string"),
    },
    "apps.StatefulSet": {1: ("metadata", _OBJECT), 2: ("spec", "apps.StatefulSetSpec"),
                         3: ("status", "apps.StatefulSetStatus")},
    "apps.StatefulSetSpec": {
        1: ("replicas", "int32"), 2: ("selector", _SELECTOR), 3: ("template", _TEMPLATE),
        4: ("volumeClaimTemplates", "[]core.PersistentVolumeClaim"),
        5: ("serviceName", "string"), 6: ("podManagementPolicy", "string"),
        7: ("updateStrategy", "apps.StatefulSetUpdateStrategy"),
        8: ("revisionHistoryLimit", "int32"), 9: ("minReadySeconds", "int32"),
        10: ("persistentVolumeClaimRetentionPolicy",
             "apps.StatefulSetPersistentVolumeClaimRetentionPolicy"),
        11: ("ordinals", "apps.StatefulSetOrdinals"),
    },
    "apps.StatefulSetUpdateStrategy": {
        1: ("type", "string"), 2: ("rollingUpdate", "apps.RollingUpdateStatefulSetStrategy"),
    },
    "apps.RollingUpdateStatefulSetStrategy": {1: ("partition", "int32"),
                                              2: ("maxUnavailable", _IOS)},
    "apps.StatefulSetPersistentVolumeClaimRetentionPolicy": {1: ("whenDeleted", "string"),
                                                             2: ("whenScaled", "string")},
    "apps.StatefulSetOrdinals": {1: ("start", "int32")},
    "apps.StatefulSetStatus": {
        1: ("observedGeneration", "int64"), 2: ("replicas", "int32"),
        3: ("readyReplicas", "int32"), 4: ("currentReplicas", "int32"),
        5: ("updatedReplicas", "int32"), 6: ("currentRevision", "string"),
        7: ("updateRevision", "string"), 9: ("collisionCount", "int32"),
        10: ("conditions", "[]apps.StatefulSetCondition"), 11: ("availableReplicas", "int32"),
    },
    "apps.StatefulSetCondition": {
        1: ("type", "string"), 2: ("status", "string"), 3: ("lastTransitionTime", _TIME),
        4: ("reason", "string"), 5: ("message", "string"),
    },
    # batch/v1 (JobSpec 17, scheduling, is alpha and refers to scheduling/v1alpha3: left out)
    "batch.Job": {1: ("metadata", _OBJECT), 2: ("spec", "batch.JobSpec"),
                  3: ("status", "batch.JobStatus")},
    "batch.JobSpec": {
        1: ("parallelism", "int32"), 2: ("completions", "int32"),
        3: ("activeDeadlineSeconds", "int64"), 4: ("selector", _SELECTOR),
        5: ("manualSelector", "bool"), 6: ("template", _TEMPLATE), 7: ("backoffLimit", "int32"),
        8: ("ttlSecondsAfterFinished", "int32"), 9: ("completionMode", "string"),
        10: ("suspend", "bool"), 11: ("podFailurePolicy", "batch.PodFailurePolicy"),
        12: ("backoffLimitPerIndex", "int32"), 13: ("maxFailedIndexes", "int32"),
        14: ("podReplacementPolicy", "string"), 15: ("managedBy", "string"),
        16: ("successPolicy", "batch.SuccessPolicy"),
    },
    "batch.PodFailurePolicy": {1: ("rules", "[]batch.PodFailurePolicyRule")},
    "batch.PodFailurePolicyRule": {
        1: ("action", "string"), 2: ("onExitCodes", "batch.PodFailurePolicyOnExitCodesRequirement"),
        3: ("onPodConditions", "[]batch.PodFailurePolicyOnPodConditionsPattern"),
    },
    "batch.PodFailurePolicyOnExitCodesRequirement": {
        1: ("containerName", "string"), 2: ("operator", "string"), 3: ("values", "[]int32"),
    },
    "batch.PodFailurePolicyOnPodConditionsPattern": {1: ("type", "string"),
                                                     2: ("status", "string")},
    "batch.SuccessPolicy": {1: ("rules", "[]batch.SuccessPolicyRule")},
    "batch.SuccessPolicyRule": {1: ("succeededIndexes", "string"),
                                2: ("succeededCount", "int32")},
    "batch.JobStatus": {
        1: ("conditions", "[]batch.JobCondition"), 2: ("startTime", _TIME),
        3: ("completionTime", _TIME), 4: ("active", "int32"), 5: ("succeeded", "int32"),
        6: ("failed", "int32"), 7: ("completedIndexes", "string"),
        8: ("uncountedTerminatedPods", "batch.UncountedTerminatedPods"), 9: ("ready", "int32"),
        10: ("failedIndexes", "string"), 11: ("terminating", "int32"),
    },
    "batch.JobCondition": {
        1: ("type", "string"), 2: ("status", "string"), 3: ("lastProbeTime", _TIME),
        4: ("lastTransitionTime", _TIME), 5: ("reason", "string"), 6: ("message", "string"),
    },
    "batch.UncountedTerminatedPods": {1: ("succeeded", "[]string"), 2: ("failed", "[]string")},
    # batch/v1 CronJob (kubectl create cronjob)
    "batch.CronJob": {1: ("metadata", _OBJECT), 2: ("spec", "batch.CronJobSpec"),
                      3: ("status", "batch.CronJobStatus")},
    "batch.CronJobSpec": {
        1: ("schedule", "string"), 2: ("startingDeadlineSeconds", "int64"),
        3: ("concurrencyPolicy", "string"), 4: ("suspend", "bool"),
        5: ("jobTemplate", "batch.JobTemplateSpec"), 6: ("successfulJobsHistoryLimit", "int32"),
        7: ("failedJobsHistoryLimit", "int32"), 8: ("timeZone", "string"),
    },
    "batch.JobTemplateSpec": {1: ("metadata", _OBJECT), 2: ("spec", "batch.JobSpec")},
    "batch.CronJobStatus": {1: ("active", "[]core.ObjectReference"),
                            4: ("lastScheduleTime", _TIME), 5: ("lastSuccessfulTime", _TIME)},
    # autoscaling/v1: the scale subresource
    "autoscaling.Scale": {1: ("metadata", _OBJECT), 2: ("spec", "autoscaling.ScaleSpec"),
                          3: ("status", "autoscaling.ScaleStatus")},
    "autoscaling.ScaleSpec": {1: ("replicas", "int32")},
    "autoscaling.ScaleStatus": {1: ("replicas", "int32"), 2: ("selector", "string")},
    # coordination/v1: leader election
    "coordination.Lease": {1: ("metadata", _OBJECT), 2: ("spec", "coordination.LeaseSpec")},
    "coordination.LeaseSpec": {
        1: ("holderIdentity", "string"), 2: ("leaseDurationSeconds", "int32"),
        3: ("acquireTime", "meta.MicroTime"), 4: ("renewTime", "meta.MicroTime"),
        5: ("leaseTransitions", "int32"), 6: ("strategy", "string"),
        7: ("preferredHolder", "string"),
    },
    # discovery/v1
    "discovery.EndpointSlice": {
        1: ("metadata", _OBJECT), 2: ("endpoints", "[]discovery.Endpoint"),
        3: ("ports", "[]discovery.EndpointPort"), 4: ("addressType", "string"),
    },
    "discovery.Endpoint": {
        1: ("addresses", "[]string"), 2: ("conditions", "discovery.EndpointConditions"),
        3: ("hostname", "string"), 4: ("targetRef", "core.ObjectReference"),
        5: ("deprecatedTopology", "{}string"), 6: ("nodeName", "string"), 7: ("zone", "string"),
        8: ("hints", "discovery.EndpointHints"),
    },
    "discovery.EndpointConditions": {1: ("ready", "bool"), 2: ("serving", "bool"),
                                     3: ("terminating", "bool")},
    "discovery.EndpointHints": {1: ("forZones", "[]discovery.ForZone"),
                                2: ("forNodes", "[]discovery.ForNode")},
    "discovery.ForZone": {1: ("name", "string")},
    "discovery.ForNode": {1: ("name", "string")},
    "discovery.EndpointPort": {1: ("name", "string"), 2: ("protocol", "string"),
                               3: ("port", "int32"), 4: ("appProtocol", "string")},
    # policy/v1: kubectl drain posts these to pods/eviction
    "policy.Eviction": {1: ("metadata", _OBJECT), 2: ("deleteOptions", "meta.DeleteOptions")},
    # policy/v1 PodDisruptionBudget (kubectl create pdb)
    "policy.PodDisruptionBudget": {1: ("metadata", _OBJECT),
                                   2: ("spec", "policy.PodDisruptionBudgetSpec"),
                                   3: ("status", "policy.PodDisruptionBudgetStatus")},
    "policy.PodDisruptionBudgetSpec": {
        1: ("minAvailable", _IOS), 2: ("selector", _SELECTOR), 3: ("maxUnavailable", _IOS),
        4: ("unhealthyPodEvictionPolicy", "string"),
    },
    "policy.PodDisruptionBudgetStatus": {
        1: ("observedGeneration", "int64"), 2: ("disruptedPods", "{}meta.Time"),
        3: ("disruptionsAllowed", "int32"), 4: ("currentHealthy", "int32"),
        5: ("desiredHealthy", "int32"), 6: ("expectedPods", "int32"),
        7: ("conditions", "[]meta.Condition"),
    },
    # networking.k8s.io/v1 Ingress and IngressClass (kubectl create ingress; part W5)
    "networking.Ingress": {1: ("metadata", _OBJECT), 2: ("spec", "networking.IngressSpec"),
                           3: ("status", "networking.IngressStatus")},
    "networking.IngressSpec": {1: ("defaultBackend", "networking.IngressBackend"),
                               2: ("tls", "[]networking.IngressTLS"),
                               3: ("rules", "[]networking.IngressRule"),
                               4: ("ingressClassName", "string")},
    "networking.IngressBackend": {3: ("resource", "core.TypedLocalObjectReference"),
                                  4: ("service", "networking.IngressServiceBackend")},
    "networking.IngressServiceBackend": {1: ("name", "string"),
                                         2: ("port", "networking.ServiceBackendPort")},
    "networking.ServiceBackendPort": {1: ("name", "string"), 2: ("number", "int32")},
    "networking.IngressTLS": {1: ("hosts", "[]string"), 2: ("secretName", "string")},
    "networking.IngressRule": {1: ("host", "string"),
                               2: ("ingressRuleValue", "networking.IngressRuleValue")},
    "networking.IngressRuleValue": {1: ("http", "networking.HTTPIngressRuleValue")},
    "networking.HTTPIngressRuleValue": {1: ("paths", "[]networking.HTTPIngressPath")},
    "networking.HTTPIngressPath": {1: ("path", "string"),
                                   2: ("backend", "networking.IngressBackend"),
                                   3: ("pathType", "string")},
    "networking.IngressStatus": {1: ("loadBalancer", "networking.IngressLoadBalancerStatus")},
    "networking.IngressLoadBalancerStatus": {
        1: ("ingress", "[]networking.IngressLoadBalancerIngress")},
    "networking.IngressLoadBalancerIngress": {1: ("ip", "string"), 2: ("hostname", "string"),
                                              4: ("ports", "[]networking.IngressPortStatus")},
    "networking.IngressPortStatus": {1: ("port", "int32"), 2: ("protocol", "string"),
                                     3: ("error", "string")},
    "networking.IngressClass": {1: ("metadata", _OBJECT),
                                2: ("spec", "networking.IngressClassSpec")},
    "networking.IngressClassSpec": {
        1: ("controller", "string"),
        2: ("parameters", "networking.IngressClassParametersReference")},
    "networking.IngressClassParametersReference": {
        1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string"),
        4: ("scope", "string"), 5: ("namespace", "string")},
    # scheduling.k8s.io/v1 PriorityClass (kubectl create priorityclass; part W3)
    "scheduling.PriorityClass": {1: ("metadata", _OBJECT), 2: ("value", "int32"),
                                 3: ("globalDefault", "bool"), 4: ("description", "string"),
                                 5: ("preemptionPolicy", "string")},
    # autoscaling/v2 HorizontalPodAutoscaler (kubectl autoscale; part W3)
    "autoscalingv2.HorizontalPodAutoscaler": {
        1: ("metadata", _OBJECT), 2: ("spec", "autoscalingv2.HorizontalPodAutoscalerSpec"),
        3: ("status", "autoscalingv2.HorizontalPodAutoscalerStatus")},
    "autoscalingv2.HorizontalPodAutoscalerSpec": {
        1: ("scaleTargetRef", "autoscalingv2.CrossVersionObjectReference"),
        2: ("minReplicas", "int32"), 3: ("maxReplicas", "int32"),
        4: ("metrics", "[]autoscalingv2.MetricSpec"),
        5: ("behavior", "autoscalingv2.HorizontalPodAutoscalerBehavior")},
    "autoscalingv2.CrossVersionObjectReference": {1: ("kind", "string"), 2: ("name", "string"),
                                                  3: ("apiVersion", "string")},
    "autoscalingv2.MetricSpec": {1: ("type", "string"),
                                 4: ("resource", "autoscalingv2.ResourceMetricSource"),
                                 7: ("containerResource",
                                     "autoscalingv2.ContainerResourceMetricSource")},
    "autoscalingv2.ResourceMetricSource": {1: ("name", "string"),
                                           2: ("target", "autoscalingv2.MetricTarget")},
    "autoscalingv2.ContainerResourceMetricSource": {
        1: ("name", "string"), 2: ("target", "autoscalingv2.MetricTarget"),
        3: ("container", "string")},
    "autoscalingv2.MetricTarget": {1: ("type", "string"), 2: ("value", "resource.Quantity"),
                                   3: ("averageValue", "resource.Quantity"),
                                   4: ("averageUtilization", "int32")},
    "autoscalingv2.HorizontalPodAutoscalerBehavior": {
        1: ("scaleUp", "autoscalingv2.HPAScalingRules"),
        2: ("scaleDown", "autoscalingv2.HPAScalingRules")},
    "autoscalingv2.HPAScalingRules": {1: ("selectPolicy", "string"),
                                      2: ("policies", "[]autoscalingv2.HPAScalingPolicy"),
                                      3: ("stabilizationWindowSeconds", "int32")},
    "autoscalingv2.HPAScalingPolicy": {1: ("type", "string"), 2: ("value", "int32"),
                                       3: ("periodSeconds", "int32")},
    "autoscalingv2.HorizontalPodAutoscalerStatus": {
        1: ("observedGeneration", "int64"), 2: ("lastScaleTime", _TIME),
        3: ("currentReplicas", "int32"), 4: ("desiredReplicas", "int32")},
    # meta/v1 fields and messages added since k8s-proto's build
    "meta.ManagedFieldsEntry": {6: ("fieldsType", "string"), 7: ("fieldsV1", "meta.FieldsV1"),
                                8: ("subresource", "string")},
    "meta.FieldsV1": {1: ("Raw", "bytes")},
    "meta.DeleteOptions": {6: ("ignoreStoreReadErrorWithClusterBreakingPotential", "bool")},
    "meta.Preconditions": {2: ("resourceVersion", "string")},
    "meta.Condition": {
        1: ("type", "string"), 2: ("status", "string"), 3: ("observedGeneration", "int64"),
        4: ("lastTransitionTime", _TIME), 5: ("reason", "string"), 6: ("message", "string"),
    },
    # core/v1 fields and messages added since k8s-proto's build, for pods, workloads,
    # services, config maps and secrets. The probe and lifecycle handlers were one message
    # (Handler) then; they are two now, with different fourth fields.
    "core.ConfigMap": {4: ("immutable", "bool")},
    "core.Secret": {5: ("immutable", "bool")},
    "core.NamespaceStatus": {2: ("conditions", "[]core.NamespaceCondition")},
    "core.NamespaceCondition": {
        1: ("type", "string"), 2: ("status", "string"), 4: ("lastTransitionTime", _TIME),
        5: ("reason", "string"), 6: ("message", "string"),
    },
    "core.Container": {22: ("startupProbe", "core.Probe"),
                       23: ("resizePolicy", "[]core.ContainerResizePolicy"),
                       24: ("restartPolicy", "string")},
    "core.ContainerResizePolicy": {1: ("resourceName", "string"), 2: ("restartPolicy", "string")},
    "core.ResourceRequirements": {3: ("claims", "[]core.ResourceClaim")},
    "core.ResourceClaim": {1: ("name", "string"), 2: ("request", "string")},
    "core.Probe": {1: ("handler", "core.ProbeHandler"),
                   7: ("terminationGracePeriodSeconds", "int64")},
    "core.ProbeHandler": {1: ("exec", "core.ExecAction"), 2: ("httpGet", "core.HTTPGetAction"),
                          3: ("tcpSocket", "core.TCPSocketAction"), 4: ("grpc", "core.GRPCAction")},
    "core.GRPCAction": {1: ("port", "int32"), 2: ("service", "string")},
    "core.Lifecycle": {1: ("postStart", "core.LifecycleHandler"),
                       2: ("preStop", "core.LifecycleHandler"), 3: ("stopSignal", "string")},
    "core.LifecycleHandler": {
        1: ("exec", "core.ExecAction"), 2: ("httpGet", "core.HTTPGetAction"),
        3: ("tcpSocket", "core.TCPSocketAction"), 4: ("sleep", "core.SleepAction"),
    },
    "core.SleepAction": {1: ("seconds", "int64")},
    "core.SecurityContext": {10: ("windowsOptions", "core.WindowsSecurityContextOptions"),
                             11: ("seccompProfile", "core.SeccompProfile"),
                             12: ("appArmorProfile", "core.AppArmorProfile")},
    "core.PodSecurityContext": {
        8: ("windowsOptions", "core.WindowsSecurityContextOptions"),
        9: ("fsGroupChangePolicy", "string"), 10: ("seccompProfile", "core.SeccompProfile"),
        11: ("appArmorProfile", "core.AppArmorProfile"),
        12: ("supplementalGroupsPolicy", "string"), 13: ("seLinuxChangePolicy", "string"),
    },
    "core.WindowsSecurityContextOptions": {
        1: ("gmsaCredentialSpecName", "string"), 2: ("gmsaCredentialSpec", "string"),
        3: ("runAsUserName", "string"), 4: ("hostProcess", "bool"),
    },
    "core.SeccompProfile": {1: ("type", "string"), 2: ("localhostProfile", "string")},
    "core.AppArmorProfile": {1: ("type", "string"), 2: ("localhostProfile", "string")},
    "core.PodSpec": {
        31: ("preemptionPolicy", "string"), 32: ("overhead", _RESOURCES),
        33: ("topologySpreadConstraints", "[]core.TopologySpreadConstraint"),
        35: ("setHostnameAsFQDN", "bool"), 36: ("os", "core.PodOS"), 37: ("hostUsers", "bool"),
        38: ("schedulingGates", "[]core.PodSchedulingGate"),
        40: ("resources", "core.ResourceRequirements"), 41: ("hostnameOverride", "string"),
    },
    "core.TopologySpreadConstraint": {
        1: ("maxSkew", "int32"), 2: ("topologyKey", "string"), 3: ("whenUnsatisfiable", "string"),
        4: ("labelSelector", _SELECTOR), 5: ("minDomains", "int32"),
        6: ("nodeAffinityPolicy", "string"), 7: ("nodeTaintsPolicy", "string"),
        8: ("matchLabelKeys", "[]string"),
    },
    "core.PodOS": {1: ("name", "string")},
    "core.PodSchedulingGate": {1: ("name", "string")},
    "core.PodAffinityTerm": {4: ("namespaceSelector", _SELECTOR),
                             5: ("matchLabelKeys", "[]string"),
                             6: ("mismatchLabelKeys", "[]string")},
    "core.VolumeMount": {7: ("recursiveReadOnly", "string")},
    "core.PodStatus": {
        12: ("podIPs", "[]core.PodIP"), 13: ("ephemeralContainerStatuses", "[]core.ContainerStatus"),
        14: ("resize", "string"), 16: ("hostIPs", "[]core.HostIP"),
        17: ("observedGeneration", "int64"), 19: ("allocatedResources", _RESOURCES),
        20: ("resources", "core.ResourceRequirements"),
    },
    "core.PodIP": {1: ("ip", "string")},
    "core.HostIP": {1: ("ip", "string")},
    "core.PodCondition": {7: ("observedGeneration", "int64")},
    "core.ContainerStatus": {9: ("started", "bool"), 10: ("allocatedResources", _RESOURCES),
                             11: ("resources", "core.ResourceRequirements"),
                             15: ("stopSignal", "string")},
    "core.ServiceSpec": {
        17: ("ipFamilyPolicy", "string"), 18: ("clusterIPs", "[]string"),
        19: ("ipFamilies", "[]string"), 20: ("allocateLoadBalancerNodePorts", "bool"),
        21: ("loadBalancerClass", "string"), 22: ("internalTrafficPolicy", "string"),
        23: ("trafficDistribution", "string"),
    },
    "core.ServiceStatus": {2: ("conditions", "[]meta.Condition")},
    "core.ServicePort": {6: ("appProtocol", "string")},
    "core.EndpointPort": {4: ("appProtocol", "string")},
    # rbac/v1, authentication/v1 and authorization/v1 (kubectl create role/rolebinding,
    # create token, auth can-i, auth whoami), from kubernetes/api's generated.proto.
    "rbac.Role": {1: ("metadata", _OBJECT), 2: ("rules", "[]rbac.PolicyRule")},
    "rbac.ClusterRole": {1: ("metadata", _OBJECT), 2: ("rules", "[]rbac.PolicyRule"),
                         3: ("aggregationRule", "rbac.AggregationRule")},
    "rbac.AggregationRule": {1: ("clusterRoleSelectors", "[]" + _SELECTOR)},
    "rbac.PolicyRule": {1: ("verbs", "[]string"), 2: ("apiGroups", "[]string"),
                        3: ("resources", "[]string"), 4: ("resourceNames", "[]string"),
                        5: ("nonResourceURLs", "[]string")},
    "rbac.RoleBinding": {1: ("metadata", _OBJECT), 2: ("subjects", "[]rbac.Subject"),
                         3: ("roleRef", "rbac.RoleRef")},
    "rbac.ClusterRoleBinding": {1: ("metadata", _OBJECT), 2: ("subjects", "[]rbac.Subject"),
                                3: ("roleRef", "rbac.RoleRef")},
    "rbac.Subject": {1: ("kind", "string"), 2: ("apiGroup", "string"), 3: ("name", "string"),
                     4: ("namespace", "string")},
    "rbac.RoleRef": {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")},
    "authentication.SelfSubjectReview": {1: ("metadata", _OBJECT),
                                         2: ("status", "authentication.SelfSubjectReviewStatus")},
    "authentication.SelfSubjectReviewStatus": {1: ("userInfo", "authentication.UserInfo")},
    "authentication.UserInfo": {1: ("username", "string"), 2: ("uid", "string"),
                                3: ("groups", "[]string"),
                                4: ("extra", "{}authentication.ExtraValue")},
    "authentication.TokenRequest": {1: ("metadata", _OBJECT),
                                    2: ("spec", "authentication.TokenRequestSpec"),
                                    3: ("status", "authentication.TokenRequestStatus")},
    "authentication.TokenRequestSpec": {
        1: ("audiences", "[]string"), 4: ("expirationSeconds", "int64"),
        3: ("boundObjectRef", "authentication.BoundObjectReference"),
        5: ("attestations", "{}authentication.AttestationValue")},
    "authentication.BoundObjectReference": {1: ("kind", "string"), 2: ("apiVersion", "string"),
                                            3: ("name", "string"), 4: ("uid", "string")},
    "authentication.TokenRequestStatus": {1: ("token", "string"),
                                          2: ("expirationTimestamp", _TIME)},
    "authorization.SelfSubjectAccessReview": {
        1: ("metadata", _OBJECT), 2: ("spec", "authorization.SelfSubjectAccessReviewSpec"),
        3: ("status", "authorization.SubjectAccessReviewStatus")},
    "authorization.SelfSubjectAccessReviewSpec": {
        1: ("resourceAttributes", "authorization.ResourceAttributes"),
        2: ("nonResourceAttributes", "authorization.NonResourceAttributes")},
    "authorization.SubjectAccessReview": {
        1: ("metadata", _OBJECT), 2: ("spec", "authorization.SubjectAccessReviewSpec"),
        3: ("status", "authorization.SubjectAccessReviewStatus")},
    "authorization.LocalSubjectAccessReview": {
        1: ("metadata", _OBJECT), 2: ("spec", "authorization.SubjectAccessReviewSpec"),
        3: ("status", "authorization.SubjectAccessReviewStatus")},
    "authorization.SubjectAccessReviewSpec": {
        1: ("resourceAttributes", "authorization.ResourceAttributes"),
        2: ("nonResourceAttributes", "authorization.NonResourceAttributes"),
        3: ("user", "string"), 4: ("groups", "[]string"),
        5: ("extra", "{}authorization.ExtraValue"), 6: ("uid", "string")},
    "authorization.ResourceAttributes": {
        1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
        4: ("version", "string"), 5: ("resource", "string"), 6: ("subresource", "string"),
        7: ("name", "string"), 8: ("fieldSelector", "authorization.FieldSelectorAttributes"),
        9: ("labelSelector", "authorization.LabelSelectorAttributes")},
    "authorization.FieldSelectorAttributes": {
        1: ("rawSelector", "string"), 2: ("requirements", "[]meta.FieldSelectorRequirement")},
    "authorization.LabelSelectorAttributes": {
        1: ("rawSelector", "string"), 2: ("requirements", "[]meta.LabelSelectorRequirement")},
    "authorization.NonResourceAttributes": {1: ("path", "string"), 2: ("verb", "string")},
    "authorization.SubjectAccessReviewStatus": {
        1: ("allowed", "bool"), 4: ("denied", "bool"), 2: ("reason", "string"),
        3: ("evaluationError", "string")},
    "authorization.SelfSubjectRulesReview": {
        1: ("metadata", _OBJECT), 2: ("spec", "authorization.SelfSubjectRulesReviewSpec"),
        3: ("status", "authorization.SubjectRulesReviewStatus")},
    "authorization.SelfSubjectRulesReviewSpec": {1: ("namespace", "string")},
    "authorization.SubjectRulesReviewStatus": {
        1: ("resourceRules", "[]authorization.ResourceRule"),
        2: ("nonResourceRules", "[]authorization.NonResourceRule"),
        3: ("incomplete", "bool"), 4: ("evaluationError", "string")},
    "authorization.ResourceRule": {1: ("verbs", "[]string"), 2: ("apiGroups", "[]string"),
                                   3: ("resources", "[]string"), 4: ("resourceNames", "[]string")},
    "authorization.NonResourceRule": {1: ("verbs", "[]string"),
                                      2: ("nonResourceURLs", "[]string")},
    "meta.FieldSelectorRequirement": {1: ("key", "string"), 2: ("operator", "string"),
                                      3: ("values", "[]string")},
}

# Scalars whose zero is a value: Go pointers (*int32, *bool, *string) and fields without
# omitempty, from the json tags in kubernetes/api's types.go (and apimachinery's meta/v1).
# Every other zero scalar is one that Go's JSON encoder would have left out.
_KEEP_ZERO: dict[str, str] = {
    "core.Volume": "name",
    "core.PersistentVolumeClaimVolumeSource": "claimName",
    "core.PersistentVolumeSpec": "volumeMode",
    "core.PersistentVolumeClaimSpec": "storageClassName volumeMode",
    "core.PersistentVolumeClaimCondition": "type status",
    "core.HostPathVolumeSource": "path type",
    "core.GlusterfsVolumeSource": "endpoints path",
    "core.GlusterfsPersistentVolumeSource": "endpoints path endpointsNamespace",
    "core.RBDVolumeSource": "image",
    "core.RBDPersistentVolumeSource": "image",
    "core.CinderVolumeSource": "volumeID",
    "core.CinderPersistentVolumeSource": "volumeID",
    "core.GCEPersistentDiskVolumeSource": "pdName",
    "core.QuobyteVolumeSource": "registry volume",
    "core.FlexPersistentVolumeSource": "driver",
    "core.FlexVolumeSource": "driver",
    "core.AWSElasticBlockStoreVolumeSource": "volumeID",
    "core.GitRepoVolumeSource": "repository",
    "core.SecretVolumeSource": "defaultMode optional",
    "core.SecretProjection": "optional",
    "core.NFSVolumeSource": "server path",
    "core.ISCSIVolumeSource": "targetPortal iqn lun initiatorName",
    "core.ISCSIPersistentVolumeSource": "targetPortal iqn lun initiatorName",
    "core.FCVolumeSource": "lun",
    "core.AzureFileVolumeSource": "secretName shareName",
    "core.AzureFilePersistentVolumeSource": "secretName shareName secretNamespace",
    "core.VsphereVirtualDiskVolumeSource": "volumePath",
    "core.PhotonPersistentDiskVolumeSource": "pdID",
    "core.AzureDiskVolumeSource": "diskName diskURI cachingMode fsType readOnly kind",
    "core.PortworxVolumeSource": "volumeID",
    "core.ScaleIOVolumeSource": "gateway system",
    "core.ScaleIOPersistentVolumeSource": "gateway system",
    "core.ConfigMapVolumeSource": "defaultMode optional",
    "core.ConfigMapProjection": "optional",
    "core.ServiceAccountTokenProjection": "expirationSeconds path",
    "core.ProjectedVolumeSource": "defaultMode",
    "core.KeyToPath": "key path mode",
    "core.LocalVolumeSource": "path fsType",
    "core.CSIPersistentVolumeSource": "driver volumeHandle",
    "core.CSIVolumeSource": "driver readOnly fsType",
    "core.ContainerPort": "containerPort",
    "core.VolumeMount": "name recursiveReadOnly mountPath mountPropagation",
    "core.VolumeDevice": "name devicePath",
    "core.EnvVar": "name",
    "core.ObjectFieldSelector": "fieldPath",
    "core.ResourceFieldSelector": "resource",
    "core.ConfigMapKeySelector": "key optional",
    "core.SecretKeySelector": "key optional",
    "core.ConfigMapEnvSource": "optional",
    "core.SecretEnvSource": "optional",
    "core.HTTPHeader": "name value",
    "core.GRPCAction": "port service",
    "core.SleepAction": "seconds",
    "core.Probe": "terminationGracePeriodSeconds",
    "core.ContainerResizePolicy": "resourceName restartPolicy",
    "core.ResourceClaim": "name",
    "core.Container": "name restartPolicy",
    "core.Lifecycle": "stopSignal",
    "core.ContainerStateTerminated": "exitCode",
    "core.ContainerStatus": "name ready restartCount image imageID started stopSignal",
    "core.PodCondition": "type status",
    "core.NodeSelectorRequirement": "key operator",
    "core.TopologySelectorLabelRequirement": "key",
    "core.WeightedPodAffinityTerm": "weight",
    "core.PodAffinityTerm": "topologyKey",
    "core.PreferredSchedulingTerm": "weight",
    "core.Taint": "key effect",
    "core.Toleration": "tolerationSeconds",
    "core.PodReadinessGate": "conditionType",
    "core.PodSpec": (
        "terminationGracePeriodSeconds activeDeadlineSeconds automountServiceAccountToken "
        "shareProcessNamespace priority runtimeClassName enableServiceLinks preemptionPolicy "
        "setHostnameAsFQDN hostUsers hostnameOverride"
    ),
    "core.PodOS": "name",
    "core.PodSchedulingGate": "name",
    "core.TopologySpreadConstraint": (
        "maxSkew topologyKey whenUnsatisfiable minDomains nodeAffinityPolicy nodeTaintsPolicy"
    ),
    "core.HostAlias": "ip",
    "core.PodSecurityContext": (
        "runAsUser runAsGroup runAsNonRoot supplementalGroupsPolicy fsGroup fsGroupChangePolicy "
        "seLinuxChangePolicy"
    ),
    "core.SeccompProfile": "type localhostProfile",
    "core.AppArmorProfile": "type localhostProfile",
    "core.PodDNSConfigOption": "value",
    "core.PodIP": "ip",
    "core.HostIP": "ip",
    "core.ReplicationControllerSpec": "replicas",
    "core.ReplicationControllerStatus": "replicas",
    "core.ReplicationControllerCondition": "type status",
    "core.ClientIPConfig": "timeoutSeconds",
    "core.ServiceSpec": (
        "ipFamilyPolicy allocateLoadBalancerNodePorts loadBalancerClass internalTrafficPolicy "
        "trafficDistribution"
    ),
    "core.ServicePort": "appProtocol port",
    "core.ServiceAccount": "automountServiceAccountToken",
    "core.EndpointAddress": "ip nodeName",
    "core.EndpointPort": "port appProtocol",
    "core.ConfigMapNodeConfigSource": "namespace name kubeletConfigKey",
    "core.DaemonEndpoint": "Port",
    "core.NodeSystemInfo": (
        "machineID systemUUID bootID kernelVersion osImage containerRuntimeVersion kubeletVersion "
        "kubeProxyVersion operatingSystem architecture"
    ),
    "core.AttachedVolume": "name devicePath",
    "core.NodeCondition": "type status",
    "core.NodeAddress": "type address",
    "core.NamespaceCondition": "type status",
    "core.Preconditions": "uid",
    "core.PodLogOptions": "sinceSeconds tailLines limitBytes",
    "core.TypedLocalObjectReference": "apiGroup kind name",
    "core.Event": "reportingComponent reportingInstance",
    "core.LimitRangeItem": "type",
    "core.ScopedResourceSelectorRequirement": "scopeName operator",
    "core.Secret": "immutable",
    "core.ConfigMap": "immutable",
    "core.ComponentCondition": "type status",
    "core.DownwardAPIVolumeSource": "defaultMode",
    "core.DownwardAPIVolumeFile": "path mode",
    "core.SecurityContext": (
        "privileged runAsUser runAsGroup runAsNonRoot readOnlyRootFilesystem "
        "allowPrivilegeEscalation procMount"
    ),
    "core.WindowsSecurityContextOptions": (
        "gmsaCredentialSpecName gmsaCredentialSpec runAsUserName hostProcess"
    ),
    "core.RangeAllocation": "range data",
    "core.Sysctl": "name value",
    "apps.RollingUpdateStatefulSetStrategy": "partition",
    "apps.StatefulSetOrdinals": "start",
    "apps.StatefulSetSpec": "replicas serviceName revisionHistoryLimit",
    "apps.StatefulSetStatus": "replicas collisionCount availableReplicas",
    "apps.StatefulSetCondition": "type status",
    "apps.DeploymentSpec": "replicas revisionHistoryLimit progressDeadlineSeconds",
    "apps.DeploymentStatus": "terminatingReplicas collisionCount",
    "apps.DeploymentCondition": "type status",
    "apps.DaemonSetSpec": "revisionHistoryLimit",
    "apps.DaemonSetStatus": (
        "currentNumberScheduled numberMisscheduled desiredNumberScheduled numberReady "
        "collisionCount"
    ),
    "apps.DaemonSetCondition": "type status",
    "apps.ReplicaSetSpec": "replicas",
    "apps.ReplicaSetStatus": "replicas terminatingReplicas",
    "apps.ReplicaSetCondition": "type status",
    "batch.PodFailurePolicyOnExitCodesRequirement": "containerName operator",
    "batch.PodFailurePolicyOnPodConditionsPattern": "type status",
    "batch.PodFailurePolicyRule": "action",
    "batch.SuccessPolicyRule": "succeededIndexes succeededCount",
    "batch.JobSpec": (
        "parallelism completions activeDeadlineSeconds backoffLimit backoffLimitPerIndex "
        "maxFailedIndexes manualSelector ttlSecondsAfterFinished completionMode suspend "
        "podReplacementPolicy managedBy"
    ),
    "batch.JobStatus": "terminating failedIndexes ready",
    "batch.CronJobSpec": (
        "schedule timeZone startingDeadlineSeconds suspend successfulJobsHistoryLimit "
        "failedJobsHistoryLimit"
    ),
    "policy.PodDisruptionBudgetSpec": "unhealthyPodEvictionPolicy",
    "scheduling.PriorityClass": "value globalDefault",  # part W3
    "autoscalingv2.HorizontalPodAutoscalerSpec": "maxReplicas",
    "policy.PodDisruptionBudgetStatus": "disruptionsAllowed currentHealthy desiredHealthy "
                                        "expectedPods",
    "batch.JobCondition": "type status",
    "autoscaling.ScaleStatus": "replicas",
    "coordination.LeaseSpec": (
        "holderIdentity leaseDurationSeconds leaseTransitions strategy preferredHolder"
    ),
    "discovery.EndpointSlice": "addressType",
    "discovery.Endpoint": "hostname nodeName zone",
    "discovery.EndpointConditions": "ready serving terminating",
    "discovery.ForZone": "name",
    "discovery.ForNode": "name",
    "discovery.EndpointPort": "name protocol port appProtocol",
    "meta.ObjectMeta": "deletionGracePeriodSeconds",
    "meta.OwnerReference": "apiVersion kind name uid controller blockOwnerDeletion",
    "meta.DeleteOptions": (
        "gracePeriodSeconds orphanDependents propagationPolicy "
        "ignoreStoreReadErrorWithClusterBreakingPotential"
    ),
    "meta.Preconditions": "uid resourceVersion",
    "meta.LabelSelectorRequirement": "key operator",
    "meta.Condition": "type status reason message",
    "meta.FieldSelectorRequirement": "key operator",
    "rbac.RoleRef": "apiGroup kind name",
    "rbac.Subject": "kind name",
    "authentication.TokenRequestSpec": "expirationSeconds",
    "authentication.TokenRequestStatus": "token",
    "authorization.SubjectAccessReviewStatus": "allowed",
    "authorization.SubjectRulesReviewStatus": "incomplete",
}

# Go embedded structs (a proto field of their own, but inlined in JSON), by proto field name.
_INLINE: dict[str, str] = {
    "core.Volume": "volumeSource",
    "core.PersistentVolumeSpec": "persistentVolumeSource",
    "core.Probe": "handler",
    "core.SecretProjection": "localObjectReference",
    "core.ConfigMapVolumeSource": "localObjectReference",
    "core.ConfigMapProjection": "localObjectReference",
    "core.ConfigMapKeySelector": "localObjectReference",
    "core.SecretKeySelector": "localObjectReference",
    "core.ConfigMapEnvSource": "localObjectReference",
    "core.SecretEnvSource": "localObjectReference",
    "networking.IngressRule": "ingressRuleValue",  # part W5
}

# Fields that k8s-proto has and Kubernetes has since removed (ManagedFieldsEntry.fields became
# fieldsV1; clusterName and initializers left ObjectMeta): an error if sent, not stale JSON.
_REMOVED: dict[str, tuple[int, ...]] = {
    "meta.ManagedFieldsEntry": (5,),
    "meta.ObjectMeta": (15, 16),
}

# Options messages that every API group registers under its own apiVersion.
_META_KINDS = frozenset({"DeleteOptions", "CreateOptions", "UpdateOptions", "PatchOptions"})


def _full(name: str) -> str:
    pkg, _, short = name.partition(".")
    return _PACKAGES[pkg] + short


def _own_field(name: str, spec: str) -> Field:
    repeated = spec.startswith("[]")
    is_map = spec.startswith("{}")
    t = spec[2:] if repeated or is_map else spec
    return Field(name, t if t in _WIRE else _full(t), repeated=repeated, map=is_map)


@functools.cache
def registry() -> dict[str, Message]:
    """Every message this server can decode, by full proto name."""
    messages = {
        name: Message(name, {number: Field(json_name, type_name, repeated=bool(repeated),
                                           map=bool(is_map))
                             for number, json_name, type_name, repeated, is_map in fields})
        for name, fields in schemas.protobuf_messages().items()
    }
    for name, fields in _OWN.items():
        msg = messages.setdefault(_full(name), Message(_full(name)))
        for number, (json_name, spec) in fields.items():
            msg.fields[number] = _own_field(json_name, spec)
    empty = Message("")
    for name, numbers in _REMOVED.items():
        for number in numbers:
            messages.get(_full(name), empty).fields.pop(number, None)
    for name, names in _KEEP_ZERO.items():
        keep = set(names.split())
        msg = messages.get(_full(name), empty)
        msg.fields = {n: replace(f, keep_zero=f.name in keep) for n, f in msg.fields.items()}
    for name, inline in _INLINE.items():
        msg = messages.get(_full(name), empty)
        msg.fields = {n: replace(f, inline=f.name == inline) for n, f in msg.fields.items()}
    return messages


# -- the wire format -------------------------------------------------------------------------


def _malformed(what: str) -> ProtobufError:
    return ProtobufError(400, f"malformed protobuf body: {what}")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if i >= len(data):
            raise _malformed("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift >= 70:
            raise _malformed("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(number, wire type, value) of each field: an int for varints and fixed, else bytes."""
    i = 0
    n = len(data)
    while i < n:
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _malformed("field number 0")
        if wire == 0:
            value, i = _varint(data, i)
            yield number, wire, value
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > n:
                raise _malformed("truncated length-delimited field")
            yield number, wire, data[i:i + size]
            i += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > n:
                raise _malformed("truncated fixed-width field")
            yield number, wire, int.from_bytes(data[i:i + width], "little")
            i += width
        else:
            raise _malformed(f"unsupported wire type {wire}")


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _scalar(t: str, value: int | bytes) -> Any:
    if isinstance(value, bytes):
        if t == "bytes":
            return base64.b64encode(value).decode("ascii")  # []byte is base64 in JSON
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _malformed("a string field is not UTF-8") from e
    if t in ("int32", "enum"):
        return _signed(value, 32)  # negative int32s are sign-extended to 64 bits on the wire
    if t in ("int64", "sfixed64"):
        return _signed(value, 64)
    if t == "sfixed32":
        return _signed(value, 32)
    if t in ("sint32", "sint64"):
        return (value >> 1) ^ -(value & 1)
    if t == "bool":
        return value != 0
    if t == "double":
        return struct.unpack("<d", value.to_bytes(8, "little"))[0]
    if t == "float":
        return struct.unpack("<f", value.to_bytes(4, "little"))[0]
    if t == "uint32":
        return value & 0xFFFFFFFF
    return value  # uint64, fixed32, fixed64


def _packed(t: str, data: bytes) -> list[Any]:
    """A packed repeated scalar (proto2 Kubernetes writes them unpacked, but both are valid)."""
    wire = _WIRE[t]
    out: list[Any] = []
    i = 0
    while i < len(data):
        if wire == 0:
            v, i = _varint(data, i)
        else:
            width = 8 if wire == 1 else 4
            if i + width > len(data):
                raise _malformed("truncated packed field")
            v = int.from_bytes(data[i:i + width], "little")
            i += width
        out.append(_scalar(t, v))
    return out


# -- messages with a JSON form of their own --------------------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_OMIT = object()  # a zero Time: null in JSON, so the field is left out


def _timestamp(data: bytes, micro: bool) -> Any:
    if not data:
        return _OMIT  # metav1.Time writes nothing for the zero time
    seconds = nanos = 0
    for number, wire, value in _fields(data):
        if wire == 0 and isinstance(value, int):
            if number == 1:
                seconds = _signed(value, 64)
            elif number == 2:
                nanos = _signed(value, 32)
    try:
        t = _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError as e:
        raise _malformed(f"time out of range: {seconds}s") from e
    day = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    # MicroTime is RFC 3339 with microseconds; Time is second precision, as Go marshals them.
    return f"{day}.{t.microsecond:06d}Z" if micro else f"{day}Z"


def _int_or_string(data: bytes) -> Any:
    kind = int_val = 0
    str_val = ""
    for number, _wire, value in _fields(data):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, int):
            int_val = _signed(value, 32)
        elif number == 3 and isinstance(value, bytes):
            str_val = _scalar("string", value)
    return str_val if kind == 1 else int_val


def _quantity(data: bytes) -> Any:
    text = "0"  # the zero Quantity, as Go prints it
    for number, _wire, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            text = _scalar("string", value)
    return text


def _raw_json(data: bytes) -> Any:
    """FieldsV1 and RawExtension hold JSON bytes (RawExtension may hold protobuf: a 415)."""
    raw = b""
    for number, _wire, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            raw = value
    if not raw:
        return _OMIT
    if raw.startswith(MAGIC):  # would let a body nest objects without bound
        raise ProtobufError(415, "protobuf objects inside protobuf objects are not supported; "
                                 "send JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _malformed(f"embedded JSON does not parse: {e}") from e


def _string_list(data: bytes) -> list[str]:
    """authentication/v1 and authorization/v1 ExtraValue, AttestationValue: a Go []string,
    which JSON writes as a plain array and protobuf wraps in a message of one field."""
    items: list[str] = []
    for number, wire, value in _fields(data):
        if number != 1 or wire != 2 or not isinstance(value, bytes):
            raise _malformed("a string list has a field other than items")
        items.append(_scalar("string", value))
    return items


_SPECIAL: dict[str, Callable[[bytes], Any]] = {
    "k8s.io.api.authentication.v1.ExtraValue": _string_list,
    "k8s.io.api.authentication.v1.AttestationValue": _string_list,
    "k8s.io.api.authorization.v1.ExtraValue": _string_list,
    TIME: lambda d: _timestamp(d, micro=False),
    MICROTIME: lambda d: _timestamp(d, micro=True),
    INT_OR_STRING: _int_or_string,
    QUANTITY: _quantity,
    FIELDS_V1: _raw_json,
    RAW_EXTENSION: _raw_json,
}


# -- decoding --------------------------------------------------------------------------------


def _short(name: str) -> str:
    """``k8s.io.api.apps.v1.Deployment`` -> ``apps/v1 Deployment``, for messages to people."""
    for prefix, label in ((_CORE, "v1 "), (_META, "meta/v1 "), ("k8s.io.api.", "")):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if label:
                return label + rest
            group, _, tail = rest.partition(".")
            version, _, kind = tail.partition(".")
            return f"{group}/{version} {kind}"
    return name


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _value(f: Field, wire: int, value: int | bytes, path: str, depth: int) -> Any:
    if f.type in _WIRE:
        if wire != _WIRE[f.type]:
            raise _malformed(f"{path}: wire type {wire} for a {f.type}")
        return _scalar(f.type, value)
    if not isinstance(value, bytes):
        raise _malformed(f"{path}: wire type {wire} for a message")
    return _message(f.type, value, path, depth + 1)


def _message(name: str, data: bytes, path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise _malformed("nested too deeply")
    special = _SPECIAL.get(name)
    if special is not None:
        return special(data)
    msg = registry().get(name)
    if msg is None:
        raise ProtobufError(415, f"{path or 'the object'}: protobuf messages of type "
                                 f"{_short(name)} are not supported by this server; send JSON")
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        f = msg.fields.get(number)
        if f is None:
            raise ProtobufError(
                415, f"{path or 'the object'}: field {number} of {_short(name)} is not known "
                     "to this server; send JSON")
        where = _join(path, f.name)
        if f.map:
            _map_entry(out.setdefault(f.name, {}), f, wire, value, where, depth)
        elif f.repeated:
            items = out.setdefault(f.name, [])
            if f.type in _WIRE and wire == 2 and _WIRE[f.type] != 2:
                assert isinstance(value, bytes)
                items.extend(_packed(f.type, value))
            else:
                item = _value(f, wire, value, where, depth)
                if item is not _OMIT:
                    items.append(item)
        else:
            v = _value(f, wire, value, where if not f.inline else path, depth)
            if v is _OMIT:
                out.pop(f.name, None)
            elif f.inline:
                out.update(v)
            elif f.type in _WIRE and not f.keep_zero and not v:
                out.pop(f.name, None)  # what omitempty leaves out of the JSON
            else:
                out[f.name] = v
    return out


def _map_entry(into: dict[str, Any], f: Field, wire: int, value: int | bytes, path: str,
               depth: int) -> None:
    if not isinstance(value, bytes):
        raise _malformed(f"{path}: wire type {wire} for a map entry")
    key = ""
    item: Any = None
    value_field = Field(f.name, f.type)
    for number, w, v in _fields(value):
        if number == 1:
            if not isinstance(v, bytes):
                raise _malformed(f"{path}: a map key is not a string")
            key = _scalar("string", v)
        elif number == 2:
            item = _value(value_field, w, v, f"{path}[{key}]", depth)
    if item is None or item is _OMIT:  # an entry without a value holds the zero value
        item = _message(f.type, b"", path, depth + 1) if f.type not in _WIRE else (
            "" if f.type in ("string", "bytes") else 0)
    into[key] = item


def _package(api_version: str) -> str:
    group, _, version = api_version.rpartition("/")
    if not group:
        return f"k8s.io.api.core.{version}."
    return f"k8s.io.api.{group.removesuffix('.k8s.io').split('.')[0]}.{version}."


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a ``application/vnd.kubernetes.protobuf`` request body."""
    if not body.startswith(MAGIC):
        raise _malformed("the body does not start with the Kubernetes protobuf magic k8s\\0")
    reg = registry()
    numbers = {f.name: n for n, f in reg[UNKNOWN].fields.items()}
    type_meta = {n: f.name for n, f in reg[_RUNTIME + "TypeMeta"].fields.items()}
    found = {"apiVersion": "", "kind": ""}
    raw = b""
    for number, _wire, value in _fields(body[len(MAGIC):]):
        if not isinstance(value, bytes):
            raise _malformed("runtime.Unknown has a non-bytes field")
        if number == numbers["typeMeta"]:
            for n, _w, v in _fields(value):
                if n in type_meta and isinstance(v, bytes):
                    found[type_meta[n]] = _scalar("string", v)
        elif number == numbers["raw"]:
            raw = value
        elif number == numbers["contentEncoding"] and value:
            raise ProtobufError(415, "protobuf bodies with a content encoding are not supported")
    api_version, kind = found["apiVersion"], found["kind"]
    if not api_version or not kind:
        raise _malformed("the envelope has no apiVersion or kind")
    name = (_META if kind in _META_KINDS else _package(api_version)) + kind
    if name not in reg:
        raise ProtobufError(415, f"protobuf bodies of {api_version} {kind} are not supported by "
                                 "this server; send JSON")
    obj = _message(name, raw, "", 0)
    return {"apiVersion": api_version, "kind": kind, **obj}
