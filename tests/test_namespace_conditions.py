"""A Terminating namespace says in its status conditions what it still holds."""

from __future__ import annotations

from typing import Any

from shoal.control.namespace_conditions import conditions
from shoal.control.namespace_lifecycle import NamespaceLifecycle
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
NS, CM, DEPLOY = (REG.by_kind(*k) for k in (("v1", "Namespace"), ("v1", "ConfigMap"),
                                            ("apps/v1", "Deployment")))


def _by_type(ns: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ns["status"]["conditions"]}


async def test_a_terminating_namespace_names_the_resources_and_finalizers_it_waits_for(
        ) -> None:
    store = ObjectStore(Replica(None, "pi-1"), REG)
    assert NS and CM and DEPLOY
    await store.create(NS, {"metadata": {"name": "tmp"}})
    for name in ("a", "b"):
        await store.create(CM, {"metadata": {"name": name, "finalizers": ["example.com/keep"]}},
                           "tmp")
    await store.create(DEPLOY, {"metadata": {"name": "web", "finalizers": ["example.com/keep",
                                                                          "example.com/other"]},
                                "spec": {"selector": {"matchLabels": {"a": "b"}},
                                         "template": {"metadata": {"labels": {"a": "b"}},
                                                      "spec": {"containers": [
                                                          {"name": "c", "image": "x"}]}}}},
                       "tmp")
    await store.create(CM, {"metadata": {"name": "plain"}}, "tmp")
    await store.delete(NS, None, "tmp")
    lifecycle = NamespaceLifecycle(store)
    assert await lifecycle.sync()  # still waiting
    conds = _by_type(store.get(NS, None, "tmp"))
    assert list(conds) == ["NamespaceDeletionDiscoveryFailure",
                           "NamespaceDeletionGroupVersionParsingFailure",
                           "NamespaceDeletionContentFailure", "NamespaceContentRemaining",
                           "NamespaceFinalizersRemaining"]
    assert conds["NamespaceContentRemaining"]["status"] == "True"
    assert conds["NamespaceContentRemaining"]["reason"] == "SomeResourcesRemain"
    assert conds["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: configmaps. has 2 resource instances, "
        "deployments.apps has 1 resource instances")
    assert conds["NamespaceFinalizersRemaining"]["message"] == (
        "Some content in the namespace has finalizers remaining: example.com/keep in 3 "
        "resource instances, example.com/other in 1 resource instances")
    assert conds["NamespaceDeletionContentFailure"]["status"] == "False"
    assert conds["NamespaceDeletionContentFailure"]["reason"] == "ContentDeleted"
    rv = store.get(NS, None, "tmp")["metadata"]["resourceVersion"]
    await lifecycle.sync()
    assert store.get(NS, None, "tmp")["metadata"]["resourceVersion"] == rv, "rewritten unchanged"
    # The finalizers go: the namespace goes with its content.
    for k, name in ((CM, "a"), (CM, "b"), (DEPLOY, "web")):
        assert k
        obj = dict(store.get(k, "tmp", name))
        obj["metadata"] = {**obj["metadata"], "finalizers": []}
        await store.update(k, obj, "tmp", name)
    for _ in range(3):
        if not await lifecycle.sync():
            break
    assert store.find(NS, None, "tmp") is None


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = conditions([], {"pods.": 2}, {}, "2026-01-01T00:00:00Z")  # type: ignore[arg-type]
    later = conditions(first, {"pods.": 1}, {}, "2026-01-01T00:01:00Z")  # type: ignore[arg-type]
    by = {c["type"]: c for c in later}
    assert by["NamespaceContentRemaining"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert by["NamespaceContentRemaining"]["message"].endswith("pods. has 1 resource instances")
    done = {c["type"]: c for c in conditions(later, {}, {}, "2026-01-01T00:02:00Z")}  # type: ignore[arg-type]
    assert done["NamespaceContentRemaining"] == {
        "type": "NamespaceContentRemaining", "status": "False",
        "lastTransitionTime": "2026-01-01T00:02:00Z", "reason": "ContentRemoved",
        "message": "All content successfully removed"}
