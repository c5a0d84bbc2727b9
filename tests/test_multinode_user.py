"""What a new user trying a cluster of peers found to differ between the peer a write
went through and the others, or before and after a restart (part U)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from shoal.bus import stream_objects
from shoal.cli.main import _parser
from shoal.cli.node import ShoalNode
from shoal.cli.server_command import settings_from_args
from shoal.control import crd_establishing
from shoal.control.crd_establishing import CRD_RESOURCE, CRDEstablishing, serve_crds
from shoal.control.namespace_lifecycle import NamespaceLifecycle
from shoal.model.kinds import Kind, KindRegistry
from shoal.node import volumes
from shoal.node.volume_updates import update_volumes
from shoal.store.objects import Invalid, ObjectStore
from shoal.store.replica import Replica

GADGETS: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
            }}},
        }],
    },
}


def crd_kind(registry: KindRegistry) -> Kind:
    kind = registry.by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert kind is not None
    return kind


async def make_default_namespace(store: ObjectStore) -> None:
    kind = store.registry.by_kind("v1", "Namespace")
    assert kind is not None
    await store.create(kind, {"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "default"}})


async def test_a_status_write_keeps_only_the_fields_the_schema_knows() -> None:
    # kopf, through one peer, wrote status.created to a CR whose schema has no such field:
    # the status write kept it (the main resource's writes prune), and a later
    # server-side apply through another peer failed on "unknown field status.created".
    store = ObjectStore(Replica(None, "a"), KindRegistry())
    serve_crds(store)
    await store.create(crd_kind(store.registry), copy.deepcopy(GADGETS))
    await make_default_namespace(store)
    gadget = store.registry.by_kind("example.com/v1", "Gadget")
    assert gadget is not None
    created = await store.create(gadget, {"apiVersion": "example.com/v1", "kind": "Gadget",
                                          "metadata": {"name": "g", "namespace": "default"},
                                          "spec": {"size": 1}})
    body = copy.deepcopy(created)
    body["status"] = {"phase": "Ready", "created": {"by": "kopf"}}
    stored = await store.update(gadget, body, "default", "g", subresource="status")
    assert stored["status"] == {"phase": "Ready"}


def no_bus_node(tmp_path: Path) -> ShoalNode:
    argv = ["server", "--name", "quiet", "--data-dir", str(tmp_path / "data"), "--no-bus",
            "--runtime", "process", "--pods-dir", str(tmp_path / "pods"), "--dns-port", "0",
            "--proxy-mode", "none", "--ingress-http-port", "0", "--ingress-https-port", "0"]
    return ShoalNode(settings_from_args(_parser().parse_args(argv), argv))


async def test_a_peer_without_the_bus_refuses_the_stream_a_bus_peer_refuses(
        tmp_path: Path) -> None:
    # A Stream whose limits contradict each other got a 422 through a peer running the bus
    # and was stored through a peer started with --no-bus (or without nats-server), from
    # where it replicated to the bus peers anyway.
    node = no_bus_node(tmp_path)
    try:
        assert node.bus is None
        await node.store.create(crd_kind(node.registry), stream_objects.stream_crd())
        await make_default_namespace(node.store)
        kind = node.registry.by_resource(stream_objects.GROUP, stream_objects.VERSION,
                                         "streams")
        assert kind is not None
        bad: dict[str, Any] = {
            "apiVersion": kind.api_version, "kind": "Stream",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {"name": "orders", "subjects": ["orders.>"], "maxBytes": 100,
                     "maxMsgSize": 1000}}
        with pytest.raises(Invalid, match="maxMsgSize"):
            await node.store.create(kind, bad)
        good = copy.deepcopy(bad)
        good["spec"]["maxMsgSize"] = 10
        stored = await node.store.create(kind, good)
        stored = copy.deepcopy(stored)
        stored["spec"]["maxMsgSize"] = 1000
        with pytest.raises(Invalid, match="maxMsgSize"):
            await node.store.update(kind, stored, "default", "orders")
    finally:
        node.replica.close()


async def copy_resource(src: ObjectStore, dst: ObjectStore, resource: str) -> None:
    """Merge what ``src`` holds of ``resource`` (tombstones too) into ``dst``, as a pull."""
    for (ns, name), entry in list(src.replica.iter_entries(resource)):
        result = dst.replica.merge(resource, ns, name, entry.document())
        if result is not None:
            await result[1]


async def peers_holding_a_gadget_without_its_crd() -> tuple[ObjectStore, ObjectStore, Kind]:
    a, b = ObjectStore(Replica(None, "a"), KindRegistry()), ObjectStore(Replica(None, "b"),
                                                                      KindRegistry())
    for store in (a, b):
        serve_crds(store)
    await make_default_namespace(a)
    await a.create(crd_kind(a.registry), copy.deepcopy(GADGETS))
    gadget = a.registry.by_kind("example.com/v1", "Gadget")
    assert gadget is not None
    await a.create(gadget, {"apiVersion": "example.com/v1", "kind": "Gadget",
                            "metadata": {"name": "g", "namespace": "default"},
                            "spec": {"size": 1}})
    await copy_resource(a, b, "namespaces")
    await copy_resource(a, b, gadget.resource)
    return a, b, gadget


async def test_custom_resources_with_no_trace_of_their_definition_go_after_a_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Leftovers of a CRD whose tombstone was already collected (a peer back after it was
    # forgotten) are not kept for ever, only long enough for a late CRD to arrive.
    _, b, gadget = await peers_holding_a_gadget_without_its_crd()
    controller = CRDEstablishing(b)
    await controller.sync()
    assert b.replica.get(gadget.resource, "default", "g") is not None
    monkeypatch.setattr(crd_establishing, "CRD_MISSING_GRACE", 0.0)
    await controller.sync()
    assert b.replica.get(gadget.resource, "default", "g") is None


async def test_custom_resources_that_arrive_before_their_definition_are_kept() -> None:
    # A pull brings documents in the sender's revision order, a page at a time: a CRD
    # changed after its custom resources were made comes after them. A peer that held the
    # resources and not yet their CRD took them for leftovers of a deleted CRD and deleted
    # them everywhere. Only a CRD known to be deleted (its tombstone) takes them with it.
    a, b, gadget = await peers_holding_a_gadget_without_its_crd()
    await CRDEstablishing(b).sync()
    assert b.replica.get(gadget.resource, "default", "g") is not None
    await copy_resource(a, b, CRD_RESOURCE)
    assert b.registry.by_kind("example.com/v1", "Gadget") is not None
    await a.delete(crd_kind(a.registry), None, "gadgets.example.com")
    await copy_resource(a, b, CRD_RESOURCE)
    await CRDEstablishing(b).sync()
    assert b.replica.get(gadget.resource, "default", "g") is None


def test_configmap_and_secret_volumes_follow_their_objects_while_the_pod_runs(
        tmp_path: Path) -> None:
    # A ConfigMap patched through one peer reached the pods of another peer's node only
    # when that node restarted (its volumes were written once, at the pod's start).
    objects: dict[tuple[str, str, str], dict[str, Any]] = {
        ("configmaps", "team", "cfg"): {"data": {"a": "1", "gone": "x"}},
        ("secrets", "team", "sec"): {"data": {"s": base64.b64encode(b"one").decode()}},
    }

    def lookup(resource: str, ns: str, name: str) -> dict[str, Any] | None:
        return objects.get((resource, ns, name))

    pod = {"metadata": {"name": "p", "namespace": "team"}, "spec": {"volumes": [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o640}},
        {"name": "both", "projected": {"sources": [
            {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "conf/a"}]}},
            {"secret": {"name": "sec"}}]}},
        {"name": "scratch", "emptyDir": {}},
    ]}}
    dirs = volumes.prepare(pod, tmp_path, lookup)
    assert update_volumes(pod, tmp_path, lookup) == []
    objects[("configmaps", "team", "cfg")] = {"data": {"a": "2", "new": "y"}}
    objects[("secrets", "team", "sec")] = {"data": {"s": base64.b64encode(b"two").decode()}}
    assert update_volumes(pod, tmp_path, lookup) == ["cfg", "sec", "both"]
    assert (dirs["cfg"] / "a").read_text() == "2"
    assert (dirs["cfg"] / "new").read_text() == "y"
    assert not (dirs["cfg"] / "gone").exists()
    assert (dirs["sec"] / "s").read_bytes() == b"two"
    assert (dirs["sec"] / "s").stat().st_mode & 0o777 == 0o640
    assert (dirs["both"] / "conf" / "a").read_text() == "2"
    assert (dirs["both"] / "s").read_bytes() == b"two"
    assert update_volumes(pod, tmp_path, lookup) == []
    # A source deleted meanwhile leaves the volume as it was, as the kubelet does.
    del objects[("configmaps", "team", "cfg")]
    assert update_volumes(pod, tmp_path, lookup) == []
    assert (dirs["cfg"] / "a").read_text() == "2"
    assert (dirs["both"] / "conf" / "a").read_text() == "2"


async def test_objects_written_apart_into_a_namespace_deleted_meanwhile_go_with_it() -> None:
    # One side of a partition deleted a namespace (emptied, finalized, gone) while the
    # other wrote a ConfigMap into it. After the heal the namespace was gone everywhere
    # and the ConfigMap stayed on every peer, listed in a namespace that does not exist
    # (and back in it if the namespace was made again). A namespace known to be deleted
    # (its tombstone) takes what is still in it.
    a, b = ObjectStore(Replica(None, "a"), KindRegistry()), ObjectStore(Replica(None, "b"),
                                                                      KindRegistry())
    ns_kind, cm_kind = a.registry.by_kind("v1", "Namespace"), a.registry.by_kind("v1",
                                                                                "ConfigMap")
    assert ns_kind is not None and cm_kind is not None
    await a.create(ns_kind, {"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": "shop"}})
    await copy_resource(a, b, "namespaces")
    await a.delete(ns_kind, None, "shop")
    await NamespaceLifecycle(a).sync()
    assert a.replica.get("namespaces", "", "shop") is None
    await b.create(cm_kind, {"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "prices", "namespace": "shop"}})
    for src, dst in ((a, b), (b, a)):
        for resource in ("namespaces", "configmaps"):
            await copy_resource(src, dst, resource)
    for store in (a, b):
        await NamespaceLifecycle(store).sync()
        assert store.replica.get("namespaces", "", "shop") is None
        assert store.replica.get("configmaps", "shop", "prices") is None


async def test_finalizers_added_on_two_peers_at_once_are_both_kept() -> None:
    # Two controllers (kopf through one peer, another operator through another) each add
    # their finalizer to the same object before either hears of the other's: after the
    # merge only the later list is left, so one controller's cleanup is skipped when the
    # object is deleted. Kubernetes' optimistic concurrency would have made the second
    # writer retry; here each peer checks resourceVersion against its own replica only.
    a, b = ObjectStore(Replica(None, "a"), KindRegistry()), ObjectStore(Replica(None, "b"),
                                                                      KindRegistry())
    await make_default_namespace(a)
    cm_kind = a.registry.by_kind("v1", "ConfigMap")
    assert cm_kind is not None
    await a.create(cm_kind, {"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "c", "namespace": "default"}})
    for resource in ("namespaces", "configmaps"):
        await copy_resource(a, b, resource)
    for store, finalizer in ((a, "example.com/a"), (b, "example.com/b")):
        body = copy.deepcopy(store.get(cm_kind, "default", "c"))
        body["metadata"]["finalizers"] = [finalizer]
        await store.update(cm_kind, body, "default", "c")
    for src, dst in ((a, b), (b, a)):
        await copy_resource(src, dst, "configmaps")
    for store in (a, b):
        kept = store.get(cm_kind, "default", "c")["metadata"].get("finalizers")
        assert sorted(kept) == ["example.com/a", "example.com/b"]
