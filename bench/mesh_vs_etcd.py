"""Replication figures: propagation between Shoal peers, and Shoal beside etcd.

- Propagation: 5 Shoal peers on loopback; a write on A, the event on a watch on B.
- Side by side: 3 Shoal members and a 3-member etcd cluster (Debian's etcd-server),
  each member behind a user-space link proxy adding 10 ms each way (this kernel has
  no tc netem): API write latency on Shoal, put latency on etcd.
- Partition: each system in network namespaces, one member cut off with iptables;
  how many writes the cut-off member accepts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.processes import (
    EtcdMember,
    KeepAlive,
    ShoalMember,
    percentiles,
    start_shoal_cluster,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tools import netns  # noqa: E402
from tests.tools.linkproxy import ThreadedLinkProxy  # noqa: E402

DELAY = 0.010


def _cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"k": "v"}}


def propagation(work: Path, peers: int = 5, writes: int = 200) -> dict[str, Any]:
    members = [ShoalMember(f"p{i}", work) for i in range(peers)]
    try:
        start_shoal_cluster(members)
        a, b = members[0], members[1]
        arrived: dict[str, float] = {}
        _, body = b.request("GET", "/api/v1/namespaces/default/configmaps")
        rv = body["metadata"]["resourceVersion"]
        req = urllib.request.Request(
            f"{b.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
            "&timeoutSeconds=300", headers={"Authorization": f"Bearer {b.token}"})
        stream = urllib.request.urlopen(req, context=b.ca(), timeout=300)

        def read() -> None:
            try:
                while True:
                    line = stream.readline()
                    if not line:
                        return
                    ev = json.loads(line)
                    arrived.setdefault(ev["object"]["metadata"]["name"], time.perf_counter())
            except (OSError, AttributeError, ValueError):
                return  # the stream was closed under us at the end

        threading.Thread(target=read, daemon=True).start()
        time.sleep(0.5)
        sent: dict[str, float] = {}
        conn = a.session()
        for i in range(writes):
            name = f"prop-{i}"
            sent[name] = time.perf_counter()
            conn.request("POST", "/api/v1/namespaces/default/configmaps", _cm(name))
            time.sleep(0.01)
        conn.close()
        wait_until(lambda: len(arrived) >= writes, 30, "every write to reach B's watch")
        # The reader thread holds the stream; it ends when the peers stop (closing it from
        # here would wait on the reader's lock).
        return {"peers": peers, **percentiles([arrived[n] - sent[n] for n in sent])}
    finally:
        for m in members:
            m.stop()


def shoal_with_delay(work: Path, writes: int = 200) -> dict[str, Any]:
    members = [ShoalMember(f"s{i}", work) for i in range(3)]
    proxies = [ThreadedLinkProxy(("127.0.0.1", m.peer_port), delay=DELAY) for m in members]
    try:
        start_shoal_cluster(members, [p.address_str for p in proxies])
        conn = members[0].session()
        lat = []
        for i in range(writes):
            t0 = time.perf_counter()
            code, _ = conn.request("POST", "/api/v1/namespaces/default/configmaps",
                                   _cm(f"d-{i}"))
            lat.append(time.perf_counter() - t0)
            assert code == 201, code
        conn.close()
        return percentiles(lat)
    finally:
        for m in members:
            m.stop()
        for p in proxies:
            p.close()


def etcd_with_delay(work: Path, writes: int = 200) -> dict[str, Any]:
    members = [EtcdMember(f"e{i}", work) for i in range(3)]
    proxies = [ThreadedLinkProxy(("127.0.0.1", m.peer_port), delay=DELAY) for m in members]
    cluster = ",".join(f"{m.name}=http://{p.address_str}" for m, p in zip(members, proxies,
                                                                            strict=True))
    try:
        for m, p in zip(members, proxies, strict=True):
            m.start(cluster, f"http://{p.address_str}")
        wait_until(lambda: all(m.healthy() for m in members), 60, "etcd to be healthy")
        import base64

        conn = KeepAlive(members[0].host, members[0].client_port)
        lat = []
        for i in range(writes):
            body = {"key": base64.b64encode(f"/bench/d-{i}".encode()).decode(),
                    "value": base64.b64encode(b"v").decode()}
            t0 = time.perf_counter()
            code, _ = conn.request("POST", "/v3/kv/put", body)
            lat.append(time.perf_counter() - t0)
            assert code == 200, code
        conn.close()
        return percentiles(lat)
    finally:
        for m in members:
            m.stop()
        for p in proxies:
            p.close()


def _minority_writes(ns: netns.Namespace, cmd: list[str], attempts: int) -> int:
    ok = 0
    for i in range(attempts):
        r = ns.run([c.replace("{i}", str(i)) for c in cmd], capture_output=True, text=True,
                   timeout=30)
        ok += r.returncode == 0
    return ok


def partition(work: Path, attempts: int = 20) -> dict[str, Any]:
    why = netns.missing(need_iptables=True)
    if why:
        return {"skipped": why}
    out: dict[str, Any] = {"attempts": attempts}
    with netns.NetnsLab() as lab:
        spaces = [lab.add(x) for x in ("a", "b", "c")]
        shoal = [ShoalMember(f"n{i}", work, host=ns.ip, prefix=ns.exec_args([]))
                 for i, ns in enumerate(spaces)]
        try:
            start_shoal_cluster(shoal)
            lab.cut(spaces[2], mode="drop")
            c = shoal[2]
            kubectl = [str(Path(sys.executable).parent / "kubectl"), "--server",
                       f"https://127.0.0.1:{c.api_port}", "--token", c.token,
                       "--certificate-authority", str(c.data / "pki" / "ca.crt"),
                       "--request-timeout", "2s", "create", "configmap", "minority-{i}"]
            out["shoal_minority_successes"] = _minority_writes(spaces[2], kubectl, attempts)
            lab.heal(spaces[2])
        finally:
            for m in shoal:
                m.stop()
        etcd = [EtcdMember(f"e{i}", work, host=ns.ip, prefix=ns.exec_args([]))
                for i, ns in enumerate(spaces)]
        cluster = ",".join(f"{m.name}=http://{m.host}:{m.peer_port}" for m in etcd)
        try:
            for m in etcd:
                m.start(cluster, f"http://{m.host}:{m.peer_port}")
            wait_until(lambda: all(m.healthy() for m in etcd), 60, "etcd to be healthy")
            lab.cut(spaces[2], mode="drop")
            put = ["etcdctl", "--endpoints", f"http://127.0.0.1:{etcd[2].client_port}",
                   "--command-timeout=2s", "put", "/minority/{i}", "v"]
            out["etcd_minority_successes"] = _minority_writes(spaces[2], put, attempts)
        finally:
            for m in etcd:
                m.stop()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is missing: `make bench` installs Debian's etcd-server")
    work = Path(tempfile.mkdtemp(prefix="shoal-mesh-bench-"))
    writes = 50 if quick else 200
    try:
        result: dict[str, Any] = {"added_delay_each_way_ms": DELAY * 1000}
        result["propagation_5_peers"] = propagation(work / "prop", writes=writes)
        result["shoal_write_3_members_10ms"] = shoal_with_delay(work / "shoal", writes)
        result["etcd_put_3_members_10ms"] = etcd_with_delay(work / "etcd", writes)
        result["shoal_over_etcd_p50"] = (result["shoal_write_3_members_10ms"]["p50_ms"]
                                         / result["etcd_put_3_members_10ms"]["p50_ms"])
        result["partition"] = partition(work / "part", attempts=10 if quick else 20)
        return result
    finally:
        subprocess.run(["pkill", "-f", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
