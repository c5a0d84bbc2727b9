"""LimitRange: defaults and bounds on the pods a peer admits, and the object's own checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.api.limit_ranger import LimitRanger
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import Forbidden, Invalid, ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
POD, LIMITS = REG.by_kind("v1", "Pod"), REG.by_kind("v1", "LimitRange")
assert POD is not None and LIMITS is not None


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1"), REG)
    s.admission.append(LimitRanger(s.replica))
    ns = REG.by_kind("v1", "Namespace")
    assert ns is not None
    await s.create(ns, {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


def limits(*items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "limits"}, "spec": {"limits": list(items)}}


def pod(resources: dict[str, Any] | None = None, name: str = "p") -> dict[str, Any]:
    c: dict[str, Any] = {"name": "app", "image": "x"}
    if resources is not None:
        c["resources"] = resources
    return {"metadata": {"name": name}, "spec": {"containers": [c, {"name": "side", "image": "x"}]}}


async def create(store: ObjectStore, kind: Kind | None, obj: dict[str, Any]) -> dict[str, Any]:
    assert kind is not None
    return await store.create(kind, obj, "default")


async def test_containers_get_the_default_limit_and_request(store: ObjectStore) -> None:
    await create(store, LIMITS, limits({"type": "Container", "default": {"cpu": "500m",
               "memory": "256Mi"}, "defaultRequest": {"cpu": "100m", "memory": "64Mi"}}))
    made = await create(store, POD, pod({"limits": {"memory": "128Mi"}}))
    app, side = made["spec"]["containers"]
    assert app["resources"] == {"limits": {"memory": "128Mi", "cpu": "500m"},
                                "requests": {"cpu": "100m", "memory": "64Mi"}}
    assert side["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}


async def test_the_default_request_follows_the_default_limit_when_unset(store: ObjectStore) -> None:
    made = await create(store, LIMITS, limits({"type": "Container", "max": {"cpu": "1"}}))
    assert made["spec"]["limits"][0]["default"] == {"cpu": "1"}
    assert made["spec"]["limits"][0]["defaultRequest"] == {"cpu": "1"}


@pytest.mark.parametrize(("item", "resources", "message"), [
    ({"type": "Container", "max": {"cpu": "1"}, "default": {"cpu": "1"}},
     {"limits": {"cpu": "2"}}, "maximum cpu usage per Container is 1, but limit is 2"),
    ({"type": "Container", "min": {"memory": "64Mi"}, "defaultRequest": {"memory": "64Mi"}},
     {"requests": {"memory": "32Mi"}},
     "minimum memory usage per Container is 64Mi, but request is 32Mi"),
    ({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}, "default": {"cpu": "1"},
      "defaultRequest": {"cpu": "500m"}},
     {"requests": {"cpu": "100m"}, "limits": {"cpu": "400m"}},
     "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"),
    ({"type": "Pod", "max": {"cpu": "1"}},
     {"limits": {"cpu": "1500m"}}, "maximum cpu usage per Pod is 1, but limit is 1500m"),
])
async def test_a_pod_outside_the_bounds_is_forbidden(store: ObjectStore, item: dict[str, Any],
                                                     resources: dict[str, Any],
                                                     message: str) -> None:
    await create(store, LIMITS, limits(item))
    with pytest.raises(Forbidden) as e:
        await create(store, POD, pod(resources))
    assert e.value.code == 403
    assert e.value.message == f'pods "p" is forbidden: {message}'


async def test_a_pod_within_the_bounds_is_admitted(store: ObjectStore) -> None:
    await create(store, LIMITS, limits({"type": "Container", "min": {"cpu": "50m"},
                                        "max": {"cpu": "1"}}))
    await create(store, POD, pod({"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}))


@pytest.mark.parametrize(("item", "field"), [
    ({"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}, "min[cpu]"),
    ({"type": "Pod", "default": {"cpu": "1"}}, "default"),
    ({"type": "Node"}, "type"),
    ({"type": "Container", "maxLimitRequestRatio": {"cpu": "500m"}}, "maxLimitRequestRatio[cpu]"),
])
async def test_a_bad_limit_range_is_a_422(store: ObjectStore, item: dict[str, Any],
                                          field: str) -> None:
    with pytest.raises(Invalid) as e:
        await create(store, LIMITS, limits(item))
    assert f"spec.limits[0].{field}" in [c.field for c in e.value.causes]


async def test_a_claim_outside_the_storage_bounds_is_forbidden(store: ObjectStore) -> None:
    await create(store, LIMITS, limits({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"},
                                        "max": {"storage": "2Gi"}}))
    claim = REG.by_kind("v1", "PersistentVolumeClaim")

    def pvc(name: str, size: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": size}}}}

    await create(store, claim, pvc("fits", "1Gi"))
    with pytest.raises(Forbidden) as e:
        await create(store, claim, pvc("big", "5Gi"))
    assert e.value.message == ('persistentvolumeclaims "big" is forbidden: maximum storage usage '
                               "per PersistentVolumeClaim is 2Gi, but request is 5Gi")
