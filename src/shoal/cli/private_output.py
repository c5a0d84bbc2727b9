"""Output that holds a secret (a kubeconfig's key, a join token): never group- or
world-readable, whether written with ``--output`` or redirected from stdout."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import TextIO


def write_private(text: str, output: Path | None, program: str,
                  stdout: TextIO | None = None) -> None:
    """Write to ``output`` (created or truncated, mode 0600) or to stdout; a regular file
    stdout is redirected to is made 0600 too (``shoal kubeconfig > file``)."""
    stdout = stdout or sys.stdout
    if output is not None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode on O_CREAT
            f.write(text)
        return
    try:
        fd = stdout.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    except (OSError, ValueError) as e:  # not our file, or no descriptor (a test's StringIO)
        if not isinstance(e, ValueError) and not _is_private(stdout):
            print(f"{program}: warning: could not make the output file 0600: {e}",
                  file=sys.stderr)
    stdout.write(text)
    stdout.flush()


def _is_private(stream: TextIO) -> bool:
    try:
        return stat.S_IMODE(os.fstat(stream.fileno()).st_mode) & 0o077 == 0
    except (OSError, ValueError):
        return False
