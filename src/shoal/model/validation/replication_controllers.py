"""ReplicationController (v1), as Kubernetes' ValidateReplicationController."""

from __future__ import annotations

from typing import Any

from shoal.model.validation.causes import _Errors, _go_map
from shoal.model.validation.fields import _d, _nonneg
from shoal.model.validation.object_meta import _labels, _template_meta
from shoal.model.validation.pod_spec import _pod_spec


def _validate_replication_controller(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _nonneg(e, spec, "replicas", "spec")
    _nonneg(e, spec, "minReadySeconds", "spec")
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not selector:
        e.required("spec.selector")
        selector = None
    else:
        _labels(e, selector, "spec.selector")
    template = spec.get("template")
    if not isinstance(template, dict):
        e.required("spec.template")
        return
    labels = _d(_d(template.get("metadata")).get("labels"))
    if selector is not None and any(labels.get(k) != v for k, v in selector.items()):
        e.invalid_shown("spec.template.metadata.labels", _go_map(labels),
                        "`selector` does not match template `labels`")
    _template_meta(e, template, "spec.template")
    pod_spec = template.get("spec")
    _pod_spec(e, pod_spec, "spec.template.spec")
    restart = _d(pod_spec).get("restartPolicy")
    if restart != "Always":
        e.not_supported("spec.template.spec.restartPolicy", restart or "", ("Always",))
