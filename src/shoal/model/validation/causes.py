"""The field errors: ``metav1.StatusCause`` values, the 422 message, and values printed as Go's ``field.Error`` prints them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shoal.model.kinds import Kind

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
NOT_FOUND = "FieldValueNotFound"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"

IMMUTABLE = "field is immutable"
TOTAL_ANNOTATION_SIZE = 256 * 1024
MAX_CONFIG_SIZE = 1024 * 1024  # core.MaxSecretSize, shared by ConfigMaps


@dataclass(frozen=True)
class Cause:
    """One field error, as ``metav1.StatusCause``."""

    reason: str
    message: str
    field: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def qualified_kind(kind: Kind) -> str:
    """``Deployment.apps``, or ``Pod`` for the core group (``GroupKind.String``)."""
    return f"{kind.kind}.{kind.group}" if kind.group else kind.kind


def invalid_message(kind: Kind, name: str, causes: list[Cause]) -> str:
    """The message of the 422 status: one cause as is, several in brackets, repeats dropped."""
    head = f"{qualified_kind(kind)} {json.dumps(name)} is invalid"
    parts = list(dict.fromkeys(str(c) for c in causes))
    if not parts:
        return head
    if len(parts) == 1:
        return f"{head}: {parts[0]}"
    return f"{head}: [{', '.join(parts)}]"


# --- printing values the way field.Error does -----------------------------------------


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _go_map(value: dict[str, Any] | None) -> str:
    if value is None:
        return "map[string]string(nil)"
    items = ", ".join(f"{_q(str(k))}:{_q(str(v))}" for k, v in sorted(value.items()))
    return "map[string]string{" + items + "}"


def _go_strings(value: list[Any] | None) -> str:
    if value is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(_q(str(v)) for v in value) + "}"


def _go_selector(sel: Any) -> str:
    if not isinstance(sel, dict):
        return "null"
    labels = sel.get("matchLabels")
    exprs = sel.get("matchExpressions")
    if isinstance(exprs, list):
        rendered = ", ".join(
            "v1.LabelSelectorRequirement{"
            f"Key:{_q(str(x.get('key', '')))}, Operator:{_q(str(x.get('operator', '')))}, "
            f"Values:{_go_strings(x.get('values'))}}}"
            for x in exprs
            if isinstance(x, dict)
        )
        expr_text = "[]v1.LabelSelectorRequirement{" + rendered + "}"
    else:
        expr_text = "[]v1.LabelSelectorRequirement(nil)"
    label_text = _go_map(labels if isinstance(labels, dict) else None)
    return f"v1.LabelSelector{{MatchLabels:{label_text}, MatchExpressions:{expr_text}}}"


def _go(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, str):
        return _q(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return _go_map(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _go_strings(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --- the error list -------------------------------------------------------------------


class _Errors:
    """Collects causes with the constructors of ``k8s.io/apimachinery/.../field``."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def _add(self, reason: str, field: str, body: str, detail: str = "") -> None:
        self.causes.append(Cause(reason, f"{body}: {detail}" if detail else body, field))

    def required(self, field: str, detail: str = "") -> None:
        self._add(REQUIRED, field, "Required value", detail)

    def invalid(self, field: str, value: Any, detail: str) -> None:
        self._add(INVALID, field, f"Invalid value: {_go(value)}", detail)

    def invalid_shown(self, field: str, shown: str, detail: str) -> None:
        """Invalid, with the value already printed (selectors, label maps)."""
        self._add(INVALID, field, f"Invalid value: {shown}", detail)

    def type_invalid(self, field: str, value: Any, detail: str) -> None:
        self._add(TYPE_INVALID, field, f"Invalid value: {_go(value)}", detail)

    def not_supported(self, field: str, value: Any, valid: Iterable[str]) -> None:
        supported = ", ".join(_q(v) for v in valid)
        detail = f"supported values: {supported}" if supported else ""
        self._add(NOT_SUPPORTED, field, f"Unsupported value: {_go(value)}", detail)

    def duplicate(self, field: str, value: Any) -> None:
        self._add(DUPLICATE, field, f"Duplicate value: {_go(value)}")

    def duplicate_shown(self, field: str, shown: str) -> None:
        self._add(DUPLICATE, field, f"Duplicate value: {shown}")

    def not_found(self, field: str, value: Any) -> None:
        self._add(NOT_FOUND, field, f"Not found: {_go(value)}")

    def forbidden(self, field: str, detail: str) -> None:
        self._add(FORBIDDEN, field, "Forbidden", detail)

    def too_long(self, field: str, max_bytes: int) -> None:
        self._add(TOO_LONG, field, "Too long", f"must have at most {max_bytes} bytes")

    def too_long_length(self, field: str, max_length: int) -> None:
        self._add(TOO_LONG, field, "Too long", f"may not be longer than {max_length}")

    def too_many(self, field: str, actual: int, max_items: int) -> None:
        self._add(TOO_MANY, field, f"Too many: {actual}", f"must have at most {max_items} items")

    def immutable(self, field: str, value: Any) -> None:
        self.invalid(field, value, IMMUTABLE)

    def each(self, field: str, value: Any, messages: Iterable[str]) -> None:
        for msg in messages:
            self.invalid(field, value, msg)

    def unique(self, field: str, name: str, seen: set[str], messages: Iterable[str]) -> None:
        """A name, checked by ``messages`` and reported if ``seen`` already holds it."""
        self.each(field, name, messages)
        if name in seen:
            self.duplicate(field, name)
        seen.add(name)
