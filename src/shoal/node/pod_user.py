"""Who a process-runtime pod runs as, and where its own files live.

The process runtime runs a container's command on the host, so its user is the only
wall between the pod and the node's keys and replica. When the node runs as root:

- A container runs as its ``securityContext.runAsUser``, else the pod's, else 65534
  (nobody), as a container without a ``USER`` would not. Its group is ``runAsGroup``
  (container, then pod), else the host account's primary group for that uid, else
  65534; the pod's ``supplementalGroups`` and ``fsGroup`` are added.
- uid 0 runs only on a node started with ``--allow-root-pods``; otherwise the
  container waits in CreateContainerConfigError and says why. ``runAsNonRoot: true``
  with uid 0 is refused with the kubelet's message, whatever the node allows.
- The data dir is 0700, so a pod cannot reach anything in it: its working dirs and
  volumes live in a pods dir outside it (``--pods-dir``; by default
  ``/var/lib/shoal-pods/<node marker>``, the marker an opaque hash of the data dir;
  the directories above a ``--pods-dir`` must let the pods' users through).
  The pods dir and each pod's directory are 0711 (enterable, not listable); a
  container's working dir belongs to its user (0700); an emptyDir is 0777, as the
  kubelet makes it; configMap and secret volumes stay root's, readable (their files
  have the volume's mode). Logs stay in ``DATA_DIR/pods``: the agent writes them from
  the container's pipes, and the pod cannot touch them.

A node that does not run as root cannot change users: its pods run as the node's own
user, and files stay in ``DATA_DIR/pods``.

All pods that do not ask for a user share uid 65534: they are kept from the node, not
from each other (a process of one may signal or trace another's). runc pods run in
their own root filesystem and are not concerned by any of this.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.node.runtime import ContainerUser

NOBODY = 65534
PODS_ROOT = Path("/var/lib/shoal-pods")


class PodUserError(Exception):
    """The container may not run as the user it asks for."""

    reason = "CreateContainerConfigError"


def _pod_ref(pod: dict[str, Any]) -> str:
    """As the kubelet's format.Pod: name_namespace(uid)."""
    meta = pod.get("metadata") or {}
    return f'{meta.get("name")}_{meta.get("namespace") or "default"}({meta.get("uid")})'


def _primary_group(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return NOBODY


@dataclass(frozen=True)
class PodIsolation:
    """A node's rules for its process-runtime pods (see the module docstring)."""

    switch_users: bool = False
    """Run containers as their own user (only a node running as root can)."""
    allow_root: bool = False
    """``--allow-root-pods``: a container may ask for uid 0."""
    pods_dir: Path | None = None
    """Where pods' working dirs and volumes go; None: with their logs in DATA_DIR/pods."""

    @classmethod
    def for_node(cls, marker: str, allow_root: bool, pods_dir: Path | None) -> PodIsolation:
        if os.geteuid() != 0:
            return cls(False, allow_root, pods_dir)
        if pods_dir is None:
            PODS_ROOT.mkdir(parents=True, exist_ok=True)
            os.chmod(PODS_ROOT, 0o711)
            pods_dir = PODS_ROOT / marker
        return cls(True, allow_root, pods_dir)

    def user_for(self, pod: dict[str, Any], container: dict[str, Any]) -> ContainerUser | None:
        """The container's user; None: the node's own. Raises PodUserError."""
        pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
        sc = container.get("securityContext") or {}

        def setting(field: str) -> Any:
            return sc[field] if sc.get(field) is not None else pod_sc.get(field)

        run_as = setting("runAsUser")
        uid = int(run_as) if run_as is not None else (NOBODY if self.switch_users
                                                      else os.geteuid())
        name = container.get("name")
        if setting("runAsNonRoot") and uid == 0:
            if run_as is not None:
                raise PodUserError(f"container's runAsUser breaks non-root policy "
                                   f'(pod: "{_pod_ref(pod)}", container: {name})')
            raise PodUserError(f'container has runAsNonRoot and image will run as root '
                               f'(pod: "{_pod_ref(pod)}", container: {name})')
        if not self.switch_users:
            return None
        if uid == 0 and not self.allow_root:
            raise PodUserError(
                f"container {name} asks for runAsUser 0 (root), which this node does not "
                f"allow: start the node with --allow-root-pods to run it "
                f'(pod: "{_pod_ref(pod)}")')
        run_as_group = setting("runAsGroup")
        gid = int(run_as_group) if run_as_group is not None else _primary_group(uid)
        extra = [int(g) for g in pod_sc.get("supplementalGroups") or []]
        if pod_sc.get("fsGroup") is not None:
            extra.append(int(pod_sc["fsGroup"]))
        return ContainerUser(uid, gid, tuple(dict.fromkeys(extra)))

    def files_dir(self, pod_uid: str, logs_dir: Path) -> Path:
        """The pod's own directory (working dirs, volumes), made enterable for its users."""
        if self.pods_dir is None or not self.switch_users:
            return logs_dir
        d = self.pods_dir / pod_uid
        for path in (self.pods_dir, d):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o711)
        return d


def open_to(path: Path, user: ContainerUser | None) -> None:
    """Make a directory the container's own (its working dir)."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(path, user.uid, user.gid)
        os.chmod(path, 0o700)


def open_volumes(pod: dict[str, Any], volumes: dict[str, Path], files_dir: Path) -> None:
    """After the volumes are written: an emptyDir is writable by every container of the
    pod (0777, as the kubelet makes it), the rest readable, the volumes dir not listable."""
    kinds = {str(v.get("name", "")): v for v in (pod.get("spec") or {}).get("volumes") or []}
    own = files_dir / "volumes"
    if own.is_dir():
        os.chmod(own, 0o711)
    for name, path in volumes.items():
        if not path.is_relative_to(own):
            continue  # a hostPath: the host's, as it is
        if "emptyDir" in kinds.get(name, {}):
            os.chmod(path, 0o777)
        else:
            for d, _, _ in os.walk(path):
                os.chmod(d, 0o755)
