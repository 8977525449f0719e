"""Money rules, property-based where arithmetic is involved."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.platform.money import (
    Money,
    format_money,
    percent_of,
    split_by_basis_points,
)


@st.composite
def shares(draw: st.DrawFn) -> dict[str, int]:
    count = draw(st.integers(min_value=1, max_value=6))
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, 10_000]
    return {f"org{i}": bounds[i + 1] - bounds[i] for i in range(count)}


@given(st.integers(min_value=-(10**12), max_value=10**12), shares())
def test_parts_always_sum_to_the_whole(total: int, split: dict[str, int]) -> None:
    parts = split_by_basis_points(total, split)
    assert sum(parts.values()) == total
    assert parts.keys() == split.keys()


@given(st.integers(min_value=0, max_value=10**12), shares())
def test_each_part_is_within_one_unit_of_its_exact_share(total: int, split: dict[str, int]) -> None:
    parts = split_by_basis_points(total, split)
    for party, bp in split.items():
        exact = total * bp / 10_000
        assert abs(parts[party] - exact) < 1
        assert parts[party] >= 0


@given(st.integers(min_value=0, max_value=10**9), shares())
def test_reversal_is_the_exact_mirror(total: int, split: dict[str, int]) -> None:
    forward = split_by_basis_points(total, split)
    backward = split_by_basis_points(-total, split)
    assert backward == {k: -v for k, v in forward.items()}


def test_remainder_rule_is_deterministic() -> None:
    assert split_by_basis_points(100, {"a": 3333, "b": 3333, "c": 3334}) == {
        "a": 33,
        "b": 33,
        "c": 34,
    }
    assert split_by_basis_points(1, {"a": 5000, "b": 5000}) == {"a": 1, "b": 0}
    assert split_by_basis_points(1, {"b": 5000, "a": 5000}) == {"b": 1, "a": 0}


def test_shares_must_sum_to_10000() -> None:
    with pytest.raises(ValueError, match="10000"):
        split_by_basis_points(100, {"a": 5000, "b": 4999})


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10_000))
def test_percent_of_is_rounded_and_bounded(amount: int, bp: int) -> None:
    value = percent_of(amount, bp)
    assert 0 <= value <= amount
    assert abs(value - amount * bp / 10_000) <= 0.5


def test_money_refuses_floats_and_mixed_currencies() -> None:
    with pytest.raises(TypeError):
        Money(1.5, "CNY")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mix"):
        Money(1, "CNY") + Money(1, "USD")
    assert Money(150, "CNY") - Money(50, "CNY") == Money(100, "CNY")


def test_format_money_for_people() -> None:
    assert format_money(123456, "CNY") == "¥1,234.56"
    assert format_money(-5, "USD") == "-$0.05"
    assert format_money(700, "CHF") == "CHF 7.00"
    assert format_money(500, "JPY") == "¥500"
