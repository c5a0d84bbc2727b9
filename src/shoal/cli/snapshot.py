"""``shoal snapshot save FILE`` and ``shoal snapshot restore FILE``."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    return 2
