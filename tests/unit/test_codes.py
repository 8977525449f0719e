"""Coupon code rules: randomness, check symbol, grouping and tolerant parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.campaigns.codes import (
    ALPHABET,
    CODE_LENGTH,
    InvalidCode,
    check_symbol,
    display,
    new_code,
    parse,
)

bodies = st.text(alphabet=ALPHABET, min_size=13, max_size=13)


def test_new_codes_are_well_formed_and_distinct() -> None:
    codes = {new_code() for _ in range(10_000)}
    assert len(codes) == 10_000
    for code in list(codes)[:100]:
        assert len(code) == CODE_LENGTH and parse(code) == code


@given(bodies)
def test_round_trip_through_display_forms(body: str) -> None:
    code = body + check_symbol(body)
    assert parse(display(code)) == code
    assert parse(display(code, "CAFE").lower()) == code
    assert parse(" ".join(code)) == code
    assert parse(f"https://coalition.example/c/{display(code)}") == code
    assert parse(f"https://coalition.example/coupon?code={code}&x=1") == code


@given(bodies, st.integers(min_value=0, max_value=13), st.sampled_from(ALPHABET))
def test_any_single_wrong_symbol_is_caught(body: str, position: int, symbol: str) -> None:
    code = body + check_symbol(body)
    typo = code[:position] + symbol + code[position + 1 :]
    if typo != code:
        with pytest.raises(InvalidCode):
            parse(typo)


@given(bodies, st.integers(min_value=0, max_value=12))
def test_swapping_neighbours_is_caught_when_it_changes_the_code(body: str, i: int) -> None:
    code = body + check_symbol(body)
    swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
    if swapped != code and {code[i], code[i + 1]} != {"0", "Z"}:
        # Luhn mod N misses exactly one pair of neighbours (values 0 and N-1)
        with pytest.raises(InvalidCode):
            parse(swapped)


def test_confusable_letters_are_read_as_digits() -> None:
    body = "1" * 6 + "0" * 7
    code = body + check_symbol(body)
    assert parse("I" * 3 + "L" * 3 + "O" * 7 + code[-1]) == code


@pytest.mark.parametrize(
    "text", ["", "ABC", "U" * 14, "7KQ2-M9XD-4TPA-H", "7KQ2M9XD4TPAHC99", "😀" * 14]
)
def test_malformed_codes_are_refused(text: str) -> None:
    with pytest.raises(InvalidCode):
        parse(text)


def test_display_groups_by_four() -> None:
    assert display("ABCDEFGHJKMNPQ") == "ABCD-EFGH-JKMN-PQ"
    assert display("ABCDEFGHJKMNPQ", "CAFE") == "CAFE-ABCD-EFGH-JKMN-PQ"
