"""Kubernetes resource quantities ("100m", "1Gi", "1e3", "0.5") as exact decimals.

The grammar is the one of ``k8s.io/apimachinery/pkg/api/resource``: an optional
sign, a decimal number, then at most one suffix, which is a binary SI suffix
(``Ki`` .. ``Ei``), a decimal SI suffix (``n u m k M G T P E``) or a decimal
exponent (``e3``, ``E-2``). Note that a bare ``E`` is exa (10^18), not an exponent.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, InvalidOperation

__all__ = ["QUANTITY_REGEX", "QuantityError", "is_quantity", "parse_quantity"]

# The pattern the apiserver quotes in its error message; the parser below is stricter.
QUANTITY_REGEX = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"

_FORMAT_ERROR = f"quantities must match the regular expression '{QUANTITY_REGEX}'"
_SUFFIX_ERROR = "unable to parse quantity's suffix"

_SHAPE = re.compile(r"([+-]?)([0-9]*(?:\.[0-9]*)?)([eEinumkKMGTP]*[-+]?[0-9]*)")
_EXPONENT = re.compile(r"[eE]([-+]?[0-9]+)")

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# Exponents beyond this are rejected instead of building enormous decimals.
_MAX_EXPONENT = 1000
# Built once: making a context per call costs more than the parse itself.
_WIDE = Context(prec=2 * _MAX_EXPONENT, Emax=10 * _MAX_EXPONENT, Emin=-10 * _MAX_EXPONENT)


class QuantityError(ValueError):
    """The text is not a Kubernetes quantity; the message is the apiserver's."""


def parse_quantity(value: str | int | float) -> Decimal:
    """The exact value of a quantity. JSON numbers are accepted, as the apiserver does."""
    if isinstance(value, bool):
        raise QuantityError(_FORMAT_ERROR)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise QuantityError(_FORMAT_ERROR)
    m = _SHAPE.fullmatch(text)
    # The number needs at least one digit or a dot: "Ki" and "-" are not quantities.
    if m is None or not m.group(2):
        raise QuantityError(_FORMAT_ERROR)
    sign, number, suffix = m.groups()
    if number == ".":
        number = "0"
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(_FORMAT_ERROR) from exc
    if sign == "-":
        base = -base
    # Enough digits (the _WIDE context) that no suffix or exponent below rounds the result.
    if not suffix:
        return base
    if suffix in _BINARY:
        return _WIDE.multiply(base, _WIDE.power(2, _BINARY[suffix]))
    if suffix in _DECIMAL:
        return base.scaleb(_DECIMAL[suffix], context=_WIDE)
    e = _EXPONENT.fullmatch(suffix)
    if e is None:
        raise QuantityError(_SUFFIX_ERROR)
    exponent = int(e.group(1))
    if abs(exponent) > _MAX_EXPONENT:
        raise QuantityError(_SUFFIX_ERROR)
    return base.scaleb(exponent, context=_WIDE)


def is_quantity(value: object) -> bool:
    """Whether ``value`` parses as a quantity."""
    if not isinstance(value, str | int | float):
        return False
    try:
        parse_quantity(value)
    except QuantityError:
        return False
    return True
