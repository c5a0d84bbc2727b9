"""Workloads (apps/v1 and batch/v1): selectors, templates, rolling updates, StatefulSets and Jobs."""

from __future__ import annotations

import copy
from typing import Any

from shoal.model.defaults import (
    JOB_CONTROLLER_UID_LABEL,
    LEGACY_JOB_CONTROLLER_UID_LABEL,
    LEGACY_JOB_NAME_LABEL,
)
from shoal.model.validation.causes import IMMUTABLE, _Errors, _go_map, _go_selector
from shoal.model.validation.fields import _c, _d, _int_field, _is_int, _k, _nonneg
from shoal.model.validation.names import _PERCENT, _PERCENT_FMT, _regex_error, is_dns1035_label
from shoal.model.validation.object_meta import (
    _label_selector,
    _selector_is_empty,
    _selector_matches,
    _template_meta,
)
from shoal.model.validation.pod_spec import _pod_spec, _semantic

STATEFULSET_UPDATE_FORBIDDEN = (
    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
)


# --- apps/v1 and batch/v1 -------------------------------------------------------------


def _workload_selector(
    e: _Errors, spec: dict[str, Any], empty_message: str
) -> dict[str, Any] | None:
    sel = spec.get("selector")
    if sel is None:
        e.required("spec.selector")
        return None
    _label_selector(e, sel, "spec.selector")
    if not isinstance(sel, dict):
        return None
    if _selector_is_empty(sel):
        e.invalid_shown("spec.selector", _go_selector(sel), empty_message)
        return None
    return sel


def _workload_template(
    e: _Errors,
    spec: dict[str, Any],
    sel: dict[str, Any] | None,
    restart_policies: tuple[str, ...] = ("Always",),
    deadline_owner: str | None = None,
) -> None:
    template = spec.get("template")
    if not isinstance(template, dict):
        e.required("spec.template")
        return
    labels = _d(template.get("metadata")).get("labels")
    if sel is not None and _selector_matches(sel, labels) is False:
        e.invalid_shown(
            "spec.template.metadata.labels",
            _go_map(labels if isinstance(labels, dict) else None),
            "`selector` does not match template `labels`",
        )
    _template_meta(e, template, "spec.template")
    pod_spec = template.get("spec")
    _pod_spec(e, pod_spec, "spec.template.spec")
    restart = _d(pod_spec).get("restartPolicy")
    if restart not in restart_policies:
        e.not_supported("spec.template.spec.restartPolicy", restart or "", restart_policies)
    if deadline_owner is not None and _d(pod_spec).get("activeDeadlineSeconds") is not None:
        e.forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            f"activeDeadlineSeconds in {deadline_owner} is not Supported",
        )


def _int_or_percent(e: _Errors, value: Any, path: str) -> int | None:
    """An IntOrString count: a non-negative int, or a percent; the percent is returned."""
    if value is None:
        return None
    if _is_int(value):
        if value < 0:
            e.invalid(path, value, "must be greater than or equal to 0")
        return int(value)
    if isinstance(value, str):
        if not _PERCENT.fullmatch(value):
            e.invalid(
                path,
                value,
                _regex_error(
                    "a valid percent string must be a numeric string followed by an ending '%'",
                    _PERCENT_FMT,
                    "1%",
                    "93%",
                ),
            )
            return None
        return int(value[:-1])
    e.type_invalid(path, value, "must be an integer or a string")
    return None


def _rolling_update(e: _Errors, rolling: dict[str, Any], path: str, zero_message: str) -> None:
    unavailable = _int_or_percent(e, rolling.get("maxUnavailable"), _c(path, "maxUnavailable"))
    surge = _int_or_percent(e, rolling.get("maxSurge"), _c(path, "maxSurge"))
    max_unavailable = rolling.get("maxUnavailable")
    if isinstance(max_unavailable, str) and unavailable is not None and unavailable > 100:
        e.invalid(_c(path, "maxUnavailable"), max_unavailable, "must not be greater than 100%")
    if unavailable == 0 and surge == 0:
        e.invalid(_c(path, "maxUnavailable"), rolling.get("maxUnavailable"), zero_message)


def _validate_deployment(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _nonneg(e, spec, "replicas", "spec")
    sel = _workload_selector(e, spec, "empty selector is invalid for deployment")
    _workload_template(e, spec, sel, deadline_owner="ReplicaSet")
    strategy = _d(spec.get("strategy"))
    strategy_type = strategy.get("type")
    if strategy_type not in (None, "", "Recreate", "RollingUpdate"):
        e.not_supported("spec.strategy.type", strategy_type, ["Recreate", "RollingUpdate"])
    rolling = strategy.get("rollingUpdate")
    if strategy_type == "Recreate" and rolling is not None:
        e.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        )
    elif isinstance(rolling, dict):
        _rolling_update(
            e, rolling, "spec.strategy.rollingUpdate", "may not be 0 when `maxSurge` is 0"
        )
    min_ready = _nonneg(e, spec, "minReadySeconds", "spec")
    _nonneg(e, spec, "revisionHistoryLimit", "spec")
    deadline = _nonneg(e, spec, "progressDeadlineSeconds", "spec")
    if deadline is not None and min_ready is not None and deadline <= min_ready:
        e.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")


def _validate_replica_set(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _nonneg(e, spec, "replicas", "spec")
    _nonneg(e, spec, "minReadySeconds", "spec")
    sel = _workload_selector(e, spec, "empty selector is invalid for deployment")
    _workload_template(e, spec, sel, deadline_owner="ReplicaSet")


def _validate_daemon_set(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    sel = _workload_selector(e, spec, "empty selector is invalid for daemonset")
    _workload_template(e, spec, sel, deadline_owner="DaemonSet")
    _nonneg(e, spec, "minReadySeconds", "spec")
    _nonneg(e, spec, "revisionHistoryLimit", "spec")
    strategy = _d(spec.get("updateStrategy"))
    strategy_type = strategy.get("type")
    if strategy_type not in (None, "", "OnDelete", "RollingUpdate"):
        e.not_supported("spec.updateStrategy.type", strategy_type, ["OnDelete", "RollingUpdate"])
    rolling = strategy.get("rollingUpdate")
    if strategy_type == "RollingUpdate" and isinstance(rolling, dict):
        _rolling_update(
            e, rolling, "spec.updateStrategy.rollingUpdate", "cannot be 0 when maxSurge is 0"
        )


def _validate_stateful_set(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    policy = spec.get("podManagementPolicy")
    if policy not in (None, "", "OrderedReady", "Parallel"):
        e.invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'")
    strategy = _d(spec.get("updateStrategy"))
    strategy_type = strategy.get("type")
    if strategy_type not in (None, "", "RollingUpdate", "OnDelete"):
        e.invalid("spec.updateStrategy", strategy, "must be 'RollingUpdate' or 'OnDelete'")
    if strategy_type == "OnDelete" and strategy.get("rollingUpdate") is not None:
        e.invalid(
            "spec.updateStrategy.rollingUpdate",
            strategy["rollingUpdate"],
            "only allowed for updateStrategy 'RollingUpdate'",
        )
    rolling = strategy.get("rollingUpdate")
    if isinstance(rolling, dict):
        _nonneg(e, rolling, "partition", "spec.updateStrategy.rollingUpdate")
        _stateful_max_unavailable(e, rolling.get("maxUnavailable"))
    if isinstance(spec.get("ordinals"), dict):
        _nonneg(e, spec["ordinals"], "start", "spec.ordinals")
    _nonneg(e, spec, "replicas", "spec")
    _nonneg(e, spec, "minReadySeconds", "spec")
    service_name = spec.get("serviceName")
    if isinstance(service_name, str) and service_name:
        e.each("spec.serviceName", service_name, is_dns1035_label(service_name))
    sel = _workload_selector(e, spec, "empty selector is not valid for statefulset.")
    _workload_template(e, _with_claim_volumes(spec), sel)
    if _d(_d(spec.get("template")).get("spec")).get("activeDeadlineSeconds") is not None:
        e.invalid(
            "spec.template.spec.activeDeadlineSeconds",
            _d(spec["template"]["spec"])["activeDeadlineSeconds"],
            "must not be specified",
        )


def _stateful_max_unavailable(e: _Errors, value: Any) -> None:
    """A positive count or a percent up to 100 % (ValidateStatefulSetSpec)."""
    path = "spec.updateStrategy.rollingUpdate.maxUnavailable"
    n = _int_or_percent(e, value, path)
    if n == 0:
        e.invalid(path, value, "must be greater than 0")
    elif isinstance(value, str) and n is not None and n > 100:
        e.invalid(path, value, "must not be greater than 100%")


def _with_claim_volumes(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with each volumeClaimTemplate as a volume of the template, as the controller
    makes its pods: a volumeMount may name a claim template (stateful workloads)."""
    claims = [_d(_d(t).get("metadata")).get("name") for t in spec.get("volumeClaimTemplates")
              or [] if isinstance(t, dict)]
    template = spec.get("template")
    if not claims or not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return spec
    pod_spec = template["spec"]
    volumes = pod_spec.get("volumes") if isinstance(pod_spec.get("volumes"), list) else []
    have = {_d(v).get("name") for v in volumes}
    extra = [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims
             if isinstance(c, str) and c and c not in have]
    return {**spec, "template": {**template, "spec": {**pod_spec, "volumes": [*volumes, *extra]}}}


def _selector_immutable(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    sel = _d(obj.get("spec")).get("selector")
    old_sel = _d(old.get("spec")).get("selector")
    if _semantic(sel) != _semantic(old_sel):
        e.invalid_shown("spec.selector", _go_selector(sel), IMMUTABLE)


_STATEFULSET_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _validate_stateful_set_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    def fixed(spec: Any) -> Any:
        return _semantic({k: v for k, v in _d(spec).items() if k not in _STATEFULSET_MUTABLE})

    if fixed(obj.get("spec")) != fixed(old.get("spec")):
        e.forbidden("spec", STATEFULSET_UPDATE_FORBIDDEN)


_COMPLETION_MODES = ("NonIndexed", "Indexed")


def _validate_job(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        _nonneg(e, spec, key, "spec")
    deadline = _int_field(e, spec, "activeDeadlineSeconds", "spec")
    if deadline is not None and deadline <= 0:
        e.invalid("spec.activeDeadlineSeconds", deadline, "must be greater than 0")
    mode = spec.get("completionMode")
    if mode not in (None, "") and mode not in _COMPLETION_MODES:
        e.not_supported("spec.completionMode", mode, _COMPLETION_MODES)
    if mode == "Indexed" and spec.get("completions") is None:
        e.required("spec.completions", "when completion mode is Indexed")
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None and replacement not in ("Failed", "TerminatingOrFailed"):
        e.not_supported("spec.podReplacementPolicy", replacement, ["Failed", "TerminatingOrFailed"])
    sel = spec.get("selector")
    if sel is None:
        e.required("spec.selector")
    else:
        _label_selector(e, sel, "spec.selector")
    _workload_template(
        e, spec, sel if isinstance(sel, dict) else None, restart_policies=("OnFailure", "Never")
    )
    _generated_job_selector(e, obj)


def _generated_job_selector(e: _Errors, obj: dict[str, Any]) -> None:
    """With a generated selector, the template must carry this job's uid and name."""
    spec = _d(obj.get("spec"))
    meta = _d(obj.get("metadata"))
    sel = spec.get("selector")
    uid = meta.get("uid")
    if spec.get("manualSelector") is True or not isinstance(sel, dict) or not uid:
        return
    template_meta = _d(_d(spec.get("template")).get("metadata"))
    labels = _d(template_meta.get("labels"))
    path = "spec.template.metadata.labels"
    for key, expected in (
        (LEGACY_JOB_CONTROLLER_UID_LABEL, uid),
        (LEGACY_JOB_NAME_LABEL, meta.get("name")),
    ):
        if key not in labels:
            e.required(_k(path, key), str(expected))
        elif labels[key] != expected:
            e.invalid_shown(_k(path, key), _go_map(labels), f"must be '{expected}'")
    if _selector_matches(sel, {JOB_CONTROLLER_UID_LABEL: uid}) is False:
        e.invalid_shown("spec.selector", _go_selector(sel), "`selector` not auto-generated")


def _validate_job_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    _selector_immutable(e, obj, old)
    template, old_template = copy.deepcopy(_d(spec.get("template"))), _d(old_spec.get("template"))
    # A suspended job that never started may still change where its pods go.
    if old_spec.get("suspend") is True and not _d(old.get("status")).get("startTime"):
        template_meta = _d(template.get("metadata"))
        old_template_meta = _d(old_template.get("metadata"))
        template_meta.pop("labels", None)
        template_meta.pop("annotations", None)
        for key in ("labels", "annotations"):
            if key in old_template_meta:
                template_meta[key] = old_template_meta[key]
        template["metadata"] = template_meta
        template_spec = _d(template.get("spec"))
        old_template_spec = _d(old_template.get("spec"))
        for key in ("nodeSelector", "tolerations", "affinity", "schedulingGates"):
            template_spec.pop(key, None)
            if key in old_template_spec:
                template_spec[key] = old_template_spec[key]
        template["spec"] = template_spec
    if _semantic(template) != _semantic(old_template):
        e.immutable("spec.template", spec.get("template"))
    for key in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex"):
        if _semantic(spec.get(key)) != _semantic(old_spec.get(key)):
            e.immutable(_c("spec", key), spec.get(key))
    completions, old_completions = spec.get("completions"), old_spec.get("completions")
    # Indexed jobs may scale when completions and parallelism move together.
    elastic = (
        spec.get("completionMode") == "Indexed"
        and completions == spec.get("parallelism")
        and old_completions == old_spec.get("parallelism")
    )
    if completions != old_completions and not elastic:
        e.immutable("spec.completions", completions)
