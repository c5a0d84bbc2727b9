"""Query parameters read as the apiserver reads them: ``fieldValidation`` and the
integers of ListOptions and DeleteOptions (``limit``, ``timeoutSeconds``,
``gracePeriodSeconds``) and ``resourceVersion``.

The apiserver decodes an integer parameter with Go's ``strconv.ParseInt(s, 10, 64)``
and answers 400 BadRequest with its error when it fails (``strconv.ParseInt: parsing
"99999999999999999999999": value out of range``); Python's ``int()`` takes far more
(any size, ``_`` between digits, surrounding spaces, other scripts' digits) and
``float()`` more still (``1.5``, ``nan``, ``inf``). A resourceVersion is parsed with
``strconv.ParseUint(s, 10, 64)``; the apiserver answers 500 with ``resourceVersion:
Invalid value: "x": strconv.ParseUint: ...`` (kubernetes/kubernetes#139485), Shoal 400
with the same words.
"""

from __future__ import annotations

import re

from shoal.api import web
from shoal.api.errors import ApiError

_DECIMAL = re.compile(r"[+-]?[0-9]+\Z")
_UNSIGNED = re.compile(r"[0-9]+\Z")

FIELD_VALIDATION = ("Ignore", "Strict", "Warn")


def parse_int64(text: str) -> int:
    """Go's ``strconv.ParseInt(text, 10, 64)``; a ValueError carries Go's words."""
    if not _DECIMAL.match(text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    n = int(text)
    if not -(2**63) <= n < 2**63:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return n


def parse_uint64(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 10, 64)``; a ValueError carries Go's words."""
    if not _UNSIGNED.match(text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    n = int(text)
    if n >= 2**64:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return n


def int_param(request: web.Request, name: str) -> int | None:
    """The integer query parameter ``name`` (None when absent), or a 400. Present but
    empty (``limit=``) is a 400 too: the apiserver's conversion of a query to its options
    parses every value given, and ``strconv.ParseInt`` takes no empty string."""
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return parse_int64(text)
    except ValueError as e:
        raise ApiError(400, str(e)) from e


def resource_version_param(request: web.Request) -> int | None:
    """The ``resourceVersion`` query parameter as a revision (None when absent, empty or
    "0", which mean "any"), or a 400."""
    text = request.query.get("resourceVersion", "")
    if text in ("", "0"):
        return None
    try:
        return parse_uint64(text)
    except ValueError as e:
        raise ApiError(400, f'resourceVersion: Invalid value: "{text}": {e}') from e


def field_validation(request: web.Request, options: str) -> str:
    """``fieldValidation`` of a write whose options are ``options`` (``CreateOptions``,
    ``UpdateOptions``, ``PatchOptions``): Warn when absent or empty, as the apiserver;
    another value is the 422 its options validation gives."""
    mode = request.query.get("fieldValidation", "")
    if not mode:
        return "Warn"
    if mode not in FIELD_VALIDATION:
        supported = '"", ' + ", ".join(f'"{v}"' for v in FIELD_VALIDATION)
        message = f'Unsupported value: "{mode}": supported values: {supported}'
        raise ApiError(422, f'{options}.meta.k8s.io "" is invalid: fieldValidation: {message}',
                       "Invalid", causes=[{"reason": "FieldValueNotSupported",
                                           "message": message, "field": "fieldValidation"}])
    return mode
