"""`make demo` with the real network: three peers, each in its own network namespace.

Each peer runs ``shoal server --runtime runc --pod-network cni --proxy-mode nftables``
inside a namespace of its own, linked to the others by a veth on one bridge, so its pod
bridge, VXLAN device, pods' namespaces and nftables tables live and die with that
namespace. The app: a ``backend`` Deployment spread over the peers and a ``frontend``
DaemonSet whose pods fetch ``http://backend.demo.svc.cluster.local`` by name. A peer is
cut off by pulling its cable (its veth goes down). kubectl runs inside each peer's
namespace, as a user on that site would, so it reaches the cut-off peer too.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import demo_image
from demo_common import BIN, hold, kubectl, say, start_server, step, stop_server, wait

IMAGE = "shoal.demo/app:v1"
NS = "demo"
BACKEND = f"backend.{NS}.svc.cluster.local"
BRIDGE = "shoaldemo0"
SUBNET = "10.213.0"
"""The peers' underlay, 10.213.0.0/24: clear of the pod CIDR and the service CIDR."""
PEERS = ["edge-1", "edge-2", "edge-3"]
SITES = {"edge-1": "cloud", "edge-2": "cloud", "edge-3": "farm"}
"""edge-1 and edge-2 are the hub site (VXLAN between them), edge-3 a farm (WireGuard to them)."""
MESSAGES = 1000
LIVE_PAGE_SA = "live-page"
TENANT = "tenant-a"
SCOPE = f"""
apiVersion: shoal.dev/v1alpha1
kind: Scope
metadata: {{name: {TENANT}}}
spec: {{namespaces: [{TENANT}], members: [edge-1, edge-2]}}
"""
API_PORT, PEER_PORT = 6443, 7443
HEARTBEAT, GRACE, EVICTION = "2s", "6s", "8s"
ASKS = 12
"""Requests per look at a frontend: all 12 miss a backend that gets a third of them 0.8% of
the time."""

# No readiness probes: the node agent probes the node's address, not the pod's, so under the
# pod network a tcpSocket probe never succeeds (reported); httpd listens as soon as it starts.
APP = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    {"apiVersion": "apps/v1", "kind": "Deployment",
     "metadata": {"name": "backend", "namespace": NS},
     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "backend"}},
              "template": {"metadata": {"labels": {"app": "backend"}}, "spec": {
                  "terminationGracePeriodSeconds": 1,
                  "topologySpreadConstraints": [{
                      "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                      "whenUnsatisfiable": "DoNotSchedule",
                      "labelSelector": {"matchLabels": {"app": "backend"}}}],
                  "containers": [{
                      "name": "backend", "image": IMAGE, "command": ["/app/backend"],
                      "env": [{"name": "POD_NAME",
                               "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                              {"name": "NODE_NAME",
                               "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}},
    {"apiVersion": "v1", "kind": "Service",
     "metadata": {"name": "backend", "namespace": NS},
     "spec": {"selector": {"app": "backend"},
              "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet",
     "metadata": {"name": "frontend", "namespace": NS},
     "spec": {"selector": {"matchLabels": {"app": "frontend"}},
              "template": {"metadata": {"labels": {"app": "frontend"}}, "spec": {
                  "terminationGracePeriodSeconds": 1,
                  "containers": [{
                      "name": "frontend", "image": IMAGE, "command": ["/app/frontend"],
                      "env": [{"name": "BACKEND", "value": BACKEND},
                              {"name": "NODE_NAME",
                               "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}},
]

STREAMS = """
apiVersion: jetstream.nats.io/v1beta2
kind: Stream
metadata: {name: sensors-farm}
spec:
  subjects: ["sensors.farm.>"]
  duplicateWindow: 2m
  placement: {site: farm}
---
apiVersion: jetstream.nats.io/v1beta2
kind: Stream
metadata: {name: sensors}
spec:
  sources: [{name: sensors-farm, domain: farm}]
  duplicateWindow: 2m
  placement: {site: cloud}
"""

# Runs inside edge-3's namespace, which it reaches while its cable is pulled: each message
# is acknowledged by the farm's stream, so acknowledged means stored at the edge.
PUBLISH = """
import asyncio, json, sys, time, nats
async def main(count):
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    t0, domains = time.monotonic(), set()
    for i in range(count):
        ack = await js.publish("sensors.farm.t1", b"%d" % i, headers={"Nats-Msg-Id": f"m{i}"})
        domains.add(ack.domain)
    await nc.close()
    print(json.dumps({"acked": count, "seconds": time.monotonic() - t0,
                      "domains": sorted(domains)}))
asyncio.run(main(int(sys.argv[1])))
"""

# Runs inside a hub peer's namespace: how many messages the hub's stream holds.
HUB_COUNT = """
import asyncio, sys, nats
async def main(stream):
    nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=3)
    try:
        print(int((await nc.jsm().stream_info(stream)).state.messages or 0))
    finally:
        await nc.close()
asyncio.run(main(sys.argv[1]))
"""

# Runs inside a peer's namespace: ASKS requests at once to a frontend pod, one body each.
CLIENT = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
ip, n = sys.argv[1], int(sys.argv[2])
def ask(_):
    try:
        with socket.create_connection((ip, 8080), timeout=5) as s:
            s.settimeout(5)
            s.sendall(b"GET /cgi-bin/ask HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[-1].decode().strip()
    except OSError as e:
        return "error: " + type(e).__name__
with ThreadPoolExecutor(n) as pool:
    print(json.dumps(list(pool.map(ask, range(n)))))
"""


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def missing() -> str | None:
    """Why this demo cannot run here (then `make demo` falls back to loopback), or None."""
    if os.geteuid() != 0:
        return "network namespaces, runc and nftables need root"
    for tool, package in (("ip", "iproute2"), ("nsenter", "util-linux"), ("runc", "runc"),
                          ("nft", "nftables")):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            return f"`{tool}` is missing (Debian package {package}; make sysdeps installs it)"
    if not Path("/usr/lib/cni/bridge").exists():
        return "the CNI plugins are missing (Debian package containernetworking-plugins)"
    why = demo_image.missing()
    if why is not None:
        return why
    probe = f"shoaldemoprobe{os.getpid()}"
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` does not work here: {r.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Peer:
    name: str
    index: int
    work: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self.index + 2}"

    @property
    def netns(self) -> str:
        return f"shoal-demo-{self.name}"

    @property
    def host_if(self) -> str:
        return f"sdemo-h{self.index + 1}"

    @property
    def data(self) -> Path:
        return self.work / self.name

    @property
    def log(self) -> Path:
        return self.work / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"https://{self.ip}:{API_PORT}"

    def inside(self, args: list[str]) -> list[str]:
        # nsenter, not `ip netns exec`: that mounts a fresh /sys, hiding the cgroups runc needs.
        return ["nsenter", f"--net=/run/netns/{self.netns}", *args]


class Lab:
    """The bridge and the peers' namespaces; :meth:`close` removes all of it."""

    def __init__(self, peers: list[Peer]) -> None:
        self.peers = peers
        self.close()  # what an earlier demo killed with SIGKILL may have left
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for p in peers:
            ns_if = f"sdemo-n{p.index + 1}"
            run("ip", "netns", "add", p.netns)
            run("ip", "link", "add", p.host_if, "type", "veth", "peer", "name", ns_if)
            run("ip", "link", "set", ns_if, "netns", p.netns)
            run("ip", "link", "set", p.host_if, "master", BRIDGE)
            run("ip", "link", "set", p.host_if, "up")
            run(*p.inside(["ip", "addr", "add", f"{p.ip}/24", "dev", ns_if]))
            run(*p.inside(["ip", "link", "set", ns_if, "up"]))
            run(*p.inside(["ip", "link", "set", "lo", "up"]))

    def cut(self, peer: Peer) -> None:
        run("ip", "link", "set", peer.host_if, "down")

    def heal(self, peer: Peer) -> None:
        run("ip", "link", "set", peer.host_if, "up")

    def close(self) -> None:
        for p in self.peers:
            # Deleting a namespace deletes what lives in it: shoal0, shoal.vxlan, the nftables
            # tables, the veth pair.
            run("ip", "netns", "del", p.netns, check=False)
            run("ip", "link", "del", p.host_if, check=False)
        run("ip", "link", "del", BRIDGE, check=False)


def remove_pods(peer: Peer) -> None:
    """Containers and pod namespaces outlive ``shoal server`` by design: remove them."""
    runc = shutil.which("runc") or "/usr/sbin/runc"
    state = peer.data / "runc" / "state"
    if state.exists():
        ids = run(runc, "--root", str(state), "list", "-q", check=False).stdout.split()
        for cid in ids:
            run(runc, "--root", str(state), "delete", "--force", cid, check=False)
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        target = line.split()[4]
        if target.startswith(str(peer.data) + "/"):
            run("umount", "-l", target, check=False)


def backend_node(body: str) -> str:
    """``frontend on edge-1 <- backend-x on edge-2`` -> ``edge-2``; anything else as is."""
    if " <- " not in body or " on " not in body.split(" <- ", 1)[1]:
        return body
    return body.rsplit(" on ", 1)[1]


class NetworkDemo:
    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
        self.peers = [Peer(n, i, self.work) for i, n in enumerate(PEERS)]
        self.kubeconfig = self.work / "kubeconfig"
        self.lab: Lab | None = None
        self.frontend_ip: dict[str, str] = {}
        self.originals: set[str] = set()

    # -- helpers --------------------------------------------------------------------------

    def kubectl(self, peer: Peer, *args: str, show: bool = True, stdin: str | None = None,
                check: bool = False) -> str:
        return kubectl(self.kubeconfig, peer.url, *args, show=show, check=check, stdin=stdin,
                       prefix=tuple(peer.inside([])))

    def items(self, peer: Peer, kind: str, *args: str) -> list[dict[str, Any]]:
        out = self.kubectl(peer, "get", kind, "-o", "json", *args, show=False)
        try:
            items: list[dict[str, Any]] = json.loads(out)["items"]
        except (ValueError, KeyError):
            return []
        return [i for i in items if not i["metadata"].get("deletionTimestamp")]

    def pods(self, peer: Peer, app: str) -> list[dict[str, Any]]:
        return self.items(peer, "pods", "-n", NS, "-l", f"app={app}")

    def running(self, peer: Peer, app: str) -> dict[str, list[str]]:
        """Node -> names of the app's pods Running there, in ``peer``'s view."""
        out: dict[str, list[str]] = {}
        for p in self.pods(peer, app):
            if (p.get("status") or {}).get("phase") == "Running":
                out.setdefault(p["spec"].get("nodeName", "?"), []).append(p["metadata"]["name"])
        return dict(sorted(out.items()))

    def ask(self, peer: Peer, n: int = ASKS) -> list[str]:
        """``n`` requests to ``peer``'s frontend pod, from a process on ``peer``."""
        r = subprocess.run(peer.inside([sys.executable, "-c", CLIENT,
                                        self.frontend_ip[peer.name], str(n)]),
                           capture_output=True, text=True, timeout=60)
        try:
            answers: list[str] = json.loads(r.stdout)
        except ValueError:
            return [f"error: {r.stderr.strip()[-200:]}"]
        return answers

    @staticmethod
    def tally(answers: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in answers:
            node = backend_node(a)
            counts[node] = counts.get(node, 0) + 1
        return dict(sorted(counts.items()))

    # -- the story ------------------------------------------------------------------------

    def start(self) -> None:
        step("three peers, each in its own network namespace: runc, the pod network "
             "(CNI, VXLAN), the Service proxy (nftables) and cluster DNS")
        self.lab = Lab(self.peers)
        archive = self.work / "app.tar"
        demo_image.write_image(archive, IMAGE)
        token_file = self.work / "join.token"
        for p in self.peers:
            subprocess.run([str(BIN / "shoal"), "image", "import", "--data-dir", str(p.data),
                            str(archive)], check=True, capture_output=True)
            join = ["--join", f"{self.peers[0].ip}:{PEER_PORT}", "--token-file",
                    str(token_file)] if token_file.exists() else []
            p.proc = start_server(p.inside([
                str(BIN / "shoal"), "server", "--name", p.name, "--data-dir", str(p.data),
                "--bind", "0.0.0.0", "--advertise", p.ip, "--api-port", str(API_PORT),
                "--peer-port", str(PEER_PORT), "--heartbeat-interval", HEARTBEAT,
                "--node-monitor-grace-period", GRACE, "--pod-eviction-timeout", EVICTION,
                "--runtime", "runc", "--pod-network", "cni", "--proxy-mode", "nftables",
                "--site", SITES[p.name], *join]), p.log, p.url, p.name)
            if not token_file.exists():
                # The first peer is the signer: one token (0600, out of `ps`) for the others,
                # and the kubeconfig, which works on every peer.
                with open(token_file, "w") as f:
                    subprocess.run([str(BIN / "shoal"), "token", "create", "--uses",
                                    str(len(self.peers) - 1), "--data-dir", str(p.data)],
                                   check=True, stdout=f)
                subprocess.run([str(BIN / "shoal"), "kubeconfig", "--data-dir", str(p.data),
                                "--server", p.url, "--output", str(self.kubeconfig)], check=True)
        say(f"namespaces shoal-demo-edge-1..3 on the bridge {BRIDGE} ({SUBNET}.0/24); data "
            f"and logs in {self.work}")
        say("kubectl runs inside each peer's namespace, as a user on that site would")
        a = self.peers[0]
        self.wait_for(lambda: sum(1 for n in self.items(a, "nodes")
                                  if (n.get("spec") or {}).get("podCIDR")) == 3,
                      30, "every peer to get a podCIDR")
        self.kubectl(a, "get", "nodes", "-o", "custom-columns=NAME:.metadata.name,"
                     "INTERNAL-IP:.status.addresses[0].address,POD-CIDR:.spec.podCIDR")

    def sites(self) -> None:
        a, _, c = self.peers
        step("sites: edge-1 and edge-2 are the hub site `cloud`, edge-3 the site `farm`; each "
             "peer's message bus (nats-server) wires itself from the Node labels")
        self.kubectl(a, "label", "node", "edge-1", "edge-2", "shoal.dev/hub=true")
        say("Streams declared once, at the farm: the farm stores what its sensors publish, "
            "the hub's stream sources it across the farm's uplink (the farm dials out)")
        self.kubectl(c, "apply", "-f", "-", stdin=STREAMS)
        took = self.wait_for(lambda: self.stream_messages(a, "sensors") == 0
                             and self.stream_messages(a, "sensors-farm") == 0, 90,
                             "both streams to be created at their sites")
        say(f"both streams exist at their sites {took:.1f}s after the apply")

    def stream_messages(self, peer: Peer, name: str) -> int:
        out = self.kubectl(peer, "get", "stream", name, "-o", "json", show=False)
        try:
            return int((json.loads(out).get("status") or {}).get("messages", -1))
        except (ValueError, TypeError):
            return -1

    def hub_holds(self) -> int:
        """Messages in the hub's stream, asked of edge-1's nats-server (-1: no answer)."""
        r = subprocess.run(self.peers[0].inside([sys.executable, "-c", HUB_COUNT, "sensors"]),
                           capture_output=True, text=True, timeout=30)
        try:
            return int(r.stdout.strip())
        except ValueError:
            return -1

    def live_page(self) -> None:
        a = self.peers[0]
        step("the live page: every peer draws the mesh as it sees it")
        say(f"a ServiceAccount `{LIVE_PAGE_SA}` bound to `view` and to `system:monitoring` "
            "(which may get /shoal/v1/status*, what the page reads)")
        self.kubectl(a, "-n", "default", "create", "serviceaccount", LIVE_PAGE_SA)
        for role in ("view", "system:monitoring"):
            self.kubectl(a, "create", "clusterrolebinding", f"{LIVE_PAGE_SA}-{role}".replace(
                ":", "-"), f"--clusterrole={role}", f"--serviceaccount=default:{LIVE_PAGE_SA}")
        print(f"$ kubectl -n default create token {LIVE_PAGE_SA} --duration=2h", flush=True)
        token = self.kubectl(a, "-n", "default", "create", "token", LIVE_PAGE_SA,
                             "--duration=2h", show=False).strip()
        token_file = self.work / "live-page.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"{a.url}/shoal/v1/status",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                members = len(json.loads(resp.read()).get("members", []))
                checked = f"the token reads {a.url}/shoal/v1/status ({members} members)"
        except (OSError, ValueError) as e:
            checked = f"the token did not read {a.url}/shoal/v1/status: {e}"
        try:
            with urllib.request.urlopen(f"{a.url}/ui/", context=ctx, timeout=10) as resp:
                checked += f"; /ui/ answers {resp.status} ({len(resp.read())} bytes)"
        except OSError as e:
            checked += f"; /ui/ did not answer: {e}"
        say(f"live page: {a.url}/ui/  (from this host, while the demo runs; the certificate "
            "is the cluster's own CA's)")
        say(f"log in with the token in {token_file} (SHOAL_DEMO_KEEP=1 keeps it), or open "
            f"{a.url}/ui/#token=<the token>; {checked}")

    def wait_for(self, check: Any, timeout: float, what: str) -> float:
        return wait(check, timeout, what, every=0.5)

    def deploy(self) -> None:
        a, b, _ = self.peers
        step("deploy through edge-2: a backend Deployment (scaled to 3, spread over the peers) "
             "and a frontend DaemonSet that fetches http://" + BACKEND)
        t0 = time.monotonic()
        self.kubectl(b, "apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in APP))
        # One replica at a time: schedulers on three peers binding at once do not see each
        # other's choices and can ignore the spread constraint.
        for replicas in (1, 2, 3):
            if replicas > 1:
                self.kubectl(b, "-n", NS, "scale", "deployment/backend",
                             f"--replicas={replicas}")
            self.wait_for(lambda n=replicas: sum(len(v) for v in self.running(
                b, "backend").values()) == n, 60, f"{replicas} backends Running")
        self.kubectl(b, "-n", NS, "rollout", "status", "deployment/backend", "--timeout=90s",
                     check=True)
        self.kubectl(b, "-n", NS, "rollout", "status", "daemonset/frontend", "--timeout=90s",
                     check=True)
        say(f"all 6 pods Running {time.monotonic() - t0:.1f}s after the apply")
        self.kubectl(a, "-n", NS, "get", "pods", "-o", "wide")
        cidrs = {n["metadata"]["name"]: ipaddress.ip_network(n["spec"]["podCIDR"])
                 for n in self.items(a, "nodes")}
        inside = 0
        pods = self.pods(a, "backend") + self.pods(a, "frontend")
        for p in pods:
            node, ip = p["spec"].get("nodeName"), (p.get("status") or {}).get("podIP")
            if node in cidrs and ip and ipaddress.ip_address(ip) in cidrs[node]:
                inside += 1
            if p["metadata"]["labels"].get("app") == "frontend" and ip:
                self.frontend_ip[node] = ip
        say(f"{inside} of {len(pods)} pods have an address from their own node's podCIDR")

    def ask_everyone(self) -> None:
        step("each peer's frontend asks for " + BACKEND + f" ({ASKS} requests each)")
        for p in self.peers:
            seen: dict[str, int] = {}

            def all_three(p: Peer = p) -> bool:
                nonlocal seen
                seen = self.tally(self.ask(p))
                return set(seen) == set(PEERS)

            took = self.wait_for(all_three, 30, f"{p.name}'s frontend to reach every backend")
            say(f"{p.name}'s frontend was answered by backends on {seen}"
                + (f" (after {took:.1f}s of retries)" if took > 1 else ""))
        say("for example: " + self.ask(self.peers[0], 1)[0])

    def partition(self) -> None:
        a, _, c = self.peers
        assert self.lab is not None
        originals = self.running(a, "backend")
        step("pull edge-3's cable: it is cut off from edge-1 and edge-2 (and from this host)")
        self.lab.cut(c)
        t_cut = time.monotonic()
        say("edge-3 keeps accepting writes on its own:")
        self.kubectl(c, "-n", NS, "create", "configmap", "written-on-edge-3-while-cut",
                     "--from-literal=by=edge-3")
        self.publish_during_cut()
        majority: dict[str, int] = {}
        alone: dict[str, int] = {}
        times: dict[str, float] = {}
        answered_by_c = [0, 0]

        def settled() -> bool:
            nonlocal majority, alone
            now = time.monotonic() - t_cut
            majority = self.tally(self.ask(a))
            if "majority" not in times and set(majority) <= {"edge-1", "edge-2"}:
                times["majority"] = now
            answers = self.ask(c)
            alone = self.tally(answers)
            answered_by_c[0] += sum(1 for x in answers if " <- " in x and "no answer" not in x)
            answered_by_c[1] += len(answers)
            if "alone" not in times and set(alone) == {"edge-3"}:
                times["alone"] = time.monotonic() - t_cut
            return len(times) == 2

        self.wait_for(settled, 60, "both sides to route only to the backends they reach")
        say(f"edge-1's frontend only reaches backends on edge-1 and edge-2 "
            f"{times.get('majority', float('nan')):.1f}s after the cut: {majority}")
        lost = answered_by_c[1] - answered_by_c[0]
        say(f"edge-3's frontend only uses its own backend {times.get('alone', float('nan')):.1f}s"
            f" after the cut: {alone}; meanwhile it answered {answered_by_c[0]} of "
            f"{answered_by_c[1]} requests"
            + (f" ({lost} sent to the far backends timed out)" if lost else ""))
        say("(the Service proxy leaves out endpoints on peers the mesh's failure detection "
            "holds dead; the Lease grace would be " + GRACE + ")")
        say("edge-3's cluster DNS keeps answering, from its own replica:")
        fe = self.frontend_pod(c)
        self.kubectl(c, "-n", NS, "exec", fe, "--", "nslookup", BACKEND)
        steady = self.tally(self.ask(c))
        say(f"edge-3's frontend, {time.monotonic() - t_cut:.0f}s into the cut: {steady}")

        say(f"edge-1 sees edge-3 NotReady after the grace ({GRACE}) and replaces its backend "
            f"after the eviction timeout ({EVICTION}); nothing is deleted:")
        self.wait_for(lambda: "NotReady" in self.kubectl(a, "get", "node", "edge-3",
                                                         show=False), 30, "edge-3 NotReady")
        self.wait_for(lambda: sum(len(v) for k, v in self.running(a, "backend").items()
                                  if k != "edge-3") >= 3, 60, "a replacement backend")
        say(f"{time.monotonic() - t_cut:.1f}s after the cut, edge-1's view: "
            f"{self.running(a, 'backend')}; edge-3's view: {self.running(c, 'backend')}")
        self.originals = {n for names in originals.values() for n in names}
        say(f"the hub's stream still holds {self.hub_holds()} of the farm's {MESSAGES} "
            "messages")
        say("edge-3's own view of the Streams during the cut (status is written every 10 s):")
        self.wait_for(lambda: self.stream_messages(c, "sensors-farm") >= MESSAGES, 20,
                      "edge-3 to report its stream's messages")
        self.kubectl(c, "get", "streams", "-o", "wide")
        say("(edge-3's row of the hub's stream is the hub's last report from before the cut)")
        step("`shoal status` on edge-1, during the cut: what edge-1's side sees")
        print(f"$ shoal status --kubeconfig {self.kubeconfig} --server {a.url}", flush=True)
        r = subprocess.run([str(BIN / "shoal"), "status", "--kubeconfig", str(self.kubeconfig),
                            "--server", a.url], capture_output=True, text=True, timeout=60)
        sys.stdout.write(r.stdout if r.returncode == 0 else r.stdout + r.stderr)
        sys.stdout.flush()

    def publish_during_cut(self) -> None:
        c = self.peers[2]
        say(f"a sensor on edge-3 publishes {MESSAGES} messages to sensors.farm.t1 through its "
            "own bus, each acknowledged (stored at the farm):")
        r = subprocess.run(c.inside([sys.executable, "-c", PUBLISH, str(MESSAGES)]),
                           capture_output=True, text=True, timeout=120)
        try:
            done = json.loads(r.stdout)
            say(f"{done['acked']} acknowledged by the stream in domain {done['domains']} in "
                f"{done['seconds']:.1f}s; the hub holds {self.hub_holds()} of them")
        except (ValueError, KeyError):
            say(f"the publisher failed: {r.stderr.strip()[-300:]}")

    def frontend_pod(self, peer: Peer) -> str:
        for p in self.pods(peer, "frontend"):
            if p["spec"].get("nodeName") == peer.name:
                return str(p["metadata"]["name"])
        return "frontend"

    def heal(self) -> None:
        a, _, c = self.peers
        assert self.lab is not None
        step("heal: plug edge-3 back in; the replicas merge, endpoints return, the trim runs")
        before = {n for names in self.running(a, "backend").values() for n in names}
        self.lab.heal(c)
        t_heal = time.monotonic()
        hub_full: list[float] = []
        watcher = threading.Thread(target=self.watch_hub, args=(t_heal, hub_full), daemon=True)
        watcher.start()
        times: dict[str, float] = {}
        seen: dict[str, int] = {}
        running: dict[str, list[str]] = {}

        def settled() -> bool:
            nonlocal seen, running
            seen = self.tally(self.ask(a))
            now = time.monotonic() - t_heal
            if "edge-3" in seen:
                times.setdefault("back", now)
            running = self.running(a, "backend")
            if sum(len(v) for v in running.values()) == 3 \
                    and len(self.pods(a, "backend")) == 3:
                times.setdefault("trim", now)
                return set(seen) == set(running)
            return False

        took = self.wait_for(settled, 60, "the trim and edge-1's frontend to settle")
        if "back" in times:
            say(f"edge-1's frontend is answered by edge-3's backends again "
                f"{times['back']:.1f}s after the heal")
        say(f"trimmed back to 3 backends {times.get('trim', float('nan')):.1f}s after the heal;"
            f" edge-1's frontend reaches every one of them {took:.1f}s after the heal: {seen}")
        kept = {n for names in running.values() for n in names}
        say(f"kept: {running}; {len(kept & self.originals)} of 3 are the backends from before "
            f"the cut; removed: {sorted(before - kept)}")
        say("the write made on edge-3 while it was cut off, read on edge-1:")
        self.kubectl(a, "-n", NS, "get", "configmap", "written-on-edge-3-while-cut", "-o",
                     "jsonpath={.metadata.name} {.data}{\"\\n\"}")
        for p in self.peers:
            say(f"{p.name}'s frontend now: {self.tally(self.ask(p))}")
        watcher.join(timeout=90)
        self.messages_after_heal(t_heal, hub_full[0] if hub_full else None)

    def watch_hub(self, t_heal: float, full: list[float]) -> None:
        """From the heal, ask the hub every 0.3 s until its stream holds every message."""
        while time.monotonic() - t_heal < 90:
            if self.hub_holds() >= MESSAGES:
                full.append(time.monotonic() - t_heal)
                return
            time.sleep(0.3)

    def messages_after_heal(self, t_heal: float, took: float | None) -> None:
        a = self.peers[0]
        step(f"the farm's {MESSAGES} messages cross the healed uplink to the hub")
        held = [0]

        def all_there() -> bool:
            held[0] = self.hub_holds()
            return held[0] >= MESSAGES

        if took is None:  # not yet while the heal's step watched
            self.wait_for(all_there, 90, f"all {MESSAGES} messages at the hub")
            took = time.monotonic() - t_heal
        else:
            all_there()
        say(f"the hub's stream holds {held[0]} of {MESSAGES}; it held them all {took:.1f}s "
            "after the heal, asked every 0.3 s (the farm re-dials its leaf link, the hub's "
            "source resumes where it stopped)")
        # Stream status is written every 10 s: wait for it so the table shows the counts.
        self.wait_for(lambda: self.stream_messages(a, "sensors") >= MESSAGES, 30,
                      "the Stream objects' status")
        self.kubectl(a, "get", "streams", "-o", "wide")

    def scope(self) -> None:
        a, b, c = self.peers
        step(f"a Scope: the namespace {TENANT} is held by edge-1 and edge-2 only; edge-3 never "
             "receives what is in it")
        self.kubectl(a, "apply", "-f", "-", stdin=SCOPE)
        self.wait_for(lambda: TENANT in self.kubectl(c, "get", "scopes", "-o", "name",
                                                     show=False), 30, "edge-3 to learn the Scope")
        value = f"tenant-password-{os.urandom(6).hex()}"
        t0 = time.monotonic()
        self.kubectl(a, "create", "namespace", TENANT)
        self.kubectl(a, "-n", TENANT, "create", "secret", "generic", "db",
                     f"--from-literal=password={value}")
        took = self.wait_for(lambda: "db" in self.kubectl(b, "-n", TENANT, "get", "secrets",
                                                          "-o", "name", show=False),
                             30, "the Secret on edge-2")
        say(f"the Secret is on edge-2 {took:.1f}s after the write on edge-1; edge-3 knows the "
            "namespace exists (Namespaces stay in the cluster scope) but holds nothing in it:")
        self.kubectl(c, "get", "namespace", TENANT)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))  # replication rounds go by
        for peer in (c, a):
            names = [i["metadata"]["name"] for i in self.items(peer, "secrets", "-n", TENANT)]
            say(f"kubectl -n {TENANT} get secrets on {peer.name}: {len(names)} "
                f"Secrets {names}")
        say("and edge-3 refuses writes there, naming the scope's writers:")
        self.kubectl(c, "-n", TENANT, "create", "configmap", "from-edge-3")
        # Secrets are encrypted at rest (shoal.store.secret_encryption), so a grep for the
        # password finds nothing in either replica; the rows' keys are in the clear.
        say(f"in each replica's SQLite file, the rows of namespace {TENANT}, and `grep -a -c` "
            "of the password over state.db* (Secrets are encrypted at rest: 0 on both):")
        for peer in (c, a):
            files = [str(f) for f in sorted(peer.data.glob("state.db*"))]
            r = subprocess.run(["grep", "-a", "-c", "-H", value, *files], capture_output=True,
                               text=True)
            found = sum(int(line.rsplit(":", 1)[1]) for line in r.stdout.splitlines())
            say(f"{peer.name}: rows {self.rows_in(peer, TENANT)}; grep: {found}")

    @staticmethod
    def rows_in(peer: Peer, namespace: str) -> list[str]:
        db = sqlite3.connect(f"file:{peer.data / 'state.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT resource, name FROM objects WHERE namespace = ? "
                              "ORDER BY resource, name", (namespace,)).fetchall()
        finally:
            db.close()
        return [f"{resource}/{name}" for resource, name in rows]

    def run(self) -> None:
        self.start()
        self.sites()
        self.live_page()
        self.deploy()
        self.ask_everyone()
        self.partition()
        self.heal()
        self.scope()

    def close(self) -> None:
        for p in self.peers:
            stop_server(p.proc)
        for p in self.peers:
            remove_pods(p)
        if self.lab is not None:
            self.lab.close()
        if os.environ.get("SHOAL_DEMO_KEEP") is None:
            shutil.rmtree(self.work, ignore_errors=True)


def main() -> None:
    """Run the story; on Ctrl-C, SIGTERM or an error, remove everything it made."""
    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    demo = NetworkDemo()
    try:
        demo.run()
        hold(demo.kubeconfig, {p.name: p.url for p in demo.peers},
             {p.name: f"ip netns exec {p.netns}" for p in demo.peers})
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("cleaning up: servers, containers, namespaces, the bridge")
        demo.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
