"""shoal.authz.scopes: which scope an object is in, who holds it and who may write it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shoal.authz.scopes import (
    CLUSTER,
    EMPTY,
    NAMESPACES,
    NODES,
    SCOPES,
    ScopeIndex,
    ScopeMap,
    ScopeRule,
)
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica


def scope(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shoal.dev/v1alpha1", "kind": "Scope", "metadata": {"name": name},
            "spec": spec}


def rules(*objs: dict[str, Any]) -> list[ScopeRule]:
    out = [ScopeRule.parse(o) for o in objs]
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def test_with_no_scopes_everything_is_in_the_cluster_scope_and_every_peer_writes() -> None:
    assert EMPTY.scope_of("configmaps", "team-a") == CLUSTER
    assert EMPTY.members(CLUSTER) is None
    assert EMPTY.is_member(CLUSTER, "anyone") and EMPTY.is_writer(CLUSTER, "anyone")
    assert EMPTY.scopes_of("n1") == frozenset([CLUSTER])
    assert EMPTY.names() == []


def test_listed_namespaces_members_and_writers() -> None:
    m = ScopeMap(rules(scope("tenant-a", namespaces=["team-a"], members=["n1", "n2"],
                             writers=["n1"])))
    assert m.scope_of("secrets", "team-a") == "tenant-a"
    assert m.scope_of("secrets", "team-b") == CLUSTER
    # Cluster-scoped objects, the Namespace itself and Scope objects stay in the cluster scope.
    assert m.scope_of("nodes", "") == CLUSTER
    assert m.scope_of(NAMESPACES, "") == CLUSTER
    assert m.scope_of(SCOPES, "team-a") == CLUSTER
    assert m.members("tenant-a") == {"n1", "n2"}
    assert m.writers("tenant-a") == {"n1"}
    assert m.is_member("tenant-a", "n2") and not m.is_writer("tenant-a", "n2")
    assert not m.is_member("tenant-a", "n3")
    assert m.scopes_of("n2") == {CLUSTER, "tenant-a"}
    assert m.scopes_of("n3") == {CLUSTER}
    assert m.namespaces_of("tenant-a") == {"team-a"}


def test_writers_default_to_every_member_and_are_cut_down_to_members() -> None:
    m = ScopeMap(rules(scope("a", namespaces=["x"], members=["n1", "n2"]),
                       scope("b", namespaces=["y"], members=["n1"], writers=["n1", "n9"])))
    assert m.writers("a") == {"n1", "n2"}
    assert m.writers("b") == {"n1"}, "a writer that is not a member writes nothing"


def test_selectors_pick_namespaces_and_members_by_labels() -> None:
    m = ScopeMap(
        rules(scope("edge", namespaceSelector={"matchLabels": {"tenant": "edge"}},
                    memberSelector={"matchExpressions": [
                        {"key": "site", "operator": "In", "values": ["north", "south"]}]},
                    members=["hub"])),
        namespace_labels={"cams": {"tenant": "edge"}, "web": {"tenant": "cloud"}},
        node_labels={"pi-1": {"site": "north"}, "pi-2": {"site": "east"}, "hub": {}},
    )
    assert m.scope_of("pods", "cams") == "edge"
    assert m.scope_of("pods", "web") == CLUSTER
    assert m.members("edge") == {"pi-1", "hub"}
    assert m.writers("edge") == {"pi-1", "hub"}


def test_an_empty_selector_selects_nothing() -> None:
    m = ScopeMap(rules(scope("s", namespaceSelector={}, memberSelector={})),
                 namespace_labels={"x": {}}, node_labels={"n1": {}})
    assert m.scope_of("pods", "x") == CLUSTER
    assert m.members("s") == frozenset()


def test_the_clusters_own_namespaces_stay_in_the_cluster_scope() -> None:
    """Named (a Scope stored before validation refused it) or selected by labels, as
    ``kubernetes.io/metadata.name`` selects any namespace."""
    m = ScopeMap(rules(scope("sys", namespaces=["kube-system", "apps"], members=["n1"]),
                       scope("all", namespaceSelector={"matchExpressions": [
                           {"key": "kubernetes.io/metadata.name", "operator": "Exists"}]},
                           members=["n2"])),
                 namespace_labels={n: {"kubernetes.io/metadata.name": n}
                                   for n in ("kube-system", "kube-node-lease", "web")})
    assert m.scope_of("services", "kube-system") == CLUSTER
    assert m.scope_of("leases", "kube-node-lease") == CLUSTER
    assert m.scope_of("pods", "apps") == "sys" and m.scope_of("pods", "web") == "all"


def test_a_namespace_claimed_twice_belongs_to_the_scope_whose_name_sorts_first() -> None:
    m = ScopeMap(rules(scope("zeta", namespaces=["shared"], members=["n1"]),
                       scope("alpha", namespaces=["shared"], members=["n2"])))
    assert m.scope_of("pods", "shared") == "alpha"
    assert m.namespaces_of("zeta") == frozenset()


def test_a_scope_that_no_longer_exists_has_no_members_or_writers() -> None:
    m = ScopeMap(rules(scope("a", namespaces=["x"], members=["n1"])))
    assert m.members("gone") == frozenset()
    assert not m.is_writer("gone", "n1")


def test_malformed_scopes_are_ignored() -> None:
    assert ScopeRule.parse({"metadata": {"name": "x"}}) is None
    assert ScopeRule.parse(scope("x", namespaceSelector={"matchExpressions": [
        {"key": "a", "operator": "Bogus"}]})) is None


async def test_the_index_rebuilds_only_when_scopes_namespaces_or_nodes_change() -> None:
    reg = KindRegistry()
    kinds = {k: reg.by_kind(v, k) for v, k in (("v1", "Namespace"), ("v1", "ConfigMap"),
                                               ("v1", "Node"),
                                               ("shoal.dev/v1alpha1", "Scope"))}
    store = ObjectStore(Replica(None, "n1"), reg)
    try:
        ns, cm, node, sc = (kinds[k] for k in ("Namespace", "ConfigMap", "Node", "Scope"))
        assert ns is not None and cm is not None and node is not None and sc is not None
        index = ScopeIndex(store.replica)
        assert index.current().names() == []
        built = index.rebuilds
        await store.create(ns, {"metadata": {"name": "team-a", "labels": {"t": "a"}}})
        await store.create(cm, {"metadata": {"name": "c"}, "data": {"k": "v"}}, "team-a")
        index.current()
        assert index.rebuilds == built, "no selector: namespaces do not matter yet"
        await store.create(sc, scope("tenant-a", namespaceSelector={"matchLabels": {"t": "a"}},
                                     memberSelector={"matchLabels": {"site": "n"}}))
        m = index.current()
        assert index.rebuilds == built + 1
        assert m.scope_of("configmaps", "team-a") == "tenant-a"
        assert m.members("tenant-a") == frozenset()
        await store.create(cm, {"metadata": {"name": "d"}}, "team-a")
        assert index.current() is m, "a ConfigMap changes nothing"
        await store.create(node, {"metadata": {"name": "n1", "labels": {"site": "n"}}})
        assert index.current().members("tenant-a") == {"n1"}
        assert index.rebuilds == built + 2
        assert store.replica.resource_revision(NODES) > 0
    finally:
        store.replica.close()


_NAMES = st.sampled_from(["a", "b", "c", "d"])
_NAMESPACES = st.sampled_from(["ns1", "ns2", "ns3", "ns4", "ns5"])
_LABELS = st.sampled_from(["x", "y"])


@st.composite
def _scope_objects(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(_NAMES, unique=True, max_size=4))
    out = []
    for n in names:
        spec: dict[str, Any] = {"namespaces": draw(st.lists(_NAMESPACES, unique=True,
                                                            max_size=3)),
                                "members": ["n1"]}
        if draw(st.booleans()):
            spec["namespaceSelector"] = {"matchLabels": {"l": draw(_LABELS)}}
        out.append(scope(n, **spec))
    return out


@given(_scope_objects(), st.dictionaries(_NAMESPACES, _LABELS), st.randoms())
def test_every_namespace_lands_in_exactly_one_scope_whatever_the_order(
    objs: list[dict[str, Any]], ns_label: dict[str, str], rnd: Any,
) -> None:
    labels = {ns: {"l": v} for ns, v in ns_label.items()}
    m = ScopeMap(rules(*objs), labels)
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    again = ScopeMap(rules(*shuffled), labels)
    assert m.fingerprint() == again.fingerprint()
    for ns in ["ns1", "ns2", "ns3", "ns4", "ns5"]:
        holders = [s for s in m.names() if ns in m.namespaces_of(s)]
        assert len(holders) <= 1
        assert m.scope_of("pods", ns) == (holders[0] if holders else CLUSTER)
        claimants = sorted(
            o["metadata"]["name"] for o in objs
            if ns in o["spec"]["namespaces"]
            or ("namespaceSelector" in o["spec"] and ns in labels
                and labels[ns] == o["spec"]["namespaceSelector"]["matchLabels"]))
        assert m.scope_of("pods", ns) == (claimants[0] if claimants else CLUSTER)
