"""``shoal install`` and ``shoal uninstall``: a systemd unit for ``shoal server``."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    return 2
