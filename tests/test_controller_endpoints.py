"""The endpoints controller, in process: Endpoints and EndpointSlices from Services and pods."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.endpoints import (
    SERVICE_NAME_LABEL,
    SLICE_MANAGED_BY_LABEL,
    SLICE_MANAGER,
    EndpointsController,
)
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.conftest import ShoalProcess

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


NS = kind("v1", "Namespace")
POD = kind("v1", "Pod")
NODE = kind("v1", "Node")
SVC = kind("v1", "Service")
EP = kind("v1", "Endpoints")
SLICE = kind("discovery.k8s.io/v1", "EndpointSlice")


def service(name: str, target: Any = "http", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"team": "edge"}}, "spec": {
        "selector": {"app": name},
        "ports": [{"name": "web", "port": 80, "targetPort": target}], **spec}}


async def add_pod(store: ObjectStore, name: str, app: str, ip: str | None, ready: bool,
                  node: str = "n1", port_name: str = "http", port: int = 8080) -> None:
    await store.create(POD, {"metadata": {"name": name, "labels": {"app": app}}, "spec": {
        "containers": [{"name": "c", "image": "x",
                        "ports": [{"name": port_name, "containerPort": port}]}]}}, "default")
    p = copy.deepcopy(store.get(POD, "default", name))
    p["spec"]["nodeName"] = node
    await store.update(POD, p, "default", name, "binding", check_rv=False)
    p = copy.deepcopy(store.get(POD, "default", name))
    now = now_rfc3339(store.replica.wall.now())
    p["status"] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}]}
    if ip:
        p["status"]["podIP"] = ip
        p["status"]["podIPs"] = [{"ip": ip}]
    await store.update(POD, p, "default", name, "status", check_rv=False)


async def make_store(node_id: str) -> ObjectStore:
    s = ObjectStore(Replica(None, node_id), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    await s.create(NODE, {"metadata": {"name": "n1",
                                       "labels": {"topology.kubernetes.io/zone": "z1"}}})
    return s


async def merge(src: ObjectStore, dst: ObjectStore) -> None:
    """Hand every document of ``src`` to ``dst``, as anti-entropy would."""
    for resource in src.replica.resources():
        for (ns, name), entry in src.replica.iter_entries(resource):
            result = dst.replica.merge(resource, ns, name, entry.document())
            if result is not None:
                await result[1]


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = await make_store("n1")
    yield s
    s.replica.close()


def slices(store: ObjectStore, svc: str) -> list[dict[str, Any]]:
    return [s for s in store.list(SLICE, "default")
            if s["metadata"]["labels"].get(SERVICE_NAME_LABEL) == svc]


async def test_ready_pods_are_addresses_and_the_others_not_ready_addresses(
    store: ObjectStore,
) -> None:
    await store.create(SVC, service("web"), "default")
    await add_pod(store, "web-a", "web", "10.0.0.5", ready=True)
    await add_pod(store, "web-b", "web", "10.0.0.6", ready=False)
    await add_pod(store, "web-c", "web", None, ready=True)  # no IP yet: not listed
    await add_pod(store, "other", "db", "10.0.0.7", ready=True)
    await EndpointsController(store).sync()
    ep = store.get(EP, "default", "web")
    [subset] = ep["subsets"]
    assert [a["targetRef"]["name"] for a in subset["addresses"]] == ["web-a"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.6"]
    assert subset["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    assert ep["metadata"]["labels"]["team"] == "edge"
    [sl] = slices(store, "web")
    assert sl["addressType"] == "IPv4"
    assert sl["metadata"]["labels"][SLICE_MANAGED_BY_LABEL] == SLICE_MANAGER
    assert sl["metadata"]["ownerReferences"][0]["kind"] == "Service"
    conds = {e["targetRef"]["name"]: e["conditions"] for e in sl["endpoints"]}
    assert conds == {"web-a": {"ready": True, "serving": True, "terminating": False},
                     "web-b": {"ready": False, "serving": False, "terminating": False}}
    assert {e.get("zone") for e in sl["endpoints"]} == {"z1"}


async def test_pods_sharing_a_host_network_ip_are_each_listed_with_their_target_ref(
    store: ObjectStore,
) -> None:
    await store.create(SVC, service("host"), "default")
    for name in ("host-a", "host-b"):
        await add_pod(store, name, "host", "192.168.1.10", ready=True)
    await EndpointsController(store).sync()
    addrs = store.get(EP, "default", "host")["subsets"][0]["addresses"]
    assert [(a["ip"], a["targetRef"]["name"]) for a in addrs] == [
        ("192.168.1.10", "host-a"), ("192.168.1.10", "host-b")]
    [sl] = slices(store, "host")
    assert [e["targetRef"]["name"] for e in sl["endpoints"]] == ["host-a", "host-b"]


async def test_named_target_ports_resolve_per_pod_into_separate_subsets_and_slices(
    store: ObjectStore,
) -> None:
    await store.create(SVC, service("mixed"), "default")
    await add_pod(store, "old", "mixed", "10.0.0.1", ready=True, port=8080)
    await add_pod(store, "new", "mixed", "10.0.0.2", ready=True, port=9090)
    await add_pod(store, "unnamed", "mixed", "10.0.0.3", ready=True, port_name="other")
    await EndpointsController(store).sync()
    ports = {s["addresses"][0]["targetRef"]["name"]: s["ports"][0]["port"]
             for s in store.get(EP, "default", "mixed")["subsets"]}
    assert ports == {"old": 8080, "new": 9090}, "a pod without the named port is left out"
    by_port = {s["ports"][0]["port"]: [e["targetRef"]["name"] for e in s["endpoints"]]
               for s in slices(store, "mixed")}
    assert by_port == {8080: ["old"], 9090: ["new"]}


async def test_nothing_is_written_when_nothing_changed(store: ObjectStore) -> None:
    await store.create(SVC, service("calm", target=8080), "default")
    await add_pod(store, "calm-a", "calm", "10.0.0.9", ready=True)
    c = EndpointsController(store)
    await c.sync()
    before = c.writes
    rv = (store.get(EP, "default", "calm")["metadata"]["resourceVersion"],
          [s["metadata"]["resourceVersion"] for s in slices(store, "calm")])
    await c.sync()
    await c.sync()
    assert c.writes == before
    assert rv == (store.get(EP, "default", "calm")["metadata"]["resourceVersion"],
                  [s["metadata"]["resourceVersion"] for s in slices(store, "calm")])
    # A pod turning unready is a change.
    p = copy.deepcopy(store.get(POD, "default", "calm-a"))
    p["status"]["conditions"][0]["status"] = "False"
    await store.update(POD, p, "default", "calm-a", "status", check_rv=False)
    await c.sync()
    assert c.writes > before
    assert "addresses" not in store.get(EP, "default", "calm")["subsets"][0]


async def test_a_service_with_no_pods_keeps_an_empty_placeholder_slice(
    store: ObjectStore,
) -> None:
    await store.create(SVC, service("empty"), "default")
    await EndpointsController(store).sync()
    assert "subsets" not in store.get(EP, "default", "empty")
    [sl] = slices(store, "empty")
    assert sl["endpoints"] == [] and sl["addressType"] == "IPv4"


async def test_deleting_the_service_removes_its_endpoints_and_slices(store: ObjectStore) -> None:
    await store.create(SVC, service("gone"), "default")
    await add_pod(store, "gone-a", "gone", "10.0.0.4", ready=True)
    await store.create(SVC, {"metadata": {"name": "manual"}, "spec": {
        "ports": [{"port": 80}]}}, "default")
    await store.create(EP, {"metadata": {"name": "manual"}, "subsets": [
        {"addresses": [{"ip": "10.1.1.1"}], "ports": [{"port": 80}]}]}, "default")
    c = EndpointsController(store)
    await c.sync()
    await store.delete(SVC, "default", "gone")
    await c.sync()
    assert store.find(EP, "default", "gone") is None
    assert slices(store, "gone") == []
    assert store.get(EP, "default", "manual")["subsets"][0]["addresses"][0]["ip"] == "10.1.1.1", \
        "the Endpoints of a Service without a selector are the user's"


async def test_two_partitioned_peers_writing_one_service_end_with_one_slice_per_name() -> None:
    a, b = await make_store("peer-a"), await make_store("peer-b")
    await a.create(SVC, service("split"), "default")
    await add_pod(a, "split-a", "split", "10.0.0.1", ready=True)
    await merge(a, b)
    await add_pod(b, "split-b", "split", "10.0.0.2", ready=True)  # only b sees this one
    for s in (a, b):
        await EndpointsController(s).sync()
    await merge(a, b)
    await merge(b, a)
    for s in (a, b):
        assert len(slices(s, "split")) == 1, "both sides named the slice alike"
    # After the merge the controller sees both pods and converges the one slice.
    for s in (a, b):
        await EndpointsController(s).sync()
        [sl] = slices(s, "split")
        assert sorted(e["targetRef"]["name"] for e in sl["endpoints"]) == ["split-a", "split-b"]
    a.replica.close()
    b.replica.close()


async def test_pod_writes_that_change_no_listed_field_do_not_wake_the_controller(
    store: ObjectStore,
) -> None:
    from shoal.store.change_feed import Change

    await store.create(SVC, service("quiet"), "default")
    await add_pod(store, "quiet", "quiet", "10.0.0.8", ready=True)
    old = store.get(POD, "default", "quiet")
    probed = copy.deepcopy(old)
    probed["status"]["containerStatuses"] = [{"name": "c", "restartCount": 0}]
    unready = copy.deepcopy(old)
    unready["status"]["conditions"][0]["status"] = "False"
    c = EndpointsController(store)
    assert not c.relevant(Change("MODIFIED", "pods", "default", "quiet", 99, probed, old))
    assert c.relevant(Change("MODIFIED", "pods", "default", "quiet", 99, unready, old))
    # With no Service in its namespace, nothing a pod does can matter here.
    assert not c.relevant(Change("MODIFIED", "pods", "elsewhere", "quiet", 99, unready, old))


APP_YAML = """
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    ports: [{name: http, containerPort: 8080}]
"""


@pytest.mark.slow
def test_a_service_on_a_real_server_gets_endpoints_and_a_slice_for_its_ready_pod(
    shoal: ShoalProcess,
) -> None:
    shoal.kubectl("apply", "-f", "-", input=APP_YAML)
    deadline = time.monotonic() + 20
    ep: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ep = json.loads(shoal.kubectl("get", "endpoints", "echo", "-o", "json",
                                      check=False).stdout or "{}")
        if any(s.get("addresses") for s in ep.get("subsets") or []):
            break
        time.sleep(0.2)
    [subset] = ep["subsets"]
    assert subset["addresses"][0]["targetRef"]["name"] == "echo"
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    out = shoal.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=echo",
                        "-o", "json").stdout
    [sl] = json.loads(out)["items"]
    assert sl["endpoints"][0]["conditions"]["ready"] is True
