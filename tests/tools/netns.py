"""Network namespaces for real partitions: one namespace per node, veth pairs on a bridge.

::

    with NetnsLab() as lab:
        a, b = lab.add("a"), lab.add("b")      # 10.<n>.0.2, 10.<n>.0.3
        proc = a.popen(["shoal", "server", "--bind", a.ip, ...])
        lab.cut(a)                             # a's link goes down (or: mode="drop")
        lab.heal(a)

The root namespace holds the bridge (``10.<n>.0.1``), so tests running there
reach every node. ``cut`` either sets the host end of the node's veth down
(``mode="link"``: the cable is pulled, connections fail fast) or installs
iptables DROP rules inside the namespace (``mode="drop"``: packets vanish and
TCP waits, like a real partition). Everything is removed on close.

Needs root, ``ip`` (iproute2) and, for ``mode="drop"``, ``iptables``.
:func:`require` fails (under ``CI=true``) or skips when they are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any, Literal

CutMode = Literal["link", "drop"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(need_iptables: bool = False) -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` is missing (Debian package iproute2; `make sysdeps` installs it)"
    if need_iptables and shutil.which("iptables") is None:
        return "`iptables` is missing (Debian package iptables; `make sysdeps` installs it)"
    probe = f"shoalprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` does not work here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def require(need_iptables: bool = False) -> None:
    """Skip the calling test when namespaces are unusable; under CI=true, fail it instead."""
    import pytest

    why = missing(need_iptables)
    if why is None:
        return
    if _in_ci():
        pytest.fail(f"{why} (CI=true: tests that need ip netns must not be skipped)")
    pytest.skip(why)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


@dataclass
class Namespace:
    name: str
    """The namespace name (``ip netns exec <name>``)."""
    ip: str
    host_if: str
    """The veth end in the root namespace, attached to the bridge."""
    ns_if: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def exec_args(self, args: list[str]) -> list[str]:
        # nsenter, not `ip netns exec`: that also mounts a fresh /sys, which hides the cgroup
        # filesystem runc needs to start a container.
        return ["nsenter", f"--net=/run/netns/{self.name}", *args]

    def run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(self.exec_args(args), **kwargs)

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the namespace; it is killed when the lab closes."""
        kwargs.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(self.exec_args(args), **kwargs)
        self.procs.append(proc)
        return proc


def _free_subnet(first: int) -> int:
    """``first``, or the next of 10.112-211 that no interface of the host is on: two labs
    whose pids are equal modulo 100 (a test worker and a bench run side by side) would
    otherwise put two bridges on one subnet, and each would route the other's traffic."""
    taken = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                           text=True, check=False).stdout
    for i in range(100):
        subnet = 112 + (first - 112 + i) % 100
        if f" 10.{subnet}.0." not in taken:
            return subnet
    return first


class NetnsLab:
    """A bridge and any number of namespaces on it, all removed by :meth:`close`."""

    def __init__(self, subnet: int | None = None) -> None:
        tag = f"{os.getpid() % 10000:04d}"
        # Interface names have at most 15 characters; the pid keeps parallel runs apart.
        self.prefix = f"sh{tag}"
        # 10.112-211.x: clear of the pod CIDR 10.42.0.0/16 and the service CIDR 10.96.0.0/12.
        self.subnet = subnet if subnet is not None else _free_subnet(112 + os.getpid() % 100)
        self.bridge = f"{self.prefix}br"
        self.namespaces: list[Namespace] = []
        self._cut: dict[str, CutMode] = {}
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        try:
            sh("ip", "addr", "add", f"10.{self.subnet}.0.1/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
        except Exception:
            self.close()
            raise

    @property
    def gateway(self) -> str:
        return f"10.{self.subnet}.0.1"

    def add(self, name: str) -> Namespace:
        i = len(self.namespaces)
        ns = Namespace(name=f"{self.prefix}-{name}", ip=f"10.{self.subnet}.0.{i + 2}",
                       host_if=f"{self.prefix}h{i}", ns_if=f"{self.prefix}n{i}")
        self.namespaces.append(ns)  # before creating anything, so close() removes it
        sh("ip", "netns", "add", ns.name)
        sh("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        sh("ip", "link", "set", ns.ns_if, "netns", ns.name)
        sh("ip", "link", "set", ns.host_if, "master", self.bridge)
        sh("ip", "link", "set", ns.host_if, "up")
        ex = ["ip", "netns", "exec", ns.name]
        sh(*ex, "ip", "addr", "add", f"{ns.ip}/24", "dev", ns.ns_if)
        sh(*ex, "ip", "link", "set", ns.ns_if, "up")
        sh(*ex, "ip", "link", "set", "lo", "up")
        return ns

    def cut(self, ns: Namespace, mode: CutMode = "link") -> None:
        """Partition ``ns`` from everything else (the root namespace included)."""
        if ns.name in self._cut:
            return
        if mode == "link":
            sh("ip", "link", "set", ns.host_if, "down")
        else:
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                sh("ip", "netns", "exec", ns.name, "iptables", "-I", chain, flag, ns.ns_if,
                   "-j", "DROP")
        self._cut[ns.name] = mode

    def heal(self, ns: Namespace) -> None:
        mode = self._cut.pop(ns.name, None)
        if mode == "link":
            sh("ip", "link", "set", ns.host_if, "up")
        elif mode == "drop":
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                sh("ip", "netns", "exec", ns.name, "iptables", "-D", chain, flag, ns.ns_if,
                   "-j", "DROP")

    def close(self) -> None:
        for ns in self.namespaces:
            for proc in ns.procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # its own session: all of it
                    proc.wait()
            # Deleting the namespace deletes its veth end, and with it the pair.
            sh("ip", "netns", "del", ns.name, check=False)
            sh("ip", "link", "del", ns.host_if, check=False)
        self.namespaces.clear()
        sh("ip", "link", "del", self.bridge, check=False)

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
