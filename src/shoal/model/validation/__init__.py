"""Validation: the field errors the Kubernetes apiserver returns, with its paths and words.

:func:`validate` checks an object of a served kind (after :func:`~shoal.model.defaults.
apply_defaults`, as the apiserver does) and, given the old object, the rules of an
update. It returns :class:`Cause` values, which are ``metav1.StatusCause``: a
``reason`` (the ``CauseType``, such as ``FieldValueRequired``), a ``message`` (the
error body, such as ``Required value``) and a ``field`` (such as
``spec.containers[0].image``). :func:`invalid_message` joins them into the message of
the 422 ``Invalid`` status::

    Deployment.apps "web" is invalid: spec.template.spec.containers[0].image: Required value

Values in messages are printed the way Go's ``field.Error`` prints them: strings
quoted, label maps as ``map[string]string{...}``, selectors as ``v1.LabelSelector{...}``.

Custom resources are checked against their CRD version's ``openAPIV3Schema``.
Unknown fields are not errors: :func:`prune_unknown` drops them and says where they
were, :func:`unknown_fields` lists them for built-in kinds too, and
:func:`drop_unknown_fields` removes them from any kind, so that the server can reject
them under ``fieldValidation=Strict``, and drop them (warning under ``Warn``) otherwise.

What is checked is what users hit first, not all of Kubernetes' validation: the
object metadata, pod specs (containers, ports, resources, env, volumes, probes,
tolerations), workload selectors and templates, services, config maps and secrets,
jobs, leases, endpoints, endpoint slices, events, nodes, CRDs and custom resources.
CEL rules (``x-kubernetes-validations``) and string ``format`` are not checked.

The package has one module per concern: :mod:`.causes` (the errors and their
messages), :mod:`.fields` (paths), :mod:`.names`, :mod:`.object_meta`,
:mod:`.pod_spec`, :mod:`.config`, :mod:`.services`, :mod:`.cluster`,
:mod:`.workloads`, :mod:`.crd`, :mod:`.schema` (the schema engine), :mod:`.scope`,
:mod:`.pruning`, :mod:`.client_models` (unknown fields of built-in kinds) and
:mod:`.dispatch` (the checks by kind). A new kind's rules go in a module of their
own, registered in :mod:`.dispatch`.
"""

from __future__ import annotations

from shoal.model.validation.causes import (
    DUPLICATE,
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    NOT_SUPPORTED,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    TYPE_INVALID,
    Cause,
    invalid_message,
    qualified_kind,
)
from shoal.model.validation.client_models import drop_unknown_fields, unknown_fields
from shoal.model.validation.dispatch import validate
from shoal.model.validation.names import (
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_path_segment_name,
)
from shoal.model.validation.pod_spec import POD_UPDATE_FORBIDDEN
from shoal.model.validation.pruning import prune_unknown
from shoal.model.validation.schema import validate_schema
from shoal.model.validation.workloads import STATEFULSET_UPDATE_FORBIDDEN

__all__ = [
    "DUPLICATE",
    "FORBIDDEN",
    "INVALID",
    "NOT_FOUND",
    "NOT_SUPPORTED",
    "POD_UPDATE_FORBIDDEN",
    "REQUIRED",
    "STATEFULSET_UPDATE_FORBIDDEN",
    "TOO_LONG",
    "TOO_MANY",
    "TYPE_INVALID",
    "Cause",
    "drop_unknown_fields",
    "invalid_message",
    "is_dns1035_label",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_path_segment_name",
    "prune_unknown",
    "qualified_kind",
    "unknown_fields",
    "validate",
    "validate_schema",
]
