"""Kubernetes quantities parse to the exact values the apiserver gives them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.model.quantity import QUANTITY_REGEX, QuantityError, is_quantity, parse_quantity

VALID = [
    ("millicores are thousandths", "100m", Decimal("0.1")),
    ("a gibibyte is two to the thirtieth", "1Gi", Decimal(2**30)),
    ("an exponent multiplies by a power of ten", "1e3", Decimal(1000)),
    ("a negative exponent divides", "1E-3", Decimal("0.001")),
    ("a plain decimal is itself", "0.5", Decimal("0.5")),
    ("a bare E is exa, not an exponent", "1E", Decimal(10**18)),
    ("a fractional binary quantity is exact", "1.5Ki", Decimal(1536)),
    ("kilo is lower-case k", "2k", Decimal(2000)),
    ("mega is upper-case M", "3M", Decimal(3_000_000)),
    ("nano is n", "12n", Decimal("0.000000012")),
    ("micro is u", "7u", Decimal("0.000007")),
    ("an exbibyte is two to the sixtieth", "1Ei", Decimal(2**60)),
    ("a leading plus sign is allowed", "+2", Decimal(2)),
    ("a leading minus sign negates", "-1", Decimal(-1)),
    ("a trailing dot is allowed", "5.", Decimal(5)),
    ("a leading dot is allowed", ".5", Decimal("0.5")),
    ("leading zeros are ignored", "007", Decimal(7)),
    ("zero is zero", "0", Decimal(0)),
    ("a JSON integer is a quantity", 4, Decimal(4)),
    ("a JSON float is a quantity", 0.25, Decimal("0.25")),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_a_valid_quantity_parses_to_its_exact_value(
    text: str | int | float, expected: Decimal
) -> None:
    assert parse_quantity(text) == expected
    assert is_quantity(text)


INVALID = [
    ("an empty string is not a quantity", "", "quantities must match the regular expression"),
    ("letters alone are not a quantity", "abc", "quantities must match the regular expression"),
    ("two dots are not a number", "1.2.3", "quantities must match the regular expression"),
    ("a suffix without a number is rejected", "Ki", "quantities must match the regular expression"),
    ("a lone sign is rejected", "-", "quantities must match the regular expression"),
    ("spaces are not allowed", "1 Gi", "quantities must match the regular expression"),
    ("an exponent needs digits", "1e", "unable to parse quantity's suffix"),
    ("GB is not a Kubernetes suffix", "1GB", "quantities must match the regular expression"),
    ("digits after a unit suffix are rejected", "1Ki5", "unable to parse quantity's suffix"),
    ("two unit suffixes are rejected", "1mk", "unable to parse quantity's suffix"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_an_invalid_quantity_is_rejected_with_the_apiservers_message(
    text: str, message: str
) -> None:
    with pytest.raises(QuantityError, match=message.replace("'", ".")):
        parse_quantity(text)
    assert not is_quantity(text)


def test_the_format_error_quotes_the_apiservers_regular_expression() -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity("abc")
    assert str(info.value) == f"quantities must match the regular expression '{QUANTITY_REGEX}'"


@pytest.mark.parametrize("value", [True, None, [], {}], ids=["bool", "null", "list", "object"])
def test_a_json_value_that_is_not_a_number_or_string_is_not_a_quantity(value: object) -> None:
    assert not is_quantity(value)


BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(sorted(BINARY)))
def test_a_binary_suffix_multiplies_by_its_power_of_two(n: int, suffix: str) -> None:
    assert parse_quantity(f"{n}{suffix}") == Decimal(n * 2 ** BINARY[suffix])


@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(sorted(DECIMAL)))
def test_a_decimal_suffix_scales_by_its_power_of_ten(n: int, suffix: str) -> None:
    assert parse_quantity(f"{n}{suffix}") == Decimal(n).scaleb(DECIMAL[suffix])


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=6, min_value=-(10**9), max_value=10**9
    )
)
def test_a_plain_decimal_parses_to_itself(d: Decimal) -> None:
    assert parse_quantity(f"{d:f}") == d


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=-30, max_value=30))
def test_an_exponent_equals_the_matching_power_of_ten(n: int, exponent: int) -> None:
    assert parse_quantity(f"{n}e{exponent}") == Decimal(n).scaleb(exponent)
