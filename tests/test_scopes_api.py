"""The Scope kind in the API (kubectl and the Python client), and writes refused on a peer
that is not a writer of the scope they touch."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from shoal.api.admission import (
    AdmissionContext,
    AdmissionRequest,
    ScopeWriters,
    scope_warnings,
)
from shoal.api.authorization import ForbiddenError
from shoal.api.scope_status import format_table, scope_report
from shoal.authz.scopes import ScopeIndex
from shoal.authz.user import authenticated
from shoal.model.kinds import KindRegistry
from shoal.model.validation import validate
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.conftest import VENV_BIN, ShoalProcess

REG = KindRegistry()
SCOPE = REG.by_kind("shoal.dev/v1alpha1", "Scope")
NS = REG.by_kind("v1", "Namespace")
CM = REG.by_kind("v1", "ConfigMap")
assert SCOPE is not None and NS is not None and CM is not None


def scope(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shoal.dev/v1alpha1", "kind": "Scope", "metadata": {"name": name},
            "spec": spec}


# -- the kind ------------------------------------------------------------------------------


def test_the_scope_kind_is_cluster_scoped_in_shoal_dev() -> None:
    assert SCOPE is not None
    assert (SCOPE.group, SCOPE.version, SCOPE.plural, SCOPE.namespaced) == \
        ("shoal.dev", "v1alpha1", "scopes", False)
    assert SCOPE.resource == "scopes.shoal.dev"


@pytest.mark.parametrize(("spec", "errors"), [
    ({"namespaces": ["team-a"], "members": ["n1", "n2"], "writers": ["n1"]}, []),
    ({"namespaceSelector": {"matchLabels": {"t": "a"}}, "memberSelector": {}}, []),
    ({"members": ["n1"]},
     [("spec.namespaces", "Required value: at least one of namespaces and namespaceSelector "
                          "is required")]),
    ({"namespaces": ["Team_A"], "members": ["n1"]}, [("spec.namespaces[0]", None)]),
    ({"namespaces": ["a", "a"], "members": ["n1"]},
     [("spec.namespaces[1]", 'Duplicate value: "a"')]),
    ({"namespaces": ["a"], "members": ["n1"], "writers": ["n2"]},
     [("spec.writers[0]", 'Invalid value: "n2": must be one of spec.members')]),
    # With a member selector, writers are checked against Node labels later, not here.
    ({"namespaces": ["a"], "memberSelector": {"matchLabels": {"x": "y"}}, "writers": ["n2"]}, []),
    ({"namespaces": ["a"], "memberSelector": {"matchExpressions": [
        {"key": "site", "operator": "Near"}]}},
     [("spec.memberSelector.matchExpressions[0].operator",
       'Invalid value: "Near": not a valid selector operator')]),
    ({"namespaces": "team-a"}, [("spec.namespaces", None)]),
    # Every peer needs the cluster's own objects (cluster DNS, the bus): once accepted,
    # kube-dns vanished from every non-member.
    ({"namespaces": ["team-a", "kube-system"], "members": ["n1"]},
     [("spec.namespaces[1]", 'Invalid value: "kube-system": the cluster\'s own namespace '
                             "cannot be in a scope: every peer needs its objects")]),
])
def test_scope_validation(spec: dict[str, Any], errors: list[tuple[str, str | None]]) -> None:
    assert SCOPE is not None
    causes = validate(SCOPE, scope("s", **spec))
    assert [c.field for c in causes] == [f for f, _ in errors]
    for cause, (_, message) in zip(causes, errors, strict=True):
        if message is not None:
            assert cause.message == message


# -- writers -------------------------------------------------------------------------------


async def _store(node: str) -> ObjectStore:
    s = ObjectStore(Replica(None, node), REG)
    assert NS is not None and SCOPE is not None
    for ns in ("team-a", "team-b", "open"):
        await s.create(NS, {"metadata": {"name": ns}})
    await s.create(SCOPE, scope("tenant-a", namespaces=["team-a"], members=["n1", "n2", "n3"],
                                writers=["n1", "n2"]))
    await s.create(SCOPE, scope("tenant-b", namespaces=["team-b"], members=["n1"]))
    return s


def _write(hook: ScopeWriters, namespace: str, name: str = "cfg",
           operation: str = "CREATE", subresource: str = "") -> None:
    assert CM is not None
    obj = {"metadata": {"name": name, "namespace": namespace}}
    hook(AdmissionRequest(authenticated("alice", ()), operation, CM, namespace, name,
                          subresource, obj, None),
         AdmissionContext(None, None))  # type: ignore[arg-type]


async def test_a_write_in_a_scope_is_refused_on_a_member_that_is_not_a_writer() -> None:
    s = await _store("n3")
    try:
        hook = ScopeWriters("n3", ScopeIndex(s.replica))
        with pytest.raises(ForbiddenError) as refused:
            _write(hook, "team-a")
        assert refused.value.code == 403
        assert refused.value.message == (
            'configmaps "cfg" is forbidden: scopes "tenant-a": this node (n3) is not a writer '
            "of the scope; write through one of: n1, n2")
        for op in ("UPDATE", "DELETE"):
            with pytest.raises(ForbiddenError):
                _write(hook, "team-a", operation=op)
        _write(hook, "open")  # the cluster scope: writable everywhere
    finally:
        s.replica.close()


async def test_a_write_in_a_scope_is_refused_on_a_peer_outside_it_and_allowed_on_a_writer(
) -> None:
    s = await _store("n2")
    try:
        hook = ScopeWriters("n2", ScopeIndex(s.replica))
        _write(hook, "team-a")
        with pytest.raises(ForbiddenError) as refused:
            _write(hook, "team-b")
        assert refused.value.message.endswith(
            'scopes "tenant-b": this node (n2) is not a member of the scope; write through one '
            "of: n1")
    finally:
        s.replica.close()


async def test_what_a_node_holds_of_each_scope_is_reported_with_the_mesh_lag() -> None:
    s = await _store("n1")
    try:
        assert CM is not None
        await s.create(CM, {"metadata": {"name": "x"}}, "team-a")
        await s.create(CM, {"metadata": {"name": "y"}}, "team-a")
        # The shape of AntiEntropy.scope_status().
        mesh = {"tenant-a": {"members": ["n1", "n2", "n3"], "writer": True, "documents": 3,
                             "sent": 0, "partners": {"n2": {"cursor": 10, "behind": 3},
                                                     "n3": {"cursor": 4, "behind": None}}},
                "": {"members": None, "writer": True, "partners": {}, "documents": 9}}
        report = scope_report("n1", s.replica, ScopeIndex(s.replica).current(), lambda: mesh)
        rows = {r["scope"]: r for r in report["scopes"]}
        assert rows["tenant-a"]["objects"] == 2
        assert rows["tenant-a"]["behind"] == 3
        assert rows["tenant-a"]["member"] and rows["tenant-a"]["writer"]
        assert rows["tenant-a"]["replication"]["partners"]["n2"] == {"cursor": 10, "behind": 3}
        assert rows["tenant-b"]["objects"] == 0 and rows["tenant-b"]["behind"] is None
        assert rows[""]["behind"] is None, "no partner reported"
        assert rows[""]["objects"] >= 5  # namespaces and the scopes themselves
        table = format_table(report).splitlines()
        assert table[0].split() == ["SCOPE", "MEMBER", "WRITER", "OBJECTS", "BEHIND", "LAST",
                                    "SYNC", "STRANDED"]
        assert table[1].split()[0] == "<cluster>"
        assert table[2].split() == ["tenant-a", "yes", "yes", "2", "3", "-", "no"]
        # Every "?" says why under the table (a trial, December 4, found one that did not).
        assert table[3].split()[:5] == ["tenant-b", "yes", "yes", "0", "?"]
        assert "tenant-b: behind unknown: no partner has said yet" in table[4:]
        other = format_table({"scopes": [{"scope": "tenant-c", "member": False}]}).splitlines()
        assert other[1].split() == ["tenant-c", "no", "no", "0", "-", "-", "-"]  # not held
        assert other[2:] == []
    finally:
        s.replica.close()


async def test_behind_is_unknown_on_a_peer_cut_off_from_a_scopes_writers_or_partners() -> None:
    """Issue 10's trial: during a partition two members read BEHIND 0 while a writer held
    15 newer objects. A writer this peer finds unreachable, or no answer from any partner
    for a few pull intervals, makes BEHIND unknown, with the age of the last answer."""
    s = await _store("n3")
    try:
        def rows(**tenant: Any) -> dict[str, dict[str, Any]]:
            entry = {"members": ["n1", "n2", "n3"], "writer": False, "documents": 3,
                     "partners": {"n2": {"cursor": 10, "behind": 0}}, "pull_interval": 2.0,
                     "holders": 2, "last_answer": 1.5, "unreachable_writers": [], **tenant}
            cluster = {"members": None, "writer": True, "partners": {}, "pull_interval": 2.0,
                       "holders": 0, "last_answer": None, "unreachable_writers": []}
            report = scope_report("n3", s.replica, ScopeIndex(s.replica).current(),
                                  lambda: {"tenant-a": entry, "": cluster})
            out = {r["scope"]: r for r in report["scopes"]}
            out["table"] = {"lines": format_table(report).splitlines()}
            return out

        fresh = rows()
        assert fresh["tenant-a"]["behind"] == 0 and fresh["tenant-a"]["lastSync"] == 1.5
        assert "unknownWhy" not in fresh["tenant-a"]
        assert fresh[""]["behind"] is None and "unknownWhy" not in fresh[""], \
            "alone in the cluster: nothing to trail, but no partner reported either"
        assert fresh["table"]["lines"][2].split() == ["tenant-a", "yes", "no", "0", "0", "1s",
                                                      "ago", "no"]
        cut = rows(unreachable_writers=["n1"])
        assert cut["tenant-a"]["behind"] is None
        assert cut["tenant-a"]["unknownWhy"] == "writers unreachable: n1"
        assert cut["table"]["lines"][2].split()[4] == "?"
        silent = rows(last_answer=7.0)  # more than 3 pull intervals of 2 s
        assert silent["tenant-a"]["behind"] is None
        assert silent["tenant-a"]["unknownWhy"] == \
            "no partner has answered a pull of it for 7s"
        assert rows(last_answer=5.0)["tenant-a"]["behind"] == 0
        # 8 partners asked one a round: each once every 16 s, stale after two cycles.
        assert rows(last_answer=30.0, pull_cycle=16.0)["tenant-a"]["behind"] == 0
        assert rows(last_answer=33.0, pull_cycle=16.0)["tenant-a"]["behind"] is None
        never = rows(last_answer=None)
        assert never["tenant-a"]["behind"] is None
        assert never["table"]["lines"][2].split()[4:] == ["?", "never", "no"]
        assert rows(holders=0, last_answer=None)["tenant-a"]["behind"] == 0, "held here only"
        # A weak peer with no super-peer of its site in the scope syncs it with no one.
        why = "no super-peer of site 'farm' is a member of scope 'tenant-a'"
        stranded = rows(stranded=why, partners={}, last_answer=None)
        assert stranded["tenant-a"]["stranded"] == why
        assert stranded["tenant-a"]["behind"] is None
        assert stranded["tenant-a"]["unknownWhy"] == f"stranded: {why}"
        assert "stranded" not in stranded[""] and "stranded" not in fresh["tenant-a"]
        lines = stranded["table"]["lines"]
        assert lines[2].split()[4:] == ["?", "never", "yes"]
        assert lines[-1] == f"tenant-a: stranded: {why}"
        assert lines[3].split()[:2] == ["tenant-b", "no"] and lines[3].split()[-1] == "-", \
            "n3 holds no tenant-b: nothing to strand"
    finally:
        s.replica.close()


async def test_writing_a_scope_warns_of_a_namespace_another_scope_holds_of_non_nodes_and_no_members(
) -> None:
    s = await _store("n1")
    try:
        assert SCOPE is not None
        ctx = AdmissionContext(None, s.replica)  # type: ignore[arg-type]

        def warnings(name: str, **spec: Any) -> list[str]:
            assert SCOPE is not None
            return scope_warnings(AdmissionRequest(authenticated("alice", ()), "CREATE", SCOPE,
                                                   "", name, "", scope(name, **spec), None), ctx)

        assert warnings("zeta", namespaces=["team-a", "new"], members=["n9"]) == [
            'namespace "team-a" is already in scope "tenant-a", whose name sorts first: this '
            "Scope does not hold it",
            'member "n9" is not a Node (yet): it holds the scope once it joins']
        # A Scope whose name sorts first takes the namespace: said too (it once was not).
        assert warnings("alpha", namespaces=["team-a"]) == [
            'namespace "team-a" is in scope "tenant-a" too: this Scope\'s name sorts first, so '
            'it takes the namespace from "tenant-a", whose members that are not members here '
            "drop its objects"]
        assert warnings("tenant-a", namespaces=["team-a"]) == [], "itself is no rival"
        assert warnings("empty", namespaces=["new"], members=[]) == [
            "no members: no peer holds the scope's objects, and writes to its namespaces are "
            "refused everywhere"]
    finally:
        s.replica.close()


# -- real kubectl and the Python client against a real server --------------------------------

SCOPE_YAML = textwrap.dedent("""\
    apiVersion: shoal.dev/v1alpha1
    kind: Scope
    metadata:
      name: tenant-a
    spec:
      namespaces: [team-a]
      members: [node-1, n2]
      writers: [node-1]
    """)


@pytest.mark.slow
def test_kubectl_applies_gets_and_explains_scopes(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    assert "scope.shoal.dev/tenant-a created" in node.kubectl(
        "apply", "-f", "-", input=SCOPE_YAML).stdout
    assert "unchanged" in node.kubectl("apply", "-f", "-", input=SCOPE_YAML).stdout
    table = node.kubectl("get", "scopes").stdout.splitlines()
    assert table[0].split() == ["NAME", "NAMESPACES", "MEMBERS", "WRITERS", "AGE"]
    assert table[1].split()[:4] == ["tenant-a", "team-a", "node-1,n2", "node-1"]
    changed = SCOPE_YAML.replace("members: [node-1, n2]", "members: [node-1, n2, n3]")
    assert "configured" in node.kubectl("apply", "-f", "-", input=changed).stdout
    obj = json.loads(node.kubectl("get", "scope", "tenant-a", "-o", "json").stdout)
    assert obj["spec"] == {"namespaces": ["team-a"], "members": ["node-1", "n2", "n3"],
                           "writers": ["node-1"]}
    assert "writers:" in node.kubectl("get", "scope", "tenant-a", "-o", "yaml").stdout
    explained = node.kubectl("explain", "scope.spec").stdout
    assert "KIND:       Scope" in explained and "GROUP:      shoal.dev" in explained
    assert "memberSelector" in explained and "writers" in explained
    bad = node.kubectl("apply", "-f", "-", check=False,
                       input=SCOPE_YAML.replace("writers: [node-1]", "writers: [n9]"))
    assert bad.returncode != 0
    assert 'Scope "tenant-a" is invalid: spec.writers[0]: Invalid value: "n9": must be one ' \
           "of spec.members" in bad.stderr
    rival = node.kubectl("apply", "-f", "-", input=SCOPE_YAML.replace("tenant-a", "zeta"))
    assert 'Warning: namespace "team-a" is already in scope "tenant-a"' in rival.stderr
    assert 'Warning: member "n2" is not a Node (yet)' in rival.stderr
    node.kubectl("delete", "scope", "zeta")
    unknown = node.kubectl("apply", "-f", "-", check=False,
                           input=SCOPE_YAML.replace("  writers:", "  readers: [x]\n  writers:"))
    assert unknown.returncode != 0 and 'unknown field "spec.readers"' in unknown.stderr
    warned = node.kubectl("apply", "--validate=warn", "-f", "-",
                          input=SCOPE_YAML.replace("  writers:", "  readers: [x]\n  writers:"))
    assert 'Warning: unknown field "spec.readers"' in warned.stderr


@pytest.mark.slow
def test_writes_in_a_scope_this_node_does_not_write_are_refused_with_a_403(
    shoal_module: ShoalProcess,
) -> None:
    node = shoal_module
    node.kubectl("apply", "-f", "-", input=textwrap.dedent("""\
        apiVersion: shoal.dev/v1alpha1
        kind: Scope
        metadata: {name: locked}
        spec: {namespaces: [locked-ns], members: [node-1, n2], writers: [n2]}
        ---
        apiVersion: shoal.dev/v1alpha1
        kind: Scope
        metadata: {name: elsewhere}
        spec: {namespaces: [far], members: [n9]}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: locked-ns}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: far}
        """))
    refused = node.kubectl("create", "configmap", "cfg", "-n", "locked-ns",
                           "--from-literal=k=v", check=False)
    assert refused.returncode != 0
    assert ('configmaps "cfg" is forbidden: scopes "locked": this node (node-1) is not a writer '
            "of the scope; write through one of: n2") in refused.stderr
    applied = node.kubectl("apply", "-f", "-", check=False, input=textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: applied, namespace: locked-ns}
        """))
    assert "Error from server (Forbidden)" in applied.stderr
    assert "No resources found" in node.kubectl("get", "configmaps", "-n", "far").stderr
    outside = node.kubectl("create", "configmap", "cfg", "-n", "far", check=False)
    assert outside.returncode != 0
    assert "this node (node-1) is not a member of the scope; write through one of: n9" \
        in outside.stderr
    # The Python client sees the same 403, as a Status naming the resource.
    config.load_kube_config(str(node.kubeconfig))
    with pytest.raises(client.ApiException) as e:
        client.CoreV1Api().create_namespaced_config_map(
            "locked-ns", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py")))
    assert e.value.status == 403
    status = json.loads(e.value.body)
    assert status["reason"] == "Forbidden" and status["details"]["kind"] == "configmaps"
    # The controllers of this node do not act in the scope: no default ServiceAccount there.
    assert "No resources found" in node.kubectl("get", "serviceaccounts", "-n",
                                                "locked-ns").stderr
    # Scopes are written through the client like any cluster-scoped custom object.
    made = client.CustomObjectsApi().create_cluster_custom_object(
        "shoal.dev", "v1alpha1", "scopes", scope("py", namespaces=["py-ns"], members=["node-1"]))
    assert made["metadata"]["uid"]
    raw = json.loads(node.kubectl("get", "--raw", "/shoal/v1/scopes").stdout)
    rows = {r["scope"]: r for r in raw["scopes"]}
    assert raw["node"] == "node-1"
    assert rows["locked"]["member"] and not rows["locked"]["writer"]
    assert not rows["elsewhere"]["member"] and rows["elsewhere"]["objects"] == 0
    printed = subprocess.run([str(VENV_BIN / "shoal"), "scopes", "--kubeconfig",
                              str(node.kubeconfig)], capture_output=True, text=True, check=True)
    lines = printed.stdout.splitlines()
    assert lines[0] == "node node-1"
    assert lines[1].split() == ["SCOPE", "MEMBER", "WRITER", "OBJECTS", "BEHIND", "LAST",
                                "SYNC", "STRANDED"]
    assert any(line.split()[:3] == ["locked", "yes", "no"] for line in lines)


@pytest.mark.slow
def test_three_real_peers_keep_a_scope_on_its_members_and_its_writes_on_its_writer(
    tmp_path: Path,
) -> None:
    from tests.test_cluster import node_names, start_cluster, wait_for

    nodes = start_cluster(tmp_path, 3)
    try:
        a, b, c = nodes
        for n in nodes:
            wait_for(lambda n=n: node_names(n) == {"node-a", "node-b", "node-c"}, 30,
                     f"{n.name} to see every node")
        a.kubectl("apply", "-f", "-", input=textwrap.dedent("""\
            apiVersion: shoal.dev/v1alpha1
            kind: Scope
            metadata: {name: tenant-a}
            spec: {namespaces: [team-a], members: [node-a, node-b], writers: [node-a]}
            """))
        for n in nodes:
            wait_for(lambda n=n: "tenant-a" in n.kubectl("get", "scopes", check=False).stdout,
                     30, f"{n.name} to hold the Scope")
        a.kubectl("create", "namespace", "team-a")
        wait_for(lambda: b.kubectl("get", "namespace", "team-a", check=False).returncode == 0,
                 30, "the namespace on node-b")
        a.kubectl("create", "configmap", "cfg", "-n", "team-a", "--from-literal=secret=s3cr3t")
        wait_for(lambda: b.kubectl("get", "configmap", "cfg", "-n", "team-a",
                                   check=False).returncode == 0, 30, "the ConfigMap on node-b")
        refused = b.kubectl("create", "configmap", "other", "-n", "team-a", check=False)
        assert "this node (node-b) is not a writer of the scope; write through one of: " \
               "node-a" in refused.stderr
        a.kubectl("apply", "-f", "-", input=textwrap.dedent("""\
            apiVersion: apps/v1
            kind: ReplicaSet
            metadata: {name: web, namespace: team-a}
            spec:
              replicas: 4
              selector: {matchLabels: {app: web}}
              template:
                metadata: {labels: {app: web}}
                spec:
                  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
            """))

        def bound() -> set[str]:
            pods = json.loads(a.kubectl("get", "pods", "-n", "team-a", "-o", "json").stdout)
            return {str(p["spec"].get("nodeName") or "") for p in pods["items"]}

        wait_for(lambda: len(json.loads(a.kubectl("get", "pods", "-n", "team-a", "-o",
                                                  "json").stdout)["items"]) == 4
                 and "" not in bound(), 30, "four bound pods")
        assert bound() <= {"node-a", "node-b"}
        time.sleep(3)  # pushes and pulls would have brought anything by now
        assert c.kubectl("get", "configmaps,pods", "-n", "team-a", "-o", "name").stdout == ""

        def on_disk(node: ShoalProcess) -> bytes:
            return b"".join(f.read_bytes() for f in sorted(node.data_dir.glob("state.db*")))

        assert b"s3cr3t" in on_disk(b), "a member holds the value (ConfigMaps are not encrypted)"
        assert b"s3cr3t" not in on_disk(c)

        def row(node: ShoalProcess) -> list[str]:
            out = subprocess.run([str(VENV_BIN / "shoal"), "scopes", "--kubeconfig",
                                  str(node.kubeconfig)], capture_output=True, text=True,
                                 check=True).stdout
            return next(line.split() for line in out.splitlines()
                        if line.startswith("tenant-a"))

        assert row(b)[:3] == ["tenant-a", "yes", "no"] and int(row(b)[3]) >= 5
        assert row(c)[:4] == ["tenant-a", "no", "no", "0"]
        wait_for(lambda: row(b)[4] == "0", 30, "node-b caught up in tenant-a")
    finally:
        for n in nodes:
            n.stop()
