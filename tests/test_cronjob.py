"""CronJob: the schedule parser and the controller in process, on a clock the test moves."""

from __future__ import annotations

import copy
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.cronjob import SCHEDULED_ANNOTATION, CronJobController, job_name
from shoal.model import cron
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica

REG = KindRegistry()
UTC = datetime.UTC


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


NS, JOB, CJ = kind("v1", "Namespace"), kind("batch/v1", "Job"), kind("batch/v1", "CronJob")
T0 = datetime.datetime(2026, 12, 3, 8, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t


def at(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- the parser -------------------------------------------------------------------------


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("* * * * *", "2026-12-03T08:00:30", "2026-12-03T08:01:00"),
    ("*/15 9-17 * * mon-fri", "2026-12-04T17:50:00", "2026-12-07T09:00:00"),
    ("@hourly", "2026-12-03T08:00:00", "2026-12-03T09:00:00"),
    ("@monthly", "2026-12-03T08:00:00", "2027-01-01T00:00:00"),
    ("0 0 1,15 * 1", "2026-12-02T00:00:00", "2026-12-07T00:00:00"),  # either day field
    ("0 0 13 * *", "2026-12-02T00:00:00", "2026-12-13T00:00:00"),
    ("5 4 * * 7", "2026-12-03T00:00:00", "2026-12-06T04:05:00"),  # 7 is Sunday
    ("0 12 * JAN,feb ?", "2026-12-03T00:00:00", "2027-01-01T12:00:00"),
])
def test_a_schedule_fires_next_at_the_time_cron_would(schedule: str, after: str,
                                                      expected: str) -> None:
    nxt = cron.parse(schedule).next_after(at(after))
    assert nxt == at(expected)


def test_a_schedule_is_read_in_its_time_zone() -> None:
    berlin = cron.time_zone("Europe/Berlin")
    nxt = cron.parse("0 9 * * *").next_after(at("2026-12-03T00:00:00"), berlin)
    assert nxt == at("2026-12-03T08:00:00")  # 09:00 in Berlin is 08:00 UTC in winter


@pytest.mark.parametrize("bad", ["", "* * * *", "60 * * * *", "* 24 * * *", "@fortnightly",
                                 "*/0 * * * *", "5-1 * * * *", "x * * * *", "@every 0s"])
def test_a_bad_schedule_is_refused(bad: str) -> None:
    with pytest.raises(cron.CronError):
        cron.parse(bad)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(cron.CronError):
        cron.time_zone("Mars/Olympus")


# -- the controller ------------------------------------------------------------------------


def cronjob(name: str = "tick", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "schedule": "* * * * *",
        "jobTemplate": {"metadata": {"labels": {"team": "a"}}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}},
        **spec}}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(clock: Clock) -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1", clock=clock), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


def jobs(store: ObjectStore) -> list[str]:
    return sorted(j["metadata"]["name"] for j in store.list(JOB, "default"))


async def finish(store: ObjectStore, name: str, ctype: str = "Complete",
                 when: float | None = None) -> None:
    job = copy.deepcopy(store.get(JOB, "default", name))
    stamp = now_rfc3339(when if when is not None else store.replica.wall.now())
    job["status"] = {"startTime": stamp, "conditions": [
        {"type": ctype, "status": "True", "lastTransitionTime": stamp}]}
    if ctype == "Complete":
        job["status"]["completionTime"] = stamp
    await store.update(JOB, job, "default", name, "status")


async def test_each_minute_makes_one_job_named_after_its_time(store: ObjectStore,
                                                             clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(), "default")
    await ctl.sync()
    assert jobs(store) == []  # created at 08:00:30: the first time is 08:01
    assert 29 < ctl.resync <= 30.1
    clock.t = at("2026-12-03T08:01:00") + 0.5
    await ctl.sync()
    await ctl.sync()  # a second pass in the same minute fires nothing more
    name = job_name("tick", at("2026-12-03T08:01:00"))
    assert name == f"tick-{int(at('2026-12-03T08:01:00')) // 60}"
    assert jobs(store) == [name]
    job = store.get(JOB, "default", name)
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2026-12-03T08:01:00Z"
    assert job["metadata"]["labels"]["team"] == "a"
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("CronJob", "tick", True)
    status = store.get(CJ, "default", "tick")["status"]
    assert status["lastScheduleTime"] == "2026-12-03T08:01:00Z"
    assert [a["name"] for a in status["active"]] == [name]


async def test_missed_times_start_only_the_most_recent(store: ObjectStore,
                                                      clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(), "default")
    clock.t = at("2026-12-03T08:10:10")
    await ctl.sync()
    assert jobs(store) == [job_name("tick", at("2026-12-03T08:10:00"))]


async def test_a_start_past_the_starting_deadline_is_skipped(store: ObjectStore,
                                                            clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(schedule="0 * * * *", startingDeadlineSeconds=30),
                       "default")
    clock.t = at("2026-12-03T09:00:45")
    await ctl.sync()
    assert jobs(store) == []
    clock.t = at("2026-12-03T10:00:20")
    await ctl.sync()
    assert jobs(store) == [job_name("tick", at("2026-12-03T10:00:00"))]


async def test_suspend_starts_nothing(store: ObjectStore, clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(suspend=True), "default")
    clock.t = at("2026-12-03T08:05:01")
    await ctl.sync()
    assert jobs(store) == []


async def test_forbid_waits_for_the_active_job_and_replace_deletes_it(store: ObjectStore,
                                                                     clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob("forbid", concurrencyPolicy="Forbid"), "default")
    await store.create(CJ, cronjob("replace", concurrencyPolicy="Replace"), "default")
    clock.t = at("2026-12-03T08:01:01")
    await ctl.sync()
    clock.t = at("2026-12-03T08:02:01")
    await ctl.sync()
    m1, m2 = int(at("2026-12-03T08:01:00")) // 60, int(at("2026-12-03T08:02:00")) // 60
    assert jobs(store) == [f"forbid-{m1}", f"replace-{m2}"]
    await finish(store, f"forbid-{m1}")
    await ctl.sync()
    assert f"forbid-{m2}" in jobs(store)


async def test_history_limits_keep_the_newest_finished_jobs(store: ObjectStore,
                                                           clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1),
                       "default")
    names = []
    for minute in range(1, 6):
        clock.t = at(f"2026-12-03T08:0{minute}:01")
        await ctl.sync()
        names.append(job_name("tick", at(f"2026-12-03T08:0{minute}:00")))
        await finish(store, names[-1], "Failed" if minute == 1 else "Complete")
    await ctl.sync()
    assert jobs(store) == [names[0], *names[3:]]
    status = store.get(CJ, "default", "tick")["status"]
    assert "active" not in status
    assert status["lastSuccessfulTime"] == "2026-12-03T08:05:01Z"


async def test_a_deleted_job_of_a_fired_time_is_not_created_again(store: ObjectStore,
                                                                 clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(), "default")
    clock.t = at("2026-12-03T08:01:01")
    await ctl.sync()
    name = jobs(store)[0]
    # A peer with a stale status (no lastScheduleTime) takes over after the Job is gone.
    cj = copy.deepcopy(store.get(CJ, "default", "tick"))
    cj["status"] = {}
    await store.update(CJ, cj, "default", "tick", "status")
    await store.delete(JOB, "default", name)
    await ctl.sync()
    assert jobs(store) == []


async def test_a_schedule_in_a_time_zone_names_its_time_in_the_annotation(
        store: ObjectStore, clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(schedule="0 9 * * *", timeZone="Europe/Berlin"), "default")
    clock.t = at("2026-12-04T08:00:05")
    await ctl.sync()
    job = store.get(JOB, "default", job_name("tick", at("2026-12-04T08:00:00")))
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2026-12-04T09:00:00+01:00"


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field", "detail"), [
    ({"schedule": "61 * * * *"}, "spec.schedule", "minute out of range (0-59): 61"),
    ({"schedule": "CRON_TZ=UTC * * * * *"}, "spec.schedule", "cannot use TZ or CRON_TZ"),
    ({"timeZone": "Mars/Olympus"}, "spec.timeZone", "unknown time zone Mars/Olympus"),
    ({"timeZone": "Local"}, "spec.timeZone", "explicit time zone"),
    ({"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy", "supported values"),
    ({"startingDeadlineSeconds": -1}, "spec.startingDeadlineSeconds", "greater than or equal"),
])
async def test_a_bad_cronjob_is_refused_with_the_field_at_fault(
        store: ObjectStore, change: dict[str, Any], field: str, detail: str) -> None:
    from shoal.store.objects import Invalid

    with pytest.raises(Invalid) as e:
        await store.create(CJ, cronjob(**change), "default")
    causes = [(c.field, c.message) for c in e.value.causes]
    assert any(f == field and detail in m for f, m in causes), causes


async def test_a_cronjob_name_longer_than_52_characters_is_refused(store: ObjectStore) -> None:
    from shoal.store.objects import Invalid

    with pytest.raises(Invalid) as e:
        await store.create(CJ, cronjob("x" * 53), "default")
    assert "must be no more than 52 characters" in str(e.value)


async def test_a_cronjob_gets_kubernetes_defaults(store: ObjectStore) -> None:
    spec = (await store.create(CJ, cronjob(), "default"))["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


async def test_a_hand_made_job_with_the_scheduled_name_blocks_that_run(store: ObjectStore,
                                                                      clock: Clock) -> None:
    ctl = CronJobController(store)
    await store.create(CJ, cronjob(), "default")
    name = job_name("tick", at("2026-12-03T08:01:00"))
    await store.create(JOB, {"metadata": {"name": name}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}},
        "default")
    clock.t = at("2026-12-03T08:01:00") + 0.5
    await ctl.sync()
    await ctl.sync()
    assert jobs(store) == [name]  # the hand-made one only: not adopted, not replaced
    status = store.get(CJ, "default", "tick").get("status") or {}
    assert "lastScheduleTime" not in status and "active" not in status
    clock.t = at("2026-12-03T08:02:00") + 0.5  # the next time runs as usual
    await ctl.sync()
    nxt = job_name("tick", at("2026-12-03T08:02:00"))
    assert jobs(store) == [name, nxt]
    status = store.get(CJ, "default", "tick")["status"]
    assert status["lastScheduleTime"] == "2026-12-03T08:02:00Z"
    assert [a["name"] for a in status["active"]] == [nxt]
