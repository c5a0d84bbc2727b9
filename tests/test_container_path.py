"""Which PATH a container's process gets: the image's under runc, a default otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.node.env import DEFAULT_PATH, container_env
from shoal.node.images import ImageConfig
from shoal.node.runtime import ContainerConfig
from shoal.node.runtime_process import ProcessRuntime
from shoal.node.runtime_runc import bundle_config

POD: dict[str, Any] = {"metadata": {"name": "web", "namespace": "default"}}


def config(env: dict[str, str]) -> ContainerConfig:
    return ContainerConfig(pod_uid="u", pod_namespace="default", pod_name="web", name="c",
                           attempt=0, image="busybox", argv=["sh"], env=env, working_dir=None,
                           log_path=Path("/tmp/x.log"))


def process_env(spec: dict[str, Any], tmp_path: Path) -> list[str]:
    env = container_env(POD, spec, lambda *a: None, "10.0.0.1")
    return bundle_config(config(env), ImageConfig(env=["PATH=/bin", "FROM_IMAGE=yes"]),
                         tmp_path, "id")["process"]["env"]


def test_a_runc_container_keeps_the_path_its_image_sets(tmp_path: Path) -> None:
    env = process_env({"name": "c"}, tmp_path)
    assert "PATH=/bin" in env
    assert "FROM_IMAGE=yes" in env


def test_a_pods_own_path_replaces_the_images(tmp_path: Path) -> None:
    env = process_env({"name": "c", "env": [{"name": "PATH", "value": "/opt/bin"}]}, tmp_path)
    assert "PATH=/opt/bin" in env
    assert "PATH=/bin" not in env


def test_an_image_without_path_gets_the_default(tmp_path: Path) -> None:
    env = container_env(POD, {"name": "c"}, lambda *a: None, "10.0.0.1")
    spec = bundle_config(config(env), ImageConfig(), tmp_path, "id")
    assert f"PATH={DEFAULT_PATH}" in spec["process"]["env"]


def test_a_process_runtime_container_gets_the_default_path(tmp_path: Path) -> None:
    env = container_env(POD, {"name": "c"}, lambda *a: None, "10.0.0.1")
    assert ProcessRuntime(tmp_path)._env(config(env), "id")["PATH"] == DEFAULT_PATH
