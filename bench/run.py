"""Run every benchmark and write the results as JSON under bench/results/.

`make bench` runs them all; `make bench BENCH_ARGS="--quick"` runs shorter versions;
`BENCH_ARGS="--only=api_single_node,mesh_vs_etcd"` picks some. A run's file holds
the suites it ran; ``latest.json`` keeps the newest figures of every suite (each
with the ``when`` of its run), so a run of some suites does not drop the others.
"""

from __future__ import annotations

import datetime
import importlib
import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SUITES = ["api_single_node",
          "create_stages",  # a pod create's stages in process, best of runs (part P)
          "api_load",  # 200 concurrent clients for 60 s: errors, latency, RSS given back
          "mesh_vs_etcd", "sim_convergence", "pod_startup", "deploy_30",
          "pod_startup_runc", "control_plane",
          "pod_startup_podnet",  # pod network: runc pods, each with its own CNI network
          "dns",  # cluster DNS: queries/s and latency of one node
          "service_proxy",  # Service rules: slice change to rules applied, ClusterIP cost
          "services_across_nodes",  # two runc nodes: ClusterIP cost, Ready to traffic
          "authz",  # authz: authorize() per call; creates/gets as admin vs an edit user
          "scale",  # super-peers: the simulator at 100, 1,000 and 10,000 peers
          "bus",  # the data plane: Shoal's nats-server wiring against a hand configuration
          "devices",  # device mappers: MQTT readings/s, desired to Modbus register p50/p99
          "footprint",  # RSS idle and with 100 pods, installed size, time to serve
          "crypto"]  # Secrets and tokens: system libcrypto against cryptography, CPU per op


def main() -> int:
    # 1,000 watchers need more descriptors than the usual soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    quick = "--quick" in sys.argv
    only = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), None)
    suites = only.split(",") if only else SUITES
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {"when": stamp, "command": "make bench", "quick": quick}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{stamp}.json"
    for name in suites:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
        except ImportError as e:
            result[name] = {"error": f"not available: {e}"}
            continue
        # The full 1,000-peer partition run needs more than 24 GiB: --full-sim asks for it.
        suite_quick = quick or (name == "sim_convergence" and "--full-sim" not in sys.argv)
        try:
            result[name] = module.run(suite_quick)
        except Exception as e:  # one failing suite must not lose the others' figures
            traceback.print_exc()
            result[name] = {"error": f"{type(e).__name__}: {e}"}
        result[name]["wall_seconds"] = round(time.monotonic() - t0, 1)
        result[name]["quick"] = suite_quick
        result[name]["when"] = stamp
        print(json.dumps(result[name], indent=2), flush=True)
        # Written after every suite, so a later crash keeps what was measured.
        out.write_text(json.dumps(result, indent=2) + "\n")
        _update_latest(result)
    print(f"written to {out}")
    return 0


def _update_latest(result: dict[str, Any]) -> None:
    latest_path = RESULTS / "latest.json"
    try:
        latest: dict[str, Any] = json.loads(latest_path.read_text())
    except (OSError, ValueError):
        latest = {}
    for figures in latest.values():  # a suite from an older run keeps that run's stamp
        if isinstance(figures, dict) and "wall_seconds" in figures:
            figures.setdefault("when", latest.get("when"))
    latest.update(result)
    latest_path.write_text(json.dumps(latest, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
