"""What a running node keeps out of memory: modules only rare paths need are imported there."""

from __future__ import annotations

import subprocess
import sys


def test_a_node_imports_no_url_client_and_no_tarfile_until_a_command_needs_them() -> None:
    """urllib.request (with http.client and email's parser) serves ``shoal status`` and
    ``shoal scopes``; tarfile serves image unpacking and import and ``shoal snapshot``. A
    node builds every command's parser and imports the image store, so those import them
    only when they run (1.7 MB and 0.6 MB of RSS)."""
    code = ("import sys, shoal.cli.main, shoal.cli.node, shoal.node.agent;"
            "shoal.cli.main._parser();"
            "print(sorted(m for m in ('urllib.request', 'http.client', 'tarfile')"
            "             if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert out.strip() == "[]"
