"""JSON patch, JSON merge patch and strategic merge patch, as kubectl sends them.

The cases under "what kubectl sends" are patches recorded from kubectl 1.37 (apply,
edit, set, rollout, taint, patch) against a recording server, with the result the
Kubernetes API server computes for them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api.patch import (
    MAX_JSON_PATCH_OPERATIONS,
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in cases]


# --------------------------------------------------------------------------------------
# JSON patch (RFC 6902)

JSON_PATCH_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], dict[str, Any]]] = [
    (
        "a json patch adds a member",
        {"a": 1},
        [{"op": "add", "path": "/b", "value": 2}],
        {"a": 1, "b": 2},
    ),
    (
        "a json patch add replaces an existing member",
        {"a": 1},
        [{"op": "add", "path": "/a", "value": [1]}],
        {"a": [1]},
    ),
    (
        "a json patch inserts into an array at an index",
        {"a": [1, 3]},
        [{"op": "add", "path": "/a/1", "value": 2}],
        {"a": [1, 2, 3]},
    ),
    (
        "a json patch appends to an array with a dash",
        {"a": [1]},
        [{"op": "add", "path": "/a/-", "value": 2}],
        {"a": [1, 2]},
    ),
    (
        "a json patch may add at the index one past the end",
        {"a": [1]},
        [{"op": "add", "path": "/a/1", "value": 2}],
        {"a": [1, 2]},
    ),
    (
        "a json patch removes a member",
        {"a": 1, "b": 2},
        [{"op": "remove", "path": "/a"}],
        {"b": 2},
    ),
    (
        "a json patch removes an array element",
        {"a": [1, 2, 3]},
        [{"op": "remove", "path": "/a/1"}],
        {"a": [1, 3]},
    ),
    (
        "a json patch replaces a value",
        {"spec": {"replicas": 1}},
        [{"op": "replace", "path": "/spec/replicas", "value": 3}],
        {"spec": {"replicas": 3}},
    ),
    (
        "a json patch replaces the whole document",
        {"a": 1},
        [{"op": "replace", "path": "", "value": {"b": 2}}],
        {"b": 2},
    ),
    (
        "a json patch moves a value",
        {"a": {"x": 1}, "b": {}},
        [{"op": "move", "from": "/a/x", "path": "/b/y"}],
        {"a": {}, "b": {"y": 1}},
    ),
    (
        "a json patch moves an array element within its array",
        {"a": [1, 2, 3]},
        [{"op": "move", "from": "/a/0", "path": "/a/2"}],
        {"a": [2, 3, 1]},
    ),
    (
        "a json patch move onto itself changes nothing",
        {"a": 1},
        [{"op": "move", "from": "/a", "path": "/a"}],
        {"a": 1},
    ),
    (
        "a json patch copies a value",
        {"a": {"x": [1]}},
        [{"op": "copy", "from": "/a", "path": "/b"}],
        {"a": {"x": [1]}, "b": {"x": [1]}},
    ),
    (
        "a json patch test that passes changes nothing",
        {"a": {"b": [1, 2.0]}},
        [{"op": "test", "path": "/a", "value": {"b": [1.0, 2]}}],
        {"a": {"b": [1, 2.0]}},
    ),
    (
        "a json patch test then replace is an optimistic update",
        {"metadata": {"resourceVersion": "7"}, "spec": {"x": 1}},
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
            {"op": "replace", "path": "/spec/x", "value": 2},
        ],
        {"metadata": {"resourceVersion": "7"}, "spec": {"x": 2}},
    ),
    (
        "a json pointer unescapes tilde-one to a slash",
        {"metadata": {"labels": {"app.kubernetes.io/name": "a"}}},
        [{"op": "replace", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "b"}],
        {"metadata": {"labels": {"app.kubernetes.io/name": "b"}}},
    ),
    (
        "a json pointer unescapes tilde-zero to a tilde",
        {"a~b": 1, "a/b": 2, "~1": 3},
        [
            {"op": "remove", "path": "/a~0b"},
            {"op": "remove", "path": "/a~1b"},
            {"op": "replace", "path": "/~01", "value": 4},
        ],
        {"~1": 4},
    ),
    (
        "a json pointer can name the empty key",
        {"": 1},
        [{"op": "replace", "path": "/", "value": 2}],
        {"": 2},
    ),
    (
        "json patch operations apply in order",
        {"a": []},
        [
            {"op": "add", "path": "/a/-", "value": 1},
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "test", "path": "/a", "value": [0, 1]},
        ],
        {"a": [0, 1]},
    ),
    (
        "a json patch ignores unknown members of an operation",
        {"a": 1},
        [{"op": "remove", "path": "/a", "comment": "why"}],
        {},
    ),
    (
        "a json patch may set a null value",
        {"a": 1},
        [{"op": "replace", "path": "/a", "value": None}],
        {"a": None},
    ),
    ("an empty json patch changes nothing", {"a": 1}, [], {"a": 1}),
]


@pytest.mark.parametrize(
    ("doc", "patch", "expected"), [c[1:] for c in JSON_PATCH_CASES], ids=ids(JSON_PATCH_CASES)
)
def test_json_patch(
    doc: dict[str, Any], patch: list[dict[str, Any]], expected: dict[str, Any]
) -> None:
    before = copy.deepcopy(doc)
    patch_before = copy.deepcopy(patch)
    assert apply_json_patch(doc, patch) == expected
    assert doc == before
    assert patch == patch_before


JSON_PATCH_ERRORS: list[tuple[str, dict[str, Any], Any, int]] = [
    ("a json patch must be an array", {}, {"op": "add"}, 400),
    ("a json patch operation must be an object", {}, ["add"], 400),
    ("a json patch op must be known", {}, [{"op": "frob", "path": "/a"}], 400),
    ("a json patch operation needs a path", {}, [{"op": "remove"}], 400),
    ("a json patch add needs a value", {}, [{"op": "add", "path": "/a"}], 400),
    ("a json patch move needs a from", {"a": 1}, [{"op": "move", "path": "/b"}], 400),
    ("a json pointer must start with a slash", {"a": 1}, [{"op": "remove", "path": "a"}], 400),
    ("a json pointer escape must be 0 or 1", {"a": 1}, [{"op": "remove", "path": "/a~2"}], 400),
    (
        "a malformed later operation rejects the whole patch before applying",
        {"a": 1},
        [{"op": "remove", "path": "/a"}, {"op": "nope", "path": "/a"}],
        400,
    ),
    (
        "a json patch test that fails is unprocessable",
        {"a": 1},
        [{"op": "test", "path": "/a", "value": 2}],
        422,
    ),
    (
        "a json patch test tells true from one",
        {"a": 1},
        [{"op": "test", "path": "/a", "value": True}],
        422,
    ),
    (
        "a json patch test of a missing member fails even against null",
        {"a": 1},
        [{"op": "test", "path": "/b", "value": None}],
        422,
    ),
    (
        "a json patch cannot remove a missing member",
        {"a": 1},
        [{"op": "remove", "path": "/b"}],
        422,
    ),
    (
        "a json patch cannot replace a missing member",
        {"a": 1},
        [{"op": "replace", "path": "/b", "value": 1}],
        422,
    ),
    (
        "a json patch cannot add under a missing parent",
        {"a": 1},
        [{"op": "add", "path": "/b/c", "value": 1}],
        422,
    ),
    (
        "a json patch cannot add past the end of an array",
        {"a": [1]},
        [{"op": "add", "path": "/a/2", "value": 1}],
        422,
    ),
    (
        "a json patch array index has no leading zeros",
        {"a": [1, 2]},
        [{"op": "remove", "path": "/a/01"}],
        422,
    ),
    (
        "a json patch array index is not negative",
        {"a": [1, 2]},
        [{"op": "remove", "path": "/a/-1"}],
        422,
    ),
    (
        "a json patch cannot remove the dash element",
        {"a": [1]},
        [{"op": "remove", "path": "/a/-"}],
        422,
    ),
    (
        "a json patch cannot add a member to a string",
        {"a": "s"},
        [{"op": "add", "path": "/a/b", "value": 1}],
        422,
    ),
    (
        "a json patch cannot move a value into its own child",
        {"a": {"b": {}}},
        [{"op": "move", "from": "/a", "path": "/a/b/c"}],
        422,
    ),
    (
        "a json patch cannot copy from a missing member",
        {"a": 1},
        [{"op": "copy", "from": "/x", "path": "/b"}],
        422,
    ),
    (
        "a json patch cannot remove the whole document",
        {"a": 1},
        [{"op": "remove", "path": ""}],
        422,
    ),
    (
        "a json patch must leave an object behind",
        {"a": 1},
        [{"op": "replace", "path": "", "value": [1]}],
        422,
    ),
]


@pytest.mark.parametrize(
    ("doc", "patch", "code"), [c[1:] for c in JSON_PATCH_ERRORS], ids=ids(JSON_PATCH_ERRORS)
)
def test_json_patch_errors(doc: dict[str, Any], patch: Any, code: int) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(PatchError) as caught:
        apply_json_patch(doc, patch)
    assert caught.value.code == code
    assert caught.value.message
    assert doc == before


def test_a_json_patch_with_too_many_operations_is_too_large() -> None:
    patch = [{"op": "test", "path": "", "value": {}}] * (MAX_JSON_PATCH_OPERATIONS + 1)
    with pytest.raises(PatchError) as caught:
        apply_json_patch({}, patch)
    assert caught.value.code == 413


def test_a_json_patch_result_shares_nothing_with_the_patch() -> None:
    value = {"x": [1]}
    result = apply_json_patch({}, [{"op": "add", "path": "/a", "value": value}])
    result["a"]["x"].append(2)
    assert value == {"x": [1]}


def test_a_json_patch_copy_is_a_deep_copy() -> None:
    result = apply_json_patch({"a": {"x": 1}}, [{"op": "copy", "from": "/a", "path": "/b"}])
    result["b"]["x"] = 2
    assert result["a"] == {"x": 1}


# --------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386)

MERGE_PATCH_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "a merge patch sets a label as kubectl label sends it",
        {"metadata": {"name": "web", "labels": {"app": "web"}}},
        {"metadata": {"labels": {"env": "prod"}}},
        {"metadata": {"name": "web", "labels": {"app": "web", "env": "prod"}}},
    ),
    (
        "a merge patch null removes a label as kubectl label key- sends it",
        {"metadata": {"labels": {"app": "web", "env": "prod"}}},
        {"metadata": {"labels": {"env": None}}},
        {"metadata": {"labels": {"app": "web"}}},
    ),
    (
        "a merge patch sets an annotation as kubectl annotate sends it",
        {"metadata": {"name": "web"}},
        {"metadata": {"annotations": {"note": "hello"}}},
        {"metadata": {"name": "web", "annotations": {"note": "hello"}}},
    ),
    (
        "a merge patch scales as kubectl scale sends it",
        {"spec": {"replicas": 2}},
        {"spec": {"replicas": 5}},
        {"spec": {"replicas": 5}},
    ),
    (
        "a merge patch replaces lists whole",
        {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}},
        {"spec": {"containers": [{"name": "a", "image": "y"}]}},
        {"spec": {"containers": [{"name": "a", "image": "y"}]}},
    ),
    (
        "a merge patch null for a missing key changes nothing",
        {"a": 1},
        {"b": None},
        {"a": 1},
    ),
    (
        "a merge patch drops nulls inside a new object",
        {},
        {"a": {"b": None, "c": 1}},
        {"a": {"c": 1}},
    ),
    (
        "a merge patch object replaces a scalar",
        {"a": "x"},
        {"a": {"b": 1}},
        {"a": {"b": 1}},
    ),
    (
        "a merge patch scalar replaces an object",
        {"a": {"b": 1}},
        {"a": 2},
        {"a": 2},
    ),
    (
        "a merge patch keeps nulls inside arrays",
        {},
        {"a": [None, {"b": None}]},
        {"a": [None, {"b": None}]},
    ),
    ("an empty merge patch changes nothing", {"a": {"b": 1}}, {}, {"a": {"b": 1}}),
    (
        "a merge patch does not know about strategic directives",
        {"a": 1},
        {"$patch": "replace"},
        {"a": 1, "$patch": "replace"},
    ),
]


@pytest.mark.parametrize(
    ("doc", "patch", "expected"), [c[1:] for c in MERGE_PATCH_CASES], ids=ids(MERGE_PATCH_CASES)
)
def test_merge_patch(doc: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    patch_before = copy.deepcopy(patch)
    assert apply_merge_patch(doc, patch) == expected
    assert doc == before
    assert patch == patch_before


@pytest.mark.parametrize(
    "patch",
    [[{"op": "add"}], "x", 1, None],
    ids=[
        "a merge patch is not an array",
        "a merge patch is not a string",
        "a merge patch is not a number",
        "a merge patch is not null",
    ],
)
def test_a_merge_patch_must_be_an_object(patch: Any) -> None:
    with pytest.raises(PatchError) as caught:
        apply_merge_patch({"a": 1}, patch)
    assert caught.value.code == 400


# --------------------------------------------------------------------------------------
# Strategic merge patch

# (case name, group, kind, live object, patch, expected object)
SmpCase = tuple[str, str, str, dict[str, Any], dict[str, Any], dict[str, Any]]


def deployment(
    containers: list[dict[str, Any]],
    *,
    finalizers: list[str] | None = None,
    strategy: dict[str, Any] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    replicas: int = 2,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "web",
        "namespace": "default",
        "labels": labels or {"app": "web"},
    }
    if finalizers is not None:
        meta["finalizers"] = finalizers
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}},
    }
    if strategy is not None:
        spec["strategy"] = strategy
    if volumes is not None:
        spec["template"]["spec"]["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def pod_spec(patch: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": patch}}}


APP_V1 = {
    "name": "app",
    "image": "nginx:1.25",
    "ports": [{"containerPort": 80}],
    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
}
SIDECAR = {"name": "sidecar", "image": "busybox", "args": ["sleep", "3600"]}
APP_V2 = {
    "name": "app",
    "image": "nginx:1.26",
    "ports": [{"containerPort": 8080}],
    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
}
LOGGER = {"name": "logger", "image": "fluentbit"}

KUBECTL_CASES: list[SmpCase] = [
    (
        "kubectl apply replaces, reorders and deletes containers with $setElementOrder",
        "apps",
        "Deployment",
        deployment(
            [APP_V1, SIDECAR],
            finalizers=["example.com/a", "example.com/b"],
            strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            volumes=[{"name": "data", "emptyDir": {}}],
        ),
        {
            "metadata": {
                "$deleteFromPrimitiveList/finalizers": ["example.com/a"],
                "$setElementOrder/finalizers": ["example.com/b", "example.com/c"],
                "annotations": {LAST_APPLIED: "{...}\n"},
                "finalizers": ["example.com/c"],
                "labels": {"tier": "front"},
            },
            "spec": {
                "replicas": 3,
                "strategy": {"$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"},
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "logger"}, {"name": "app"}],
                        "$setElementOrder/volumes": [{"name": "data"}],
                        "containers": [
                            {"image": "fluentbit", "name": "logger"},
                            {
                                "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
                                "$setElementOrder/ports": [{"containerPort": 8080}],
                                "env": [
                                    {"name": "B", "value": "3"},
                                    {"name": "C", "value": "4"},
                                    {"$patch": "delete", "name": "A"},
                                ],
                                "image": "nginx:1.26",
                                "name": "app",
                                "ports": [
                                    {"containerPort": 8080},
                                    {"$patch": "delete", "containerPort": 80},
                                ],
                            },
                            {"$patch": "delete", "name": "sidecar"},
                        ],
                        "volumes": [
                            {
                                "$retainKeys": ["configMap", "name"],
                                "configMap": {"name": "cfg"},
                                "emptyDir": None,
                                "name": "data",
                            }
                        ],
                    }
                },
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web", "tier": "front"},
                "finalizers": ["example.com/b", "example.com/c"],
                "annotations": {LAST_APPLIED: "{...}\n"},
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "Recreate"},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [LOGGER, APP_V2],
                        "volumes": [{"name": "data", "configMap": {"name": "cfg"}}],
                    },
                },
            },
        },
    ),
    (
        "kubectl apply keeps a container the server injected where it was",
        "apps",
        "Deployment",
        deployment([LOGGER, {"name": "injected", "image": "envoy"}, APP_V2]),
        pod_spec(
            {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                        "$setElementOrder/ports": [{"containerPort": 80}],
                        "env": [
                            {"name": "A", "value": "1"},
                            {"name": "B", "value": "2"},
                            {"$patch": "delete", "name": "C"},
                        ],
                        "image": "nginx:1.25",
                        "name": "app",
                        "ports": [
                            {"containerPort": 80},
                            {"$patch": "delete", "containerPort": 8080},
                        ],
                    },
                    {"args": ["sleep", "3600"], "image": "busybox", "name": "sidecar"},
                    {"$patch": "delete", "name": "logger"},
                ],
            }
        ),
        deployment([{"name": "injected", "image": "envoy"}, APP_V1, SIDECAR]),
    ),
    (
        "kubectl apply switches a volume source with $retainKeys",
        "apps",
        "Deployment",
        deployment([APP_V1], volumes=[{"name": "data", "configMap": {"name": "cfg"}}]),
        pod_spec(
            {
                "$setElementOrder/volumes": [{"name": "data"}],
                "volumes": [
                    {
                        "$retainKeys": ["emptyDir", "name"],
                        "configMap": None,
                        "emptyDir": {},
                        "name": "data",
                    }
                ],
            }
        ),
        deployment([APP_V1], volumes=[{"name": "data", "emptyDir": {}}]),
    ),
    (
        "kubectl set image patches one container by name",
        "apps",
        "Deployment",
        deployment([{"name": "injected", "image": "envoy"}, APP_V1, SIDECAR]),
        pod_spec(
            {
                "$setElementOrder/containers": [
                    {"name": "injected"},
                    {"name": "app"},
                    {"name": "sidecar"},
                ],
                "containers": [{"image": "nginx:1.27", "name": "app"}],
            }
        ),
        deployment(
            [{"name": "injected", "image": "envoy"}, {**APP_V1, "image": "nginx:1.27"}, SIDECAR]
        ),
    ),
    (
        "kubectl set env appends a variable in the order it names",
        "apps",
        "Deployment",
        deployment([APP_V1]),
        pod_spec(
            {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "D"}],
                        "env": [{"name": "D", "value": "5"}],
                        "name": "app",
                    }
                ],
            }
        ),
        deployment(
            [{**APP_V1, "env": [*APP_V1["env"], {"name": "D", "value": "5"}]}],
        ),
    ),
    (
        "kubectl edit adds a finalizer, reorders env and deletes a container",
        "apps",
        "Deployment",
        deployment(
            [{"name": "extra", "image": "redis"}, APP_V1, SIDECAR],
            finalizers=["example.com/a", "example.com/b"],
        ),
        {
            "metadata": {
                "$setElementOrder/finalizers": ["example.com/z", "example.com/a", "example.com/b"],
                "finalizers": ["example.com/z"],
            },
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                        "containers": [
                            {
                                "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
                                "image": "nginx:1.28",
                                "name": "app",
                            },
                            {"$patch": "delete", "name": "extra"},
                        ],
                    }
                }
            },
        },
        deployment(
            [
                {
                    **APP_V1,
                    "image": "nginx:1.28",
                    "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                },
                SIDECAR,
            ],
            finalizers=["example.com/z", "example.com/a", "example.com/b"],
        ),
    ),
    (
        "kubectl rollout restart sets a template annotation",
        "apps",
        "Deployment",
        deployment([APP_V1]),
        {
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
                    }
                }
            }
        },
        {
            **deployment([APP_V1]),
            "spec": {
                **deployment([APP_V1])["spec"],
                "template": {
                    "metadata": {
                        "labels": {"app": "web"},
                        "annotations": {
                            "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"
                        },
                    },
                    "spec": {"containers": [APP_V1]},
                },
            },
        },
    ),
    (
        "kubectl rollout resume deletes paused with null",
        "apps",
        "Deployment",
        {"spec": {"paused": True, "replicas": 1}},
        {"spec": {"paused": None}},
        {"spec": {"replicas": 1}},
    ),
    (
        "kubectl rollout undo of a daemon set replaces the template",
        "apps",
        "DaemonSet",
        {
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "d"}, "annotations": {"x": "1"}},
                    "spec": {"containers": [{"name": "d", "image": "v2", "env": [{"name": "N"}]}]},
                }
            }
        },
        {
            "spec": {
                "template": {
                    "$patch": "replace",
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "d", "image": "v1"}]},
                }
            }
        },
        {
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "d", "image": "v1"}]},
                }
            }
        },
    ),
    (
        "kubectl cordon sets a field of a node",
        "",
        "Node",
        {"metadata": {"name": "n1"}, "spec": {}},
        {"spec": {"unschedulable": True}},
        {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}},
    ),
    (
        "kubectl taint replaces the atomic taints list",
        "",
        "Node",
        {"spec": {"taints": [{"key": "a", "effect": "NoExecute"}]}},
        {"spec": {"taints": [{"effect": "NoSchedule", "key": "k", "value": "v"}]}},
        {"spec": {"taints": [{"effect": "NoSchedule", "key": "k", "value": "v"}]}},
    ),
    (
        "kubectl taint removes the last taint with null",
        "",
        "Node",
        {"spec": {"unschedulable": True, "taints": [{"key": "k", "effect": "NoSchedule"}]}},
        {"spec": {"taints": None}},
        {"spec": {"unschedulable": True}},
    ),
    (
        "kubectl apply merges service ports by port",
        "",
        "Service",
        {
            "spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "https", "port": 443},
                ],
            }
        },
        {
            "metadata": {"annotations": {LAST_APPLIED: "{}"}},
            "spec": {
                "$setElementOrder/ports": [{"port": 443}, {"port": 9090}],
                "ports": [
                    {"port": 443, "targetPort": 8443},
                    {"name": "metrics", "port": 9090},
                    {"$patch": "delete", "port": 80},
                ],
            },
        },
        {
            "metadata": {"annotations": {LAST_APPLIED: "{}"}},
            "spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "https", "port": 443, "targetPort": 8443},
                    {"name": "metrics", "port": 9090},
                ],
            },
        },
    ),
    (
        "kubectl patch adds a container in front, as the API server does",
        "apps",
        "Deployment",
        deployment([APP_V1, SIDECAR]),
        pod_spec({"containers": [{"name": "extra", "image": "redis"}]}),
        deployment([{"name": "extra", "image": "redis"}, APP_V1, SIDECAR]),
    ),
]


SMP_CASES: list[SmpCase] = [
    (
        "a strategic patch merges containers by name",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}},
        {"spec": {"containers": [{"name": "b", "image": "z"}]}},
        {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "z"}]}},
    ),
    (
        "a strategic patch merges container ports by containerPort",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "h"}]}]}},
        {
            "spec": {
                "containers": [{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]
            }
        },
        {
            "spec": {
                "containers": [
                    {"name": "a", "ports": [{"containerPort": 80, "name": "h", "protocol": "TCP"}]}
                ]
            }
        },
    ),
    (
        "a strategic patch merges pod conditions by type",
        "",
        "Pod",
        {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "PodScheduled", "status": "True"},
                ]
            }
        },
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"},
                ]
            }
        },
    ),
    (
        "a strategic patch merges owner references by uid",
        "",
        "ConfigMap",
        {"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}},
        {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}},
        {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}]}},
    ),
    (
        "a strategic patch merges finalizers as a set",
        "",
        "ConfigMap",
        {"metadata": {"finalizers": ["a", "b"]}},
        {"metadata": {"finalizers": ["b", "c"]}},
        {"metadata": {"finalizers": ["a", "b", "c"]}},
    ),
    (
        "a strategic patch puts a new finalizer first, as the API server does",
        "",
        "ConfigMap",
        {"metadata": {"finalizers": ["a", "b"]}},
        {"metadata": {"finalizers": ["c"]}},
        {"metadata": {"finalizers": ["c", "a", "b"]}},
    ),
    (
        "a strategic patch deletes from a primitive list",
        "",
        "ConfigMap",
        {"metadata": {"finalizers": ["a", "b", "c"]}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "x"]}},
        {"metadata": {"finalizers": ["a", "c"]}},
    ),
    (
        "a strategic patch deletion list for a missing field changes nothing",
        "",
        "ConfigMap",
        {"metadata": {"name": "x"}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}},
        {"metadata": {"name": "x"}},
    ),
    (
        "a strategic patch reorders a list with only $setElementOrder",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}},
        {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}},
        {"spec": {"containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}},
    ),
    (
        "a strategic patch $setElementOrder may name elements that do not exist",
        "",
        "ConfigMap",
        {"metadata": {"finalizers": ["a", "c"]}},
        {"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"]}},
        {"metadata": {"finalizers": ["c", "a"]}},
    ),
    (
        "a strategic patch $setElementOrder creates a missing list",
        "",
        "Pod",
        {"spec": {}},
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "b"}, {"name": "a", "image": "x"}],
            }
        },
        {"spec": {"containers": [{"name": "b"}, {"name": "a", "image": "x"}]}},
    ),
    (
        "a strategic patch deletes a list element with $patch delete",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "a", "x": 1}]}},
        {"spec": {"containers": [{"$patch": "delete", "name": "a"}]}},
        {"spec": {"containers": [{"name": "b"}]}},
    ),
    (
        "a strategic patch replaces a keyed list with a $patch replace element",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}},
        {"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}},
        {"spec": {"containers": [{"name": "c"}]}},
    ),
    (
        "a strategic patch empties a keyed list with only a $patch replace element",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"containers": [{"$patch": "replace"}]}},
        {"spec": {"containers": []}},
    ),
    (
        "a strategic patch replaces a map with $patch replace",
        "",
        "Pod",
        {"spec": {"nodeSelector": {"a": "1", "b": "2"}}},
        {"spec": {"nodeSelector": {"$patch": "replace", "c": "3"}}},
        {"spec": {"nodeSelector": {"c": "3"}}},
    ),
    (
        "a strategic patch empties a map with $patch delete",
        "",
        "Pod",
        {"spec": {"nodeSelector": {"a": "1"}}},
        {"spec": {"nodeSelector": {"$patch": "delete"}}},
        {"spec": {"nodeSelector": {}}},
    ),
    (
        "a strategic patch $patch delete of a missing map creates nothing",
        "",
        "Pod",
        {"spec": {}},
        {"spec": {"nodeSelector": {"$patch": "delete"}}},
        {"spec": {}},
    ),
    (
        "a strategic patch accepts $patch merge as the default",
        "",
        "Pod",
        {"spec": {"nodeSelector": {"a": "1"}}},
        {"spec": {"nodeSelector": {"$patch": "merge", "b": "2"}}},
        {"spec": {"nodeSelector": {"a": "1", "b": "2"}}},
    ),
    (
        "a strategic patch null deletes a map key",
        "",
        "Pod",
        {"metadata": {"labels": {"a": "1", "b": "2"}}},
        {"metadata": {"labels": {"a": None}}},
        {"metadata": {"labels": {"b": "2"}}},
    ),
    (
        "a strategic patch drops nulls in a new value",
        "",
        "Pod",
        {"spec": {}},
        {"spec": {"securityContext": {"runAsUser": 1, "runAsGroup": None}}},
        {"spec": {"securityContext": {"runAsUser": 1}}},
    ),
    (
        "a strategic patch null inside a keyed list element deletes that field",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a", "image": "x", "command": ["sh"]}]}},
        {"spec": {"containers": [{"name": "a", "command": None}]}},
        {"spec": {"containers": [{"name": "a", "image": "x"}]}},
    ),
    (
        "a strategic patch replaces atomic lists whole",
        "",
        "Pod",
        {"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}},
        {"spec": {"tolerations": [{"key": "c"}]}},
        {"spec": {"tolerations": [{"key": "c"}]}},
    ),
    (
        "a strategic patch replaces container args whole",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}},
        {"spec": {"containers": [{"name": "a", "args": ["z"]}]}},
        {"spec": {"containers": [{"name": "a", "args": ["z"]}]}},
    ),
    (
        "a strategic patch keeps no directives in an atomic list",
        "",
        "Pod",
        {"spec": {"tolerations": [{"key": "a"}]}},
        {"spec": {"tolerations": [{"key": "c", "value": None}, {"$patch": "replace"}]}},
        {"spec": {"tolerations": [{"key": "c"}]}},
    ),
    (
        "an empty strategic patch list changes a merging list not at all",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"containers": []}},
        {"spec": {"containers": [{"name": "a"}]}},
    ),
    (
        "a strategic patch merges a new keyed element into an empty list",
        "",
        "Pod",
        {"spec": {"containers": []}},
        {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": None}]}]}},
        {"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}},
    ),
    (
        "a strategic patch new element keeps no directives",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {
            "spec": {
                "containers": [
                    {
                        "name": "b",
                        "$setElementOrder/env": [{"name": "X"}],
                        "env": [{"name": "X"}, {"$patch": "delete", "name": "Y"}],
                    }
                ]
            }
        },
        {"spec": {"containers": [{"name": "b", "env": [{"name": "X"}]}, {"name": "a"}]}},
    ),
    (
        "a strategic patch type change replaces the value",
        "",
        "Pod",
        {"spec": {"containers": "oops"}},
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"containers": [{"name": "a"}]}},
    ),
    (
        "a strategic patch $retainKeys drops the keys it does not name",
        "apps",
        "Deployment",
        {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        {"spec": {"strategy": {"type": "Recreate"}}},
    ),
    (
        "a strategic patch to a custom resource replaces lists whole",
        "example.com",
        "Widget",
        {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}},
        {"spec": {"containers": [{"name": "b", "image": "x"}]}},
        {"spec": {"containers": [{"name": "b", "image": "x"}]}},
    ),
    (
        "a strategic patch merges the pod template of a job",
        "batch",
        "Job",
        {"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "x"}]}}}},
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "x"}]}}
            }
        },
    ),
    (
        "a strategic patch merges node addresses by type",
        "",
        "Node",
        {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}},
        {"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}},
        {
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "InternalIP", "address": "10.0.0.1"},
                ]
            }
        },
    ),
    (
        "a strategic patch may replace the whole object",
        "",
        "ConfigMap",
        {"metadata": {"name": "x"}, "data": {"a": "1"}},
        {"$patch": "replace", "metadata": {"name": "x"}},
        {"metadata": {"name": "x"}},
    ),
]


@pytest.mark.parametrize(
    ("group", "kind", "doc", "patch", "expected"),
    [c[1:] for c in KUBECTL_CASES + SMP_CASES],
    ids=ids(KUBECTL_CASES + SMP_CASES),
)
def test_strategic_merge_patch(
    group: str, kind: str, doc: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = copy.deepcopy(doc)
    patch_before = copy.deepcopy(patch)
    result = apply_strategic_merge_patch(doc, patch, group, kind)
    # Order matters in lists, so compare the serialised form too.
    assert json.dumps(result, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert doc == before
    assert patch == patch_before


SMP_ERRORS: list[tuple[str, str, str, dict[str, Any], Any, int]] = [
    ("a strategic patch must be an object", "", "Pod", {}, [1], 400),
    (
        "a strategic patch rejects an unknown $patch directive",
        "",
        "Pod",
        {"spec": {}},
        {"spec": {"$patch": "frob"}},
        400,
    ),
    (
        "a strategic patch rejects an unknown $patch directive in a list",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"containers": [{"name": "a", "$patch": "frob"}]}},
        400,
    ),
    (
        "a strategic patch list element needs its merge key",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"containers": [{"image": "x"}]}},
        400,
    ),
    (
        "a strategic patch delete element needs its merge key",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"containers": [{"$patch": "delete", "image": "x"}]}},
        400,
    ),
    (
        "a strategic patch rejects a key that $retainKeys does not name",
        "apps",
        "Deployment",
        {"spec": {"strategy": {"type": "RollingUpdate"}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}},
        400,
    ),
    (
        "a strategic patch $retainKeys must be a list",
        "apps",
        "Deployment",
        {"spec": {"strategy": {}}},
        {"spec": {"strategy": {"$retainKeys": "type"}}},
        400,
    ),
    (
        "a strategic patch list must follow its $setElementOrder",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}},
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b"}, {"name": "a"}],
            }
        },
        400,
    ),
    (
        "a strategic patch $setElementOrder must be a list",
        "",
        "Pod",
        {"spec": {}},
        {"spec": {"$setElementOrder/containers": {"name": "a"}}},
        400,
    ),
    (
        "a strategic patch $setElementOrder entries need the merge key",
        "",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"$setElementOrder/containers": [{"image": "a"}]}},
        400,
    ),
    (
        "a strategic patch deletion list must be a list",
        "",
        "ConfigMap",
        {"metadata": {"finalizers": ["a"]}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
        400,
    ),
    (
        "a strategic patch cannot mix maps and values in a merging list",
        "",
        "ConfigMap",
        {"metadata": {"finalizers": ["a"]}},
        {"metadata": {"finalizers": [{"name": "b"}]}},
        422,
    ),
    (
        "a strategic patch cannot merge lists of lists",
        "",
        "ConfigMap",
        {"metadata": {"finalizers": [["a"]]}},
        {"metadata": {"finalizers": [["b"]]}},
        422,
    ),
]


@pytest.mark.parametrize(
    ("group", "kind", "doc", "patch", "code"), [c[1:] for c in SMP_ERRORS], ids=ids(SMP_ERRORS)
)
def test_strategic_merge_patch_errors(
    group: str, kind: str, doc: dict[str, Any], patch: Any, code: int
) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(PatchError) as caught:
        apply_strategic_merge_patch(doc, patch, group, kind)
    assert caught.value.code == code
    assert doc == before


def test_a_strategic_patch_result_shares_nothing_with_its_inputs() -> None:
    doc = {"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}}
    patch = {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}
    result = apply_strategic_merge_patch(doc, patch, "", "Pod")
    result["spec"]["containers"][0]["env"].append({"name": "Y"})
    result["spec"]["volumes"][0]["emptyDir"]["medium"] = "Memory"
    assert doc == {"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}}
    assert patch == {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}


# --------------------------------------------------------------------------------------
# Properties

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab", max_size=2)
keys = st.text("abc", min_size=1, max_size=2)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)
# Objects without null members: a null in a patch means "delete".
no_null_values = st.recursive(
    st.booleans() | st.integers(-5, 5) | st.text("ab", max_size=2),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)
objects = st.dictionaries(keys, json_values, max_size=4)
objects_without_nulls = st.dictionaries(keys, no_null_values, max_size=4)


@given(objects_without_nulls)
def test_a_merge_patch_with_the_documents_own_content_is_identity(doc: dict[str, Any]) -> None:
    assert apply_merge_patch(doc, doc) == doc


@given(objects, objects)
def test_a_merge_patch_applied_twice_is_applied_once(
    doc: dict[str, Any], patch: dict[str, Any]
) -> None:
    once = apply_merge_patch(doc, patch)
    assert apply_merge_patch(once, patch) == once


@given(objects, objects)
def test_a_merge_patch_never_mutates_its_inputs(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    doc_before, patch_before = copy.deepcopy(doc), copy.deepcopy(patch)
    apply_merge_patch(doc, patch)
    assert (doc, patch) == (doc_before, patch_before)


@given(objects, st.lists(keys, max_size=3), json_values)
def test_a_failed_json_patch_test_leaves_the_input_untouched(
    doc: dict[str, Any], path: list[str], value: Any
) -> None:
    doc_before = copy.deepcopy(doc)
    pointer = "".join("/" + k for k in path)
    # An add that succeeds, then a test that cannot pass: the add must not show.
    patch = [
        {"op": "add", "path": "/zz", "value": 1},
        {"op": "test", "path": "/zz", "value": "never"},
        {"op": "test", "path": pointer, "value": value},
    ]
    with pytest.raises(PatchError) as caught:
        apply_json_patch(doc, patch)
    assert caught.value.code == 422
    assert doc == doc_before


@given(objects, keys, json_values)
def test_a_json_patch_add_then_remove_restores_the_document(
    doc: dict[str, Any], key: str, value: Any
) -> None:
    doc = {k: v for k, v in doc.items() if k != key}
    patch = [{"op": "add", "path": "/" + key, "value": value}, {"op": "remove", "path": "/" + key}]
    assert apply_json_patch(doc, patch) == doc


@given(objects, keys, json_values)
def test_a_json_patch_test_of_a_just_added_value_passes(
    doc: dict[str, Any], key: str, value: Any
) -> None:
    patch = [
        {"op": "add", "path": "/" + key, "value": value},
        {"op": "test", "path": "/" + key, "value": value},
    ]
    assert apply_json_patch(doc, patch)[key] == value


names = st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    """Pods with unique merge keys in every keyed list, as the API server keeps them."""
    containers = [
        {
            "name": name,
            "image": draw(st.sampled_from(["x", "y"])),
            "env": [{"name": e, "value": draw(st.sampled_from(["1", "2"]))} for e in draw(names)],
            "args": draw(st.lists(st.sampled_from(["p", "q"]), max_size=2)),
        }
        for name in draw(names)
    ]
    return {
        "metadata": {
            "name": "p",
            "labels": draw(st.dictionaries(keys, st.sampled_from(["1", "2"]), max_size=2)),
            "finalizers": draw(names),
        },
        "spec": {
            "containers": containers,
            "tolerations": [{"key": k} for k in draw(names)],
        },
    }


@settings(max_examples=200)
@given(pods())
def test_a_strategic_patch_with_the_documents_own_content_is_identity(pod: dict[str, Any]) -> None:
    assert apply_strategic_merge_patch(pod, pod, "", "Pod") == pod


@settings(max_examples=200)
@given(pods(), pods())
def test_a_strategic_patch_applied_twice_is_applied_once(
    pod: dict[str, Any], patch: dict[str, Any]
) -> None:
    once = apply_strategic_merge_patch(pod, patch, "", "Pod")
    assert apply_strategic_merge_patch(once, patch, "", "Pod") == once


@settings(max_examples=200)
@given(pods(), pods())
def test_a_strategic_patch_keeps_every_patched_container(
    pod: dict[str, Any], patch: dict[str, Any]
) -> None:
    result = apply_strategic_merge_patch(pod, patch, "", "Pod")
    got = [c["name"] for c in result["spec"]["containers"]]
    want = {c["name"] for c in pod["spec"]["containers"]} | {
        c["name"] for c in patch["spec"]["containers"]
    }
    assert sorted(got) == sorted(want)
    assert result["spec"]["tolerations"] == patch["spec"]["tolerations"]
    finalizers = result["metadata"]["finalizers"]
    assert sorted(finalizers) == sorted(
        set(pod["metadata"]["finalizers"]) | set(patch["metadata"]["finalizers"])
    )


@given(objects_without_nulls, objects_without_nulls)
def test_a_strategic_patch_to_a_custom_resource_without_lists_is_a_merge_patch(
    doc: dict[str, Any], patch: dict[str, Any]
) -> None:
    def no_lists(value: Any) -> bool:
        if isinstance(value, dict):
            return all(no_lists(v) and not k.startswith("$") for k, v in value.items())
        return not isinstance(value, list)

    if not no_lists(patch):
        return
    assert apply_strategic_merge_patch(doc, patch, "example.com", "Widget") == apply_merge_patch(
        doc, patch
    )


@given(pods(), pods())
def test_a_strategic_patch_never_mutates_its_inputs(
    pod: dict[str, Any], patch: dict[str, Any]
) -> None:
    pod_before, patch_before = copy.deepcopy(pod), copy.deepcopy(patch)
    apply_strategic_merge_patch(pod, patch, "", "Pod")
    assert (pod, patch) == (pod_before, patch_before)
