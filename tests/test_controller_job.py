"""The Job controller, in process, with a stand-in kubelet that runs pods to an end."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.job import (
    INDEX_ANNOTATION,
    JobController,
    format_indexes,
    indexed_pod_name,
)
from shoal.control.pod_state import is_active
from shoal.control.replicaset import slot_name
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.conftest import ShoalProcess

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


NS = kind("v1", "Namespace")
POD = kind("v1", "Pod")
JOB = kind("batch/v1", "Job")


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "template": {"spec": {"restartPolicy": "Never",
                              "containers": [{"name": "c", "image": "busybox"}]}},
        **spec}}


async def make_store(node: str, clock: Clock) -> ObjectStore:
    s = ObjectStore(Replica(None, node, clock=clock), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    return s


async def merge(src: ObjectStore, dst: ObjectStore) -> None:
    """Hand every document of ``src`` to ``dst``, as anti-entropy would."""
    for resource in src.replica.resources():
        for (ns, name), entry in src.replica.iter_entries(resource):
            result = dst.replica.merge(resource, ns, name, entry.document())
            if result is not None:
                await result[1]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(clock: Clock) -> AsyncIterator[ObjectStore]:
    s = await make_store("n1", clock)
    yield s
    s.replica.close()


def active(store: ObjectStore) -> list[dict[str, Any]]:
    return [p for p in store.list(POD) if is_active(p)]


async def kubelet(store: ObjectStore, end: str | None = None, limit: int | None = None) -> None:
    """Start pending pods; with ``end``, move up to ``limit`` running pods to that phase."""
    now = now_rfc3339(store.replica.wall.now())
    ended = 0
    for p in store.list(POD):
        phase = (p.get("status") or {}).get("phase")
        new = copy.deepcopy(p)
        if phase == "Pending":
            new["status"] = {"phase": "Running", "startTime": now, "podIP": "10.0.0.1",
                             "conditions": [{"type": "Ready", "status": "True",
                                             "lastTransitionTime": now}]}
        elif phase == "Running" and end and (limit is None or ended < limit):
            new["status"] = {"phase": end, "startTime": now, "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now}]}
            ended += 1
        else:
            continue
        await store.update(POD, new, "default", p["metadata"]["name"], "status", check_rv=False)


async def run(store: ObjectStore, c: JobController, end: str | None = None,
              rounds: int = 20, limit: int | None = None) -> int:
    """Alternate controller passes and kubelet steps; returns the most pods ever active."""
    most = 0
    for _ in range(rounds):
        await c.sync()
        most = max(most, len(active(store)))
        await kubelet(store, end, limit)
    await c.sync()
    return most


def conditions(store: ObjectStore, name: str) -> dict[str, dict[str, Any]]:
    j = store.get(JOB, "default", name)
    return {c["type"]: c for c in (j.get("status") or {}).get("conditions") or []}


async def test_a_job_runs_its_completions_within_parallelism_and_is_then_complete(
    store: ObjectStore,
) -> None:
    await store.create(JOB, job("batch", completions=3, parallelism=2), "default")
    c = JobController(store, backoff_base=0)
    most = await run(store, c, end="Succeeded", limit=1)
    assert most == 2, "parallelism caps the active pods"
    j = store.get(JOB, "default", "batch")
    assert j["status"]["succeeded"] == 3
    assert "active" not in j["status"]
    conds = conditions(store, "batch")
    assert conds["SuccessCriteriaMet"]["status"] == "True"
    # What `kubectl wait --for=condition=complete` reads.
    assert conds["Complete"]["status"] == "True"
    assert j["status"]["completionTime"] and j["status"]["startTime"]
    uid = j["metadata"]["uid"]
    assert {p["metadata"]["name"] for p in store.list(POD)} == {
        slot_name("batch", uid, i) for i in range(3)}


async def test_failures_past_the_backoff_limit_fail_the_job_with_backoff_limit_exceeded(
    store: ObjectStore,
) -> None:
    await store.create(JOB, job("flaky", backoffLimit=1), "default")
    c = JobController(store, backoff_base=0)
    await run(store, c, end="Failed")
    j = store.get(JOB, "default", "flaky")
    assert j["status"]["failed"] == 2, "the limit is 1, so the second failure ends it"
    conds = conditions(store, "flaky")
    assert conds["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    assert "Complete" not in conds and "completionTime" not in j["status"]
    assert len(store.list(POD)) == 2


async def test_a_failed_pod_is_replaced_only_after_the_backoff_delay(
    store: ObjectStore, clock: Clock,
) -> None:
    await store.create(JOB, job("slow"), "default")
    c = JobController(store, backoff_base=10)
    await c.sync()
    await kubelet(store)
    await kubelet(store, end="Failed")
    await c.sync()
    assert not active(store), "still backing off"
    assert c.resync <= 10.0, "a pass is due when the backoff ends"
    clock.t += 11
    await c.sync()
    assert len(active(store)) == 1


async def test_a_job_past_its_active_deadline_fails_and_its_pods_are_stopped(
    store: ObjectStore, clock: Clock,
) -> None:
    await store.create(JOB, job("late", activeDeadlineSeconds=30, parallelism=2, completions=4),
                       "default")
    c = JobController(store, backoff_base=0)
    await run(store, c, rounds=2)
    assert len(active(store)) == 2
    clock.t += 31
    await c.sync()
    await c.sync()
    assert not active(store)
    conds = conditions(store, "late")
    assert conds["Failed"]["reason"] == "DeadlineExceeded"
    assert conds["FailureTarget"]["message"] == "Job was active longer than specified deadline"


async def test_a_finished_job_is_deleted_after_its_ttl(store: ObjectStore, clock: Clock) -> None:
    await store.create(JOB, job("brief", ttlSecondsAfterFinished=60), "default")
    c = JobController(store, backoff_base=0)
    await run(store, c, end="Succeeded", rounds=3)
    assert "Complete" in conditions(store, "brief")
    await c.sync()
    assert store.find(JOB, "default", "brief") is not None
    clock.t += 61
    await c.sync()
    assert store.find(JOB, "default", "brief") is None


async def test_an_indexed_job_names_and_annotates_one_pod_per_index(store: ObjectStore) -> None:
    await store.create(JOB, job("idx", completions=3, parallelism=3,
                                completionMode="Indexed"), "default")
    c = JobController(store, backoff_base=0)
    await c.sync()
    uid = store.get(JOB, "default", "idx")["metadata"]["uid"]
    pods = {p["metadata"]["name"]: p for p in store.list(POD)}
    assert set(pods) == {indexed_pod_name("idx", uid, i, 0) for i in range(3)}
    for name, p in pods.items():
        index = p["metadata"]["annotations"][INDEX_ANNOTATION]
        assert name.startswith(f"idx-{index}-")
        assert p["metadata"]["labels"][INDEX_ANNOTATION] == index
        assert p["spec"]["containers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"
    await run(store, c, end="Succeeded")
    j = store.get(JOB, "default", "idx")
    assert j["status"]["completedIndexes"] == "0-2"
    assert conditions(store, "idx")["Complete"]["status"] == "True"


def test_completed_indexes_are_written_as_intervals() -> None:
    assert format_indexes([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert format_indexes([]) == ""


async def test_a_suspended_job_runs_no_pods_until_it_is_resumed(store: ObjectStore) -> None:
    await store.create(JOB, job("held", suspend=True), "default")
    c = JobController(store, backoff_base=0)
    await c.sync()
    assert not store.list(POD)
    j = store.get(JOB, "default", "held")
    assert conditions(store, "held")["Suspended"]["status"] == "True"
    assert "startTime" not in j["status"]
    new = copy.deepcopy(j)
    new["spec"]["suspend"] = False
    await store.update(JOB, new, "default", "held")
    await c.sync()
    assert len(active(store)) == 1
    assert conditions(store, "held")["Suspended"]["status"] == "False"


async def test_two_partitioned_peers_running_one_job_end_with_one_pod_per_name(
    clock: Clock,
) -> None:
    a, b = await make_store("peer-a", clock), await make_store("peer-b", clock)
    await a.create(JOB, job("split", completions=2, parallelism=2), "default")
    await merge(a, b)  # both sides know the Job before the partition
    for s in (a, b):
        await JobController(s, backoff_base=0).sync()
    assert len(a.list(POD)) == len(b.list(POD)) == 2
    await merge(a, b)
    await merge(b, a)
    names = sorted(p["metadata"]["name"] for p in a.list(POD))
    assert names == sorted(p["metadata"]["name"] for p in b.list(POD))
    assert len(names) == 2, "the same names merged into one pod each"
    # Counting from the merged pods, both sides agree on the Job's status.
    for s in (a, b):
        await kubelet(s)
        await kubelet(s, end="Succeeded")
    await merge(a, b)
    await merge(b, a)
    for s in (a, b):
        await JobController(s, backoff_base=0).sync()
        assert s.get(JOB, "default", "split")["status"]["succeeded"] == 2
    a.replica.close()
    b.replica.close()


JOB_YAML = """
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX"]
  completionMode: Indexed
"""


@pytest.mark.slow
def test_kubectl_wait_for_condition_complete_returns_on_a_real_server(
    shoal: ShoalProcess,
) -> None:
    shoal.kubectl("apply", "-f", "-", input=JOB_YAML)
    r = shoal.kubectl("wait", "--for=condition=complete", "job/once", "--timeout=20s")
    assert "condition met" in r.stdout
    got = json.loads(shoal.kubectl("get", "job", "once", "-o", "json").stdout)
    assert got["status"]["succeeded"] == 2 and got["status"]["completedIndexes"] == "0-1"
    logs = {shoal.kubectl("logs", p).stdout.strip() for p in shoal.kubectl(
        "get", "pods", "-l", "job-name=once", "-o", "name").stdout.split()}
    assert logs == {"index=0", "index=1"}
