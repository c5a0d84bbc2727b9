"""Server-side Table output: the columns and cells ``kubectl get`` prints."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api.tables import build_table, human_duration, parse_time
from shoal.model.kinds import BUILTIN_KINDS, Kind, KindRegistry

NOW = datetime.datetime(2024, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)


def ago(**delta: float) -> str:
    """An RFC 3339 timestamp ``delta`` before NOW."""
    return (NOW - datetime.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


REGISTRY = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    found = REGISTRY.by_kind(api_version, name)
    assert found is not None
    return found


def table(api_version: str, name: str, *objs: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return build_table(kind(api_version, name), list(objs), now=NOW, **kw)


def cells(api_version: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
    """One object's cells keyed by column name."""
    t = table(api_version, name, obj)
    names = [c["name"] for c in t["columnDefinitions"]]
    row = t["rows"][0]["cells"]
    assert len(row) == len(names)
    return dict(zip(names, row, strict=True))


def meta(name: str = "x", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5), **extra}


# --- durations ---------------------------------------------------------------------------

DURATIONS: list[tuple[str, datetime.timedelta, str]] = [
    ("no time at all is 0s", datetime.timedelta(0), "0s"),
    ("seconds show as seconds", datetime.timedelta(seconds=5), "5s"),
    ("up to two minutes stay in seconds", datetime.timedelta(seconds=119), "119s"),
    ("two minutes exactly", datetime.timedelta(minutes=2), "2m"),
    ("minutes and seconds under ten minutes", datetime.timedelta(minutes=3, seconds=2), "3m2s"),
    ("only minutes from ten minutes", datetime.timedelta(minutes=10, seconds=30), "10m"),
    ("minutes up to three hours", datetime.timedelta(minutes=179), "179m"),
    ("whole hours", datetime.timedelta(hours=4), "4h"),
    ("hours and minutes under eight hours", datetime.timedelta(hours=4, minutes=30), "4h30m"),
    ("only hours up to two days", datetime.timedelta(hours=47, minutes=59), "47h"),
    ("days and hours up to eight days", datetime.timedelta(days=2, hours=3), "2d3h"),
    ("whole days", datetime.timedelta(days=3), "3d"),
    ("only days up to two years", datetime.timedelta(days=400, hours=5), "400d"),
    ("years and days up to eight years", datetime.timedelta(days=365 * 3 + 10), "3y10d"),
    ("only years after that", datetime.timedelta(days=365 * 9 + 100), "9y"),
    ("a second of clock skew reads as now", datetime.timedelta(seconds=-1.5), "0s"),
    ("a time further in the future is invalid", datetime.timedelta(seconds=-5), "<invalid>"),
]


@pytest.mark.parametrize(
    ("delta", "text"), [c[1:] for c in DURATIONS], ids=[c[0] for c in DURATIONS]
)
def test_human_duration_matches_kubectl(delta: datetime.timedelta, text: str) -> None:
    assert human_duration(delta) == text


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("2024-01-02T03:04:05Z", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
        (
            "2024-01-02T03:04:05.123456Z",
            datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC),
        ),
        (
            "2024-01-02T05:04:05+02:00",
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        ),
        ("2024-01-02", None),
        ("yesterday", None),
        (None, None),
        (5, None),
    ],
    ids=[
        "a metav1.Time",
        "a MicroTime",
        "an offset",
        "a date without a time is not RFC 3339",
        "words are not a time",
        "null is no time",
        "a number is no time",
    ],
)
def test_parse_time_reads_rfc3339_only(value: Any, parsed: datetime.datetime | None) -> None:
    assert parse_time(value) == parsed


def test_an_object_without_a_creation_time_has_an_unknown_age() -> None:
    got = cells("v1", "ConfigMap", {"metadata": {"name": "c"}})
    assert got["Age"] == "<unknown>"


# --- the Table envelope ------------------------------------------------------------------


def test_a_table_is_a_meta_v1_table_with_list_metadata() -> None:
    t = table(
        "v1", "ConfigMap", {"metadata": meta("a")}, resource_version="42", continue_token="c1"
    )
    assert t["kind"] == "Table"
    assert t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "42", "continue": "c1"}


def test_continue_is_left_out_when_there_is_no_next_page() -> None:
    assert table("v1", "ConfigMap", resource_version="7")["metadata"] == {"resourceVersion": "7"}


def test_column_definitions_carry_every_field_kubectl_reads() -> None:
    col = table("v1", "Pod")["columnDefinitions"][0]
    assert set(col) == {"name", "type", "format", "description", "priority"}
    assert (col["name"], col["type"], col["format"], col["priority"]) == (
        "Name",
        "string",
        "name",
        0,
    )
    assert col["description"].startswith("Name must be unique within a namespace.")


def test_metadata_rows_carry_partial_object_metadata() -> None:
    obj = {"metadata": meta("a", labels={"app": "web"}), "data": {"k": "v"}}
    row = table("v1", "ConfigMap", obj)["rows"][0]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
    assert "data" not in row["object"]


def test_object_rows_carry_the_whole_object() -> None:
    obj = {"metadata": meta("a"), "data": {"k": "v"}}
    assert table("v1", "ConfigMap", obj, include_object="Object")["rows"][0]["object"] == obj


def test_rows_carry_no_object_when_none_is_asked_for() -> None:
    row = table("v1", "ConfigMap", {"metadata": meta("a")}, include_object="None")["rows"][0]
    assert "object" not in row


def test_an_unknown_include_object_is_rejected() -> None:
    with pytest.raises(ValueError, match="includeObject"):
        table("v1", "ConfigMap", include_object="Everything")


def test_rows_keep_the_order_of_the_objects() -> None:
    t = table("v1", "ConfigMap", {"metadata": meta("b")}, {"metadata": meta("a")})
    assert [r["cells"][0] for r in t["rows"]] == ["b", "a"]


def test_a_naive_now_is_taken_as_utc() -> None:
    obj = {"metadata": meta("a")}
    t = build_table(kind("v1", "ConfigMap"), [obj], now=NOW.replace(tzinfo=None))
    assert t["rows"][0]["cells"][2] == "5m"


# --- columns of every kind ---------------------------------------------------------------

COLUMNS: list[tuple[str, str, list[str], list[str]]] = [
    (
        "v1",
        "Pod",
        ["Name", "Ready", "Status", "Restarts", "Age"],
        ["IP", "Node", "Nominated Node", "Readiness Gates"],
    ),
    (
        "v1",
        "Node",
        ["Name", "Status", "Roles", "Age", "Version"],
        ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"],
    ),
    ("v1", "Namespace", ["Name", "Status", "Age"], []),
    (
        "v1",
        "Service",
        ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"],
        ["Selector"],
    ),
    ("v1", "Endpoints", ["Name", "Endpoints", "Age"], []),
    ("v1", "ConfigMap", ["Name", "Data", "Age"], []),
    ("v1", "Secret", ["Name", "Type", "Data", "Age"], []),
    (
        "v1",
        "Event",
        ["Last Seen", "Type", "Reason", "Object", "Message"],
        ["Subobject", "Source", "First Seen", "Count", "Name"],
    ),
    ("v1", "ServiceAccount", ["Name", "Secrets", "Age"], []),
    (
        "apps/v1",
        "Deployment",
        ["Name", "Ready", "Up-to-date", "Available", "Age"],
        ["Containers", "Images", "Selector"],
    ),
    (
        "apps/v1",
        "ReplicaSet",
        ["Name", "Desired", "Current", "Ready", "Age"],
        ["Containers", "Images", "Selector"],
    ),
    (
        "apps/v1",
        "DaemonSet",
        ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age"],
        ["Containers", "Images", "Selector"],
    ),
    ("apps/v1", "StatefulSet", ["Name", "Ready", "Age"], ["Containers", "Images"]),
    (
        "batch/v1",
        "Job",
        ["Name", "Status", "Completions", "Duration", "Age"],
        ["Containers", "Images", "Selector"],
    ),
    ("coordination.k8s.io/v1", "Lease", ["Name", "Holder", "Age"], []),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        ["Name", "AddressType", "Ports", "Endpoints", "Age"],
        [],
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", ["Name", "Created At"], []),
    # --- authz ---
    ("rbac.authorization.k8s.io/v1", "Role", ["Name", "Created At"], []),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", ["Name", "Created At"], []),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", ["Name", "Role", "Age"],
     ["Users", "Groups", "ServiceAccounts"]),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", ["Name", "Role", "Age"],
     ["Users", "Groups", "ServiceAccounts"]),
    # --- end authz ---
]


# --- authz ---
def test_a_binding_prints_its_role_and_subjects_by_kind() -> None:
    binding = {"metadata": meta("team"),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "edit"},
               "subjects": [{"kind": "User", "name": "ann"}, {"kind": "User", "name": "bo"},
                            {"kind": "Group", "name": "devs"},
                            {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}]}
    assert cells("rbac.authorization.k8s.io/v1", "RoleBinding", binding) == {
        "Name": "team", "Role": "ClusterRole/edit", "Age": "5m", "Users": "ann, bo",
        "Groups": "devs", "ServiceAccounts": "build:ci"}
    role = {"metadata": {"name": "r", "creationTimestamp": "2026-01-02T03:04:05Z"}}
    assert cells("rbac.authorization.k8s.io/v1", "ClusterRole", role) == {
        "Name": "r", "Created At": "2026-01-02T03:04:05Z"}
# --- end authz ---


@pytest.mark.parametrize(
    ("api_version", "name", "normal", "wide"),
    COLUMNS,
    ids=[f"{c[1]} prints {' '.join(c[2]).upper()}" for c in COLUMNS],
)
def test_columns_match_kubernetes(
    api_version: str, name: str, normal: list[str], wide: list[str]
) -> None:
    cols = table(api_version, name)["columnDefinitions"]
    assert [c["name"] for c in cols if c["priority"] == 0] == normal
    assert [c["name"] for c in cols if c["priority"] > 0] == wide


def test_a_kind_without_a_printer_prints_name_and_age() -> None:
    # authz: Role has a printer now; a kind with none is made up here.
    widget = Kind("example.com", "v1", "Widget", "widgets", "widget", namespaced=True)
    t = build_table(widget, [{"metadata": meta("reader")}], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]
    assert t["rows"][0]["cells"] == ["reader", "5m"]


@pytest.mark.parametrize("k", BUILTIN_KINDS, ids=[k.kind for k in BUILTIN_KINDS])
def test_an_empty_object_still_prints_one_cell_per_column(k: Kind) -> None:
    t = build_table(k, [{}], now=NOW)
    assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = [
    "metadata",
    "spec",
    "status",
    "containers",
    "containerStatuses",
    "initContainerStatuses",
    "conditions",
    "state",
    "waiting",
    "terminated",
    "running",
    "lastState",
    "ports",
    "subsets",
    "addresses",
    "selector",
    "matchLabels",
    "matchExpressions",
    "template",
    "type",
    "reason",
    "series",
    "involvedObject",
    "endpoints",
    "data",
    "labels",
    "name",
    "restartCount",
]
MESSY = st.recursive(
    JSON,
    lambda inner: (
        st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=5)
        | st.lists(inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(BUILTIN_KINDS), st.dictionaries(st.sampled_from(FIELD_NAMES), MESSY, max_size=4)
)
def test_malformed_objects_never_break_printing(k: Kind, obj: dict[str, Any]) -> None:
    t = build_table(k, [obj], now=NOW)
    assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"])


# --- pods --------------------------------------------------------------------------------


def pod(
    phase: str = "Running",
    statuses: list[dict[str, Any]] | None = None,
    *,
    init: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    containers: int = 1,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    reason: str = "",
) -> dict[str, Any]:
    m = meta("web")
    if deleting:
        m["deletionTimestamp"] = ago(seconds=10)
    status: dict[str, Any] = {"phase": phase}
    if statuses is not None:
        status["containerStatuses"] = statuses
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    if conditions is not None:
        status["conditions"] = conditions
    if reason:
        status["reason"] = reason
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": "img"} for i in range(containers)]
    }
    if init is not None:
        spec["initContainers"] = init
    return {"metadata": m, "spec": spec, "status": status}


RUNNING = {
    "name": "c0",
    "ready": True,
    "restartCount": 0,
    "state": {"running": {"startedAt": ago(minutes=1)}},
}
NOT_READY = {"name": "c0", "ready": False, "restartCount": 0, "state": {"running": {}}}
CREATING = {"name": "c0", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
CRASHING = {
    "name": "c0",
    "ready": False,
    "restartCount": 3,
    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=5)}},
}
COMPLETED = {
    "name": "c0",
    "ready": False,
    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
}
KILLED = {"name": "c0", "ready": False, "state": {"terminated": {"exitCode": 137}}}
SIGNALLED = {"name": "c0", "ready": False, "state": {"terminated": {"exitCode": 0, "signal": 9}}}
READY_TRUE = [{"type": "Ready", "status": "True"}]

POD_STATUS: list[tuple[str, dict[str, Any], str, str]] = [
    ("a pod nobody has scheduled yet is Pending", pod("Pending"), "Pending", "0/1"),
    (
        "a pod pulling its image shows ContainerCreating",
        pod("Pending", [CREATING]),
        "ContainerCreating",
        "0/1",
    ),
    ("a running ready pod is Running and ready", pod("Running", [RUNNING]), "Running", "1/1"),
    (
        "a running pod that is not ready is Running but not ready",
        pod("Running", [NOT_READY]),
        "Running",
        "0/1",
    ),
    (
        "a pod in CrashLoopBackOff shows that reason as its status",
        pod("Running", [CRASHING]),
        "CrashLoopBackOff",
        "0/1",
    ),
    ("a finished pod shows Completed", pod("Succeeded", [COMPLETED]), "Completed", "0/1"),
    (
        "a container killed without a reason shows its exit code",
        pod("Failed", [KILLED]),
        "ExitCode:137",
        "0/1",
    ),
    (
        "a container killed by a signal shows the signal",
        pod("Failed", [SIGNALLED]),
        "Signal:9",
        "0/1",
    ),
    (
        "a pod being deleted is Terminating",
        pod("Running", [RUNNING], deleting=True),
        "Terminating",
        "1/1",
    ),
    (
        "a pod deleted on a lost node is Unknown",
        pod("Running", [RUNNING], deleting=True, reason="NodeLost"),
        "Unknown",
        "1/1",
    ),
    (
        "a completed pod being deleted stays Completed",
        pod("Succeeded", [COMPLETED], deleting=True),
        "Completed",
        "0/1",
    ),
    ("a pod-level reason replaces the phase", pod("Failed", reason="Evicted"), "Evicted", "0/1"),
    (
        "a gated pod shows SchedulingGated",
        pod(
            "Pending",
            conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        ),
        "SchedulingGated",
        "0/1",
    ),
    (
        "a pod whose last container completed while another runs ready is Running",
        pod("Running", [RUNNING | {"name": "c1"}, COMPLETED], containers=2, conditions=READY_TRUE),
        "Running",
        "1/2",
    ),
    (
        "a pod whose last container completed while another runs unready is NotReady",
        pod("Running", [RUNNING | {"name": "c1"}, COMPLETED], containers=2),
        "NotReady",
        "1/2",
    ),
    (
        "the first container's problem is the one shown",
        pod("Running", [CREATING, CRASHING | {"name": "c1"}], containers=2),
        "ContainerCreating",
        "0/2",
    ),
    (
        "a pod waiting for its first init container shows Init:0/2",
        pod(
            "Pending",
            init=[{"name": "i0"}, {"name": "i1"}],
            init_statuses=[{"name": "i0", "state": {"waiting": {"reason": "PodInitializing"}}}],
        ),
        "Init:0/2",
        "0/1",
    ),
    (
        "a pod past its first init container shows Init:1/2",
        pod(
            "Pending",
            init=[{"name": "i0"}, {"name": "i1"}],
            init_statuses=[
                {"name": "i0", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i1", "state": {"running": {}}},
            ],
        ),
        "Init:1/2",
        "0/1",
    ),
    (
        "a failed init container shows Init and its reason",
        pod(
            "Pending",
            init=[{"name": "i0"}],
            init_statuses=[
                {"name": "i0", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
            ],
        ),
        "Init:Error",
        "0/1",
    ),
    (
        "an init container without a reason shows its exit code",
        pod(
            "Pending",
            init=[{"name": "i0"}],
            init_statuses=[{"name": "i0", "state": {"terminated": {"exitCode": 2}}}],
        ),
        "Init:ExitCode:2",
        "0/1",
    ),
    (
        "a crashing init container shows Init:CrashLoopBackOff",
        pod(
            "Pending",
            init=[{"name": "i0"}],
            init_statuses=[{"name": "i0", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        ),
        "Init:CrashLoopBackOff",
        "0/1",
    ),
    (
        "a started sidecar counts as a ready container",
        pod(
            "Running",
            [RUNNING],
            init=[{"name": "proxy", "restartPolicy": "Always"}],
            init_statuses=[
                {"name": "proxy", "started": True, "ready": True, "state": {"running": {}}}
            ],
        ),
        "Running",
        "2/2",
    ),
]


@pytest.mark.parametrize(
    ("obj", "status", "ready"), [c[1:] for c in POD_STATUS], ids=[c[0] for c in POD_STATUS]
)
def test_pod_status_and_readiness(obj: dict[str, Any], status: str, ready: str) -> None:
    got = cells("v1", "Pod", obj)
    assert (got["Status"], got["Ready"]) == (status, ready)


@pytest.mark.parametrize(
    ("obj", "restarts"),
    [
        (pod("Running", [RUNNING]), "0"),
        (pod("Running", [CRASHING]), "3 (5m ago)"),
        (pod("Running", [CRASHING | {"lastState": {}}]), "3"),
        (
            pod(
                "Running",
                [
                    CRASHING,
                    CRASHING
                    | {
                        "name": "c1",
                        "restartCount": 2,
                        "lastState": {"terminated": {"finishedAt": ago(seconds=30)}},
                    },
                ],
                containers=2,
            ),
            "5 (30s ago)",
        ),
        (
            pod(
                "Running",
                [RUNNING],
                init=[{"name": "proxy", "restartPolicy": "Always"}],
                init_statuses=[
                    {"name": "proxy", "started": True, "restartCount": 4, "state": {"running": {}}}
                ],
            ),
            "4",
        ),
    ],
    ids=[
        "a pod that never restarted shows 0",
        "restarts show when the last container restarted",
        "restarts without a termination time show only the count",
        "restarts add up over containers and show the latest restart",
        "sidecar restarts count",
    ],
)
def test_pod_restarts(obj: dict[str, Any], restarts: str) -> None:
    assert cells("v1", "Pod", obj)["Restarts"] == restarts


def test_pod_wide_columns_show_ip_node_nomination_and_gates() -> None:
    obj = pod("Running", [RUNNING], conditions=[{"type": "example.com/lb", "status": "True"}])
    obj["spec"]["nodeName"] = "pi-1"
    obj["spec"]["readinessGates"] = [
        {"conditionType": "example.com/lb"},
        {"conditionType": "example.com/dns"},
    ]
    obj["status"]["podIPs"] = [{"ip": "10.1.0.7"}, {"ip": "fd00::7"}]
    obj["status"]["nominatedNodeName"] = "pi-2"
    got = cells("v1", "Pod", obj)
    assert (got["IP"], got["Node"], got["Nominated Node"], got["Readiness Gates"]) == (
        "10.1.0.7",
        "pi-1",
        "pi-2",
        "1/2",
    )


def test_an_unscheduled_pod_shows_none_in_its_wide_columns() -> None:
    got = cells("v1", "Pod", pod("Pending"))
    assert [got["IP"], got["Node"], got["Nominated Node"], got["Readiness Gates"]] == ["<none>"] * 4


def test_a_pod_with_only_the_legacy_pod_ip_shows_it() -> None:
    obj = pod("Running", [RUNNING])
    obj["status"]["podIP"] = "10.0.0.9"
    assert cells("v1", "Pod", obj)["IP"] == "10.0.0.9"


@pytest.mark.parametrize(
    ("phase", "conditions"),
    [
        (
            "Succeeded",
            [
                {
                    "type": "Completed",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "The pod has completed successfully.",
                }
            ],
        ),
        (
            "Failed",
            [
                {
                    "type": "Completed",
                    "status": "True",
                    "reason": "Failed",
                    "message": "The pod failed.",
                }
            ],
        ),
        ("Running", None),
    ],
    ids=[
        "a succeeded pod's row is marked completed",
        "a failed pod's row is marked completed",
        "a running pod's row has no conditions",
    ],
)
def test_pod_row_conditions(phase: str, conditions: list[dict[str, str]] | None) -> None:
    assert table("v1", "Pod", pod(phase))["rows"][0].get("conditions") == conditions


# --- nodes and namespaces ----------------------------------------------------------------


def node(ready: str | None = "True", **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "nodeInfo": {
            "kubeletVersion": "v1.30.0-shoal",
            "osImage": "Debian 12",
            "kernelVersion": "6.1.0",
        },
        "addresses": [
            {"type": "Hostname", "address": "pi-1"},
            {"type": "InternalIP", "address": "192.168.1.10"},
        ],
    }
    if ready is not None:
        status["conditions"] = [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready},
        ]
    labels = {
        "node-role.kubernetes.io/edge": "",
        "node-role.kubernetes.io/worker": "",
        "kubernetes.io/role": "gateway",
    }
    return {
        "metadata": {"name": "pi-1", "creationTimestamp": ago(days=3), "labels": labels},
        "spec": spec,
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        (node("True"), "Ready"),
        (node("False"), "NotReady"),
        (node("Unknown"), "NotReady"),
        (node(None), "Unknown"),
        (node("True", unschedulable=True), "Ready,SchedulingDisabled"),
    ],
    ids=[
        "a ready node is Ready",
        "a node that is not ready is NotReady",
        "a node whose readiness is unknown is NotReady",
        "a node with no Ready condition is Unknown",
        "a cordoned node adds SchedulingDisabled",
    ],
)
def test_node_status(obj: dict[str, Any], status: str) -> None:
    assert cells("v1", "Node", obj)["Status"] == status


def test_node_roles_version_and_wide_columns() -> None:
    got = cells("v1", "Node", node())
    assert got["Roles"] == "edge,gateway,worker"
    assert (got["Age"], got["Version"]) == ("3d", "v1.30.0-shoal")
    assert (got["Internal-IP"], got["External-IP"]) == ("192.168.1.10", "<none>")
    assert (got["OS-Image"], got["Kernel-Version"], got["Container-Runtime"]) == (
        "Debian 12",
        "6.1.0",
        "<unknown>",
    )


def test_a_node_without_roles_shows_none() -> None:
    obj = node()
    obj["metadata"]["labels"] = {"kubernetes.io/hostname": "pi-1"}
    assert cells("v1", "Node", obj)["Roles"] == "<none>"


def test_namespace_shows_its_phase() -> None:
    got = cells("v1", "Namespace", {"metadata": meta("edge"), "status": {"phase": "Terminating"}})
    assert got == {"Name": "edge", "Status": "Terminating", "Age": "5m"}


# --- services and endpoints --------------------------------------------------------------


def service(svc_type: str | None, **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], **spec}
    if svc_type:
        s["type"] = svc_type
    return {"metadata": meta("web"), "spec": s}


SERVICES: list[tuple[str, dict[str, Any], list[Any]]] = [
    (
        "a cluster IP service has no external IP",
        service(
            "ClusterIP", clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"], selector={"app": "web"}
        ),
        ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m", "app=web"],
    ),
    (
        "a headless service shows None as its cluster IP",
        service("ClusterIP", clusterIP="None", clusterIPs=["None"]),
        ["web", "ClusterIP", "None", "<none>", "80/TCP", "5m", "<none>"],
    ),
    (
        "a node port service shows both ports",
        service(
            "NodePort",
            clusterIPs=["10.96.0.11"],
            ports=[
                {"port": 80, "nodePort": 30080, "protocol": "TCP"},
                {"port": 53, "protocol": "UDP"},
            ],
        ),
        ["web", "NodePort", "10.96.0.11", "<none>", "80:30080/TCP,53/UDP", "5m", "<none>"],
    ),
    (
        "external IPs show for a cluster IP service",
        service("ClusterIP", clusterIPs=["10.96.0.12"], externalIPs=["1.2.3.4", "5.6.7.8"]),
        ["web", "ClusterIP", "10.96.0.12", "1.2.3.4,5.6.7.8", "80/TCP", "5m", "<none>"],
    ),
    (
        "a load balancer without an address is pending",
        service("LoadBalancer", clusterIPs=["10.96.0.13"]),
        ["web", "LoadBalancer", "10.96.0.13", "<pending>", "80/TCP", "5m", "<none>"],
    ),
    (
        "an external name service shows the name and no cluster IP",
        service("ExternalName", externalName="db.example.com", ports=[]),
        ["web", "ExternalName", "<none>", "db.example.com", "<none>", "5m", "<none>"],
    ),
    (
        "a service stored without a type reads as ClusterIP",
        service(None, clusterIP="10.96.0.14"),
        ["web", "ClusterIP", "10.96.0.14", "<none>", "80/TCP", "5m", "<none>"],
    ),
]


@pytest.mark.parametrize(("obj", "row"), [c[1:] for c in SERVICES], ids=[c[0] for c in SERVICES])
def test_service_cells(obj: dict[str, Any], row: list[Any]) -> None:
    assert table("v1", "Service", obj)["rows"][0]["cells"] == row


def test_a_load_balancer_lists_ingress_addresses_then_external_ips() -> None:
    obj = service("LoadBalancer", clusterIPs=["10.96.0.13"], externalIPs=["9.9.9.9"])
    obj["status"] = {
        "loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "3.3.3.3"}]}
    }
    assert cells("v1", "Service", obj)["External-IP"] == "3.3.3.3,lb.example.com,9.9.9.9"


ENDPOINTS: list[tuple[str, list[dict[str, Any]] | None, str]] = [
    ("endpoints without subsets show none", None, "<none>"),
    (
        "endpoints pair each address with each port",
        [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}],
        "10.0.0.1:80,10.0.0.2:80",
    ),
    (
        "more than three endpoints are summarised",
        [
            {
                "addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 5)],
                "ports": [{"port": 80}, {"port": 443}],
            }
        ],
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 5 more...",
    ),
    (
        "headless endpoints without ports show bare addresses",
        [{"addresses": [{"ip": "10.0.0.1"}]}],
        "10.0.0.1",
    ),
    (
        "IPv6 endpoints are bracketed",
        [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}],
        "[fd00::1]:80",
    ),
    (
        "subsets with only unready addresses print empty",
        [{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}],
        "",
    ),
]


@pytest.mark.parametrize(
    ("subsets", "text"), [c[1:] for c in ENDPOINTS], ids=[c[0] for c in ENDPOINTS]
)
def test_endpoints_cells(subsets: list[dict[str, Any]] | None, text: str) -> None:
    obj: dict[str, Any] = {"metadata": meta("web")}
    if subsets is not None:
        obj["subsets"] = subsets
    assert cells("v1", "Endpoints", obj)["Endpoints"] == text


ENDPOINT_SLICES: list[tuple[str, dict[str, Any], list[Any]]] = [
    (
        "a slice lists its ports and addresses",
        {
            "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
        },
        ["web-abc", "IPv4", "80", "10.0.0.1,10.0.0.2", "5m"],
    ),
    (
        "an empty slice shows unset",
        {"addressType": "IPv4"},
        ["web-abc", "IPv4", "<unset>", "<unset>", "5m"],
    ),
    (
        "a port without a number shows its name, or a star",
        {"addressType": "IPv6", "ports": [{"name": "dns"}, {}], "endpoints": []},
        ["web-abc", "IPv6", "dns,*", "<unset>", "5m"],
    ),
    (
        "many addresses are summarised",
        {"addressType": "IPv4", "endpoints": [{"addresses": [f"10.0.0.{i}"]} for i in range(6)]},
        ["web-abc", "IPv4", "<unset>", "10.0.0.0,10.0.0.1,10.0.0.2 + 3 more...", "5m"],
    ),
]


@pytest.mark.parametrize(
    ("obj", "row"), [c[1:] for c in ENDPOINT_SLICES], ids=[c[0] for c in ENDPOINT_SLICES]
)
def test_endpoint_slice_cells(obj: dict[str, Any], row: list[Any]) -> None:
    obj = {"metadata": meta("web-abc"), **obj}
    assert table("discovery.k8s.io/v1", "EndpointSlice", obj)["rows"][0]["cells"] == row


# --- config and identity -----------------------------------------------------------------


def test_config_map_counts_data_and_binary_data_keys() -> None:
    obj = {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert table("v1", "ConfigMap", obj)["rows"][0]["cells"] == ["cfg", 3, "5m"]


def test_secret_shows_its_type_and_key_count() -> None:
    obj = {
        "metadata": meta("tls"),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    }
    assert table("v1", "Secret", obj)["rows"][0]["cells"] == ["tls", "kubernetes.io/tls", 2, "5m"]


def test_service_account_counts_its_secrets() -> None:
    obj = {"metadata": meta("default"), "secrets": [{"name": "default-token"}]}
    assert table("v1", "ServiceAccount", obj)["rows"][0]["cells"] == ["default", 1, "5m"]


def test_lease_shows_its_holder() -> None:
    obj = {"metadata": meta("pi-1"), "spec": {"holderIdentity": "pi-1", "leaseDurationSeconds": 40}}
    assert table("coordination.k8s.io/v1", "Lease", obj)["rows"][0]["cells"] == [
        "pi-1",
        "pi-1",
        "5m",
    ]


def test_a_lease_without_a_holder_shows_nothing() -> None:
    assert cells("coordination.k8s.io/v1", "Lease", {"metadata": meta("l")})["Holder"] == ""


# --- events ------------------------------------------------------------------------------


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": meta("web.17a"),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
        "type": "Warning",
        "reason": "BackOff",
        "message": "  Back-off restarting failed container\n",
        "source": {"component": "kubelet", "host": "pi-1"},
        "firstTimestamp": ago(hours=2),
        "lastTimestamp": ago(seconds=30),
        "count": 12,
    }
    return base | fields


def test_event_cells_in_kubernetes_order() -> None:
    assert table("v1", "Event", event())["rows"][0]["cells"] == [
        "30s",
        "Warning",
        "BackOff",
        "pod/web",
        "spec.containers{app}",
        "kubelet, pi-1",
        "Back-off restarting failed container",
        "120m",
        12,
        "web.17a",
    ]


EVENTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "a new-style event takes its times from eventTime and its count from its series",
        event(
            firstTimestamp=None,
            lastTimestamp=None,
            count=None,
            eventTime="2024-06-01T11:00:00.000000Z",
            series={"count": 4, "lastObservedTime": "2024-06-01T11:58:00.000000Z"},
        ),
        {"Last Seen": "2m", "First Seen": "60m", "Count": 4},
    ),
    (
        "a singleton event without a count counts one",
        event(count=None, lastTimestamp=None),
        {"Count": 1, "Last Seen": "120m"},
    ),
    (
        "an event about a kind without a name shows the kind",
        event(involvedObject={"kind": "Node"}),
        {"Object": "node", "Subobject": ""},
    ),
    (
        "a new-style event's source is its reporting controller and instance",
        event(source=None, reportingController="shoal/scheduler", reportingInstance="pi-2"),
        {"Source": "shoal/scheduler, pi-2"},
    ),
    (
        "a source without a host is just the component",
        event(source={"component": "kubelet"}),
        {"Source": "kubelet"},
    ),
    (
        "an event with no times has an unknown age",
        event(firstTimestamp=None, lastTimestamp=None),
        {"Last Seen": "<unknown>"},
    ),
]


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in EVENTS], ids=[c[0] for c in EVENTS])
def test_event_cells(obj: dict[str, Any], expected: dict[str, Any]) -> None:
    got = cells("v1", "Event", obj)
    assert {k: got[k] for k in expected} == expected


# --- workloads ---------------------------------------------------------------------------

TEMPLATE = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {
        "containers": [{"name": "app", "image": "nginx:1"}, {"name": "log", "image": "fluent:3"}]
    },
}
SELECTOR = {
    "matchLabels": {"app": "web"},
    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
}


def test_deployment_cells() -> None:
    obj = {
        "metadata": meta("web"),
        "spec": {"replicas": 3, "selector": SELECTOR, "template": TEMPLATE},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert table("apps/v1", "Deployment", obj)["rows"][0]["cells"] == [
        "web",
        "2/3",
        3,
        2,
        "5m",
        "app,log",
        "nginx:1,fluent:3",
        "app=web,tier notin (db)",
    ]


def test_a_new_deployment_defaults_to_one_replica_and_zero_counts() -> None:
    got = cells("apps/v1", "Deployment", {"metadata": meta("web"), "spec": {"template": TEMPLATE}})
    assert (got["Ready"], got["Up-to-date"], got["Available"], got["Selector"]) == ("0/1", 0, 0, "")


def test_replica_set_cells() -> None:
    obj = {
        "metadata": meta("web-abc"),
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
        "status": {"replicas": 3, "readyReplicas": 1},
    }
    assert table("apps/v1", "ReplicaSet", obj)["rows"][0]["cells"] == [
        "web-abc",
        3,
        3,
        1,
        "5m",
        "app,log",
        "nginx:1,fluent:3",
        "app=web",
    ]


def test_a_replica_set_without_a_selector_shows_none() -> None:
    assert cells("apps/v1", "ReplicaSet", {"metadata": meta("rs")})["Selector"] == "<none>"


def test_daemon_set_cells() -> None:
    template = {
        "spec": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "containers": [{"name": "agent", "image": "a:1"}],
        }
    }
    obj = {
        "metadata": meta("agent"),
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template},
        "status": {
            "desiredNumberScheduled": 4,
            "currentNumberScheduled": 4,
            "numberReady": 3,
            "updatedNumberScheduled": 4,
            "numberAvailable": 3,
        },
    }
    assert table("apps/v1", "DaemonSet", obj)["rows"][0]["cells"] == [
        "agent",
        4,
        4,
        3,
        4,
        3,
        "kubernetes.io/os=linux",
        "5m",
        "agent",
        "a:1",
        "app=agent",
    ]


def test_stateful_set_shows_ready_over_desired() -> None:
    obj = {
        "metadata": meta("db"),
        "spec": {"replicas": 3, "template": TEMPLATE},
        "status": {"readyReplicas": 1},
    }
    assert table("apps/v1", "StatefulSet", obj)["rows"][0]["cells"] == [
        "db",
        "1/3",
        "5m",
        "app,log",
        "nginx:1,fluent:3",
    ]


def job(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, deleting: bool = False
) -> dict[str, Any]:
    m = meta("backup")
    if deleting:
        m["deletionTimestamp"] = ago(seconds=1)
    return {"metadata": m, "spec": {"template": TEMPLATE, **(spec or {})}, "status": status or {}}


JOBS: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    (
        "a complete job shows its run time",
        job(
            {"completions": 1},
            {
                "succeeded": 1,
                "startTime": ago(minutes=4),
                "completionTime": ago(minutes=1),
                "conditions": [{"type": "Complete", "status": "True"}],
            },
        ),
        {"Status": "Complete", "Completions": "1/1", "Duration": "3m"},
    ),
    (
        "a running job's duration runs until now",
        job({"completions": 5, "parallelism": 2}, {"succeeded": 2, "startTime": ago(seconds=45)}),
        {"Status": "Running", "Completions": "2/5", "Duration": "45s"},
    ),
    (
        "a parallel job without completions counts one of its parallelism",
        job({"parallelism": 3}, {}),
        {"Status": "Running", "Completions": "0/1 of 3", "Duration": ""},
    ),
    (
        "a failed job shows Failed",
        job({}, {"conditions": [{"type": "Failed", "status": "True"}]}),
        {"Status": "Failed", "Completions": "0/1"},
    ),
    ("a job being deleted shows Terminating", job(deleting=True), {"Status": "Terminating"}),
    (
        "a suspended job shows Suspended",
        job({"suspend": True}, {"conditions": [{"type": "Suspended", "status": "True"}]}),
        {"Status": "Suspended"},
    ),
    (
        "a job about to fail shows FailureTarget",
        job({}, {"conditions": [{"type": "FailureTarget", "status": "True"}]}),
        {"Status": "FailureTarget"},
    ),
    (
        "a false Complete condition does not complete the job",
        job({}, {"conditions": [{"type": "Complete", "status": "False"}]}),
        {"Status": "Running"},
    ),
]


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in JOBS], ids=[c[0] for c in JOBS])
def test_job_cells(obj: dict[str, Any], expected: dict[str, str]) -> None:
    got = cells("batch/v1", "Job", obj)
    assert {k: got[k] for k in expected} == expected


def test_a_custom_resource_definition_prints_its_creation_time() -> None:
    obj = {
        "metadata": {
            "name": "widgets.example.com",
            "creationTimestamp": "2024-01-02T05:04:05+02:00",
        }
    }
    t = table("apiextensions.k8s.io/v1", "CustomResourceDefinition", obj)
    assert t["columnDefinitions"][1]["type"] == "date"
    assert t["rows"][0]["cells"] == ["widgets.example.com", "2024-01-02T03:04:05Z"]


# --- custom resources --------------------------------------------------------------------


def crd_kind(columns: list[dict[str, Any]] | None) -> Kind:
    version: dict[str, Any] = {"name": "v1", "served": True, "storage": True}
    if columns is not None:
        version["additionalPrinterColumns"] = columns
    crd = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [version],
        },
    }
    return KindRegistry().register_crd(crd)[0]


WIDGET = {
    "apiVersion": "example.com/v1",
    "kind": "Widget",
    "metadata": meta("w1"),
    "spec": {"replicas": 3, "size": 2.5, "enabled": True, "tags": ["a", "b"], "image": "img:1"},
    "status": {
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ago(hours=5)}],
        "observed": 7.9,
    },
}


def test_a_custom_resource_without_printer_columns_prints_name_and_age() -> None:
    t = build_table(crd_kind(None), [WIDGET], now=NOW)
    assert [(c["name"], c["type"]) for c in t["columnDefinitions"]] == [
        ("Name", "string"),
        ("Age", "date"),
    ]
    assert t["rows"][0]["cells"] == ["w1", "5m"]


def test_declared_printer_columns_follow_name_and_replace_age() -> None:
    columns: list[dict[str, Any]] = [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Is it ready?",
        },
        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
    ]
    t = build_table(crd_kind(columns), [WIDGET], now=NOW)
    assert t["columnDefinitions"] == [
        t["columnDefinitions"][0],
        {
            "name": "Replicas",
            "type": "integer",
            "format": "",
            "priority": 0,
            "description": "Custom resource definition column (in JSONPath format): .spec.replicas",
        },
        {
            "name": "Ready",
            "type": "string",
            "format": "",
            "priority": 0,
            "description": "Is it ready?",
        },
        {
            "name": "Image",
            "type": "string",
            "format": "",
            "priority": 1,
            "description": "Custom resource definition column (in JSONPath format): .spec.image",
        },
    ]
    assert t["columnDefinitions"][0]["name"] == "Name"
    assert t["rows"][0]["cells"] == ["w1", 3, "True", "img:1"]


CUSTOM_CELLS: list[tuple[str, str, str, Any]] = [
    ("an integer column truncates a float", "integer", ".status.observed", 7),
    ("a number column widens an integer", "number", ".spec.replicas", 3.0),
    ("a boolean column keeps a boolean", "boolean", ".spec.enabled", True),
    ("a boolean column ignores an integer", "boolean", ".spec.replicas", None),
    ("an integer column ignores a boolean", "integer", ".spec.enabled", None),
    ("an integer column ignores a string", "integer", ".spec.image", None),
    ("a string column prints a number as text", "string", ".spec.replicas", "3"),
    ("a string column prints a list as JSON", "string", ".spec.tags", '["a","b"]'),
    ("a string column takes the first of many results", "string", ".spec.tags[*]", "a"),
    ("a date column prints an age", "date", ".status.conditions[0].lastTransitionTime", "5h"),
    ("a date column marks a bad timestamp invalid", "date", ".spec.image", "<invalid>"),
    ("a missing value prints nothing", "string", ".spec.missing", None),
    ("an unknown column type prints nothing", "color", ".spec.image", None),
]


@pytest.mark.parametrize(
    ("col_type", "path", "cell"), [c[1:] for c in CUSTOM_CELLS], ids=[c[0] for c in CUSTOM_CELLS]
)
def test_custom_column_cells_follow_their_type(col_type: str, path: str, cell: Any) -> None:
    k = crd_kind([{"name": "X", "type": col_type, "jsonPath": path}])
    assert build_table(k, [WIDGET], now=NOW)["rows"][0]["cells"][1] == cell


def test_columns_stop_at_the_first_unparsable_path() -> None:
    columns = [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Bad", "type": "string", "jsonPath": ".spec["},
        {"name": "Image", "type": "string", "jsonPath": ".spec.image"},
    ]
    t = build_table(crd_kind(columns), [WIDGET], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Replicas"]
    assert t["rows"][0]["cells"] == ["w1", 3]


def test_a_custom_resource_row_carries_partial_metadata() -> None:
    row = build_table(crd_kind(None), [WIDGET], now=NOW)["rows"][0]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "w1"
