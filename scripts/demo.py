"""`make demo`: three Shoal peers, an app spread over them, a partition and a heal.

As root with runc, nftables and the CNI plugins, the peers run in network
namespaces with the pod network, Services and cluster DNS (scripts/demo_netns.py).
Otherwise, or with SHOAL_DEMO_LOOPBACK=1, each peer binds its own loopback address
(127.0.0.11-13), so iptables can cut one off from the others while kubectl (from
127.0.0.1) still reaches every peer. SHOAL_DEMO_ADDRESSES (three, comma-separated),
SHOAL_DEMO_API_PORT and SHOAL_DEMO_PEER_PORT choose others; without them, a default
port that is taken on those addresses is replaced by a free one, and the demo says so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import demo_netns
from demo_common import BIN, ROOT, hold, kubectl, say, start_server, step, stop_server, wait

NAMES = ["edge-1", "edge-2", "edge-3"]
ADDRESSES = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
API_PORT = 6443
PEER_PORT = 7443


def _free_on_all(ips: list[str], port: int) -> bool:
    for ip in ips:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


def _port(variable: str, default: int, ips: list[str], taken: set[int]) -> int:
    """The port from ``variable``, else ``default`` if it is free on every address, else
    a free one (said so)."""
    given = os.environ.get(variable)
    if given:
        if not given.isdigit() or not 0 < int(given) < 65536:
            raise SystemExit(f"{variable}={given!r} is not a port")
        return int(given)
    if _free_on_all(ips, default) and default not in taken:
        return default
    while True:
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = int(s.getsockname()[1])
        if port not in taken and _free_on_all(ips, port):
            say(f"port {default} is taken on {', '.join(ips)}: using {port} "
                f"({variable} chooses one)")
            return port


def demo_addresses() -> tuple[list[str], int, int]:
    """The peers' addresses and their API and peer ports, from the environment or free."""
    ips = [a.strip() for a in os.environ.get("SHOAL_DEMO_ADDRESSES", "").split(",") if a.strip()]
    if ips and len(ips) != 3:
        raise SystemExit(f"SHOAL_DEMO_ADDRESSES needs three addresses, got {len(ips)}")
    ips = ips or ADDRESSES
    api = _port("SHOAL_DEMO_API_PORT", API_PORT, ips, set())
    return ips, api, _port("SHOAL_DEMO_PEER_PORT", PEER_PORT, ips, {api})
HEARTBEAT, GRACE, EVICTION = "2s", "6s", "8s"
SITES = {"edge-1": "cloud", "edge-2": "farm-a", "edge-3": "farm-b"}
"""The bus's sites (examples/sensors.yaml): edge-1 is the hub."""


class Peer:
    def __init__(self, name: str, ip: str, work: Path, api_port: int, peer_port: int) -> None:
        self.name, self.ip, self.work = name, ip, work
        self.api_port, self.peer_port = api_port, peer_port
        self.data = work / name
        self.log = work / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.ip}:{self.api_port}"

    def start(self, *extra: str) -> None:
        # No Service proxy: three peers in one namespace would fight over one nftables table.
        self.proc = start_server(
            [str(BIN / "shoal"), "server", "--name", self.name, "--data-dir", str(self.data),
             "--bind", self.ip, "--api-port", str(self.api_port),
             "--peer-port", str(self.peer_port),
             "--heartbeat-interval", HEARTBEAT, "--node-monitor-grace-period", GRACE,
             "--pod-eviction-timeout", EVICTION, "--runtime", "process", "--proxy-mode", "none",
             *extra], self.log, self.url, self.name)

    def stop(self) -> None:
        stop_server(self.proc)


class Demo:
    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
        ips, api_port, self.peer_port = demo_addresses()
        self.peers = [Peer(n, ip, self.work, api_port, self.peer_port)
                      for n, ip in zip(NAMES, ips, strict=True)]
        self.kubeconfig = self.work / "kubeconfig"
        self.cut_rules: list[list[str]] = []

    def kubectl(self, peer: Peer, *args: str, show: bool = True, check: bool = False) -> str:
        return kubectl(self.kubeconfig, peer.url, *args, show=show, check=check)

    def pods(self, peer: Peer) -> list[dict[str, Any]]:
        out = self.kubectl(peer, "get", "pods", "-l", "app=hello", "-o", "json", show=False)
        if not out:
            return []
        return [p for p in json.loads(out)["items"]
                if not p["metadata"].get("deletionTimestamp")]

    def spread(self, peer: Peer) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.pods(peer):
            if (p.get("status") or {}).get("phase") == "Running":
                node = p["spec"].get("nodeName", "?")
                counts[node] = counts.get(node, 0) + 1
        return dict(sorted(counts.items()))

    def wait(self, check: Any, timeout: float, what: str) -> float:
        return wait(check, timeout, what)

    def live_page(self) -> None:
        a = self.peers[0]
        step("the live page: every peer draws the mesh as it sees it")
        self.kubectl(a, "-n", "default", "create", "serviceaccount", "live-page")
        for role in ("view", "system:monitoring"):
            self.kubectl(a, "create", "clusterrolebinding", "live-page-" + role.replace(":", "-"),
                         f"--clusterrole={role}", "--serviceaccount=default:live-page")
        token_file = self.work / "live-page.token"
        token_file.write_text(self.kubectl(a, "-n", "default", "create", "token", "live-page",
                                           "--duration=2h", show=False))
        token_file.chmod(0o600)
        say(f"live page: {a.url}/ui/ (while the demo runs); log in with the token in "
            f"{token_file} (a ServiceAccount bound to view and system:monitoring), or open "
            f"{a.url}/ui/#token=<the token>")

    # -- partition: iptables between the peers' loopback addresses -------------------------

    def can_cut(self) -> str | None:
        if os.geteuid() != 0:
            return "not root"
        if shutil.which("iptables") is None:
            return "iptables is missing (make sysdeps installs it)"
        return None

    def cut(self, victim: Peer) -> None:
        for other in self.peers:
            if other is victim:
                continue
            for src, dst in ((victim.ip, other.ip), (other.ip, victim.ip)):
                rule = ["INPUT", "-s", src, "-d", dst, "-p", "tcp", "--dport", str(self.peer_port),
                        "-j", "DROP"]
                subprocess.run(["iptables", "-I", *rule], check=True)
                self.cut_rules.append(rule)
                rule = ["INPUT", "-s", src, "-d", dst, "-p", "tcp", "--sport", str(self.peer_port),
                        "-j", "DROP"]
                subprocess.run(["iptables", "-I", *rule], check=True)
                self.cut_rules.append(rule)

    def heal(self) -> None:
        for rule in self.cut_rules:
            subprocess.run(["iptables", "-D", *rule], check=False)
        self.cut_rules.clear()

    # -- the story ---------------------------------------------------------------------------

    def run(self) -> None:
        a, b, c = self.peers
        step("three peers on loopback, no leader: every one serves the Kubernetes API")
        a.start("--site", SITES[a.name])
        # One token for both joins, in a 0600 file: a token is single use by default, and a
        # file keeps it out of `ps`.
        token_file = self.work / "join.token"
        with open(token_file, "w") as f:
            subprocess.run([str(BIN / "shoal"), "token", "create", "--uses", "2", "--data-dir",
                            str(a.data)], check=True, stdout=f)
        for p in (b, c):
            p.start("--site", SITES[p.name], "--join", f"{a.ip}:{self.peer_port}",
                    "--token-file", str(token_file))
        # Kubeconfigs are made on the signer (a); with --server they work on every peer.
        subprocess.run([str(BIN / "shoal"), "kubeconfig", "--data-dir", str(a.data), "--server",
                        a.url, "--output", str(self.kubeconfig)], check=True)
        say(f"data and logs in {self.work}; one kubeconfig for all: {self.kubeconfig}")
        self.wait(lambda: len(json.loads(self.kubectl(c, "get", "nodes", "-o", "json",
                                                      show=False) or "{}").get("items", [])) == 3,
                  30, "every peer to see every node")
        self.kubectl(c, "get", "nodes", "-o", "wide")
        self.live_page()

        step("a write on edge-1 appears on edge-3")
        t0 = time.monotonic()
        self.kubectl(a, "create", "configmap", "greeting", "--from-literal=hello=from-edge-1")
        took = self.wait(lambda: "from-edge-1" in self.kubectl(
            c, "get", "configmap", "greeting", "-o", "jsonpath={.data.hello}", show=False),
            10, "replication")
        say(f"seen on edge-3 {took * 1000:.0f} ms after the write on edge-1 (polling every 300 ms)")
        self.kubectl(c, "get", "configmap", "greeting", "-o", "jsonpath={.data}{\"\\n\"}")

        step("deploy the sample app (6 replicas) through edge-2; it spreads over the peers")
        self.kubectl(b, "apply", "-f", str(ROOT / "examples" / "app.yaml"))
        self.kubectl(b, "scale", "deployment/hello", "--replicas=6")
        self.kubectl(b, "rollout", "status", "deployment/hello", "--timeout=60s")
        self.kubectl(b, "get", "pods", "-l", "app=hello", "-o", "wide")
        originals = {p["metadata"]["name"] for p in self.pods(b)
                     if p["spec"].get("nodeName") == c.name}
        say(f"running per peer: {self.spread(b)}")
        pod = next(iter(originals), None)
        if pod:
            self.kubectl(a, "logs", pod, "--tail=1")

        self.sensors()
        why = self.can_cut()
        if why is not None:
            step(f"(skipping the partition: {why})")
            return
        step("cut edge-3 off from the others (iptables between the peers' addresses)")
        self.cut(c)
        say("edge-3 keeps serving reads and writes on its own:")
        self.kubectl(c, "create", "configmap", "written-while-cut",
                     "--from-literal=by=edge-3")
        self.kubectl(c, "get", "configmaps")
        say(f"waiting for edge-1 to see edge-3 NotReady (grace {GRACE}), then replace its pods "
            f"elsewhere (eviction timeout {EVICTION}; they are not deleted)...")
        self.wait(lambda: "NotReady" in self.kubectl(a, "get", "node", c.name, show=False), 30,
                  "edge-3 to turn NotReady")
        self.kubectl(a, "get", "nodes")
        self.wait(lambda: sum(n for node, n in self.spread(a).items() if node != c.name) >= 6,
                  60, "replacements on edge-1 and edge-2")
        self.kubectl(a, "get", "pods", "-l", "app=hello", "-o", "wide")
        say(f"majority side, running per peer: {self.spread(a)}")
        say(f"edge-3's own view, running per peer: {self.spread(c)}")

        step("`shoal status` on edge-1, during the cut: what edge-1's side sees")
        r = subprocess.run([str(BIN / "shoal"), "status", "--kubeconfig", str(self.kubeconfig),
                            "--server", a.url], capture_output=True, text=True, timeout=60)
        print(f"$ shoal status --kubeconfig {self.kubeconfig} --server {a.url}")
        sys.stdout.write(r.stdout if r.returncode == 0 else r.stdout + r.stderr)
        sys.stdout.flush()

        step("heal: the replicas merge; the trim keeps the pods that have run longest")
        self.heal()
        t0 = time.monotonic()
        self.wait(lambda: "NotReady" not in self.kubectl(a, "get", "nodes", show=False), 30,
                  "edge-3 to be Ready again")
        self.wait(lambda: sum(self.spread(a).values()) == 6 and len(self.pods(a)) == 6, 60,
                  "the trim back to 6")
        say(f"converged {time.monotonic() - t0:.1f}s after the heal")
        self.kubectl(a, "get", "pods", "-l", "app=hello", "-o", "wide")
        kept = {p["metadata"]["name"] for p in self.pods(a)} & originals
        say(f"edge-3's original pods still there: {len(kept)} of {len(originals)}")
        say("the write made on edge-3 while it was cut off is on edge-1:")
        self.kubectl(a, "get", "configmap", "written-while-cut", "-o",
                     "jsonpath={.metadata.name} {.data}{\"\\n\"}")
        # The cut drops the peer port only: farm-b's leaf link to the hub stays up.
        say(f"readings the aggregator on {a.name} has received, by site: {self.aggregated()}")

    def aggregated(self) -> dict[str, int]:
        """Readings the aggregator at the hub has printed, by the site they came from."""
        out = self.kubectl(self.peers[0], "logs", "deploy/aggregator", show=False)
        counts: dict[str, int] = {}
        for line in out.splitlines():
            try:
                site = json.loads(line.split(" ", 1)[1])["site"]
            except (IndexError, ValueError, KeyError, TypeError):
                continue
            counts[site] = counts.get(site, 0) + 1
        return dict(sorted(counts.items()))

    def sensors(self) -> None:
        a = self.peers[0]
        if shutil.which("nats-server") is None:
            step("(skipping the data plane: nats-server is missing; make sysdeps installs it)")
            return
        step("the data plane: a sensor at each edge site, an aggregator at the hub "
             "(examples/sensors.yaml)")
        self.kubectl(a, "label", "node", a.name, "shoal.dev/hub=true")
        self.kubectl(a, "apply", "-f", str(ROOT / "examples" / "sensors.yaml"))
        took = self.wait(lambda: len(self.aggregated()) == 2, 60,
                         "the aggregator to hear from both edge sites")
        say(f"the aggregator on {a.name} has readings from both edge sites {took:.1f}s after "
            f"the apply: {self.aggregated()}")
        self.kubectl(a, "get", "streams", "-o", "wide")

    def close(self) -> None:
        self.heal()
        for p in self.peers:
            p.stop()
        if os.environ.get("SHOAL_DEMO_KEEP") is None:
            shutil.rmtree(self.work, ignore_errors=True)


def main() -> int:
    why = "SHOAL_DEMO_LOOPBACK is set" if os.environ.get("SHOAL_DEMO_LOOPBACK") \
        else demo_netns.missing()
    if why is None:
        demo_netns.main()
    else:
        step(f"(no network namespaces: {why}; the peers run on loopback with the process "
             "runtime, no pod network, Services or DNS)")
        demo = Demo()
        try:
            demo.run()
            hold(demo.kubeconfig, {p.name: p.url for p in demo.peers})
        finally:
            demo.close()
    print("\nDone. SHOAL_DEMO_KEEP=1 make demo keeps the data dirs and logs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
