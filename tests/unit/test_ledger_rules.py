"""Ledger rules (settlement/domain.py): what a redemption and its reversals post. Property-based
over random funding splits, fees and sequences of (partial) reversals."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalition.platform.money import split_by_basis_points
from coalition.settlement.domain import (
    FEE_PAYABLE,
    FEE_REVENUE,
    PARTNER_PAYABLE,
    PARTNER_RECEIVABLE,
    FundingShare,
    Line,
    Purpose,
    RedemptionFunding,
    UnbalancedEntry,
    check_balanced,
    discount_reversed_by_refund,
    net_by_account,
    redemption_lines,
    reversal_lines,
    reversal_slices,
    reversed_fee,
    reversed_parts,
    standing_lines,
)

CARRIER = uuid.UUID(int=1)
CAFE = uuid.UUID(int=2)
BANK = uuid.UUID(int=3)
SCHOOL = uuid.UUID(int=4)


def funding(
    discount: int,
    shares: list[tuple[uuid.UUID, int]],
    *,
    redeeming: uuid.UUID = CAFE,
    owner: uuid.UUID = CARRIER,
    fee_bp: int = 0,
    fee_fixed: int = 0,
    payer: str = "redeeming_merchant",
) -> RedemptionFunding:
    return RedemptionFunding(
        discount=discount,
        currency="CNY",
        redeeming_org_id=redeeming,
        owner_org_id=owner,
        carrier_org_id=CARRIER,
        funders=tuple(FundingShare(org, bp) for org, bp in shares),
        fee_bp=fee_bp,
        fee_fixed=fee_fixed,
        fee_payer=payer,  # type: ignore[arg-type]
    )


# --- worked examples ------------------------------------------------------------------------


def test_other_funders_owe_the_redeeming_merchant_their_parts_and_the_payer_the_fee() -> None:
    lines = redemption_lines(
        funding(
            1000,
            [(CAFE, 5000), (BANK, 3000), (CARRIER, 2000)],
            fee_bp=500,
            fee_fixed=7,
        )
    )
    assert lines == [
        Line(CAFE, PARTNER_RECEIVABLE, 300),
        Line(BANK, PARTNER_PAYABLE, -300),
        Line(CAFE, PARTNER_RECEIVABLE, 200),
        Line(CARRIER, PARTNER_PAYABLE, -200),
        Line(CARRIER, FEE_REVENUE, 57),  # 5% of 1000 + 7
        Line(CAFE, FEE_PAYABLE, -57),
    ]
    check_balanced(lines)
    # The café's net position: owed 500, owes 57.
    assert sum(line.amount for line in lines if line.org_id == CAFE) == 443


def test_the_owner_pays_the_fee_when_the_terms_say_so_and_the_carrier_never_owes_itself() -> None:
    shares = [(CAFE, 5000), (BANK, 5000)]
    by_bank = redemption_lines(funding(1000, shares, owner=BANK, fee_bp=100, payer="owner"))
    assert Line(BANK, FEE_PAYABLE, -10) in by_bank
    assert Line(CARRIER, FEE_REVENUE, 10) in by_bank
    by_carrier = redemption_lines(funding(1000, shares, fee_bp=100, payer="owner"))
    assert {line.purpose for line in by_carrier} == {PARTNER_RECEIVABLE, PARTNER_PAYABLE}
    at_carrier = redemption_lines(
        funding(1000, [(CARRIER, 5000), (BANK, 5000)], redeeming=CARRIER, fee_bp=100)
    )
    assert at_carrier == [
        Line(CARRIER, PARTNER_RECEIVABLE, 500),
        Line(BANK, PARTNER_PAYABLE, -500),
    ]


def test_nothing_to_post_when_the_redeeming_merchant_funds_it_all_without_fee() -> None:
    assert redemption_lines(funding(1000, [(CAFE, 10_000)])) == []
    assert redemption_lines(funding(0, [(CAFE, 5000), (BANK, 5000)], fee_fixed=50)) == []


def test_a_redeeming_merchant_that_is_not_a_funder_is_owed_every_part() -> None:
    lines = redemption_lines(funding(999, [(BANK, 5000), (SCHOOL, 5000)]))
    assert net_by_account(lines) == {
        (CAFE, PARTNER_RECEIVABLE): 999,
        (BANK, PARTNER_PAYABLE): -500,  # the remainder unit goes to the first listed
        (SCHOOL, PARTNER_PAYABLE): -499,
    }


def test_a_reversal_is_the_mirror_and_a_full_one_nets_everything_to_zero() -> None:
    terms = funding(1000, [(CAFE, 5000), (BANK, 3000), (CARRIER, 2000)], fee_bp=500, fee_fixed=7)
    half = reversal_lines(terms, reversed_before=0, reversing_now=500)
    assert net_by_account(half) == {
        (CAFE, PARTNER_RECEIVABLE): -250,
        (BANK, PARTNER_PAYABLE): 150,
        (CARRIER, PARTNER_PAYABLE): 100,
        (CARRIER, FEE_REVENUE): -29,  # 57 * 500 / 1000 = 28.5, half up
        (CAFE, FEE_PAYABLE): 29,
    }
    rest = reversal_lines(terms, reversed_before=500, reversing_now=500)
    assert net_by_account([*redemption_lines(terms), *half, *rest]) == {}
    with pytest.raises(ValueError, match="cannot reverse"):
        reversal_lines(terms, reversed_before=500, reversing_now=501)


def test_the_largest_remainder_split_of_a_growing_total_is_not_monotone() -> None:
    """Why reversals do not split the cumulative reversed amount with split_by_basis_points:
    one more unit reversed would give a funder back a unit (the "Alabama paradox")."""
    shares = {BANK: 6623, SCHOOL: 165, CAFE: 3212}
    assert split_by_basis_points(88, shares)[SCHOOL] == 2
    assert split_by_basis_points(89, shares)[SCHOOL] == 1
    parts = split_by_basis_points(89, shares)
    previous = reversed_parts(parts, 0)
    for reversed_total in range(1, 90):
        current = reversed_parts(parts, reversed_total)
        assert all(current[org] >= previous[org] for org in parts)
        previous = current
    assert previous == parts


def test_unbalanced_or_short_entries_are_refused() -> None:
    with pytest.raises(UnbalancedEntry, match="sum to 1"):
        check_balanced([Line(CAFE, PARTNER_RECEIVABLE, 10), Line(BANK, PARTNER_PAYABLE, -9)])
    with pytest.raises(UnbalancedEntry, match="at least two"):
        check_balanced([])
    with pytest.raises(UnbalancedEntry, match="zero"):
        check_balanced([Line(CAFE, PARTNER_RECEIVABLE, 0), Line(BANK, PARTNER_PAYABLE, 0)])


def test_funding_must_be_sound() -> None:
    with pytest.raises(ValueError, match="10000"):
        funding(100, [(CAFE, 5000), (BANK, 4000)])
    with pytest.raises(ValueError, match="once"):
        funding(100, [(CAFE, 5000), (CAFE, 5000)])
    with pytest.raises(ValueError, match="negative"):
        funding(-1, [(CAFE, 10_000)])


# --- the unit order behind reversals ---------------------------------------------------------


def _reference_reversed(parts: list[int], reversed_total: int) -> list[int]:
    """The definition, literally: order every unit (j - 1/2) / p, ties to the earlier funder."""
    units = sorted(
        (Fraction(2 * j - 1, 2 * part), order)
        for order, part in enumerate(parts)
        for j in range(1, part + 1)
    )
    taken = [0] * len(parts)
    for _, order in units[:reversed_total]:
        taken[order] += 1
    return taken


@given(st.lists(st.integers(0, 40), min_size=1, max_size=5), st.data())
def test_reversed_parts_follow_the_unit_order(parts: list[int], data: st.DataObject) -> None:
    reversed_total = data.draw(st.integers(0, sum(parts)))
    got = reversed_parts(dict(enumerate(parts)), reversed_total)
    assert [got[i] for i in range(len(parts))] == _reference_reversed(parts, reversed_total)


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=5), st.data())
def test_reversed_parts_are_monotone_bounded_and_exact(
    parts: list[int], data: st.DataObject
) -> None:
    total = sum(parts)
    first = data.draw(st.integers(0, total))
    second = data.draw(st.integers(first, total))
    keyed = dict(enumerate(parts))
    low, high = reversed_parts(keyed, first), reversed_parts(keyed, second)
    assert sum(low.values()) == first and sum(high.values()) == second
    for i, part in keyed.items():
        assert 0 <= low[i] <= high[i] <= part
    assert reversed_parts(keyed, total) == keyed


@given(st.integers(0, 10**7), st.integers(1, 10**8), st.data())
def test_discount_reversed_by_refund_is_monotone_and_capped(
    discount: int, basket: int, data: st.DataObject
) -> None:
    first = data.draw(st.integers(0, basket))
    second = data.draw(st.integers(first, 2 * basket))
    low = discount_reversed_by_refund(discount, basket, first)
    high = discount_reversed_by_refund(discount, basket, second)
    assert 0 <= low <= high <= discount
    assert discount_reversed_by_refund(discount, basket, basket) == discount
    assert discount_reversed_by_refund(discount, basket, 0) == 0


# --- property: random sequences of redemptions and reversals ---------------------------------

ORGS = [uuid.UUID(int=n) for n in range(1, 8)]


@st.composite
def fundings(draw: st.DrawFn) -> RedemptionFunding:
    count = draw(st.integers(1, 5))
    funders = draw(st.permutations(ORGS))[:count]
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, 10_000]
    shares = [(funders[i], bounds[i + 1] - bounds[i]) for i in range(count)]
    return RedemptionFunding(
        discount=draw(st.one_of(st.integers(0, 100), st.integers(0, 10**8))),
        currency=draw(st.sampled_from(["CNY", "USD"])),
        redeeming_org_id=draw(st.sampled_from([*funders, ORGS[-1]])),
        owner_org_id=draw(st.sampled_from(funders)),
        carrier_org_id=draw(st.sampled_from([ORGS[0], *funders])),
        funders=tuple(FundingShare(org, bp) for org, bp in shares),
        fee_bp=draw(st.integers(0, 10_000)),
        fee_fixed=draw(st.integers(0, 1000)),
        fee_payer=draw(st.sampled_from(["redeeming_merchant", "owner"])),
    )


@dataclass
class Redemption:
    terms: RedemptionFunding
    reversed_total: int = 0
    entries: list[list[Line]] = field(default_factory=list)


@settings(max_examples=300, deadline=None)
@given(st.lists(fundings(), min_size=1, max_size=4), st.data())
def test_random_redemptions_and_reversals_keep_the_ledger_exact(
    terms: list[RedemptionFunding], data: st.DataObject
) -> None:
    redemptions = [Redemption(t) for t in terms]
    journal: list[tuple[str, list[Line]]] = []  # (currency, lines) of every entry written
    for redemption in redemptions:
        lines = redemption_lines(redemption.terms)
        if lines:
            redemption.entries.append(lines)
            journal.append((redemption.terms.currency, lines))

    # Interleaved partial reversals, sometimes running to a full reversal.
    steps = data.draw(st.integers(0, 12))
    for _ in range(steps):
        redemption = data.draw(st.sampled_from(redemptions))
        left = redemption.terms.discount - redemption.reversed_total
        if left == 0:
            continue
        amount = data.draw(st.one_of(st.integers(1, left), st.just(left)))
        before_standing = net_by_account(
            standing_lines(redemption.terms, redemption.reversed_total)
        )
        lines = reversal_lines(
            redemption.terms, reversed_before=redemption.reversed_total, reversing_now=amount
        )
        redemption.reversed_total += amount
        # A reversal only ever gives back: each line has the opposite sign of what stood.
        for line in lines:
            standing = before_standing.get((line.org_id, line.purpose), 0)
            assert standing != 0 and (line.amount > 0) != (standing > 0)
            assert abs(line.amount) <= abs(standing)
        if lines:
            redemption.entries.append(lines)
            journal.append((redemption.terms.currency, lines))

    # Every entry balances (at least two non-zero lines summing to zero).
    for _, lines in journal:
        check_balanced(lines)

    # The sum over all accounts is zero per currency.
    per_currency: dict[str, int] = defaultdict(int)
    for currency, lines in journal:
        per_currency[currency] += sum(line.amount for line in lines)
    assert all(total == 0 for total in per_currency.values())

    for redemption in redemptions:
        t = redemption.terms
        parts = t.parts
        assert parts == split_by_basis_points(t.discount, {f.org_id: f.share_bp for f in t.funders})
        back = reversed_parts(parts, redemption.reversed_total)
        fee_left = t.fee - reversed_fee(t.fee, t.discount, redemption.reversed_total)
        booked = net_by_account(line for lines in redemption.entries for line in lines)
        # Each funder's postings equal exactly its part of the discount that still stands ...
        expected: dict[tuple[uuid.UUID, Purpose], int] = {}
        owed_to_redeemer = 0
        for org, part in parts.items():
            assert 0 <= back[org] <= part  # ... reversals never exceed the original ...
            if org != t.redeeming_org_id and part - back[org]:
                expected[(org, PARTNER_PAYABLE)] = -(part - back[org])
                owed_to_redeemer += part - back[org]
        if owed_to_redeemer:
            expected[(t.redeeming_org_id, PARTNER_RECEIVABLE)] = owed_to_redeemer
        if fee_left and t.fee_payer_org_id != t.carrier_org_id:
            expected[(t.carrier_org_id, FEE_REVENUE)] = fee_left
            expected[(t.fee_payer_org_id, FEE_PAYABLE)] = -fee_left
        assert booked == expected
        # ... the chunks add up to what one reversal of the same total would leave ...
        assert booked == net_by_account(standing_lines(t, redemption.reversed_total))
        # ... and a full reversal nets every account of the redemption to zero.
        if redemption.reversed_total == t.discount:
            assert booked == {}


@given(fundings(), st.data())
def test_reversal_slices_add_up_to_each_funders_part(
    redemption: RedemptionFunding, data: st.DataObject
) -> None:
    """However a discount is reversed in steps, each funder gets back exactly its part, never
    more than it put in along the way, and every step's slices sum to that step."""
    steps = data.draw(st.lists(st.integers(0, redemption.discount), max_size=5))
    totals = sorted([*steps, redemption.discount])
    returned = dict.fromkeys(redemption.parts, 0)
    before = 0
    for after in totals:
        step = reversal_slices(redemption, before, after)
        assert sum(step.values()) == after - before
        assert all(amount >= 0 for amount in step.values())
        for org_id, amount in step.items():
            returned[org_id] += amount
            assert returned[org_id] <= redemption.parts[org_id]
        before = after
    assert returned == redemption.parts
