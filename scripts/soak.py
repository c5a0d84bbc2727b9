"""Run many chaos seeds of a fault mix in parallel; resumable; print every failure's replay.

    python scripts/soak.py --seeds 10000                  # issue 16's wide mix
    python scripts/soak.py --seeds 500 --first 7000 --set drop=0.1 --set kills=0-5
    make soak SEEDS=10000 SOAK_ARGS="--set peers=5-9"
    # scopes over sites of weak peers, with membership edits (issue 10's mix):
    python scripts/soak.py --seeds 2000 --only --set peers=15 --set sites=3 \
        --set scopes=2 --set scope_changes=2 --set kills=1 --results scoped.jsonl

Each finished seed is appended to the results file (JSON lines) as soon as it is
known, so an interrupted soak resumes where it stopped (seeds already in the file
are skipped; a file written under another mix is refused). Every failure prints the
command that replays it (``python -m shoal.sim ...``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.sim import fault_mix, scenarios


def run_seed(job: tuple[dict[str, str], int, dict[str, Any]]) -> dict[str, Any]:
    mix, seed, base = job
    opts = fault_mix.options(mix, seed, scenarios.Options(**base))
    started = time.perf_counter()
    try:
        report = scenarios.run(opts)
        failures = report.failures
    except Exception as e:  # a crash is a failure of that seed, not of the soak
        failures = [f"raised {type(e).__name__}: {e}"]
    return {"seed": seed, "ok": not failures, "failures": failures[:5],
            "command": opts.command(), "wall": round(time.perf_counter() - started, 3)}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10_000, help="how many seeds")
    p.add_argument("--first", type=int, default=0, help="the first seed")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--results", type=Path, default=Path("soak-results.jsonl"))
    p.add_argument("--set", action="append", default=[], metavar="OPTION=SPEC",
                   help="change the mix: peers=3-7, drop=0,0.05,0.3, writes=20, ...")
    p.add_argument("--only", action="store_true",
                   help="start from an empty mix instead of the wide one")
    return p.parse_args(argv)


def mix_of(args: argparse.Namespace) -> dict[str, str]:
    mix = {} if args.only else dict(fault_mix.WIDE)
    for item in args.set:
        field, sep, spec = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected OPTION=SPEC")
        field = field.strip().replace("-", "_")
        fault_mix.choices(field, spec)  # fails early on a bad spec
        mix[field] = spec.strip()
    return mix


def done_seeds(path: Path, mix: dict[str, str]) -> tuple[set[int], list[dict[str, Any]]]:
    """Seeds already in the results file and its failures; refuses another mix's file."""
    if not path.exists():
        return set(), []
    seeds: set[int] = set()
    failed: list[dict[str, Any]] = []
    with path.open() as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupt: that seed runs again
            if "mix" in rec:
                if rec["mix"] != mix:
                    raise SystemExit(f"{path} holds results of another mix ({rec['mix']}); "
                                     "pass another --results")
                continue
            seeds.add(int(rec["seed"]))
            if not rec["ok"]:
                failed.append(rec)
    return seeds, failed


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    mix = mix_of(args)
    wanted = range(args.first, args.first + args.seeds)
    done, failed = done_seeds(args.results, mix)
    todo = [s for s in wanted if s not in done]
    failed = [r for r in failed if r["seed"] in wanted]
    print(f"mix {mix}; seeds {wanted.start}-{wanted.stop - 1}: {len(wanted) - len(todo)} done, "
          f"{len(todo)} to run on {args.workers} workers", flush=True)
    started = time.perf_counter()
    with args.results.open("a") as out:
        if not done:
            out.write(json.dumps({"mix": mix}) + "\n")
        jobs = [(mix, s, {"idle_seconds": 20.0}) for s in todo]
        for i, rec in enumerate(_results(jobs, args.workers), 1):
            out.write(json.dumps(rec) + "\n")
            out.flush()
            if not rec["ok"]:
                failed.append(rec)
                print(f"FAILED seed {rec['seed']}: {'; '.join(rec['failures'][:2])}\n"
                      f"  reproduce with: {rec['command']}", flush=True)
            if i % 500 == 0:
                rate = i / (time.perf_counter() - started)
                print(f"{i}/{len(todo)} run, {len(failed)} failed, {rate:.1f} seeds/s",
                      flush=True)
    wall = time.perf_counter() - started
    print(f"{len(todo)} seeds in {wall:.0f} s ({len(todo) / max(wall, 1e-9):.1f} seeds/s); "
          f"{len(failed)} of {len(wanted)} failed")
    for rec in sorted(failed, key=lambda r: r["seed"]):
        print(f"  {rec['command']}")
    return 1 if failed else 0


def _results(jobs: list[tuple[dict[str, str], int, dict[str, Any]]],
             workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        yield from map(run_seed, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(run_seed, jobs, chunksize=4)


if __name__ == "__main__":
    sys.exit(main())
