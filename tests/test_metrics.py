"""Observability: /metrics, the membership event log, links and the timeline, pod samples."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from shoal.api import exposition
from shoal.api.live_page import Timeline, links
from shoal.api.metrics import NodeMetrics, Sources, lag_by_peer, request_labels
from shoal.api.resource_metrics import PeerReportService
from shoal.authz.attributes import Attributes
from shoal.authz.user import authenticated
from shoal.mesh.events_log import MembershipLog
from shoal.mesh.membership import Member
from shoal.mesh.messages import State
from shoal.node.pod_metrics import PodMetricsSampler, PodSample, Proc, Reading, Usage, usage
from shoal.store.change_feed import Change
from shoal.store.replica import Replica
from tests.conftest import ShoalProcess

# -- pure parts ---------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def member(name: str, state: State, incarnation: int = 0) -> Member:
    return Member(name, f"10.0.0.{len(name)}:7443", incarnation, state, 0.0)


def test_membership_log_calls_a_member_going_suspect_a_cut_and_coming_back_a_heal() -> None:
    seen: list[str] = []

    class Inner:
        def on_join(self, m: Member) -> None:
            seen.append("join " + m.name)

        def on_leave(self, m: Member) -> None:
            seen.append("leave " + m.name)

        def on_update(self, m: Member) -> None:
            seen.append("update " + m.name)

    clock = iter(range(100))
    log = MembershipLog(Inner(), clock=lambda: float(next(clock)))
    log.on_join(member("b", State.ALIVE))
    log.on_update(member("b", State.ALIVE, 1))  # a refutation: no change of state
    log.on_update(member("b", State.SUSPECT, 1))
    log.on_leave(member("b", State.DEAD, 1))
    log.on_join(member("b", State.ALIVE, 2))
    log.on_leave(member("c", State.LEFT))
    log.on_join(member("c", State.ALIVE, 1))  # restarted after a graceful stop
    assert [(e.member, e.kind) for e in log.recent()] == [
        ("b", "join"), ("b", "cut"), ("b", "cut"), ("b", "heal"), ("c", "leave"), ("c", "join")]
    assert [e.previous for e in log.recent()][:4] == [None, "alive", "suspect", "dead"]
    assert seen[:3] == ["join b", "update b", "update b"], "the wrapped hooks still hear all"
    assert log.transitions == 6


def test_membership_log_is_bounded() -> None:
    log = MembershipLog(capacity=4)
    for i in range(10):
        log.on_update(member("b", State.SUSPECT if i % 2 else State.ALIVE, i))
    assert len(log.recent()) == 4 and log.transitions == 10


def test_a_link_is_cut_when_either_end_holds_the_other_suspect_or_dead() -> None:
    mine = {"a": "alive", "b": "alive", "c": "dead"}
    views = {"b": {"members": {"a": "alive", "b": "alive", "c": "suspect"}},
             "c": {"members": {"a": "alive", "b": "alive", "c": "alive"}}}  # c's stale report
    by_pair = {(x["a"], x["b"]): x["state"] for x in links("a", mine, mine, views)}
    assert by_pair == {("a", "b"): "up", ("a", "c"): "cut", ("b", "c"): "cut"}
    healed = {"a": "alive", "b": "alive", "c": "alive"}
    views["b"]["members"]["c"] = "alive"
    assert {x["state"] for x in links("a", healed, healed, views)} == {"up"}
    assert links("a", healed, healed, {})[2]["state"] == "unknown", "nobody reported b-c"


def test_request_labels_follow_kube_apiserver() -> None:
    user = authenticated("u", ())
    lst = Attributes(user, "list", True, "apps", "v1", "deployments")
    watch = Attributes(user, "watch", True, "", "v1", "pods")
    log = Attributes(user, "get", True, "", "v1", "pods", "log", "default", "p")
    path = Attributes(user, "get", False, path="/version")
    assert request_labels("GET", lst) == ("LIST", "apps", "deployments", "")
    assert request_labels("GET", watch)[0] == "WATCH"
    assert request_labels("GET", log) == ("GET", "", "pods", "log")
    assert request_labels("GET", path) == ("GET", "", "", "")
    assert request_labels("POST", None) == ("POST", "", "", "")


async def test_metrics_read_the_replica_and_count_kubelet_events_at_scrape_time() -> None:
    replica = Replica(None, "n1")
    for i in range(3):
        _, fut = replica.put("configmaps", "default", f"c{i}",
                             {"metadata": {"name": f"c{i}"}}, lambda path: None)
        await fut
    _, fut = replica.put("configmaps", "default", "c0", None, lambda path: None)
    await fut
    pods = [{"status": {"phase": "Running"}}, {"status": {"phase": "Running"}}, {}]
    metrics = NodeMetrics(Sources("n1", replica, pods_here=lambda: pods))
    kind = SimpleNamespace(resource="events")
    started = {"reason": "Started", "type": "Normal", "reportingComponent": "kubelet",
               "reportingInstance": "n1", "count": 1}
    metrics.observe_write(kind, None, started)
    backoff = {**started, "reason": "BackOff", "type": "Warning", "count": 1}
    metrics.observe_write(kind, None, backoff)
    metrics.observe_write(kind, backoff, {**backoff, "count": 3})  # two more back-offs
    metrics.observe_write(kind, None, {**started, "reportingInstance": "n2"})  # not ours
    s = samples(metrics.render().decode())
    assert s[("shoal_replica_objects", (("resource", "configmaps"),))] == 2
    assert s[("shoal_replica_tombstones", ())] == 1
    assert s[("shoal_pod_container_starts_total", ())] == 1
    assert s[("shoal_runtime_errors_total", (("reason", "BackOff"),))] == 3
    assert s[("shoal_node_pods", (("phase", "Running"),))] == 2
    assert s[("shoal_node_pods", (("phase", "Pending"),))] == 1
    replica.close()


def test_lag_per_peer_is_the_largest_over_scopes() -> None:
    ae = SimpleNamespace(cursors={("b", ""): 10, ("b", "s1"): 4, ("c", ""): 7},
                         _partner_revision={"b": 12})
    mesh: Any = SimpleNamespace(anti_entropy=ae)
    assert lag_by_peer(mesh) == {"b": (4, 8), "c": (7, None)}


def test_lag_per_peer_counts_only_the_scopes_the_mesh_still_pulls_from_it() -> None:
    # Issue 10's trial: n4, removed from tenant-a, read 1,068 behind and rising from a
    # cursor of tenant-a that was no longer pulled. The mesh names the pairs that count.
    ae = SimpleNamespace(cursors={("n4", ""): 1200, ("n4", "tenant-a"): 130},
                         _partner_revision={"n4": 1200},
                         lags=lambda: {("n4", ""): (1200, 0)})
    mesh: Any = SimpleNamespace(anti_entropy=ae)
    assert lag_by_peer(mesh) == {"n4": (1200, 0)}


def test_a_trim_on_the_timeline_is_a_replicaset_pod_removed_soon_after_a_heal() -> None:
    now = [1000.0]
    t = Timeline(clock=lambda: now[0])
    pod = {"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "rs"}]},
           "spec": {"nodeName": "n3"}}
    t.observe(Change("DELETED", "pods", "default", "p1", 5, pod, None))
    assert not t.entries, "a scale-down far from any heal is not a trim"
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    lost = {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    t.observe(Change("MODIFIED", "nodes", "", "n3", 6, lost, ready))
    t.observe(Change("MODIFIED", "nodes", "", "n3", 7, ready, lost))
    now[0] += 30
    t.observe(Change("DELETED", "pods", "default", "p2", 8, pod, None))
    assert [e["kind"] for e in t.entries] == ["node-lost", "node-back", "trim"]


# -- pod samples ----------------------------------------------------------------------------


def _fill(lib: Any, counter_family: Any, gauge_family: Any, registry: Any) -> None:
    requests = lib.Counter("apiserver_request_total", "API requests\nby \\ verb.",
                           ["verb", "code"], registry=registry)
    latency = lib.Histogram("apiserver_request_duration_seconds", "Latency.", ["verb"],
                            buckets=(0.001, 0.5, 1.0, 10.0, 60.0), registry=registry)
    starts = lib.Counter("shoal_pod_container_starts_total", "Starts.", registry=registry)
    lib.Counter("shoal_runtime_errors_total", "Errors.", ["reason"], registry=registry)
    requests.labels("GET", "200").inc()
    requests.labels("LIST", "404").inc(3)
    requests.labels('we"ird\\\n', "200").inc()
    for verb, seconds in (("GET", 0.0004), ("GET", 0.7), ("GET", 100), ("LIST", 0.001)):
        latency.labels(verb).observe(seconds)
    starts.inc(2)

    class Live:
        def collect(self) -> Any:
            g = gauge_family("shoal_replica_objects", "Objects.", labels=["resource"])
            g.add_metric(["pods"], 3)
            g.add_metric(["nodes"], 1234567)
            yield g
            g = gauge_family("shoal_replica_revision", "Revision.")
            g.add_metric([], 12345678901)
            yield g
            c = counter_family("shoal_mesh_probes", "Probes.")
            c.add_metric([], 7)
            yield c
            yield counter_family("shoal_peer_sent_bytes", "Bytes.", labels=["peer"])
            g = gauge_family("shoal_x", "Odd values.")
            g.add_metric([], -2.5)
            g.add_metric([], float("nan"))
            yield g

    registry.register(Live())


def test_metrics_text_is_prometheus_clients_less_its_created_series() -> None:
    theirs = prometheus_client.CollectorRegistry(auto_describe=False)
    _fill(prometheus_client, CounterMetricFamily, GaugeMetricFamily, theirs)
    ours = exposition.CollectorRegistry()
    _fill(exposition, exposition.CounterMetricFamily, exposition.GaugeMetricFamily, ours)
    kept: list[str] = []
    created = False
    for line in prometheus_client.generate_latest(theirs).decode().splitlines(keepends=True):
        if line.startswith("# HELP"):
            created = line.split()[2].endswith("_created")
        if not created:
            kept.append(line)
    assert exposition.generate_latest(ours).decode() == "".join(kept)
    assert 'apiserver_request_duration_seconds_bucket{le="+Inf",verb="GET"} 3.0\n' in kept


def test_a_node_does_not_import_prometheus_client() -> None:
    """Its HTTP servers and WSGI are about 1 MB of an idle node's RSS (issue 11)."""
    out = subprocess.run([sys.executable, "-c", "import sys, shoal.cli.node, shoal.cli.main; "
                          "print('prometheus_client' in sys.modules)"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_cpu_is_a_rate_between_two_readings() -> None:
    assert usage(None, Reading(5, 10, 1.0)) is None
    u = usage(Reading(1_000_000_000, 5, 10.0), Reading(3_000_000_000, 7, 14.0))
    assert u is not None and u.cpu_nanocores == 500_000_000 and u.memory == 7 and u.window == 4
    assert usage(Reading(10, 1, 1.0), Reading(5, 1, 2.0)) is None, "a restarted counter"


def _fake_proc(root: Path, pid: int, ppid: int, ticks: int, rss: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime prio nice threads itreal start vsize rss
    (d / "stat").write_text(f"{pid} (sh x) S {ppid} 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 "
                            f"100 1000 {rss} 0\n")
    (d / "cgroup").write_text("0::/\n")


def test_a_process_pod_without_a_cgroup_is_measured_over_its_process_tree(
        tmp_path: Path) -> None:
    _fake_proc(tmp_path, 100, 1, 50, 10)
    _fake_proc(tmp_path, 101, 100, 30, 5)  # a child
    _fake_proc(tmp_path, 102, 101, 20, 5)  # a grandchild
    _fake_proc(tmp_path, 200, 1, 999, 999)  # someone else
    proc = Proc(tmp_path, tmp_path / "cgroup")
    r = proc.container_reading(100, 1.0)
    ticks = os.sysconf("SC_CLK_TCK")
    assert r is not None and r.cpu_ns == 100 * 1_000_000_000 // ticks
    assert r.memory == 20 * os.sysconf("SC_PAGE_SIZE")


def test_a_sample_reads_the_process_table_once_for_all_its_containers(tmp_path: Path) -> None:
    for i in range(3):
        _fake_proc(tmp_path, 100 + i, 1, 10 * (i + 1), 1)
    passes = []

    class CountingProc(Proc):
        def processes(self) -> dict[int, tuple[int, int, int]]:
            passes.append(1)
            return super().processes()

    worker = SimpleNamespace(uid="u", namespace="ns", name="p",
                             records=[SimpleNamespace(name=f"c{i}") for i in range(3)],
                             running_handle=lambda name: SimpleNamespace(pid=100 + int(name[1])))
    now = [1.0]
    sampler = PodMetricsSampler(lambda: [worker], proc=CountingProc(tmp_path, tmp_path / "cg"),
                                clock=lambda: now[0])
    sampler.sample()
    for i in range(3):  # one second of CPU more each
        stat = tmp_path / str(100 + i) / "stat"
        stat.write_text(stat.read_text().replace(f" {10 * (i + 1)} 0 0 0 ",
                                                 f" {10 * (i + 1) + os.sysconf('SC_CLK_TCK')} 0 0 0 "))
    now[0] = 2.0
    sampler.sample()
    assert len(passes) == 2, "one pass over /proc per sample, not one per container"
    cpu = {c: u.cpu_nanocores for c, u in sampler.pods["u"].containers.items()}
    assert cpu == {"c0": 1_000_000_000, "c1": 1_000_000_000, "c2": 1_000_000_000}


def test_a_container_with_its_own_cgroup_is_measured_from_it(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 100, 1, 50, 10)
    (tmp_path / "100" / "cgroup").write_text("0::/shoal/abc\n")
    cg = tmp_path / "cgroup" / "shoal" / "abc"
    cg.mkdir(parents=True)
    (cg / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    (cg / "memory.current").write_text("1048576\n")
    (cg / "memory.stat").write_text("anon 1\ninactive_file 48576\n")
    r = Proc(tmp_path, tmp_path / "cgroup").container_reading(100, 1.0)
    assert r == Reading(2_500_000, 1_000_000, 1.0)


# -- a real server --------------------------------------------------------------------------


def _get(node: ShoalProcess, path: str, token: str | None) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(node.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_endpoint_is_scraped_and_parsed(shoal: ShoalProcess) -> None:
    token = (shoal.data_dir / "pki" / "admin.token").read_text().strip()
    shoal.kubectl("get", "configmaps")
    shoal.kubectl("get", "nodes", "node-1")
    code, _ = _get(shoal, "/metrics", None)
    assert code == 401
    code, text = _get(shoal, "/metrics", token)
    assert code == 200
    s = samples(text)
    listed = [v for (name, labels), v in s.items() if name == "apiserver_request_total"
              and dict(labels).get("verb") == "LIST"
              and dict(labels).get("resource") == "configmaps" and dict(labels)["code"] == "200"]
    assert listed and listed[0] >= 1
    assert any(name == "apiserver_request_duration_seconds_count"
               and dict(labels).get("resource") == "nodes" and dict(labels)["verb"] == "GET"
               for name, labels in s)
    assert s[("shoal_replica_objects", (("resource", "nodes"),))] == 1
    assert s[("shoal_replica_bytes", ())] > 0
    assert s[("shoal_mesh_members", (("state", "alive"),))] == 1
    assert s[("shoal_watchers", ())] >= 1
    assert s[("shoal_mesh_gossip_rounds_total", ())] == 0  # alone: nobody to gossip to
    # Refusals of peers' documents are counted where an operator looks (a trial found a
    # forged relay dropped with nothing but a debug line).
    assert s[("shoal_replication_docs_refused_total", ())] == 0
    assert s[("shoal_replication_docs_deferred_total", ())] == 0
    assert s[("shoal_replication_deltas_sent_total", ())] == 0  # alone: no peer to send to
    assert s[("shoal_replication_deltas_rebuilt_total", ())] == 0
    assert s[("shoal_replication_pushes_answering_total", ())] == 0
    assert s[("shoal_replication_pokes_sent_total", ())] == 0


def test_a_user_without_the_metrics_url_is_forbidden(shoal: ShoalProcess) -> None:
    shoal.kubectl("create", "serviceaccount", "scraper")
    token = shoal.kubectl("create", "token", "scraper").stdout.strip()
    assert _get(shoal, "/metrics", token)[0] == 403
    shoal.kubectl("create", "clusterrole", "scrape", "--verb=get", "--non-resource-url=/metrics")
    shoal.kubectl("create", "clusterrolebinding", "scrape", "--clusterrole=scrape",
                  "--serviceaccount=default:scraper")
    deadline = time.monotonic() + 10
    while _get(shoal, "/metrics", token)[0] != 200:
        assert time.monotonic() < deadline, "the binding was not honoured"
        time.sleep(0.2)



def test_a_sample_report_leaves_out_namespaces_the_asker_may_not_see() -> None:
    sampler = PodMetricsSampler(lambda: [])
    t = 100.0
    sampler.pods = {"u1": PodSample("shop", "web", "u1", {"c": Usage(10, 1, t, 1.0)}),
                    "u2": PodSample("plant", "plc", "u2", {"c": Usage(10, 1, t, 1.0)})}
    assert {p["name"] for p in sampler.report()["pods"]} == {"web", "plc"}
    assert [p["name"] for p in sampler.report(lambda ns: ns == "shop")["pods"]] == ["web"]


async def test_the_peer_report_service_tells_each_report_who_asks() -> None:
    sent: list[bytes] = []
    asked: list[str] = []

    class FakeStream:
        header = {"op": "metrics"}
        peer = "node-b"

        async def send(self, data: bytes) -> None:
            sent.append(data)

        async def end(self) -> None:
            sent.append(b"<end>")

    def report(peer: str) -> dict[str, Any]:
        asked.append(peer)
        return {"pods": []}

    fallback_used: list[object] = []

    async def fallback(stream: Any) -> None:
        fallback_used.append(stream)

    service = PeerReportService(fallback, {"metrics": report})
    await service.handle(FakeStream())  # type: ignore[arg-type]
    assert asked == ["node-b"] and sent == [b'{"code":200}', b'{"pods":[]}', b"<end>"]
    other = FakeStream()
    other.header = {"op": "log"}
    await service.handle(other)  # type: ignore[arg-type]
    assert fallback_used == [other], "pod streams still reach the pod stream service"


async def test_the_timeline_shows_replacements_and_one_line_per_lost_node() -> None:
    replica = Replica(None, "n1")

    async def put(resource: str, ns: str, name: str, obj: dict[str, Any]) -> None:
        _, fut = replica.put(resource, ns, name, obj, lambda path: None)
        await fut

    def node(name: str, ready: str) -> dict[str, Any]:
        return {"metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}}

    def pod(name: str, on: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "default",
                             "ownerReferences": [{"kind": "ReplicaSet", "uid": "rs1"}]},
                "spec": {"nodeName": on}}

    await put("nodes", "", "n1", node("n1", "True"))
    await put("nodes", "", "n3", node("n3", "Unknown"))
    for name, on in (("web-0", "n3"), ("web-1", "n3")):
        await put("pods", "default", name, pod(name, on))
    t = Timeline(replica=replica)
    for name in ("web-0", "web-1"):
        t.observe(Change("ADDED", "events", "default", f"{name}.1", 9, {
            "reason": "NodeNotReady",
            "involvedObject": {"namespace": "default", "name": name}}, None))
    t.observe(Change("ADDED", "pods", "default", "web-2", 10, pod("web-2", "n1"), None))
    assert [(e["kind"], e["message"]) for e in t.entries] == [
        ("not-ready", "2 pods on node n3 marked not ready"),
        ("replace", "pod default/web-2 started to replace pods on unreachable node n3")]
    replica.close()
