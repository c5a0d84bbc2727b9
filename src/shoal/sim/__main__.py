"""``python -m shoal.sim --peers N --seed S``: run one seeded simulation and report.

Every chosen parameter is printed first; a failure prints the command that
replays it exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys

from shoal.mesh import config as mesh_config
from shoal.sim.scenarios import SCENARIOS, Options, run, sim_config


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m shoal.sim", description=__doc__)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="chaos")
    p.add_argument("--peers", type=int, default=5)
    p.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    p.add_argument("--writes", type=int, default=60)
    p.add_argument("--partitions", type=int, default=2, help="partitions during the safety phase")
    p.add_argument("--kills", type=int, default=1, help="kills (each followed by a restart)")
    p.add_argument("--drop", type=float, default=0.02)
    p.add_argument("--duplicate", type=float, default=0.02)
    p.add_argument("--safety-seconds", type=float, default=30.0)
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--join", action="store_true", help="form the cluster by joins, not preformed")
    p.add_argument("--scopes", type=int, default=0,
                   help="chaos: Scope objects (tenants) over subsets of the peers")
    p.add_argument("--scope-changes", type=int, default=0,
                   help="chaos with scopes: members added to or removed from a Scope meanwhile")
    p.add_argument("--sites", type=int, default=0,
                   help="chaos: sites of 2 super-peers and weak peers each (about --peers in all)")
    p.add_argument("--sites-per-region", type=int, default=0,
                   help="with --sites: consecutive sites grouped in regions of this many")
    p.add_argument("--torn-commits", action="store_true",
                   help="chaos: simulated disks; each kill tears the commit in progress")
    p.add_argument("--stale-restarts", type=int, default=0,
                   help="chaos: restarts from a backup of the data dir taken before the kill")
    p.add_argument("--clock-jumps", type=int, default=0,
                   help="chaos: one peer's wall clock jumps forwards or backwards")
    p.add_argument("--preset", choices=["sim", "default", "lan", "wan"], default="sim")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**32)
    cfg = sim_config() if a.preset == "sim" else getattr(mesh_config, a.preset)()
    logging.basicConfig(level=logging.INFO if a.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    return Options(
        peers=a.peers, seed=seed, scenario=a.scenario, writes=a.writes,
        partitions=a.partitions, kills=a.kills, drop=a.drop, duplicate=a.duplicate,
        safety_seconds=a.safety_seconds, idle_seconds=a.idle_seconds,
        preformed=not a.join, scopes=a.scopes,
        scope_changes=a.scope_changes,
        sites=a.sites, sites_per_region=a.sites_per_region,
        torn_commits=a.torn_commits, stale_restarts=a.stale_restarts,
        clock_jumps=a.clock_jumps, config=cfg,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    print("parameters:")
    for k, v in dataclasses.asdict(opts).items():
        if k != "config":
            print(f"  {k} = {v}")
    for k, v in dataclasses.asdict(opts.config).items():
        print(f"  config.{k} = {v}")
    sys.stdout.flush()
    report = run(opts)
    out = report.to_dict()
    del out["options"]
    if "control" in report.options:  # control-partition: its own figures (shoal.sim.workloads)
        out["control"] = report.options["control"]
    print(json.dumps(out, indent=2))
    if not report.ok:
        print("FAILED:", file=sys.stderr)
        for f in report.failures:
            print(f"  {f}", file=sys.stderr)
        print(f"reproduce with: {opts.command()}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
