"""Offer rules: every kind, every window, and the properties a discount must always keep."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.campaigns.domain import (
    Basket,
    CampaignStatus,
    Funder,
    Offer,
    Quote,
    Refusal,
    Terms,
    TimeWindow,
    Validity,
    can_transition,
    coupon_validity,
    discount_for,
    fee_for,
    funders_can_cover,
    max_discount,
    quote,
)

TZ = "Asia/Shanghai"
START = datetime(2026, 12, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)
OPEN = Validity(START, END)
WEDNESDAY_NOON_LOCAL = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
STORE = uuid.uuid4()


def _days(n: int) -> Offer:
    return Offer(kind="amount_off", currency="CNY", value=500, valid_days_after_claim=n)


offers = st.one_of(
    st.builds(
        Offer,
        kind=st.just("amount_off"),
        currency=st.just("CNY"),
        value=st.integers(1, 10**7),
        valid_days_after_claim=st.just(7),
    ),
    st.builds(
        Offer,
        kind=st.just("percent_off"),
        currency=st.just("CNY"),
        percent_bp=st.integers(1, 10_000),
        cap=st.integers(1, 10**7),
        valid_days_after_claim=st.just(7),
    ),
    st.integers(1, 10**6).flatmap(
        lambda value: st.builds(
            Offer,
            kind=st.just("threshold"),
            currency=st.just("CNY"),
            value=st.just(value),
            threshold=st.integers(value, 10**7),
            valid_days_after_claim=st.just(7),
        )
    ),
    st.builds(
        Offer,
        kind=st.just("gift"),
        currency=st.just("CNY"),
        value=st.integers(1, 10**6),
        valid_days_after_claim=st.just(7),
    ),
)


@given(offers, st.integers(-(10**6), 10**9))
def test_discount_is_never_negative_nor_above_basket_cap_or_face_value(
    offer: Offer, basket: int
) -> None:
    assert offer.problems() == []
    discount = discount_for(offer, basket)
    assert 0 <= discount <= max(basket, 0)
    assert discount <= max_discount(offer)
    if offer.cap is not None:
        assert discount <= offer.cap


@given(offers, st.integers(1, 10**9))
def test_a_quote_pays_the_rest(offer: Offer, amount: int) -> None:
    result = quote(
        offer, Basket(amount, "CNY"), WEDNESDAY_NOON_LOCAL, STORE, validity=OPEN, timezone=TZ
    )
    if isinstance(result, Quote):
        assert result.discount + result.payable == amount
        assert 0 <= result.discount <= amount
    else:
        assert result == Refusal.BELOW_MINIMUM_SPEND


def test_each_kind() -> None:
    amount_off = Offer(kind="amount_off", currency="CNY", value=1000, valid_days_after_claim=1)
    assert discount_for(amount_off, 5000) == 1000
    assert discount_for(amount_off, 600) == 600  # never more than the basket
    percent = Offer(
        kind="percent_off", currency="CNY", percent_bp=1500, cap=2000, valid_days_after_claim=1
    )
    assert discount_for(percent, 10_000) == 1500
    assert discount_for(percent, 100_000) == 2000  # capped
    threshold = Offer(
        kind="threshold", currency="CNY", value=10_000, threshold=100_000, valid_days_after_claim=1
    )
    assert discount_for(threshold, 99_999) == 0
    assert discount_for(threshold, 100_000) == 10_000  # 满1000减100
    gift = Offer(kind="gift", currency="CNY", value=1800, valid_days_after_claim=1)
    assert discount_for(gift, 1800) == 1800
    assert max_discount(percent) == 2000 and max_discount(threshold) == 10_000


def test_minimum_spend_and_threshold_refuse_small_baskets() -> None:
    offer = Offer(
        kind="amount_off", currency="CNY", value=500, min_spend=3000, valid_days_after_claim=1
    )
    assert (
        quote(offer, Basket(2999, "CNY"), WEDNESDAY_NOON_LOCAL, STORE, validity=OPEN, timezone=TZ)
        == Refusal.BELOW_MINIMUM_SPEND
    )
    assert quote(
        offer, Basket(3000, "CNY"), WEDNESDAY_NOON_LOCAL, STORE, validity=OPEN, timezone=TZ
    ) == Quote(500, 2500)
    threshold = Offer(
        kind="threshold", currency="CNY", value=100, threshold=1000, valid_days_after_claim=1
    )
    assert (
        quote(
            threshold, Basket(999, "CNY"), WEDNESDAY_NOON_LOCAL, STORE, validity=OPEN, timezone=TZ
        )
        == Refusal.BELOW_MINIMUM_SPEND
    )


def test_validity_window_is_half_open() -> None:
    offer = _days(3)
    assert (
        quote(
            offer,
            Basket(1000, "CNY"),
            START - timedelta(seconds=1),
            STORE,
            validity=OPEN,
            timezone=TZ,
        )
        == Refusal.NOT_YET_VALID
    )
    assert isinstance(
        quote(offer, Basket(1000, "CNY"), START, STORE, validity=OPEN, timezone=TZ), Quote
    )
    assert (
        quote(offer, Basket(1000, "CNY"), END, STORE, validity=OPEN, timezone=TZ) == Refusal.EXPIRED
    )


def test_days_after_claim_run_to_the_end_of_the_local_day_and_never_past_the_campaign() -> None:
    claimed = datetime(2026, 12, 10, 15, 30, tzinfo=UTC)  # 23:30 on Dec 10 in Shanghai
    validity = coupon_validity(_days(2), claimed_at=claimed, campaign_ends_at=END, timezone=TZ)
    assert validity.starts_at == claimed
    assert validity.ends_at == datetime(2026, 12, 12, 16, 0, tzinfo=UTC)  # Dec 13 00:00 local
    short = coupon_validity(_days(90), claimed_at=claimed, campaign_ends_at=END, timezone=TZ)
    assert short.ends_at == END
    fixed = Offer(
        kind="amount_off",
        currency="CNY",
        value=1,
        valid_from=START,
        valid_until=END + timedelta(days=9),
    )
    assert coupon_validity(
        fixed, claimed_at=claimed, campaign_ends_at=END, timezone=TZ
    ) == Validity(START, END)


def test_weekdays_and_time_windows_in_the_campaign_time_zone() -> None:
    lunch_and_evening = Offer(
        kind="amount_off",
        currency="CNY",
        value=500,
        valid_days_after_claim=1,
        weekdays=frozenset({0, 1, 2, 3, 4}),
        time_windows=(TimeWindow(time(11), time(14)), TimeWindow(time(22), time(2))),
    )

    def at(local_hour: int, day: int = 2) -> Quote | Refusal:
        moment = datetime(2026, 12, day, local_hour, 0, tzinfo=UTC) - timedelta(hours=8)
        return quote(
            lunch_and_evening, Basket(1000, "CNY"), moment, STORE, validity=OPEN, timezone=TZ
        )

    assert isinstance(at(12), Quote)
    assert at(14) == Refusal.OUTSIDE_TIME_WINDOW  # windows are half-open
    assert isinstance(at(23), Quote) and isinstance(at(1), Quote)  # past midnight
    assert at(3) == Refusal.OUTSIDE_TIME_WINDOW
    assert at(12, day=6) == Refusal.OUTSIDE_TIME_WINDOW  # Saturday


def test_channels_stores_and_currency() -> None:
    here, elsewhere = uuid.uuid4(), uuid.uuid4()
    offer = Offer(
        kind="amount_off",
        currency="CNY",
        value=100,
        valid_days_after_claim=1,
        channels=frozenset({"pos"}),
        store_ids=frozenset({here}),
    )
    basket = Basket(1000, "CNY")
    assert isinstance(
        quote(offer, basket, WEDNESDAY_NOON_LOCAL, here, validity=OPEN, timezone=TZ), Quote
    )
    assert (
        quote(offer, basket, WEDNESDAY_NOON_LOCAL, elsewhere, validity=OPEN, timezone=TZ)
        == Refusal.NOT_REDEEMABLE_HERE
    )
    online = Basket(1000, "CNY", channel="online")
    assert (
        quote(offer, online, WEDNESDAY_NOON_LOCAL, None, validity=OPEN, timezone=TZ)
        == Refusal.CHANNEL_NOT_ALLOWED
    )
    assert (
        quote(offer, Basket(1000, "USD"), WEDNESDAY_NOON_LOCAL, here, validity=OPEN, timezone=TZ)
        == Refusal.CURRENCY_MISMATCH
    )
    everywhere = Offer(kind="amount_off", currency="CNY", value=100, valid_days_after_claim=1)
    participants = frozenset({here})
    assert (
        quote(
            everywhere,
            basket,
            WEDNESDAY_NOON_LOCAL,
            elsewhere,
            validity=OPEN,
            timezone=TZ,
            participant_store_ids=participants,
        )
        == Refusal.NOT_REDEEMABLE_HERE
    )


@pytest.mark.parametrize(
    ("offer", "field"),
    [
        (Offer(kind="amount_off", currency="CNY", value=0, valid_days_after_claim=1), "value"),
        (
            Offer(kind="percent_off", currency="CNY", percent_bp=1000, valid_days_after_claim=1),
            "cap",
        ),
        (
            Offer(
                kind="threshold", currency="CNY", value=500, threshold=100, valid_days_after_claim=1
            ),
            "threshold",
        ),
        (Offer(kind="amount_off", currency="CNY", value=1), "validity"),
        (
            Offer(kind="amount_off", currency="CNY", value=1, valid_from=END, valid_until=START),
            "valid_until",
        ),
        (
            Offer(
                kind="amount_off",
                currency="CNY",
                value=1,
                valid_days_after_claim=1,
                weekdays=frozenset({7}),
            ),
            "weekdays",
        ),
        (
            Offer(
                kind="amount_off",
                currency="CNY",
                value=1,
                valid_days_after_claim=1,
                time_windows=(TimeWindow(time(1), time(2)),) * 3,
            ),
            "time_windows",
        ),
    ],
)
def test_unsound_offers_name_the_field(offer: Offer, field: str) -> None:
    assert field in [f for f, _ in offer.problems()]


def test_workflow_transitions() -> None:
    s = CampaignStatus
    assert can_transition(s.DRAFT, s.PROPOSED) and can_transition(s.PROPOSED, s.APPROVED)
    assert can_transition(s.ACTIVE, s.PAUSED) and can_transition(s.PAUSED, s.ACTIVE)
    assert not can_transition(s.ACTIVE, s.CANCELLED)  # cancelled only before it runs
    assert not can_transition(s.DRAFT, s.ACTIVE)
    assert not can_transition(s.ENDED, s.ACTIVE)


def test_terms_need_shares_summing_to_10000() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    good = Terms(funders=(Funder(a, 6000), Funder(b, 4000)), total_budget=100_000, currency="CNY")
    assert good.problems() == []
    bad = Terms(funders=(Funder(a, 6000), Funder(b, 3999)), total_budget=100_000, currency="CNY")
    assert ("funders", "funding shares must sum to exactly 10000 basis points") in bad.problems()


@given(st.integers(0, 10**7), st.integers(0, 10_000), st.integers(0, 10_000))
def test_fee_is_percent_plus_fixed(discount: int, fee_bp: int, fixed: int) -> None:
    terms = Terms(
        funders=(Funder(uuid.uuid4(), 10_000),),
        total_budget=1,
        currency="CNY",
        fee_bp=fee_bp,
        fee_fixed=fixed,
    )
    fee = fee_for(terms, discount)
    assert fee >= 0
    assert fee == (0 if discount == 0 else fixed) + (discount * fee_bp + 5000) // 10_000


def test_funder_caps_bound_reservations() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    terms = Terms(
        funders=(Funder(a, 5000, budget_cap=1000), Funder(b, 5000)),
        total_budget=10**6,
        currency="CNY",
    )
    assert funders_can_cover(terms, {a: 0}, 2000)
    assert not funders_can_cover(terms, {a: 1}, 2000)


@given(offers)
def test_offers_survive_their_stored_form(offer: Offer) -> None:
    from coalition.campaigns.domain import offer_from_json, offer_to_json

    assert offer_from_json(offer_to_json(offer)) == offer


def test_full_offer_round_trip() -> None:
    from coalition.campaigns.domain import offer_from_json, offer_to_json

    offer = Offer(
        kind="percent_off",
        currency="CNY",
        percent_bp=2000,
        cap=3000,
        min_spend=1000,
        valid_from=START,
        valid_until=END,
        weekdays=frozenset({5, 6}),
        time_windows=(TimeWindow(time(9, 30), time(11)),),
        channels=frozenset({"online"}),
        store_ids=frozenset({STORE}),
    )
    assert offer_from_json(offer_to_json(offer)) == offer
