"""A pod's lists are bounded: thousands of containers, init containers, env entries or
volumes get a 422 naming the list, and the largest real pods still pass."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.model.kinds import KindRegistry
from shoal.model.validation import validate
from shoal.model.validation.pod_spec import (
    MAX_CONTAINERS,
    MAX_ENV,
    MAX_VOLUME_MOUNTS,
    MAX_VOLUMES,
)

REG = KindRegistry()
POD = REG.by_kind("v1", "Pod")
DEPLOYMENT = REG.by_kind("apps/v1", "Deployment")


def containers(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"c{i}", "image": "busybox", **extra} for i in range(n)]


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": containers(1), **spec}}


def messages(kind: Any, obj: dict[str, Any]) -> list[str]:
    return [str(c) for c in validate(kind, obj)]


def test_a_large_real_pod_passes() -> None:
    """Well past the largest pods seen in practice (a few dozen containers, hundreds of
    env entries, a hundred volumes)."""
    volumes = [{"name": f"v{i}", "emptyDir": {}} for i in range(200)]
    mounts = [{"name": f"v{i}", "mountPath": f"/v{i}"} for i in range(200)]
    env = [{"name": f"E{i}", "value": "x"} for i in range(1000)]
    big = pod(containers=containers(100, env=env, volumeMounts=mounts),
              initContainers=[{"name": f"i{i}", "image": "busybox"} for i in range(50)],
              volumes=volumes)
    assert messages(POD, big) == []


@pytest.mark.parametrize(("spec", "field", "count", "limit"), [
    ({"containers": containers(MAX_CONTAINERS + 1)}, "spec.containers",
     MAX_CONTAINERS + 1, MAX_CONTAINERS),
    ({"initContainers": [{"name": f"i{i}", "image": "b"} for i in range(5000)]},
     "spec.initContainers", 5000, MAX_CONTAINERS),
    ({"ephemeralContainers": [{"name": f"e{i}", "image": "b"} for i in range(5000)]},
     "spec.ephemeralContainers", 5000, MAX_CONTAINERS),
    ({"volumes": [{"name": f"v{i}", "emptyDir": {}} for i in range(MAX_VOLUMES + 1)]},
     "spec.volumes", MAX_VOLUMES + 1, MAX_VOLUMES),
    ({"containers": containers(1, env=[{"name": "E", "value": "x"}] * (MAX_ENV + 1))},
     "spec.containers[0].env", MAX_ENV + 1, MAX_ENV),
    ({"containers": containers(1, envFrom=[{"configMapRef": {"name": "c"}}] * (MAX_ENV + 1))},
     "spec.containers[0].envFrom", MAX_ENV + 1, MAX_ENV),
    ({"containers": containers(1, volumeMounts=[{"name": "v", "mountPath": "/v"}]
                               * (MAX_VOLUME_MOUNTS + 1))},
     "spec.containers[0].volumeMounts", MAX_VOLUME_MOUNTS + 1, MAX_VOLUME_MOUNTS),
])
def test_a_list_past_its_bound_is_too_many(spec: dict[str, Any], field: str, count: int,
                                           limit: int) -> None:
    got = messages(POD, pod(**spec))
    # One cause for the list, none for its items (they are not checked one by one).
    assert got == [f"{field}: Too many: {count}: must have at most {limit} items"], got[:3]


def test_a_pod_template_is_bounded_too() -> None:
    d = {"metadata": {"name": "d", "namespace": "default"},
         "spec": {"selector": {"matchLabels": {"a": "b"}},
                  "template": {"metadata": {"labels": {"a": "b"}},
                               "spec": {"containers": containers(3000),
                                        "restartPolicy": "Always"}}}}
    got = messages(DEPLOYMENT, d)
    assert got == [f"spec.template.spec.containers: Too many: 3000: must have at most "
                   f"{MAX_CONTAINERS} items"], got[:3]
