"""A 30-replica Deployment on 3 real peers: time from the create to all bound, and all Running."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.processes import ShoalMember, start_shoal_cluster


def _deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "thirty"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "thirty"}},
            "template": {"metadata": {"labels": {"app": "thirty"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox:1.36",
                                "command": ["sh", "-c", "while true; do sleep 5; done"]}]}},
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    replicas = 30
    work = Path(tempfile.mkdtemp(prefix="shoal-deploy-bench-"))
    members = [ShoalMember(f"d{i}", work) for i in range(3)]
    try:
        start_shoal_cluster(members)
        a = members[0]
        conn = a.session()
        t0 = time.perf_counter()
        code, _ = conn.request("POST", "/apis/apps/v1/namespaces/default/deployments",
                               _deployment(replicas))
        assert code == 201, code
        bound_at = running_at = None
        per_node: dict[str, int] = {}
        while time.perf_counter() - t0 < 120:
            _, body = conn.request("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dthirty")
            pods = body["items"]
            bound = [p for p in pods if (p.get("spec") or {}).get("nodeName")]
            up = [p for p in bound if (p.get("status") or {}).get("phase") == "Running"]
            if bound_at is None and len(bound) >= replicas:
                bound_at = time.perf_counter() - t0
            if len(up) >= replicas:
                running_at = time.perf_counter() - t0
                per_node = {}
                for p in up:
                    per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
                break
            time.sleep(0.02)
        conn.close()
        return {"replicas": replicas, "peers": 3, "seconds_to_all_bound": bound_at,
                "seconds_to_all_running": running_at, "running_per_peer": per_node}
    finally:
        for m in members:
            m.stop()
        subprocess.run(["pkill", "-f", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=2))
