"""Statement rules: settlement periods in time zones (with and without DST), netting, the
approval rule and carry-forward."""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.settlement.domain import (
    DEFAULT_CYCLE,
    FEE_PAYABLE,
    FEE_REVENUE,
    PARTNER_PAYABLE,
    PARTNER_RECEIVABLE,
    SETTLEMENT_CYCLES,
    STATEMENT_ENTRY_KINDS,
    ApprovalPolicy,
    SameApprover,
    StatementFigures,
    approve_outcome,
    figures_of_postings,
    is_period_start,
    next_first_day,
    period_containing,
    period_of_day,
    settlement_direction,
)

ZONES = ("Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe", "UTC")
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
)


def test_shanghai_days_start_at_local_midnight_utc_plus_eight() -> None:
    period = period_containing(
        datetime(2026, 11, 18, 15, 59, 59, tzinfo=UTC), "daily", "Asia/Shanghai"
    )
    assert period.start == datetime(2026, 11, 18, 16, 0, tzinfo=UTC) - timedelta(days=1)
    assert period.end == datetime(2026, 11, 18, 16, 0, tzinfo=UTC)
    assert (period.first_day, period.last_day) == (date(2026, 11, 18), date(2026, 11, 18))
    # One microsecond later is the next local day: [start, end) is half-open.
    after = period_containing(datetime(2026, 11, 18, 16, 0, tzinfo=UTC), "daily", "Asia/Shanghai")
    assert after.first_day == date(2026, 11, 19) and after.start == period.end


def test_shanghai_weeks_start_on_monday_and_months_on_the_first() -> None:
    week = period_of_day(date(2026, 11, 19), "weekly", "Asia/Shanghai")  # a Thursday
    assert (week.first_day, week.last_day) == (date(2026, 11, 16), date(2026, 11, 22))
    assert week.start == datetime(2026, 11, 15, 16, 0, tzinfo=UTC)
    assert week.end - week.start == timedelta(days=7)
    month = period_of_day(date(2026, 12, 31), "monthly", "Asia/Shanghai")
    assert (month.first_day, month.last_day) == (date(2026, 12, 1), date(2026, 12, 31))
    assert month.end == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # 2027-01-01 00:00 +08:00
    february = period_of_day(date(2028, 2, 10), "monthly", "Asia/Shanghai")
    assert february.last_day == date(2028, 2, 29)


def test_dst_days_are_23_and_25_hours_long_in_new_york() -> None:
    spring = period_of_day(date(2026, 3, 8), "daily", "America/New_York")
    assert spring.start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
    assert spring.end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # 00:00 EDT
    assert spring.end - spring.start == timedelta(hours=23)
    autumn = period_of_day(date(2026, 11, 1), "daily", "America/New_York")
    assert autumn.end - autumn.start == timedelta(hours=25)
    week = period_of_day(date(2026, 3, 8), "weekly", "America/New_York")
    assert week.first_day == date(2026, 3, 2)
    assert week.end - week.start == timedelta(days=7, hours=-1)
    # 01:30 on the autumn day happens twice; both instants belong to that day.
    for hour_utc in (5, 6):
        moment = datetime(2026, 11, 1, hour_utc, 30, tzinfo=UTC)
        assert period_containing(moment, "daily", "America/New_York").first_day == date(2026, 11, 1)


def test_a_naive_moment_and_an_unknown_cycle_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_containing(datetime(2026, 1, 1), "daily", "UTC")
    with pytest.raises(ValueError, match="cycle"):
        period_of_day(date(2026, 1, 1), "yearly", "UTC")  # type: ignore[arg-type]


@given(moments, st.sampled_from(SETTLEMENT_CYCLES), st.sampled_from(ZONES))
def test_a_moment_lies_in_its_period_and_periods_tile_the_timeline(
    moment: datetime, cycle: str, zone: str
) -> None:
    period = period_containing(moment, cycle, zone)  # type: ignore[arg-type]
    assert period.start <= moment < period.end
    assert is_period_start(period.first_day, cycle)  # type: ignore[arg-type]
    following = period_of_day(next_first_day(period.first_day, cycle), cycle, zone)  # type: ignore[arg-type]
    assert following.start == period.end  # no gap, no overlap
    assert following.first_day == period.last_day + timedelta(days=1)
    days = (period.last_day - period.first_day).days + 1
    assert {"daily": {1}, "weekly": {7}, "monthly": {28, 29, 30, 31}}[cycle] >= {days}
    # Wall-clock length is the number of days, give or take the DST shifts inside.
    assert abs((period.end - period.start) - timedelta(days=days)) <= timedelta(hours=2)


postings = st.lists(
    st.tuples(
        st.sampled_from(["redemption", "reversal", "adjustment", "fee"]),
        st.sampled_from([PARTNER_RECEIVABLE, PARTNER_PAYABLE, FEE_PAYABLE, FEE_REVENUE]),
        st.integers(min_value=-(10**12), max_value=10**12),
    ),
    max_size=50,
)


@given(postings, st.integers(min_value=-(10**9), max_value=10**9))
def test_the_net_is_every_posting_plus_what_was_carried(
    lines: list[tuple[str, str, int]], carried: int
) -> None:
    figures = figures_of_postings(lines, carried=carried)  # type: ignore[arg-type]
    assert figures.net == sum(amount for _, _, amount in lines) + carried
    assert figures.reversals == sum(a for kind, _, a in lines if kind == "reversal")
    assert figures.shares_receivable == sum(
        a for kind, purpose, a in lines if kind == "redemption" and purpose == PARTNER_RECEIVABLE
    )


@given(postings, postings)
def test_netting_two_halves_is_netting_the_whole(
    first: list[tuple[str, str, int]], second: list[tuple[str, str, int]]
) -> None:
    whole = figures_of_postings(first + second)  # type: ignore[arg-type]
    assert figures_of_postings(first) + figures_of_postings(second) == whole  # type: ignore[arg-type]


def test_a_cafe_statement_nets_partners_shares_against_its_fees() -> None:
    figures = figures_of_postings(
        [
            ("redemption", PARTNER_RECEIVABLE, 12_000),
            ("redemption", FEE_PAYABLE, -200),
            ("reversal", PARTNER_RECEIVABLE, -6_000),
            ("reversal", FEE_PAYABLE, 100),
        ],
        carried=295,
    )
    assert figures == StatementFigures(
        shares_receivable=12_000, fees_payable=-200, reversals=-5_900, carried=295
    )
    assert figures.net == 6_195 and settlement_direction(figures.net) == "transfer"
    assert settlement_direction(-1) == "collection" and settlement_direction(0) == "none"


A, B = uuid.uuid4(), uuid.uuid4()
POLICY = ApprovalPolicy(minimum_payout=1_000, second_approver_above=100_000)


def test_one_approval_below_the_threshold_two_different_ones_above() -> None:
    assert approve_outcome(POLICY, 100_000, first_approver=None, approver=A) == "approved"
    assert approve_outcome(POLICY, -100_000, first_approver=None, approver=A) == "approved"
    assert (
        approve_outcome(POLICY, 100_001, first_approver=None, approver=A)
        == "awaiting_second_approver"
    )
    assert (
        approve_outcome(POLICY, -100_001, first_approver=None, approver=A)
        == "awaiting_second_approver"
    )
    assert approve_outcome(POLICY, 100_001, first_approver=A, approver=B) == "approved"
    with pytest.raises(SameApprover):
        approve_outcome(POLICY, 100_001, first_approver=A, approver=A)
    never_two = ApprovalPolicy(second_approver_above=None)
    assert never_two.approvals_needed(10**15) == 1


@given(st.integers(min_value=-(10**12), max_value=10**12), st.integers(0, 10**6))
def test_nets_below_the_minimum_payout_carry_forward(net: int, minimum: int) -> None:
    policy = ApprovalPolicy(minimum_payout=minimum)
    outcome = approve_outcome(policy, net, first_approver=None, approver=A)
    assert (outcome == "carried_forward") == (abs(net) < minimum)


def test_the_statement_queue_uses_the_domains_kinds_and_default_cycle() -> None:
    """Migration 0015's trigger spells the statement kinds and the default cycle in SQL; they
    must be the domain's, or the close would miss entries or put them in the wrong series."""
    queue = importlib.import_module("coalition.migrations.versions.0015_statement_pending_series")
    kinds = ", ".join(f"'{kind}'" for kind in STATEMENT_ENTRY_KINDS)
    assert f"({kinds})" == queue.STATEMENT_KINDS
    assert f"'{DEFAULT_CYCLE}'" == queue.DEFAULT_CYCLE
