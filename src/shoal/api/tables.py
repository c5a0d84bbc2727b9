"""Server-side printing: the ``meta.k8s.io/v1`` Table that ``kubectl get`` asks for.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
whatever columns the server returns, hiding those with ``priority`` above 0
unless ``-o wide`` is given. So the server always fills every column, as the
Kubernetes API server does (it prints with ``Wide: true``).

The columns and cells of the built-in kinds follow
``kubernetes/pkg/printers/internalversion/printers.go``. Custom resources follow
the apiextensions table convertor: NAME, then the CRD version's
``additionalPrinterColumns`` (or a single AGE column when it declares none).
CustomResourceDefinitions themselves, like every kind without a printer in
Kubernetes, print NAME and CREATED AT. Other kinds Shoal serves print NAME and
AGE.

Ages are computed against the ``now`` the caller passes, so output is
deterministic under a simulated clock.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.model import jsonpath
from shoal.model.kinds import Kind
from shoal.model.selectors import LabelSelector, SelectorError, format_labels

__all__ = ["INCLUDE_OBJECT_VALUES", "build_table", "human_duration", "parse_time"]

INCLUDE_OBJECT_VALUES = ("None", "Metadata", "Object")

_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of a name automatically. "
    "Name is primarily intended for creation idempotence and configuration definition. "
    "Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATED_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is "
    "in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."


@dataclass(frozen=True)
class _Column:
    name: str
    type: str = "string"
    description: str = ""
    format: str = ""
    priority: int = 0

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


_NAME = _Column("Name", format="name", description=_NAME_DOC)
_AGE = _Column("Age", description=_CREATED_DOC)


# --- time --------------------------------------------------------------------------------


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def parse_time(value: Any) -> datetime.datetime | None:
    """Parse an RFC 3339 timestamp (``metav1.Time`` or ``MicroTime``); None if absent or bad."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.UTC)


def human_duration(d: datetime.timedelta) -> str:
    """``duration.HumanDuration``: about two significant figures, like ``3m2s`` or ``2d3h``."""
    micros = (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    # Go truncates toward zero; a second or so in the future reads as "0s" (clock skew).
    seconds = -(-micros // 1_000_000) if micros < 0 else micros // 1_000_000
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _since(value: Any, now: datetime.datetime) -> str:
    t = parse_time(value)
    return "<unknown>" if t is None else human_duration(now - t)


def _age(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    return _since(_get(obj, "metadata", "creationTimestamp"), now)


# --- small helpers -----------------------------------------------------------------------


def _get(obj: Any, *path: str | int, default: Any = None) -> Any:
    cur = obj
    for key in path:
        if isinstance(key, int):
            if not isinstance(cur, list) or not -len(cur) <= key < len(cur):
                return default
            cur = cur[key]
        else:
            if not isinstance(cur, Mapping) or key not in cur:
                return default
            cur = cur[key]
    return default if cur is None else cur


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return default


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_get(obj, "metadata", "name", default=""))


def _containers(template_spec: Any) -> tuple[str, str]:
    containers = [c for c in _list(_get(template_spec, "containers")) if isinstance(c, dict)]
    names = ",".join(str(c.get("name", "")) for c in containers)
    images = ",".join(str(c.get("image", "")) for c in containers)
    return names, images


def _selector_string(sel: Any, *, none: str) -> str:
    """``metav1.FormatLabelSelector`` (``none="<none>"``) or the Deployment's variant (``""``)."""
    try:
        text = str(LabelSelector.from_api(sel if isinstance(sel, Mapping) else None))
    except SelectorError:
        return "<error>" if none else "<invalid>"
    return text or none


def _join_host_port(host: str, port: int) -> str:
    # net.JoinHostPort brackets IPv6 addresses.
    try:
        is_v6 = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        is_v6 = ":" in host
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def _list_with_more(items: list[str], count: int, limit: int = 3, *, empty: str) -> str:
    text = ",".join(items[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


def _condition_true(conditions: Any, ctype: str) -> bool:
    # The first condition of the type decides, as hasJobCondition does.
    for c in _list(conditions):
        if isinstance(c, dict) and c.get("type") == ctype:
            return bool(c.get("status") == "True")
    return False


# --- printers for built-in kinds ---------------------------------------------------------

_Cells = list[Any]
_Printer = Callable[[dict[str, Any], datetime.datetime], _Cells]

_POD_COLUMNS = (
    _NAME,
    _Column(
        "Ready", description="The aggregate readiness state of this pod for accepting traffic."
    ),
    _Column("Status", description="The aggregate status of the containers in this pod."),
    _Column(
        "Restarts",
        description="The number of times the containers in this pod have been restarted and "
        "when the last container in this pod has restarted.",
    ),
    _AGE,
    _Column("IP", priority=1, description="The IP address allocated to the pod."),
    _Column("Node", priority=1, description="The node the pod is scheduled onto."),
    _Column(
        "Nominated Node",
        priority=1,
        description="The node the scheduler nominated while preempting pods for this pod.",
    ),
    _Column(
        "Readiness Gates",
        priority=1,
        description="How many of the pod's readiness gates are satisfied.",
    ),
)


def _pod_cells(pod: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    conditions = _list(status.get("conditions"))
    restarts = 0
    sidecar_restarts = 0
    total = len(_list(spec.get("containers")))
    ready = 0
    last_restart: datetime.datetime | None = None
    last_sidecar_restart: datetime.datetime | None = None

    phase = str(status.get("phase") or "")
    reason = str(status.get("reason") or phase)
    for c in conditions:
        if _get(c, "type") == "PodScheduled" and _get(c, "reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = [c for c in _list(spec.get("initContainers")) if isinstance(c, dict)]
    # A restartable init container (restartPolicy Always) is a sidecar and counts as a container.
    sidecars = {
        c["name"]
        for c in init_specs
        if c.get("restartPolicy") == "Always" and isinstance(c.get("name"), str)
    }
    total += len(sidecars)

    def later(current: datetime.datetime | None, cs: Any) -> datetime.datetime | None:
        finished = parse_time(_get(cs, "lastState", "terminated", "finishedAt"))
        if finished is not None and (current is None or finished > current):
            return finished
        return current

    initializing = False
    for i, cs in enumerate(_list(status.get("initContainerStatuses"))):
        restarts += _int(_get(cs, "restartCount"))
        last_restart = later(last_restart, cs)
        cs_name = _get(cs, "name")
        is_sidecar = isinstance(cs_name, str) and cs_name in sidecars
        if is_sidecar:
            sidecar_restarts += _int(_get(cs, "restartCount"))
            last_sidecar_restart = later(last_sidecar_restart, cs)
        terminated = _get(cs, "state", "terminated")
        waiting_reason = _get(cs, "state", "waiting", "reason", default="")
        if terminated is not None and _int(_get(terminated, "exitCode")) == 0:
            continue
        if is_sidecar and _get(cs, "started") is True:
            if _get(cs, "ready") is True:
                ready += 1
            continue
        if terminated is not None:
            if _get(terminated, "reason"):
                reason = "Init:" + str(terminated["reason"])
            elif _int(_get(terminated, "signal")) != 0:
                reason = f"Init:Signal:{_int(terminated['signal'])}"
            else:
                reason = f"Init:ExitCode:{_int(_get(terminated, 'exitCode'))}"
        elif waiting_reason and waiting_reason != "PodInitializing":
            reason = f"Init:{waiting_reason}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(conditions, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(_list(status.get("containerStatuses"))):
            restarts += _int(_get(cs, "restartCount"))
            last_restart = later(last_restart, cs)
            waiting_reason = _get(cs, "state", "waiting", "reason", default="")
            terminated = _get(cs, "state", "terminated")
            if waiting_reason:
                reason = str(waiting_reason)
            elif terminated is not None and _get(terminated, "reason"):
                reason = str(terminated["reason"])
            elif terminated is not None:
                signal = _int(_get(terminated, "signal"))
                code = _int(_get(terminated, "exitCode"))
                reason = f"Signal:{signal}" if signal else f"ExitCode:{code}"
            elif _get(cs, "ready") is True and _get(cs, "state", "running") is not None:
                has_running = True
                ready += 1
        # A pod whose last container completed but another still runs is not "Completed".
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(conditions, "Ready") else "NotReady"

    deleting = _get(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"

    pod_ip = _get(status, "podIPs", 0, "ip") or status.get("podIP") or "<none>"
    gates = [g for g in _list(spec.get("readinessGates")) if isinstance(g, dict)]
    gates_text = "<none>"
    if gates:
        satisfied = 0
        for gate in gates:
            for c in conditions:
                if _get(c, "type") == gate.get("conditionType"):
                    satisfied += _get(c, "status") == "True"
                    break
        gates_text = f"{satisfied}/{len(gates)}"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _age(pod, now),
        pod_ip,
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_text,
    ]


def _pod_conditions(pod: dict[str, Any]) -> list[dict[str, str]]:
    phase = _get(pod, "status", "phase")
    if phase == "Succeeded":
        message = "The pod has completed successfully."
    elif phase == "Failed":
        message = "The pod failed."
    else:
        return []
    return [{"type": "Completed", "status": "True", "reason": phase, "message": message}]


_NODE_COLUMNS = (
    _NAME,
    _Column("Status", description="The status of the node"),
    _Column("Roles", description="The roles of the node"),
    _AGE,
    _Column("Version", description="Kubelet Version reported by the node."),
    _Column("Internal-IP", priority=1, description="The node's first InternalIP address."),
    _Column("External-IP", priority=1, description="The node's first ExternalIP address."),
    _Column("OS-Image", priority=1, description="OS Image reported by the node."),
    _Column("Kernel-Version", priority=1, description="Kernel Version reported by the node."),
    _Column(
        "Container-Runtime",
        priority=1,
        description="ContainerRuntime Version reported by the node.",
    ),
)


def _node_cells(node: dict[str, Any], now: datetime.datetime) -> _Cells:
    status = _dict(node.get("status"))
    states: list[str] = []
    for c in _list(status.get("conditions")):
        if _get(c, "type") == "Ready":
            states = ["Ready" if _get(c, "status") == "True" else "NotReady"]
    if not states:
        states = ["Unknown"]
    if _get(node, "spec", "unschedulable") is True:
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for key, value in _dict(_get(node, "metadata", "labels")).items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    info = _dict(status.get("nodeInfo"))

    def address(kind: str) -> str:
        for a in _list(status.get("addresses")):
            if _get(a, "type") == kind:
                return str(_get(a, "address", default=""))
        return "<none>"

    return [
        _name(node),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        _age(node, now),
        str(info.get("kubeletVersion") or ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


_NAMESPACE_COLUMNS = (_NAME, _Column("Status", description="The status of the namespace"), _AGE)


def _namespace_cells(ns: dict[str, Any], now: datetime.datetime) -> _Cells:
    return [_name(ns), str(_get(ns, "status", "phase", default="")), _age(ns, now)]


_SERVICE_COLUMNS = (
    _NAME,
    _Column("Type", description="How the Service is exposed."),
    _Column("Cluster-IP", description="The IP address of the service, usually assigned randomly."),
    _Column("External-IP", description="IP addresses for which nodes also accept traffic."),
    _Column("Port(s)", description="The list of ports that are exposed by this service."),
    _AGE,
    _Column(
        "Selector",
        priority=1,
        description="Route traffic to pods whose labels match this selector.",
    ),
)


def _service_cells(svc: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec = _dict(svc.get("spec"))
    # The API server defaults the type; an object stored before defaulting reads as ClusterIP.
    svc_type = str(spec.get("type") or "ClusterIP")
    # clusterIPs is the dual-stack field; objects written without it still carry clusterIP.
    cluster_ips = _list(spec.get("clusterIPs")) or (
        [spec["clusterIP"]] if spec.get("clusterIP") else []
    )
    external_ips = [str(ip) for ip in _list(spec.get("externalIPs"))]
    if svc_type in ("ClusterIP", "NodePort"):
        external = ",".join(external_ips) or "<none>"
    elif svc_type == "LoadBalancer":
        found: set[str] = set()
        for ing in _list(_get(svc, "status", "loadBalancer", "ingress")):
            if _get(ing, "ip"):
                found.add(str(ing["ip"]))
            elif _get(ing, "hostname"):
                found.add(str(ing["hostname"]))
        both = sorted(found) + external_ips
        external = ",".join(both) or "<pending>"
    elif svc_type == "ExternalName":
        external = str(spec.get("externalName") or "")
    else:
        external = "<unknown>"
    ports = []
    for p in _list(spec.get("ports")):
        proto = _get(p, "protocol", default="TCP")
        node_port = _int(_get(p, "nodePort"))
        port = _int(_get(p, "port"))
        ports.append(f"{port}:{node_port}/{proto}" if node_port > 0 else f"{port}/{proto}")
    return [
        _name(svc),
        svc_type,
        str(cluster_ips[0]) if cluster_ips else "<none>",
        external,
        ",".join(ports) or "<none>",
        _age(svc, now),
        format_labels(_dict(spec.get("selector"))),
    ]


_ENDPOINTS_COLUMNS = (
    _NAME,
    _Column("Endpoints", description="The set of all endpoints is the union of all subsets."),
    _AGE,
)


def _endpoints_cells(ep: dict[str, Any], now: datetime.datetime) -> _Cells:
    subsets = _list(ep.get("subsets"))
    if not subsets:
        return [_name(ep), "<none>", _age(ep, now)]
    items: list[str] = []
    count = 0
    for ss in subsets:
        ips = [str(_get(a, "ip", default="")) for a in _list(_get(ss, "addresses"))]
        ports = _list(_get(ss, "ports"))
        if not ports:
            # A headless service may have no ports: list the bare addresses.
            count += len(ips)
            items.extend(ips)
            continue
        for port in ports:
            count += len(ips)
            items.extend(_join_host_port(ip, _int(_get(port, "port"))) for ip in ips)
    return [_name(ep), _list_with_more(items, count, empty=""), _age(ep, now)]


_CONFIGMAP_COLUMNS = (
    _NAME,
    _Column("Data", description="The number of keys in data and binaryData."),
    _AGE,
)


def _configmap_cells(cm: dict[str, Any], now: datetime.datetime) -> _Cells:
    keys = len(_dict(cm.get("data"))) + len(_dict(cm.get("binaryData")))
    return [_name(cm), keys, _age(cm, now)]


_SECRET_COLUMNS = (
    _NAME,
    _Column("Type", description="Used to facilitate programmatic handling of secret data."),
    _Column("Data", description="The number of keys in data."),
    _AGE,
)


def _secret_cells(secret: dict[str, Any], now: datetime.datetime) -> _Cells:
    return [
        _name(secret),
        str(secret.get("type") or ""),
        len(_dict(secret.get("data"))),
        _age(secret, now),
    ]


_EVENT_COLUMNS = (
    _Column(
        "Last Seen",
        description="The time at which the most recent occurrence of this event was recorded.",
    ),
    _Column("Type", description="Type of this event (Normal, Warning)."),
    _Column("Reason", description="A short, machine understandable string for the transition."),
    _Column("Object", description="The object that this event is about."),
    _Column(
        "Subobject", priority=1, description="The field of the involved object the event is about."
    ),
    _Column("Source", priority=1, description="The component reporting this event."),
    _Column("Message", description="A human-readable description of the status of this operation."),
    _Column(
        "First Seen", priority=1, description="The time at which the event was first recorded."
    ),
    _Column("Count", priority=1, description="The number of times this event has occurred."),
    _Column("Name", priority=1, format="name", description=_NAME_DOC),
)


def _event_cells(ev: dict[str, Any], now: datetime.datetime) -> _Cells:
    first_ts = ev.get("firstTimestamp")
    first = _since(first_ts, now) if parse_time(first_ts) else _since(ev.get("eventTime"), now)
    last = _since(ev.get("lastTimestamp"), now) if parse_time(ev.get("lastTimestamp")) else first
    count = _int(ev.get("count"))
    series = ev.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events in the new API carry no count
    involved = _dict(ev.get("involvedObject"))
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    component = _get(ev, "source", "component") or ev.get("reportingController") or ""
    host = _get(ev, "source", "host") or ev.get("reportingInstance") or ""
    source = f"{component}, {host}" if host else str(component)
    return [
        last,
        str(ev.get("type") or ""),
        str(ev.get("reason") or ""),
        target,
        str(involved.get("fieldPath") or ""),
        source,
        str(ev.get("message") or "").strip(),
        first,
        count,
        _name(ev),
    ]


_SERVICEACCOUNT_COLUMNS = (
    _NAME,
    _Column("Secrets", description="The number of secrets the service account may use."),
    _AGE,
)


def _serviceaccount_cells(sa: dict[str, Any], now: datetime.datetime) -> _Cells:
    return [_name(sa), len(_list(sa.get("secrets"))), _age(sa, now)]


_DEPLOYMENT_COLUMNS = (
    _NAME,
    _Column("Ready", description="Number of the pod with ready state"),
    _Column(
        "Up-to-date",
        description="Pods of this deployment that have the desired template.",
    ),
    _Column(
        "Available",
        description="Pods of this deployment ready for at least minReadySeconds.",
    ),
    _AGE,
    _Column("Containers", priority=1, description=_CONTAINERS_DOC),
    _Column("Images", priority=1, description=_IMAGES_DOC),
    _Column("Selector", priority=1, description="Label selector for pods."),
)


def _deployment_cells(d: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(d.get("spec")), _dict(d.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    desired = _int(spec.get("replicas"), 1)  # replicas defaults to 1
    return [
        _name(d),
        f"{_int(status.get('readyReplicas'))}/{desired}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _age(d, now),
        names,
        images,
        _selector_string(spec.get("selector"), none=""),
    ]


_REPLICASET_COLUMNS = (
    _NAME,
    _Column("Desired", type="integer", description="Replicas is the number of desired replicas."),
    _Column(
        "Current",
        type="integer",
        description="Replicas is the most recently observed number of replicas.",
    ),
    _Column(
        "Ready", type="integer", description="The number of ready replicas for this replica set."
    ),
    _AGE,
    _Column("Containers", priority=1, description=_CONTAINERS_DOC),
    _Column("Images", priority=1, description=_IMAGES_DOC),
    _Column(
        "Selector",
        priority=1,
        description="Selector is a label query over pods that should match the replica count.",
    ),
)


def _replicaset_cells(rs: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(rs.get("spec")), _dict(rs.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(rs),
        _int(spec.get("replicas"), 1),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age(rs, now),
        names,
        images,
        _selector_string(spec.get("selector"), none="<none>"),
    ]


_DAEMONSET_COLUMNS = (
    _NAME,
    _Column(
        "Desired",
        type="integer",
        description="The total number of nodes that should be running the daemon pod.",
    ),
    _Column(
        "Current",
        type="integer",
        description="Nodes that run the daemon pod and should.",
    ),
    _Column(
        "Ready",
        type="integer",
        description="Nodes that should run the daemon pod and have it ready.",
    ),
    _Column(
        "Up-to-date",
        type="integer",
        description="The total number of nodes that are running updated daemon pod.",
    ),
    _Column(
        "Available",
        type="integer",
        description="Nodes that should run the daemon pod and have it available.",
    ),
    _Column("Node Selector", description="The node selector of the pod template."),
    _AGE,
    _Column("Containers", priority=1, description=_CONTAINERS_DOC),
    _Column("Images", priority=1, description=_IMAGES_DOC),
    _Column(
        "Selector",
        priority=1,
        description="A label query over pods that are managed by the daemon set.",
    ),
)


def _daemonset_cells(ds: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(ds.get("spec")), _dict(ds.get("status"))
    template_spec = _get(spec, "template", "spec")
    names, images = _containers(template_spec)
    return [
        _name(ds),
        _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")),
        _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")),
        _int(status.get("numberAvailable")),
        format_labels(_dict(_get(template_spec, "nodeSelector"))),
        _age(ds, now),
        names,
        images,
        _selector_string(spec.get("selector"), none="<none>"),
    ]


_STATEFULSET_COLUMNS = (
    _NAME,
    _Column("Ready", description="Number of the pod with ready state"),
    _AGE,
    _Column("Containers", priority=1, description=_CONTAINERS_DOC),
    _Column("Images", priority=1, description=_IMAGES_DOC),
)


def _statefulset_cells(sts: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(sts.get("spec")), _dict(sts.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    ready = _int(status.get("readyReplicas"))
    return [_name(sts), f"{ready}/{_int(spec.get('replicas'), 1)}", _age(sts, now), names, images]


# --- stateful workloads (issue 12): claims, volumes, classes, revisions, as kubectl prints ---
_ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                 "ReadWriteOncePod": "RWOP"}
_VOLUME_COLUMNS_TAIL = (
    _Column("VolumeAttributesClass", description="VolumeAttributesClass of the volume"),
)


def _access_modes(modes: Any) -> str:
    return ",".join(_ACCESS_MODES.get(str(m), str(m)) for m in _list(modes))


_PVC_COLUMNS = (
    _NAME,
    _Column("Status", description="The phase of the claim"),
    _Column("Volume", description="The binding reference to the PersistentVolume"),
    _Column("Capacity", description="The actual resources of the underlying volume"),
    _Column("Access Modes", description="The access modes the volume has"),
    _Column("StorageClass", description="The name of the StorageClass required by the claim"),
    *_VOLUME_COLUMNS_TAIL,
    _AGE,
    _Column("VolumeMode", priority=1, description="The volume type required by the claim"),
)


def _storage_phase(obj: dict[str, Any]) -> str:
    """A claim's or volume's phase, Terminating once deleted (as printPersistentVolume*)."""
    if _dict(obj.get("metadata")).get("deletionTimestamp"):
        return "Terminating"
    return str(_dict(obj.get("status")).get("phase") or "Pending")


def _pvc_cells(pvc: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(pvc.get("spec")), _dict(pvc.get("status"))
    bound = bool(spec.get("volumeName"))
    return [_name(pvc), _storage_phase(pvc), spec.get("volumeName") or "",
            str(_get(status, "capacity", "storage", default="")) if bound else "",
            _access_modes(status.get("accessModes")) if bound else "",
            spec.get("storageClassName") or "",
            spec.get("volumeAttributesClassName") or "<unset>",
            _age(pvc, now), spec.get("volumeMode") or "Filesystem"]


_PV_COLUMNS = (
    _NAME,
    _Column("Capacity", description="The capacity of the volume"),
    _Column("Access Modes", description="The ways the volume can be mounted"),
    _Column("Reclaim Policy", description="What happens to the volume when it is released"),
    _Column("Status", description="The phase of the volume"),
    _Column("Claim", description="The claim bound to the volume"),
    _Column("StorageClass", description="The name of the StorageClass the volume belongs to"),
    *_VOLUME_COLUMNS_TAIL,
    _Column("Reason", description="Why the volume is in its phase"),
    _AGE,
    _Column("VolumeMode", priority=1, description="The volume type"),
)


def _pv_cells(pv: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(pv.get("spec")), _dict(pv.get("status"))
    ref = _dict(spec.get("claimRef"))
    claim = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref.get("name") else ""
    return [_name(pv), str(_get(spec, "capacity", "storage", default="")),
            _access_modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy") or "Retain",
            _storage_phase(pv), claim, spec.get("storageClassName") or "",
            spec.get("volumeAttributesClassName") or "<unset>", status.get("reason") or "",
            _age(pv, now), spec.get("volumeMode") or "Filesystem"]


_STORAGECLASS_COLUMNS = (
    _NAME,
    _Column("Provisioner", description="The provisioner of the class"),
    _Column("ReclaimPolicy", description="The reclaim policy of dynamically provisioned volumes"),
    _Column("VolumeBindingMode", description="When volumes are bound and provisioned"),
    _Column("AllowVolumeExpansion", description="Whether volumes may be expanded"),
    _AGE,
)
_DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                              "storageclass.beta.kubernetes.io/is-default-class")


def _storageclass_cells(sc: dict[str, Any], now: datetime.datetime) -> _Cells:
    ann = _dict(_get(sc, "metadata", "annotations"))
    name = _name(sc)
    if any(ann.get(a) == "true" for a in _DEFAULT_CLASS_ANNOTATIONS):
        name += " (default)"
    return [name, sc.get("provisioner") or "", sc.get("reclaimPolicy") or "Delete",
            sc.get("volumeBindingMode") or "Immediate",
            "true" if sc.get("allowVolumeExpansion") else "false", _age(sc, now)]


_CONTROLLERREVISION_COLUMNS = (
    _NAME,
    _Column("Controller", description="The owner of the revision"),
    _Column("Revision", type="integer", description="The revision number"),
    _AGE,
)


def _controllerrevision_cells(cr: dict[str, Any], now: datetime.datetime) -> _Cells:
    owner = next((r for r in _list(_get(cr, "metadata", "ownerReferences"))
                  if isinstance(r, dict) and r.get("controller")), None)
    controller = "<none>"
    if owner is not None:
        group = str(owner.get("apiVersion", "")).rpartition("/")[0]
        kind = str(owner.get("kind", "")).lower() + (f".{group}" if group else "")
        controller = f"{kind}/{owner.get('name', '')}"
    return [_name(cr), controller, _int(cr.get("revision")), _age(cr, now)]
# --- end stateful workloads ---


_JOB_COLUMNS = (
    _NAME,
    _Column("Status", description="Status of the job."),
    _Column("Completions", description="The number of pods which reached phase Succeeded."),
    _Column("Duration", description="Time required to complete the job."),
    _AGE,
    _Column("Containers", priority=1, description=_CONTAINERS_DOC),
    _Column("Images", priority=1, description=_IMAGES_DOC),
    _Column(
        "Selector",
        priority=1,
        description="A label query over pods that should match the pod count.",
    ),
)


def _job_cells(job: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(job.get("spec")), _dict(job.get("status"))
    succeeded = _int(status.get("succeeded"))
    if isinstance(spec.get("completions"), int):
        completions = f"{succeeded}/{spec['completions']}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    if start is None:
        duration = ""
    else:
        duration = human_duration((end or now) - start)
    conditions = status.get("conditions")
    if _condition_true(conditions, "Complete"):
        state = "Complete"
    elif _condition_true(conditions, "Failed"):
        state = "Failed"
    elif _get(job, "metadata", "deletionTimestamp") is not None:
        state = "Terminating"
    elif _condition_true(conditions, "Suspended"):
        state = "Suspended"
    elif _condition_true(conditions, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(job),
        state,
        completions,
        duration,
        _age(job, now),
        names,
        images,
        _selector_string(spec.get("selector"), none="<none>"),
    ]


# --- scheduled and disruptable work (issue 12, W2) ---
_CRONJOB_COLUMNS = (
    _NAME,
    _Column("Schedule", description="The schedule in Cron format."),
    _Column("Timezone", description="The time zone name for the given schedule."),
    _Column("Suspend", type="boolean", description="This flag tells the controller to "
            "suspend subsequent executions."),
    _Column("Active", type="integer", description="A list of pointers to currently running "
            "jobs."),
    _Column("Last Schedule", description="Information when was the last time the job was "
            "successfully scheduled."),
    _AGE,
    _Column("Containers", priority=1, description=_CONTAINERS_DOC),
    _Column("Images", priority=1, description=_IMAGES_DOC),
    _Column("Selector", priority=1, description="A label query over pods that should match "
            "the pod count."),
)


def _cronjob_cells(cj: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(cj.get("spec")), _dict(cj.get("status"))
    job_spec = _dict(_get(spec, "jobTemplate", "spec"))
    names, images = _containers(_get(job_spec, "template", "spec"))
    last = status.get("lastScheduleTime")
    suspend = spec.get("suspend")
    return [
        _name(cj),
        str(spec.get("schedule") or ""),
        str(spec.get("timeZone") or "<none>"),
        "<unset>" if not isinstance(suspend, bool) else str(suspend),
        len(_list(status.get("active"))),
        _since(last, now) if last else "<none>",
        _age(cj, now),
        names,
        images,
        _selector_string(job_spec.get("selector"), none="<none>"),
    ]


# --- ingress (part W5) ---
_INGRESS_COLUMNS = (
    _NAME,
    _Column("Class", description="The name of the IngressClass that serves the ingress"),
    _Column("Hosts", description="The hosts its rules match"),
    _Column("Address", description="The addresses it is answered on"),
    _Column("Ports", description="The ports it is answered on"),
    _AGE,
)
_INGRESSCLASS_COLUMNS = (
    _NAME,
    _Column("Controller", description="The controller that implements the class"),
    _Column("Parameters", description="The class's parameters"),
    _AGE,
)


def _ingress_cells(ing: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec = _get(ing, "spec", default={})
    hosts = [str(r.get("host")) for r in _list(_get(spec, "rules")) if isinstance(r, dict)
             and r.get("host")]
    addrs = [str(a.get("ip") or a.get("hostname")) for a in
             _list(_get(ing, "status", "loadBalancer", "ingress")) if isinstance(a, dict)]
    return [_name(ing), _get(spec, "ingressClassName") or "<none>",
            _list_with_more(hosts, len(hosts), empty="*"), ",".join(addrs),
            "80, 443" if _list(_get(spec, "tls")) else "80", _age(ing, now)]


def _ingressclass_cells(ic: dict[str, Any], now: datetime.datetime) -> _Cells:
    params = _get(ic, "spec", "parameters")
    shown = "<none>"
    if isinstance(params, dict):
        group = params.get("apiGroup")
        shown = f"{params.get('kind')}.{group}/{params.get('name')}" if group else \
            f"{params.get('kind')}/{params.get('name')}"
    return [_name(ic), _get(ic, "spec", "controller") or "", shown, _age(ic, now)]


# --- end ingress ---
_PDB_COLUMNS = (
    _NAME,
    _Column("Min Available", description="The minimum number of pods that must be available."),
    _Column("Max Unavailable", description="The maximum number of pods that may be "
            "unavailable."),
    _Column("Allowed Disruptions", type="integer", description="Number of pod disruptions "
            "that are currently allowed."),
    _AGE,
)


def _pdb_cells(pdb: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(pdb.get("spec")), _dict(pdb.get("status"))
    low, high = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [
        _name(pdb),
        "N/A" if low is None else str(low),
        "N/A" if high is None else str(high),
        _int(status.get("disruptionsAllowed")),
        _age(pdb, now),
    ]


# NetworkPolicy (part W6): as printNetworkPolicy.
_NETWORKPOLICY_COLUMNS = (
    _NAME,
    _Column("Pod-Selector", description="Selects the pods to which this NetworkPolicy object "
            "applies. An empty podSelector selects all pods in this namespace."),
    _AGE,
)


def _networkpolicy_cells(policy: dict[str, Any], now: datetime.datetime) -> _Cells:
    selector = _dict(policy.get("spec")).get("podSelector")
    return [_name(policy), _selector_string(selector or {}, none="<none>"), _age(policy, now)]


def _replicationcontroller_cells(rc: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(rc.get("spec")), _dict(rc.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(rc),
        _int(spec.get("replicas"), 1),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age(rc, now),
        names,
        images,
        format_labels(_dict(spec.get("selector"))) or "<none>",
    ]
# --- end W2 ---


# --- quotas, priorities, autoscaling (issue 12, part W3; printers.go) ---
_QUOTA_COLUMNS = (
    _NAME,
    _AGE,
    _Column("Request", description="Request represents a minimum amount of cpu/memory that a "
            "container may consume."),
    _Column("Limit", description="Limits control the maximum amount of cpu/memory that a "
            "container may use independent of contention on the node."),
)


def _quota_cells(quota: dict[str, Any], now: datetime.datetime) -> _Cells:
    hard, used = _dict(_get(quota, "status", "hard")), _dict(_get(quota, "status", "used"))
    requests: list[str] = []
    limits: list[str] = []
    for name in sorted(hard):
        shown = f"{name}: {used.get(name, '0')}/{hard[name]}"
        (limits if name.startswith("limits") else requests).append(shown)
    return [_name(quota), _age(quota, now), ", ".join(requests), ", ".join(limits)]


_PRIORITYCLASS_COLUMNS = (
    _NAME,
    _Column("Value", type="integer", description="value represents the integer value of this "
            "priority class. This is the actual priority that pods receive when they have the "
            "name of this class in their pod spec."),
    _Column("Global-Default", type="boolean", description="globalDefault specifies whether "
            "this PriorityClass should be considered as the default priority for pods that do "
            "not have any priority class."),
    _AGE,
    _Column("PreemptionPolicy", description="preemptionPolicy is the Policy for preempting "
            "pods with lower priority."),
)


def _priorityclass_cells(pc: dict[str, Any], now: datetime.datetime) -> _Cells:
    return [_name(pc), _int(pc.get("value")), bool(pc.get("globalDefault")), _age(pc, now),
            str(pc.get("preemptionPolicy") or "")]


_HPA_COLUMNS = (
    _NAME,
    _Column("Reference", description="scaleTargetRef points to the target resource to scale, "
            "and is used to the pods for which metrics should be collected, as well as to "
            "actually change the replica count."),
    _Column("Targets", description="metrics contains the specifications for which to use to "
            "calculate the desired replica count."),
    _Column("MinPods", description="minReplicas is the lower limit for the number of replicas "
            "to which the autoscaler can scale down."),
    _Column("MaxPods", type="integer", description="maxReplicas is the upper limit for the "
            "number of replicas to which the autoscaler can scale up."),
    _Column("Replicas", type="integer", description="currentReplicas is current number of "
            "replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
    _AGE,
)


def _hpa_target(metric: dict[str, Any], current: list[Any]) -> str:
    kind = str(metric.get("type") or "")
    field = kind[:1].lower() + kind[1:]
    source = _dict(metric.get(field))
    target, name = _dict(source.get("target")), str(source.get("name") or _get(
        source, "metric", "name", default=""))
    seen = next((_dict(_get(c, field, "current")) for c in current
                 if _get(c, "type") == kind and str(_get(c, field, "name", default="")) == name),
                {})
    if target.get("type") == "Utilization":
        now = seen.get("averageUtilization")
        shown = "<unknown>" if now is None else f"{now}%"
        return f"{name}: {shown}/{target.get('averageUtilization')}%"
    key = "averageValue" if target.get("type") == "AverageValue" else "value"
    if kind in ("Pods", "Object", "External"):  # formatHPAMetrics names no metric for these
        avg = " (avg)" if kind != "Pods" and key == "averageValue" else ""
        return f"{seen.get(key, '<unknown>')}/{target.get(key)}{avg}"
    return f"{name}: {seen.get(key, '<unknown>')}/{target.get(key)}"


def _hpa_cells(hpa: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(hpa.get("spec")), _dict(hpa.get("status"))
    ref = _dict(spec.get("scaleTargetRef"))
    metrics = [m for m in _list(spec.get("metrics")) if isinstance(m, dict)]
    shown = [_hpa_target(m, _list(status.get("currentMetrics"))) for m in metrics[:2]]
    if len(metrics) > 2:
        shown[-1] += f" + {len(metrics) - 2} more..."
    low = spec.get("minReplicas")
    return [_name(hpa), f"{ref.get('kind', '')}/{ref.get('name', '')}",
            ", ".join(shown) or "<none>", "<unset>" if low is None else str(low),
            _int(spec.get("maxReplicas")), _int(status.get("currentReplicas")), _age(hpa, now)]
# --- end quotas, priorities, autoscaling ---


_LEASE_COLUMNS = (
    _NAME,
    _Column("Holder", description="The identity of the holder of a current lease."),
    _AGE,
)


def _lease_cells(lease: dict[str, Any], now: datetime.datetime) -> _Cells:
    return [_name(lease), str(_get(lease, "spec", "holderIdentity", default="")), _age(lease, now)]


_ENDPOINTSLICE_COLUMNS = (
    _NAME,
    _Column("AddressType", description="The type of address carried by this EndpointSlice."),
    _Column("Ports", description="The network ports exposed by each endpoint in this slice."),
    _Column("Endpoints", description="A list of unique endpoints in this slice."),
    _AGE,
)


def _endpointslice_cells(es: dict[str, Any], now: datetime.datetime) -> _Cells:
    ports: list[str] = []
    for p in _list(es.get("ports")):
        if isinstance(_get(p, "port"), int):
            ports.append(str(p["port"]))
        elif _get(p, "name") is not None:
            ports.append(str(p["name"]))
        else:
            ports.append("*")
    addresses = [str(a) for e in _list(es.get("endpoints")) for a in _list(_get(e, "addresses"))]
    return [
        _name(es),
        str(es.get("addressType") or ""),
        _list_with_more(ports, len(ports), empty="<unset>"),
        _list_with_more(addresses, len(addresses), empty="<unset>"),
        _age(es, now),
    ]


_CREATED_AT_COLUMNS = (_NAME, _Column("Created At", type="date", description=_CREATED_DOC))


def _created_at_cells(obj: dict[str, Any], now: datetime.datetime) -> _Cells:
    # rest.NewDefaultTableConvertor: the timestamp itself (UTC, RFC 3339), not an age.
    t = parse_time(_get(obj, "metadata", "creationTimestamp"))
    stamp = (t or datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)).astimezone(datetime.UTC)
    return [_name(obj), stamp.strftime("%Y-%m-%dT%H:%M:%SZ")]


# --- authz: RBAC (printers.go: roles print when they were created, bindings their role) ---

_ROLE_REF_DOC = (
    "RoleRef can reference a Role in the current namespace or a ClusterRole in the global "
    "namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This "
    "field is immutable."
)


def _binding_columns(kind: str) -> tuple[_Column, ...]:
    return (
        _NAME,
        _Column("Role", description=_ROLE_REF_DOC),
        _AGE,
        _Column("Users", priority=1, description=f"Users in the {kind}"),
        _Column("Groups", priority=1, description=f"Groups in the {kind}"),
        _Column("ServiceAccounts", priority=1, description=f"ServiceAccounts in the {kind}"),
    )


def _binding_cells(binding: dict[str, Any], now: datetime.datetime) -> _Cells:
    ref = _dict(binding.get("roleRef"))
    users: list[str] = []
    groups: list[str] = []
    accounts: list[str] = []
    for subject in _list(binding.get("subjects")):
        subject = _dict(subject)
        kind, name = subject.get("kind"), str(subject.get("name") or "")
        if kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
        elif kind == "ServiceAccount":
            ns = str(subject.get("namespace") or "")
            accounts.append(f"{ns}:{name}" if ns else name)
    return [_name(binding), f"{ref.get('kind') or ''}/{ref.get('name') or ''}",
            _age(binding, now), ", ".join(users), ", ".join(groups), ", ".join(accounts)]


# --- end authz ---

# --- Scope (shoal.dev): lists and selectors as kubectl would print them ---

_SCOPE_COLUMNS = (
    _NAME,
    _Column("Namespaces", description="The namespaces in the scope: the list, then the "
            "namespaceSelector."),
    _Column("Members", description="The peers that hold the scope: the list, then the "
            "memberSelector."),
    _Column("Writers", description="The members that accept user writes for the scope "
            "(<members>: every member)."),
    _AGE,
)


def _names_and_selector(names: Any, selector: Any, empty: str) -> str:
    parts = [str(n) for n in _list(names)]
    if selector is not None:
        parts.append(_selector_string(selector, none="<none>"))
    return ",".join(parts) or empty


def _scope_cells(scope: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec = _dict(scope.get("spec"))
    writers = spec.get("writers")
    return [
        _name(scope),
        _names_and_selector(spec.get("namespaces"), spec.get("namespaceSelector"), "<none>"),
        _names_and_selector(spec.get("members"), spec.get("memberSelector"), "<none>"),
        "<members>" if writers is None else ",".join(str(w) for w in _list(writers)) or "<none>",
        _age(scope, now),
    ]


# --- devices (devices.shoal.dev, issue 15) ---

_DEVICE_COLUMNS = (
    _NAME,
    _Column("Model", description="The DeviceModel."),
    _Column("Node", description="The node whose mapper speaks to the device."),
    _Column("Protocol", description="The mapper's protocol."),
    _Column("State", description="online, offline or unknown, as its mapper last saw it."),
    _Column("Twins", priority=1, description="Per property: reported value (desired value "
            "when it differs from the reported one)."),
    _AGE,
)


def _twin_cell(twin: dict[str, Any], desired: dict[str, str]) -> str:
    name = str(twin.get("propertyName", ""))
    reported = _get(twin, "reported", "value", default="<none>")
    want = desired.get(name)
    return f"{name}={reported}" + ("" if want in (None, reported) else f"({want})")


def _device_cells(dev: dict[str, Any], now: datetime.datetime) -> _Cells:
    spec, status = _dict(dev.get("spec")), _dict(dev.get("status"))
    desired = {str(p.get("name")): str(_get(p, "desired", "value"))
               for p in _list(spec.get("properties"))
               if isinstance(p, dict) and _get(p, "desired", "value") is not None}
    twins = [_twin_cell(t, desired) for t in _list(status.get("twins")) if isinstance(t, dict)]
    return [
        _name(dev),
        _get(spec, "deviceModelRef", "name", default="<none>"),
        spec.get("nodeName") or "<none>",
        _get(spec, "protocol", "protocolName", default="<none>"),
        status.get("state") or "<unknown>",
        ",".join(twins) or "<none>",
        _age(dev, now),
    ]


# --- end devices ---


_DEFAULT_COLUMNS = (_NAME, _AGE)


def _default_cells(obj: dict[str, Any], now: datetime.datetime) -> _Cells:
    return [_name(obj), _age(obj, now)]


_BUILTIN: dict[tuple[str, str], tuple[tuple[_Column, ...], _Printer]] = {
    ("", "Pod"): (_POD_COLUMNS, _pod_cells),
    ("", "Node"): (_NODE_COLUMNS, _node_cells),
    ("", "Namespace"): (_NAMESPACE_COLUMNS, _namespace_cells),
    ("", "Service"): (_SERVICE_COLUMNS, _service_cells),
    ("", "Endpoints"): (_ENDPOINTS_COLUMNS, _endpoints_cells),
    ("", "ConfigMap"): (_CONFIGMAP_COLUMNS, _configmap_cells),
    ("", "Secret"): (_SECRET_COLUMNS, _secret_cells),
    ("", "Event"): (_EVENT_COLUMNS, _event_cells),
    ("", "ServiceAccount"): (_SERVICEACCOUNT_COLUMNS, _serviceaccount_cells),
    ("apps", "Deployment"): (_DEPLOYMENT_COLUMNS, _deployment_cells),
    ("apps", "ReplicaSet"): (_REPLICASET_COLUMNS, _replicaset_cells),
    ("apps", "DaemonSet"): (_DAEMONSET_COLUMNS, _daemonset_cells),
    ("apps", "StatefulSet"): (_STATEFULSET_COLUMNS, _statefulset_cells),
    ("batch", "Job"): (_JOB_COLUMNS, _job_cells),
    ("batch", "CronJob"): (_CRONJOB_COLUMNS, _cronjob_cells),
    ("policy", "PodDisruptionBudget"): (_PDB_COLUMNS, _pdb_cells),
    ("", "ReplicationController"): (_REPLICASET_COLUMNS, _replicationcontroller_cells),
    ("coordination.k8s.io", "Lease"): (_LEASE_COLUMNS, _lease_cells),
    ("discovery.k8s.io", "EndpointSlice"): (_ENDPOINTSLICE_COLUMNS, _endpointslice_cells),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (_CREATED_AT_COLUMNS, _created_at_cells),
    # --- authz ---
    ("rbac.authorization.k8s.io", "Role"): (_CREATED_AT_COLUMNS, _created_at_cells),
    ("rbac.authorization.k8s.io", "ClusterRole"): (_CREATED_AT_COLUMNS, _created_at_cells),
    ("rbac.authorization.k8s.io", "RoleBinding"): (_binding_columns("roleBinding"),
                                                   _binding_cells),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (
        _binding_columns("clusterRoleBinding"), _binding_cells),
    # --- end authz ---
    ("shoal.dev", "Scope"): (_SCOPE_COLUMNS, _scope_cells),
    # --- stateful workloads ---
    ("", "PersistentVolumeClaim"): (_PVC_COLUMNS, _pvc_cells),
    ("", "PersistentVolume"): (_PV_COLUMNS, _pv_cells),
    ("storage.k8s.io", "StorageClass"): (_STORAGECLASS_COLUMNS, _storageclass_cells),
    ("apps", "ControllerRevision"): (_CONTROLLERREVISION_COLUMNS, _controllerrevision_cells),
    # --- end stateful workloads ---
    ("", "ResourceQuota"): (_QUOTA_COLUMNS, _quota_cells),  # part W3
    ("", "LimitRange"): (_CREATED_AT_COLUMNS, _created_at_cells),
    ("scheduling.k8s.io", "PriorityClass"): (_PRIORITYCLASS_COLUMNS, _priorityclass_cells),
    ("autoscaling", "HorizontalPodAutoscaler"): (_HPA_COLUMNS, _hpa_cells),
    ("devices.shoal.dev", "Device"): (_DEVICE_COLUMNS, _device_cells),  # part D
    ("networking.k8s.io", "Ingress"): (_INGRESS_COLUMNS, _ingress_cells),  # part W5
    ("networking.k8s.io", "IngressClass"): (_INGRESSCLASS_COLUMNS, _ingressclass_cells),
    ("networking.k8s.io", "NetworkPolicy"): (_NETWORKPOLICY_COLUMNS, _networkpolicy_cells),
}


# --- custom resources --------------------------------------------------------------------


def _custom_printer(version: Mapping[str, Any]) -> tuple[tuple[_Column, ...], _Printer]:
    declared = [c for c in _list(version.get("additionalPrinterColumns")) if isinstance(c, dict)]
    if not declared:
        # GetColumnsForVersion serves this single column when a CRD declares none.
        declared = [
            {
                "name": "Age",
                "type": "date",
                "jsonPath": ".metadata.creationTimestamp",
                "description": _CREATED_DOC,
            }
        ]
    columns: list[_Column] = [_NAME]
    paths: list[jsonpath.JSONPath] = []
    for col in declared:
        json_path = str(col.get("jsonPath") or "")
        try:
            paths.append(jsonpath.compile_path(json_path))
        except jsonpath.JSONPathError:
            break  # like tableconvertor.New: columns stop at the first unparsable path
        columns.append(
            _Column(
                name=str(col.get("name") or ""),
                type=str(col.get("type") or "string"),
                format=str(col.get("format") or ""),
                priority=_int(col.get("priority")),
                description=str(
                    col.get("description")
                    or f"Custom resource definition column (in JSONPath format): {json_path}"
                ),
            )
        )
    types = [c.type for c in columns[1:]]

    def cells(obj: dict[str, Any], now: datetime.datetime) -> _Cells:
        out: _Cells = [_name(obj)]
        for path, col_type in zip(paths, types, strict=True):
            found = path.evaluate(obj)
            out.append(_custom_cell(col_type, found[0], now) if found else None)
        return out

    return tuple(columns), cells


def _custom_cell(col_type: str, value: Any, now: datetime.datetime) -> Any:
    """``cellForJSONValue``: a value of the wrong type for its column prints as nothing."""
    if value is None:
        return None
    if col_type == "string":
        return jsonpath.to_text(value)
    if isinstance(value, bool):
        return value if col_type == "boolean" else None
    if col_type == "integer" and isinstance(value, int):
        return value
    if col_type == "integer" and isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if col_type == "number" and isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float64
            return None
    if col_type == "date" and isinstance(value, str):
        t = parse_time(value)
        return "<invalid>" if t is None else human_duration(now - t)
    return None


def _printer_for(kind: Kind) -> tuple[tuple[_Column, ...], _Printer]:
    if kind.crd_version is not None:
        return _custom_printer(kind.crd_version)
    return _BUILTIN.get((kind.group, kind.kind), (_DEFAULT_COLUMNS, _default_cells))


# --- the Table ---------------------------------------------------------------------------


def build_table(
    kind: Kind,
    objects: Sequence[dict[str, Any]],
    *,
    now: datetime.datetime,
    include_object: str = "Metadata",
    resource_version: str = "",
    continue_token: str = "",
) -> dict[str, Any]:
    """Render ``objects`` of ``kind`` as a ``meta.k8s.io/v1`` Table.

    ``include_object`` is the ``?includeObject=`` parameter: ``Metadata`` (the
    default, what kubectl needs for ``--show-labels`` and ``-A``) attaches a
    PartialObjectMetadata to each row, ``Object`` the whole object, ``None`` nothing.
    """
    if include_object not in INCLUDE_OBJECT_VALUES:
        raise ValueError(
            f"includeObject must be one of {', '.join(INCLUDE_OBJECT_VALUES)}, "
            f"not {include_object!r}"
        )
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    columns, printer = _printer_for(kind)
    rows: list[dict[str, Any]] = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer(obj, now)}
        is_pod = kind.crd_version is None and (kind.group, kind.kind) == ("", "Pod")
        if is_pod and (conditions := _pod_conditions(obj)):
            row["conditions"] = conditions
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": dict(_dict(obj.get("metadata"))),
            }
        rows.append(row)
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [c.to_api() for c in columns],
        "rows": rows,
    }
