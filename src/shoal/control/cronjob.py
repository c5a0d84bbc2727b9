"""The CronJob controller: a Job per scheduled time, named so that every peer agrees.

Follows Kubernetes' CronJob controller (v2): ``schedule`` in ``timeZone``,
``startingDeadlineSeconds``, ``concurrencyPolicy`` (Allow, Forbid, Replace),
``suspend``, the history limits, and the status fields ``active``,
``lastScheduleTime`` and ``lastSuccessfulTime``. Of the schedule times missed
since the last one (or since creation), only the most recent is started.

Every peer runs the controller; the preferred actor for the CronJob's uid
(:mod:`shoal.control.ownership`) fires it. The Job is named
``<cronjob>-<scheduled time in minutes since the epoch>``, as Kubernetes names
it, so two peers that fire the same time (a partition, a change of actor) create
one object, which the merge keeps once. A name this replica holds, even as a
deletion, is never created again: a Job removed by the history limit does not come
back from a peer whose ``lastScheduleTime`` is stale.

``status.active`` is recomputed from the Jobs that the CronJob controls and that
have not finished (Jobs made by ``kubectl create job --from=cronjob/...``, marked
``cronjob.kubernetes.io/instantiate: manual``, do not count, as in Kubernetes),
so peers that merged the same Jobs write the same list.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any

from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.field_owner import created_by
from shoal.control.job import COMPLETE, FAILED, condition, is_finished
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_state import by_controller, owner_kind, parse_time
from shoal.model import cron
from shoal.store.change_feed import Change
from shoal.store.objects import AlreadyExists, NotFound, ObjectStore, StoreError, now_rfc3339

log = logging.getLogger(__name__)

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"
MISSED_LIMIT = 100
"""More unstarted times than this is reported (``TooManyMissedTimes``), as Kubernetes does."""
LOOKBACK_SECONDS = 7 * 86400.0
"""How far back missed times are searched when no deadline bounds it (a CronJob last
fired long ago would otherwise cost a walk over every minute since)."""
COMPONENT = "cronjob-controller"


def job_name(cron_job_name: str, scheduled: float) -> str:
    """``<cronjob>-<minutes since the epoch>``: Kubernetes' name, the same on every peer."""
    return f"{cron_job_name}-{int(scheduled) // 60}"


def _rfc3339_in(seconds: float, tz: datetime.tzinfo) -> str:
    t = datetime.datetime.fromtimestamp(int(seconds), tz)
    return t.isoformat().replace("+00:00", "Z")


def _ref(job: dict[str, Any]) -> dict[str, Any]:
    m = job["metadata"]
    return {"kind": "Job", "namespace": m.get("namespace"), "name": m["name"],
            "uid": m.get("uid"), "apiVersion": "batch/v1",
            "resourceVersion": m.get("resourceVersion")}


def _controlled_by(job: dict[str, Any], uid: str) -> bool:
    """metav1.IsControlledBy: the Job's controller ownerReference names this CronJob's uid."""
    return any(r.get("controller") and r.get("uid") == uid
               for r in job["metadata"].get("ownerReferences") or [])


class CronJobController(Controller):
    name = "cronjob"

    def __init__(self, store: ObjectStore, view: PeerView | None = None, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.default_resync = self.resync
        cj, job = (store.registry.by_kind("batch/v1", "CronJob"),
                   store.registry.by_kind("batch/v1", "Job"))
        assert cj is not None and job is not None
        self.cj_kind, self.job_kind = cj, job
        self._due: float | None = None

    def relevant(self, change: Change) -> bool:
        if change.resource == "jobs.batch":
            return owner_kind(change.obj) == "CronJob"
        return change.resource == "cronjobs.batch"

    def _wake_at(self, when: float) -> None:
        self._due = when if self._due is None else min(self._due, when)

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        self._due = None
        jobs_by_owner = by_controller(self.store.list(self.job_kind))
        scopes = self.scopes.current()
        pending = False
        for cj in self.store.list(self.cj_kind):
            meta = cj["metadata"]
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, meta["uid"], scope_of(scopes, self.cj_kind.resource, cj), scopes):
                continue
            try:
                pending |= await self.reconcile(cj, jobs_by_owner.get(meta["uid"], []), now)
            except StoreError as e:
                log.debug("cronjob %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        # Fire a little after the minute turns, by this peer's clock.
        self.resync = self.default_resync if self._due is None else max(
            0.05, min(self.default_resync, self._due - now + 0.01))
        return pending

    async def reconcile(self, cj: dict[str, Any], owned: list[dict[str, Any]],
                        now: float) -> bool:
        spec = cj.get("spec") or {}
        old = cj.get("status") or {}
        status: dict[str, Any] = copy.deepcopy(old)
        owned = [j for j in owned if not j["metadata"].get("deletionTimestamp")]
        changed = False
        last_success = parse_time(old.get("lastSuccessfulTime"))
        for j in owned:
            if condition(j, COMPLETE) is not None:
                done = parse_time((j.get("status") or {}).get("completionTime"))
                if done is not None and (last_success is None or done > last_success):
                    last_success = done
        if last_success is not None:
            status["lastSuccessfulTime"] = now_rfc3339(last_success)
        active = self._active(owned)
        try:
            schedule = cron.parse(str(spec.get("schedule") or ""))
            tz = cron.time_zone(spec.get("timeZone"))
        except cron.CronError as e:
            await events.record(self.store, cj, "Warning", "UnparseableSchedule",
                                f"unparseable schedule: {spec.get('schedule')!r} : {e}",
                                COMPONENT)
            schedule = None
        if schedule is not None and not spec.get("suspend"):
            fired, active = await self._fire(cj, schedule, tz, active, status, now)
            changed |= fired
        changed |= await self._trim_history(cj, owned)
        status["active"] = [_ref(j) for j in sorted(active, key=lambda j: j["metadata"]["name"])]
        if not status["active"]:
            del status["active"]
        if status != old:
            new = copy.deepcopy(cj)
            new["status"] = status
            m = cj["metadata"]
            await self.store.update(self.cj_kind, new, m.get("namespace"), m["name"], "status")
        return changed

    @staticmethod
    def _active(owned: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [j for j in owned if not is_finished(j) and
                ((j["metadata"].get("annotations") or {}).get(MANUAL_ANNOTATION) != "manual")]

    def _unmet(self, cj: dict[str, Any], schedule: cron.Schedule, tz: datetime.tzinfo,
               now: float) -> float | None:
        """The most recent schedule time not started yet (Kubernetes' mostRecentScheduleTime)."""
        spec = cj.get("spec") or {}
        status = cj.get("status") or {}
        earliest = parse_time(status.get("lastScheduleTime")) or parse_time(
            cj["metadata"].get("creationTimestamp")) or now
        deadline = spec.get("startingDeadlineSeconds")
        if isinstance(deadline, int):
            earliest = max(earliest, now - deadline)
        earliest = max(earliest, now - LOOKBACK_SECONDS)
        times = schedule.times_between(earliest, now, tz, most=MISSED_LIMIT + 1)
        nxt = schedule.next_after(now, tz)
        if nxt is not None:
            self._wake_at(nxt)
        if not times:
            return None
        if len(times) > MISSED_LIMIT:
            log.info("cronjob %s: more than %d missed start times", cj["metadata"]["name"],
                     MISSED_LIMIT)
        return times[-1]

    async def _fire(self, cj: dict[str, Any], schedule: cron.Schedule, tz: datetime.tzinfo,
                    active: list[dict[str, Any]], status: dict[str, Any], now: float,
                    ) -> tuple[bool, list[dict[str, Any]]]:
        spec = cj.get("spec") or {}
        meta = cj["metadata"]
        scheduled = self._unmet(cj, schedule, tz, now)
        if scheduled is None:
            return False, active
        deadline = spec.get("startingDeadlineSeconds")
        if isinstance(deadline, int) and scheduled + deadline < now:
            await events.record(self.store, cj, "Warning", "MissSchedule",
                                f"Missed scheduled time to start a job: "
                                f"{_rfc3339_in(scheduled, tz)}", COMPONENT)
            return False, active
        name = job_name(meta["name"], scheduled)
        ns = meta.get("namespace") or "default"
        if self.store.replica.entry(self.job_kind.resource, ns, name) is not None:
            existing = self.store.find(self.job_kind, ns, name)
            if existing is not None and not _controlled_by(existing, meta["uid"]):
                # Someone else's Job holds the name (made by hand, or by an older CronJob of
                # this name): as Kubernetes, the run is blocked and the time not recorded, so
                # it is looked up again until the next time supersedes it.
                log.info("cronjob %s/%s: job %s exists and is not its own: not started",
                         ns, meta["name"], name)
                return False, active
            # Fired already (here or by a peer whose Job merged in), perhaps since deleted.
            status["lastScheduleTime"] = self._later(status.get("lastScheduleTime"), scheduled)
            return False, active
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            # Not recorded as scheduled: it starts once the active Job ends, if still in time.
            return False, active
        changed = False
        if policy == "Replace":
            for j in active:
                changed |= await self._delete_job(cj, j, "SuccessfulDelete",
                                                  f"Deleted job {j['metadata']['name']}")
            active = []
        job = self._job(cj, name, scheduled, tz)
        try:
            created = await self.store.create(self.job_kind, job, ns,
                                              managed_fields=created_by(self.store, self.job_kind))
        except AlreadyExists:
            created = None
        if created is not None:
            active = [*active, created]
            changed = True
            await events.record(self.store, cj, "Normal", "SuccessfulCreate",
                                f"Created job {name}", COMPONENT)
        status["lastScheduleTime"] = self._later(status.get("lastScheduleTime"), scheduled)
        return changed, active

    @staticmethod
    def _later(current: Any, scheduled: float) -> str:
        t = parse_time(current)
        return now_rfc3339(scheduled if t is None or scheduled > t else t)

    def _job(self, cj: dict[str, Any], name: str, scheduled: float,
             tz: datetime.tzinfo) -> dict[str, Any]:
        meta = cj["metadata"]
        template = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
        tmeta = template.get("metadata") or {}
        annotations = dict(tmeta.get("annotations") or {})
        annotations[SCHEDULED_ANNOTATION] = _rfc3339_in(scheduled, tz)
        return {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "name": name, "namespace": meta.get("namespace"),
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                    "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": template.get("spec") or {},
        }

    async def _trim_history(self, cj: dict[str, Any], owned: list[dict[str, Any]]) -> bool:
        """Delete the oldest finished Jobs beyond the history limits."""
        spec = cj.get("spec") or {}
        changed = False
        for ctype, key in ((COMPLETE, "successfulJobsHistoryLimit"),
                           (FAILED, "failedJobsHistoryLimit")):
            limit = spec.get(key)
            if not isinstance(limit, int):
                continue
            done = [j for j in owned if condition(j, ctype) is not None]
            if len(done) <= limit:
                continue
            done.sort(key=lambda j: (parse_time((j.get("status") or {}).get("startTime"))
                                     or parse_time(j["metadata"].get("creationTimestamp")) or 0.0,
                                     j["metadata"]["name"]))
            for j in done[: len(done) - limit]:
                changed |= await self._delete_job(cj, j, "SuccessfulDelete",
                                                  f"Deleted job {j['metadata']['name']}")
        return changed

    async def _delete_job(self, cj: dict[str, Any], job: dict[str, Any], reason: str,
                          message: str) -> bool:
        m = job["metadata"]
        try:
            await self.store.delete(self.job_kind, m.get("namespace"), m["name"],
                                    propagation="Background", precondition_uid=m.get("uid"))
        except (NotFound, StoreError) as e:
            log.debug("job %s not deleted: %s", m["name"], e)
            return False
        await events.record(self.store, cj, "Normal", reason, message, COMPONENT)
        return True
