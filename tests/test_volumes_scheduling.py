"""The VolumeBinding filter: a pod using a claim runs where the claim's volume is."""

from __future__ import annotations

from typing import Any

from shoal.control.scheduler import Snapshot, default_profile, schedule
from shoal.control.scheduler.plugins import volume_binding
from shoal.control.scheduler.snapshot import VolumeCatalog
from shoal.control.scheduler.testing import make_node, make_pod

NODES = [make_node("n1"), make_node("n2"), make_node("n3")]
LOCAL = {"metadata": {"name": "local-path"}, "provisioner": "shoal.dev/local-path",
         "volumeBindingMode": "WaitForFirstConsumer"}
IMMEDIATE = {"metadata": {"name": "fast"}, "provisioner": "example.com/fast"}


def with_claim(claim: str = "data-web-0") -> dict[str, Any]:
    pod = make_pod("web-0")
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return pod


def claim(name: str, cls: str = "local-path", volume: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"storageClassName": cls}
    if volume:
        spec["volumeName"] = volume
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def local_pv(name: str, node: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeAffinity": {"required": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}


def place(pod: dict[str, Any], catalog: VolumeCatalog) -> tuple[str | None, str]:
    result = schedule(pod, Snapshot(NODES, volumes=catalog), default_profile())
    return result.node_name, result.message


def test_a_bound_local_volume_pins_the_pod_to_its_node() -> None:
    catalog = VolumeCatalog([claim("data-web-0", volume="pvc-1")], [local_pv("pvc-1", "n3")],
                            [LOCAL])
    assert place(with_claim(), catalog)[0] == "n3"


def test_the_volume_node_gone_leaves_the_pod_pending_with_kubernetes_message() -> None:
    catalog = VolumeCatalog([claim("data-web-0", volume="pvc-1")], [local_pv("pvc-1", "gone")],
                            [LOCAL])
    node, message = place(with_claim(), catalog)
    assert node is None
    assert message.startswith("0/3 nodes are available: 3 " + volume_binding.ERR_REASON_NODE_CONFLICT)


def test_an_unbound_wait_for_first_consumer_claim_admits_any_node() -> None:
    catalog = VolumeCatalog([claim("data-web-0")], [], [LOCAL])
    assert place(with_claim(), catalog)[0] is not None


def test_missing_or_immediate_unbound_claims_keep_the_pod_pending() -> None:
    node, message = place(with_claim("nope"), VolumeCatalog([], [], [LOCAL]))
    assert node is None and 'persistentvolumeclaim "nope" not found' in message
    node, message = place(with_claim(), VolumeCatalog([claim("data-web-0", "fast")], [],
                                                      [IMMEDIATE]))
    assert node is None and volume_binding.ERR_REASON_UNBOUND_IMMEDIATE in message


def test_a_pod_without_claims_skips_the_filter() -> None:
    assert place(make_pod("p"), VolumeCatalog())[0] is not None
