"""The built-in kinds' schemas ship with Shoal, generated from the client and k8s-proto,
which a node never imports."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import orjson

from shoal.model import schemas
from shoal.model.kinds import KindRegistry
from shoal.model.validation import unknown_fields

REPO = Path(__file__).resolve().parent.parent
REGISTRY = KindRegistry()


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_schemas",
                                                  REPO / "scripts" / "generate_schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_schemas_are_those_of_the_installed_client(tmp_path: Path) -> None:
    # After a client upgrade, `python scripts/generate_schemas.py` must be re-run.
    generator = _generator()
    generator.OUT = tmp_path
    assert generator.main() == 0
    for name in ("models.json.gz", "docs.json.gz", "protobuf.json.gz"):
        shipped = orjson.loads(gzip.decompress(
            (REPO / "src" / "shoal" / "model" / "schemas" / name).read_bytes()))
        fresh = orjson.loads(gzip.decompress((tmp_path / name).read_bytes()))
        assert shipped == fresh, f"{name} is stale: run scripts/generate_schemas.py"


def test_the_kinds_being_added_have_schemas() -> None:
    for group, version, kind in [("batch", "v1", "CronJob"), ("policy", "v1", "Eviction"),
                                 ("policy", "v1", "PodDisruptionBudget"),
                                 ("", "v1", "PersistentVolumeClaim"),
                                 ("", "v1", "PersistentVolume"),
                                 ("", "v1", "ReplicationController"),
                                 ("storage.k8s.io", "v1", "StorageClass"),
                                 ("autoscaling", "v2", "HorizontalPodAutoscaler"),
                                 ("scheduling.k8s.io", "v1", "PriorityClass"),
                                 ("networking.k8s.io", "v1", "NetworkPolicy"),
                                 ("networking.k8s.io", "v1", "Ingress")]:
        model = schemas.model_for_kind(group, version, kind)
        assert model is not None and schemas.model_fields(model), kind
    # The core group's Event is CoreV1Event, as in the client.
    assert schemas.model_for_kind("", "v1", "Event") == "CoreV1Event"
    spec = {f.json_name: f for f in schemas.model_fields("V1ServicePort") or ()}
    assert spec["targetPort"].type == schemas.INT_OR_STRING
    assert spec["port"].required and not spec["name"].required


def test_unknown_fields_of_a_built_in_kind_come_from_the_generated_models() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "colour": 1},
           "spec": {"template": {"spec": {"containers": [
               {"name": "c", "image": "busybox", "imagePullPolicy": "Never", "tty": True,
                "shape": "round"}]}}, "paralelism": 2}}
    kind = REGISTRY.by_kind("batch/v1", "Job")
    assert kind is not None
    assert unknown_fields(kind, job) == [
        "metadata.colour", "spec.template.spec.containers[0].shape", "spec.paralelism"]


def test_a_node_never_imports_the_client_k8s_proto_or_a_protobuf_runtime() -> None:
    code = ("import sys, shoal.cli.main, shoal.cli.node, shoal.cli.status, shoal.cli.scopes;"
            "from shoal.api.openapi import OpenAPIDocuments;"
            "from shoal.api import protobuf;"
            "from shoal.model.kinds import KindRegistry;"
            "d = OpenAPIDocuments(KindRegistry()); d.warm(); assert d.v2_protobuf();"
            "assert protobuf.UNKNOWN in protobuf.registry();"
            "print(sorted(m for m in sys.modules"
            "             if m.split('.')[0] in ('kubernetes', 'k8s') or m == 'google.protobuf'))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"
