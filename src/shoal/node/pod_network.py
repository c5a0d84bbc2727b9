"""What the node agent needs from the pod network, whoever provides it.

A pod's *sandbox* is its network: a network namespace with an address, and the
``/etc/resolv.conf`` and ``/etc/hosts`` its containers see. The pod worker asks
for it before the first container starts and gives it back when the pod is gone;
the containers of a pod share it. ``shoal.net`` implements this Protocol with
the CNI plugins; :class:`HostNetwork` is the node's own network (the process
runtime, ``hostNetwork: true`` pods, and nodes without a pod network).

The node layer never imports ``shoal.net``: the composition root hands the agent
a :class:`PodNetwork`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class PodSandbox:
    """The network a pod's containers join."""

    ips: tuple[str, ...]
    """The pod's addresses (status.podIP is the first)."""
    netns: Path | None = None
    """The network namespace the containers join; None: the node's own network."""
    resolv_conf: Path | None = None
    """Mounted at /etc/resolv.conf; None: the host's."""
    hosts: Path | None = None
    """Mounted at /etc/hosts; None: the host's."""


class PodNetworkError(Exception):
    """The sandbox could not be set up now (for example: the node has no podCIDR yet)."""


class PodNetwork(Protocol):
    name: str
    """``cni`` or ``host``, for logs."""

    async def setup(self, pod: dict[str, Any]) -> PodSandbox:
        """The pod's sandbox: re-used if it exists and works, else made afresh.

        Raises PodNetworkError when it cannot be made now; the worker retries.
        """

    async def teardown(self, uid: str, namespace: str, name: str) -> None:
        """Release the pod's sandbox (its address, its namespace); a no-op if it has none."""


def host_network(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


class HostNetwork:
    """Every pod shares the node's network and reports the node's address."""

    name = "host"

    def __init__(self, node_ip: str) -> None:
        self.node_ip = node_ip

    async def setup(self, pod: dict[str, Any]) -> PodSandbox:
        return PodSandbox(ips=(self.node_ip,))

    async def teardown(self, uid: str, namespace: str, name: str) -> None:
        return None
