"""A running pod's downwardAPI volume follows its labels and annotations, as the kubelet's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from shoal.node import volumes
from shoal.node.volume_updates import update_volumes


def _nothing(resource: str, ns: str, name: str) -> dict[str, Any] | None:
    return None


def test_a_downward_api_volume_is_rewritten_when_the_pods_labels_or_annotations_change(
        tmp_path: Path) -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "team", "labels": {"tier": "web"},
                     "annotations": {"build": "1"}},
        "spec": {"volumes": [{"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}}
    info = volumes.prepare(pod, tmp_path, _nothing)["info"]
    assert (info / "labels").read_text() == 'tier="web"'
    assert update_volumes(pod, tmp_path, _nothing) == []
    relabelled = copy.deepcopy(pod)
    relabelled["metadata"]["labels"]["version"] = "2"
    relabelled["metadata"]["annotations"]["build"] = "2"
    assert update_volumes(relabelled, tmp_path, _nothing) == ["info"]
    assert (info / "labels").read_text() == 'tier="web"\nversion="2"'
    assert (info / "annotations").read_text() == 'build="2"'
    assert (info / "name").read_text() == "p"
    assert (info / "labels").is_symlink()  # swapped whole through ..data, as AtomicWriter
    assert update_volumes(relabelled, tmp_path, _nothing) == []
