"""CronJob (batch/v1), as Kubernetes' ValidateCronJob."""

from __future__ import annotations

from typing import Any

from shoal.model import cron
from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _d, _nonneg
from shoal.model.validation.object_meta import _template_meta
from shoal.model.validation.pod_spec import _pod_spec

_POLICIES = ("Allow", "Forbid", "Replace")
MAX_NAME = 52
"""A CronJob's name plus ``-<minutes>`` (11 characters) must still name a Job."""


def _validate_cron_job(e: _Errors, obj: dict[str, Any]) -> None:
    name = _d(obj.get("metadata")).get("name")
    if isinstance(name, str) and len(name) > MAX_NAME:
        e.invalid("metadata.name", name, f"must be no more than {MAX_NAME} characters")
    spec = _d(obj.get("spec"))
    schedule = spec.get("schedule")
    if not schedule:
        e.required("spec.schedule")
    elif not isinstance(schedule, str):
        e.type_invalid("spec.schedule", schedule, "must be a string")
    elif "TZ" in schedule:
        e.invalid("spec.schedule", schedule,
                  "cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    else:
        try:
            cron.parse(schedule)
        except cron.CronError as err:
            e.invalid("spec.schedule", schedule, str(err))
    tz = spec.get("timeZone")
    if tz is not None:
        if not isinstance(tz, str) or not tz or tz.lower() == "local":
            e.invalid("spec.timeZone", tz, "timeZone must be an explicit time zone as defined "
                                            "in https://www.iana.org/time-zones")
        else:
            try:
                cron.time_zone(tz)
            except cron.CronError as err:
                e.invalid("spec.timeZone", tz, str(err))
    policy = spec.get("concurrencyPolicy")
    if not policy:
        e.required("spec.concurrencyPolicy")
    elif policy not in _POLICIES:
        e.not_supported("spec.concurrencyPolicy", policy, _POLICIES)
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        _nonneg(e, spec, key, "spec")
    job_template = spec.get("jobTemplate")
    if not isinstance(job_template, dict):
        e.required("spec.jobTemplate")
        return
    job_spec = _d(job_template.get("spec"))
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        _nonneg(e, job_spec, key, "spec.jobTemplate.spec")
    template = job_spec.get("template")
    if not isinstance(template, dict):
        e.required("spec.jobTemplate.spec.template")
        return
    _template_meta(e, template, "spec.jobTemplate.spec.template")
    pod_spec = template.get("spec")
    _pod_spec(e, pod_spec, "spec.jobTemplate.spec.template.spec")
    restart = _d(pod_spec).get("restartPolicy")
    if restart not in ("OnFailure", "Never"):
        e.not_supported("spec.jobTemplate.spec.template.spec.restartPolicy", restart or "",
                        ("OnFailure", "Never"))
