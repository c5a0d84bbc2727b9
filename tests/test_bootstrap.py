"""The bootstrap installs every system tool the tests use, and CI cannot skip past a missing one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import test_images
from tests.tools import netns

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = (ROOT / "scripts" / "bootstrap-debian.sh").read_text()
TOOLS = {"ip": "iproute2", "iptables": "iptables", "runc": "runc",
         "busybox": "busybox-static", "docker-registry": "docker-registry"}


@pytest.mark.parametrize("package", sorted(set(TOOLS.values())))
def test_the_bootstrap_script_installs_the_package(package: str) -> None:
    assert package in SCRIPT


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_under_ci_every_tool_the_tests_need_is_installed(tool: str) -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("checked on CI, where `make test` has run the bootstrap first")
    found = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/bin/{tool}") if os.access(p, os.X_OK)), None)
    assert found, f"{tool} ({TOOLS[tool]}) is missing after the bootstrap"


def test_under_ci_a_missing_tool_fails_the_test_instead_of_skipping_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        test_images.require("no-such-tool-shoal", "no-such-package")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        test_images.require("no-such-tool-shoal", "no-such-package")


def test_under_ci_missing_namespaces_fail_instead_of_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(netns, "missing", lambda need_iptables=False: "pretend `ip` is missing")
    with pytest.raises(pytest.fail.Exception):
        netns.require()
