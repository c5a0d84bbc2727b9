"""A CustomResourceDefinition written on one peer is served by every peer that merges it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from shoal.control.crd_establishing import serve_crds
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.test_multinode_user import copy_resource

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object",
                                                     "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


def peer(name: str, data_dir: Path | None = None) -> ObjectStore:
    store = ObjectStore(Replica(data_dir, name), KindRegistry())
    serve_crds(store)
    return store


async def copy_crds(src: ObjectStore, dst: ObjectStore) -> None:
    await copy_resource(src, dst, "customresourcedefinitions.apiextensions.k8s.io")


async def test_a_crd_merged_from_a_peer_is_served_and_its_deletion_unserves_it() -> None:
    a, b = peer("a"), peer("b")
    crd_kind = a.registry.by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd_kind is not None
    await a.create(crd_kind, copy.deepcopy(CRD))
    assert a.registry.by_kind("example.com/v1", "Widget") is not None
    assert b.registry.by_kind("example.com/v1", "Widget") is None
    await copy_crds(a, b)
    assert b.registry.by_kind("example.com/v1", "Widget") is not None
    await a.delete(crd_kind, None, "widgets.example.com")
    await copy_crds(a, b)
    assert b.registry.by_kind("example.com/v1", "Widget") is None


async def test_a_restarted_peer_serves_the_crds_its_replica_holds(tmp_path: Path) -> None:
    first = peer("a", tmp_path)
    crd_kind = first.registry.by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd_kind is not None
    await first.create(crd_kind, copy.deepcopy(CRD))
    first.replica.close()
    again = peer("a", tmp_path)
    assert again.registry.by_kind("example.com/v1", "Widget") is not None
