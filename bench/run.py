"""Run every benchmark and write the results as JSON under bench/results/."""

from __future__ import annotations

import datetime
import json
import resource
import sys
from pathlib import Path

from bench import api_single_node

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    # 1,000 watchers need more descriptors than the usual soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    quick = "--quick" in sys.argv
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {"when": stamp, "command": "make bench", "api_single_node": api_single_node.run(quick)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"api-single-node-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
