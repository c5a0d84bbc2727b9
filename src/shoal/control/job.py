"""The Job controller: run pods to completion, with names every peer agrees on.

Follows Kubernetes' job controller: ``completions`` and ``parallelism``,
``backoffLimit`` (failed pods, and container restarts with ``OnFailure``),
``activeDeadlineSeconds``, ``suspend``, ``ttlSecondsAfterFinished`` and the
``NonIndexed`` and ``Indexed`` completion modes. Finishing takes two steps, as
in current Kubernetes: first the interim ``SuccessCriteriaMet`` or
``FailureTarget`` condition, then, once no pod of the Job is still
terminating, ``Complete`` (with ``completionTime``) or ``Failed``.

Without a leader the counts are not increments. A pod's name is derived from
the Job's uid and an attempt number (and its completion index, for Indexed
Jobs), and finished pods are kept until the Job is deleted, so
``status.succeeded`` and ``status.failed`` are recounted from the pods, never
lowered below what status already says: two peers that ran the Job while
apart agree on the counts once their pods merge. Extra active pods left by a
merge are trimmed with ``pod_state.deletion_rank``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.field_owner import created_by
from shoal.control.ownership import PeerView, SinglePeer, scope_of, should_act
from shoal.control.pod_control import delete_pod
from shoal.control.pod_state import (
    by_controller,
    controller_uid,
    deletion_rank,
    is_active,
    is_ready,
    owner_kind,
    parse_time,
)
from shoal.control.replicaset import pod_from_template, slot_name
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.store.change_feed import Change
from shoal.store.objects import (
    AlreadyExists,
    Forbidden,
    NotFound,
    ObjectStore,
    StoreError,
    now_rfc3339,
)

log = logging.getLogger(__name__)

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
INDEX_ENV = "JOB_COMPLETION_INDEX"
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAX_ATTEMPTS_SCANNED = 10_000

COMPLETE, FAILED = "Complete", "Failed"
SUCCESS_CRITERIA_MET, FAILURE_TARGET = "SuccessCriteriaMet", "FailureTarget"
SUSPENDED = "Suspended"
REASON_COMPLETIONS_REACHED = "CompletionsReached"
REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
REASON_DEADLINE = "DeadlineExceeded"
MSG_COMPLETIONS_REACHED = "Reached expected number of succeeded pods"
MSG_BACKOFF_LIMIT = "Job has reached the specified backoff limit"
MSG_DEADLINE = "Job was active longer than specified deadline"

BACKOFF_BASE = 10.0
"""Seconds before the first replacement of a failed pod; doubles per failure (Kubernetes')."""
BACKOFF_MAX = 360.0


def indexed_pod_name(job_name: str, job_uid: str, index: int, attempt: int) -> str:
    """``<job>-<index>-<suffix>``, the suffix from the uid, index and attempt."""
    digest = hashlib.blake2b(f"{job_uid}/{index}/{attempt}".encode(), digest_size=8).digest()
    n = int.from_bytes(digest, "big")
    suffix = ""
    for _ in range(5):
        n, r = divmod(n, len(ALPHABET))
        suffix += ALPHABET[r]
    prefix = f"{job_name}-{index}"
    return f"{prefix[: 63 - 6]}-{suffix}"


def completion_index(pod: dict[str, Any]) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def format_indexes(indexes: Iterable[int]) -> str:
    """``0-2,4``: Kubernetes' interval form of ``completedIndexes``."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(indexes)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def condition(job: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def is_finished(job: dict[str, Any]) -> bool:
    return condition(job, COMPLETE) is not None or condition(job, FAILED) is not None


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _finished_at(pod: dict[str, Any]) -> float:
    """When a pod finished, from its containers (or its start, or 0)."""
    status = pod.get("status") or {}
    latest = 0.0
    for cs in status.get("containerStatuses") or []:
        t = parse_time((((cs or {}).get("state") or {}).get("terminated") or {}).get("finishedAt"))
        if t is not None:
            latest = max(latest, t)
    return latest or (parse_time(status.get("startTime")) or 0.0)


def _restarts(pod: dict[str, Any]) -> int:
    status = pod.get("status") or {}
    return sum(int((cs or {}).get("restartCount", 0) or 0)
               for key in ("initContainerStatuses", "containerStatuses")
               for cs in status.get(key) or [])


class JobController(Controller):
    name = "job"

    def __init__(self, store: ObjectStore, view: PeerView | None = None,
                 backoff_base: float = BACKOFF_BASE, **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.backoff_base = backoff_base
        self.default_resync = self.resync
        job, pod = store.registry.by_kind("batch/v1", "Job"), store.registry.by_kind("v1", "Pod")
        assert job is not None and pod is not None
        self.job_kind, self.pod_kind = job, pod
        self._due: float | None = None

    def relevant(self, change: Change) -> bool:
        if change.resource == "pods":
            return owner_kind(change.obj) == "Job"
        return change.resource == "jobs.batch"

    def _wake_at(self, when: float) -> None:
        """Ask for a pass at ``when`` (a deadline, a TTL or a backoff ends then)."""
        self._due = when if self._due is None else min(self._due, when)

    async def sync(self) -> bool:
        now = self.store.replica.wall.now()
        self._due = None
        pods_by_owner = by_controller(self.store.list(self.pod_kind))
        pending = False
        scopes = self.scopes.current()
        for job in self.store.list(self.job_kind):
            meta = job["metadata"]
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, meta["uid"], scope_of(scopes, self.job_kind.resource, job), scopes):
                continue
            try:
                if await self.reconcile(job, pods_by_owner.get(meta["uid"], []), now):
                    pending = True
            except StoreError as e:
                log.debug("job %s/%s: %s", meta.get("namespace"), meta["name"], e)
                pending = True
        # The base loop has no timers: the next resync is moved up to the earliest one due.
        self.resync = self.default_resync if self._due is None else max(
            0.05, min(self.default_resync, self._due - now))
        return pending

    async def reconcile(self, job: dict[str, Any], owned: list[dict[str, Any]],
                        now: float) -> bool:
        spec = job.get("spec") or {}
        try:
            selector = LabelSelector.from_api(spec.get("selector"))
        except SelectorError:
            return False
        owned = [p for p in owned if selector.matches((p.get("metadata") or {}).get("labels"))]
        if is_finished(job):
            return await self._expire(job, now)
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        active = [p for p in owned if is_active(p)]
        terminating = [p for p in owned if p["metadata"].get("deletionTimestamp")
                       and _phase(p) not in ("Succeeded", "Failed")]
        failed_pods = [p for p in owned if _phase(p) == "Failed"]
        old = job.get("status") or {}
        failed = max(int(old.get("failed", 0) or 0), len(failed_pods))
        succeeded_indexes: set[int] = set()
        if indexed:
            succeeded_indexes = {i for p in owned if _phase(p) == "Succeeded"
                                 and (i := completion_index(p)) is not None
                                 and 0 <= i < int(completions or 0)}
            succeeded = len(succeeded_indexes)
        else:
            succeeded = max(int(old.get("succeeded", 0) or 0),
                            sum(1 for p in owned if _phase(p) == "Succeeded"))
        status: dict[str, Any] = copy.deepcopy(old)
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        stamp = now_rfc3339(now)
        suspended = bool(spec.get("suspend"))
        if not status.get("startTime") and not suspended:
            status["startTime"] = stamp
        changed = False
        target = condition(job, SUCCESS_CRITERIA_MET) or condition(job, FAILURE_TARGET)
        if target is None:
            target = self._failure(job, status, failed, active, now)
        if target is None:
            done = (succeeded > 0 and not active) if completions is None else \
                (succeeded >= int(completions) and not active)
            if done:
                target = self._cond(SUCCESS_CRITERIA_MET, REASON_COMPLETIONS_REACHED,
                                    MSG_COMPLETIONS_REACHED, stamp)
        if target is not None:
            if not any(c.get("type") == target["type"] for c in conditions):
                conditions.append(target)
            for p in active:
                changed |= await self._delete(p)
            still = [p for p in self._pods(job, selector) if is_active(p)
                     or (p["metadata"].get("deletionTimestamp")
                         and _phase(p) not in ("Succeeded", "Failed"))]
            if not still:
                final = COMPLETE if target["type"] == SUCCESS_CRITERIA_MET else FAILED
                conditions.append(self._cond(final, target.get("reason", ""),
                                             target.get("message", ""), stamp))
                if final == COMPLETE:
                    status["completionTime"] = stamp
            active, terminating = [], still
        else:
            active, created = await self._manage(job, owned, active, succeeded, failed,
                                                 succeeded_indexes, now)
            changed |= created
            conditions = self._suspend_condition(conditions, suspended, stamp, status)
        status["conditions"] = conditions
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if is_ready(p))
        status["terminating"] = len(terminating)
        status["succeeded"] = succeeded
        status["failed"] = failed
        if indexed:
            status["completedIndexes"] = format_indexes(succeeded_indexes)
        for k in ("active", "succeeded", "failed"):
            if status[k] == 0:
                del status[k]
        if not status["conditions"]:
            del status["conditions"]
        if status != old:
            new = copy.deepcopy(job)
            new["status"] = status
            m = job["metadata"]
            await self.store.update(self.job_kind, new, m.get("namespace"), m["name"], "status")
        return changed

    @staticmethod
    def _cond(ctype: str, reason: str, message: str, stamp: str,
              status: str = "True") -> dict[str, Any]:
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastProbeTime": stamp, "lastTransitionTime": stamp}

    def _failure(self, job: dict[str, Any], status: dict[str, Any], failed: int,
                 active: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
        """The FailureTarget condition for the backoff limit or the deadline, if one is hit."""
        spec = job.get("spec") or {}
        stamp = now_rfc3339(now)
        limit = int(spec.get("backoffLimit", 6))
        restart_policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
        over = failed > limit
        if not over and restart_policy == "OnFailure":
            # Container restarts count against the limit when pods restart in place.
            restarts = sum(_restarts(p) for p in active)
            over = restarts > 0 if limit == 0 else restarts >= limit
        if over:
            return self._cond(FAILURE_TARGET, REASON_BACKOFF_LIMIT, MSG_BACKOFF_LIMIT, stamp)
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(status.get("startTime"))
        if deadline is not None and started is not None and not spec.get("suspend"):
            ends = started + int(deadline)
            if now >= ends:
                return self._cond(FAILURE_TARGET, REASON_DEADLINE, MSG_DEADLINE, stamp)
            self._wake_at(ends)
        return None

    def _suspend_condition(self, conditions: list[dict[str, Any]], suspended: bool, stamp: str,
                           status: dict[str, Any]) -> list[dict[str, Any]]:
        prev = next((c for c in conditions if c.get("type") == SUSPENDED), None)
        if suspended:
            if prev is not None and prev.get("status") == "True":
                return conditions
            cond = self._cond(SUSPENDED, "JobSuspended", "Job suspended", stamp)
        else:
            if prev is None or prev.get("status") != "True":
                return conditions
            cond = self._cond(SUSPENDED, "JobResumed", "Job resumed", stamp, "False")
            # The deadline counts time continuously active: a resumed Job starts again.
            status["startTime"] = stamp
        return [c for c in conditions if c.get("type") != SUSPENDED] + [cond]

    def _pods(self, job: dict[str, Any], selector: LabelSelector) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [p for p in self.store.list(self.pod_kind, job["metadata"].get("namespace"))
                if controller_uid(p) == uid and selector.matches(p["metadata"].get("labels"))]

    async def _manage(self, job: dict[str, Any], owned: list[dict[str, Any]],
                      active: list[dict[str, Any]], succeeded: int, failed: int,
                      succeeded_indexes: set[int], now: float,
                      ) -> tuple[list[dict[str, Any]], bool]:
        """Start or stop pods toward the wanted number active. Returns (active, changed)."""
        spec = job.get("spec") or {}
        changed = False
        if spec.get("suspend"):
            for p in active:
                changed |= await self._delete(p)
            return [], changed
        parallelism = int(spec.get("parallelism", 1) or 0)
        completions = spec.get("completions")
        if spec.get("completionMode") == "Indexed":
            return await self._manage_indexed(job, owned, active, parallelism,
                                              int(completions or 0), succeeded_indexes, now)
        if completions is None:
            want = len(active) if succeeded > 0 else parallelism
        else:
            want = max(0, min(parallelism, int(completions) - succeeded))
        if len(active) > want:
            extra = sorted(active, key=deletion_rank)[: len(active) - want]
            for p in extra:
                changed |= await self._delete(p)
            return [p for p in active if p not in extra], changed
        missing = want - len(active)
        if missing > 0 and self._backing_off(owned, now):
            return active, changed
        meta = job["metadata"]
        taken = {p["metadata"]["name"] for p in
                 self.store.list(self.pod_kind, meta.get("namespace"))}
        attempt = 0
        while missing > 0 and attempt < MAX_ATTEMPTS_SCANNED:
            name = slot_name(meta["name"], meta["uid"], attempt)
            attempt += 1
            if name in taken:
                continue
            pod = await self._create(job, name, None)
            taken.add(name)  # a later attempt whose name collides with it is skipped
            if pod is not None:
                active.append(pod)
                changed = True
            missing -= 1
        return active, changed

    async def _manage_indexed(self, job: dict[str, Any], owned: list[dict[str, Any]],
                              active: list[dict[str, Any]], parallelism: int, completions: int,
                              succeeded_indexes: set[int], now: float,
                              ) -> tuple[list[dict[str, Any]], bool]:
        changed = False
        by_index: dict[int, list[dict[str, Any]]] = {}
        for p in active:
            i = completion_index(p)
            by_index.setdefault(-1 if i is None else i, []).append(p)
        keep: list[dict[str, Any]] = []
        for i, pods in sorted(by_index.items()):
            # One pod per index; none for an index that already succeeded or is out of range.
            n = 1 if 0 <= i < completions and i not in succeeded_indexes else 0
            ranked = sorted(pods, key=deletion_rank)
            for p in ranked[: len(ranked) - n]:
                changed |= await self._delete(p)
            keep.extend(ranked[len(ranked) - n:])
        if len(keep) > parallelism:
            extra = sorted(keep, key=lambda p: -(completion_index(p) or 0))[: len(keep) - parallelism]
            for p in extra:
                changed |= await self._delete(p)
            keep = [p for p in keep if p not in extra]
        room = parallelism - len(keep)
        if room <= 0 or self._backing_off(owned, now):
            return keep, changed
        running = {completion_index(p) for p in keep}
        meta = job["metadata"]
        taken = {p["metadata"]["name"] for p in
                 self.store.list(self.pod_kind, meta.get("namespace"))}
        for i in range(completions):
            if room <= 0:
                break
            if i in succeeded_indexes or i in running:
                continue
            for attempt in range(MAX_ATTEMPTS_SCANNED):
                name = indexed_pod_name(meta["name"], meta["uid"], i, attempt)
                if name not in taken:
                    break
            pod = await self._create(job, name, i)
            if pod is not None:
                keep.append(pod)
                changed = True
            room -= 1
        return keep, changed

    def _backing_off(self, owned: list[dict[str, Any]], now: float) -> bool:
        """Whether a failed pod was too recent to start another (exponential backoff)."""
        if self.backoff_base <= 0:
            return False
        failures = [p for p in owned if _phase(p) == "Failed"]
        if not failures:
            return False
        last_success = max((_finished_at(p) for p in owned if _phase(p) == "Succeeded"),
                           default=0.0)
        recent = [p for p in failures if _finished_at(p) >= last_success]
        if not recent:
            return False
        delay = min(self.backoff_base * 2 ** (len(recent) - 1), BACKOFF_MAX)
        ready_at = max(_finished_at(p) for p in recent) + delay
        if now >= ready_at:
            return False
        self._wake_at(ready_at)
        return True

    async def _create(self, job: dict[str, Any], name: str,
                      index: int | None) -> dict[str, Any] | None:
        meta = job["metadata"]
        pod = pod_from_template(job, self.job_kind, name)
        if index is not None:
            pod["metadata"].setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
            pod["metadata"]["labels"][INDEX_LABEL] = str(index)
            spec = pod["spec"]
            # Kubernetes names the host after the index so peers can find each other.
            spec.setdefault("hostname", f"{meta['name']}-{index}"[:63])
            for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                env = c.setdefault("env", [])
                if not any(e.get("name") == INDEX_ENV for e in env):
                    env.insert(0, {"name": INDEX_ENV, "valueFrom": {"fieldRef": {
                        "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}})
        try:
            return await self.store.create(self.pod_kind, pod, meta.get("namespace"),
                                           managed_fields=created_by(self.store, self.pod_kind))
        except AlreadyExists:
            return None
        except Forbidden as e:  # admission (a quota, a LimitRange): no retry loop
            await events.record(self.store, job, "Warning", "FailedCreate",
                                f"Error creating: {e.message}", "job-controller")
            return None

    async def _delete(self, pod: dict[str, Any]) -> bool:
        return await delete_pod(self.store, self.pod_kind, pod)

    async def _expire(self, job: dict[str, Any], now: float) -> bool:
        """Delete a finished Job ``ttlSecondsAfterFinished`` after it finished."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return False
        finished = condition(job, COMPLETE) or condition(job, FAILED) or {}
        since = parse_time((job.get("status") or {}).get("completionTime")) or \
            parse_time(finished.get("lastTransitionTime"))
        if since is None:
            return False
        if now < since + int(ttl):
            self._wake_at(since + int(ttl))
            return False
        m = job["metadata"]
        try:
            await self.store.delete(self.job_kind, m.get("namespace"), m["name"],
                                    propagation="Background", precondition_uid=m["uid"])
        except NotFound:
            return False
        return True
