"""Fault mixes: the chaos options of one seed, drawn from ranges of parameters.

A mix maps each chaos option to the values it may take (``3-7`` for integers in a
range, ``0,0.05,0.3`` for a choice, ``20`` for one value). ``options(mix, seed)``
draws them from the seed alone, so a seed of a mix always gives the same run, and
its ``Options.command()`` replays it without the mix.

``WIDE`` is the mix of issue 16: 3 to 7 peers, up to 3 partitions and 3 kills in
the safety phase, 0 %, 5 % or 30 % loss, 5 % duplicates, 20 writes. The disk and
clock faults are options too (``torn_commits=0,1``, ``stale_restarts=0-1``,
``clock_jumps=0-2``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

from shoal.sim.scenarios import Options

INT_FIELDS = ("peers", "writes", "partitions", "kills", "scopes", "scope_changes", "sites",
              "torn_commits", "stale_restarts", "clock_jumps")
FLOAT_FIELDS = ("drop", "duplicate", "safety_seconds", "idle_seconds")

WIDE: dict[str, str] = {
    "peers": "3-7",
    "partitions": "0-3",
    "kills": "0-3",
    "drop": "0,0.05,0.3",
    "duplicate": "0.05",
    "writes": "20",
}


class MixError(ValueError):
    """A mix names an unknown option or a value that is not one."""


def choices(field: str, spec: str) -> list[int] | list[float]:
    """The values ``spec`` allows for ``field``."""
    if field not in INT_FIELDS and field not in FLOAT_FIELDS:
        raise MixError(f"unknown option {field!r} (one of {', '.join(INT_FIELDS + FLOAT_FIELDS)})")
    try:
        if field in INT_FIELDS:
            if "-" in spec.strip().lstrip("-"):
                low, high = (int(x) for x in spec.split("-", 1))
                if high < low:
                    raise MixError(f"{field}: empty range {spec!r}")
                return list(range(low, high + 1))
            return [int(x) for x in spec.split(",")]
        return [float(x) for x in spec.split(",")]
    except ValueError as e:
        if isinstance(e, MixError):
            raise
        raise MixError(f"{field}: {spec!r} is not a value, a list or a range") from e


def options(mix: Mapping[str, str], seed: int, base: Options | None = None) -> Options:
    """The chaos options of ``seed`` under ``mix`` (unnamed options as in ``base``).

    Each option is drawn from its own stream of the seed, so adding an option to a
    mix does not change how the others are drawn."""
    chosen: dict[str, int | float] = {}
    for field in (*INT_FIELDS, *FLOAT_FIELDS):
        spec = mix.get(field)
        if spec is None:
            continue
        values = choices(field, spec)
        chosen[field] = random.Random(f"{seed}:mix:{field}").choice(values)
    unknown = set(mix) - set(INT_FIELDS) - set(FLOAT_FIELDS)
    if unknown:
        raise MixError(f"unknown options {sorted(unknown)}")
    if "torn_commits" in chosen:
        chosen["torn_commits"] = bool(chosen["torn_commits"])
    return dataclasses.replace(base or Options(), scenario="chaos", seed=seed,
                               **chosen)  # type: ignore[arg-type]
