"""Pure rules of joint campaigns: offers and their quote, coupon validity, the status workflow.

No I/O, no clock reads: callers pass the time. Amounts are integer minor units.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from coalition.platform.money import percent_of

OfferKind = Literal["amount_off", "percent_off", "threshold", "gift"]
Channel = Literal["pos", "online"]
MAX_TIME_WINDOWS = 2


class Refusal(StrEnum):
    """Why a coupon gives no discount here and now. The values are stable API codes."""

    NOT_YET_VALID = "coupon_not_yet_valid"
    EXPIRED = "coupon_expired"
    BELOW_MINIMUM_SPEND = "below_minimum_spend"
    OUTSIDE_TIME_WINDOW = "outside_time_window"
    NOT_REDEEMABLE_HERE = "not_redeemable_here"
    CHANNEL_NOT_ALLOWED = "channel_not_allowed"
    CURRENCY_MISMATCH = "currency_mismatch"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Local time of day, half-open `[start, end)`; `end` before `start` runs past midnight."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True, slots=True)
class Offer:
    """The discount rule of a campaign.

    - `amount_off`: `value` off the basket.
    - `percent_off`: `percent_bp` basis points of the basket, at most `cap`.
    - `threshold`: spend at least `threshold`, get `value` off ("满1000减100").
    - `gift`: a gift worth `value` (rung up and given free: at most the basket).
    """

    kind: OfferKind
    currency: str
    value: int = 0
    percent_bp: int = 0
    cap: int | None = None
    threshold: int = 0
    min_spend: int = 0
    valid_from: datetime | None = None  # fixed validity ...
    valid_until: datetime | None = None
    valid_days_after_claim: int | None = None  # ... or N local days after the claim
    weekdays: frozenset[int] = frozenset(range(7))  # 0 = Monday
    time_windows: tuple[TimeWindow, ...] = ()
    channels: frozenset[Channel] = frozenset({"pos", "online"})
    store_ids: frozenset[uuid.UUID] | None = None  # None: every participant's stores

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every inconsistency; empty when the offer is sound."""
        found: list[tuple[str, str]] = []
        if self.kind in ("amount_off", "threshold", "gift") and self.value <= 0:
            found.append(("value", "must be a positive amount in minor units"))
        if self.kind == "percent_off":
            if not 0 < self.percent_bp <= 10_000:
                found.append(("percent_bp", "must be between 1 and 10000 basis points"))
            if self.cap is None or self.cap <= 0:
                found.append(("cap", "a percent-off offer needs a positive cap"))
        if self.kind == "threshold" and self.threshold < self.value:
            found.append(("threshold", "the spend threshold must be at least the amount off"))
        if self.min_spend < 0:
            found.append(("min_spend", "cannot be negative"))
        fixed = self.valid_from is not None or self.valid_until is not None
        if fixed == (self.valid_days_after_claim is not None):
            found.append(("validity", "give either fixed dates or a number of days after claim"))
        if fixed and (self.valid_from is None or self.valid_until is None):
            found.append(("validity", "fixed validity needs both a start and an end"))
        elif self.valid_from and self.valid_until and self.valid_from >= self.valid_until:
            found.append(("valid_until", "must be after valid_from"))
        if self.valid_days_after_claim is not None and not 1 <= self.valid_days_after_claim <= 3650:
            found.append(("valid_days_after_claim", "must be between 1 and 3650"))
        if not self.weekdays or not self.weekdays <= frozenset(range(7)):
            found.append(("weekdays", "days are 0 (Monday) to 6 (Sunday), at least one"))
        if len(self.time_windows) > MAX_TIME_WINDOWS:
            found.append(("time_windows", f"at most {MAX_TIME_WINDOWS} time windows"))
        if any(w.start == w.end for w in self.time_windows):
            found.append(("time_windows", "a time window cannot be empty"))
        if not self.channels:
            found.append(("channels", "at least one channel"))
        return found


def offer_to_json(offer: Offer) -> dict[str, Any]:
    """The stored (JSONB) form of an offer."""
    return {
        "kind": offer.kind,
        "currency": offer.currency,
        "value": offer.value,
        "percent_bp": offer.percent_bp,
        "cap": offer.cap,
        "threshold": offer.threshold,
        "min_spend": offer.min_spend,
        "valid_from": offer.valid_from.isoformat() if offer.valid_from else None,
        "valid_until": offer.valid_until.isoformat() if offer.valid_until else None,
        "valid_days_after_claim": offer.valid_days_after_claim,
        "weekdays": sorted(offer.weekdays),
        "time_windows": [
            [w.start.isoformat("minutes"), w.end.isoformat("minutes")] for w in offer.time_windows
        ],
        "channels": sorted(offer.channels),
        "store_ids": sorted(str(s) for s in offer.store_ids)
        if offer.store_ids is not None
        else None,
    }


def offer_from_json(data: dict[str, Any]) -> Offer:
    def when(value: Any) -> datetime | None:
        return datetime.fromisoformat(str(value)) if value else None

    def amount(name: str) -> int:
        return int(data.get(name) or 0)

    store_ids = data.get("store_ids")
    return Offer(
        kind=data["kind"],
        currency=str(data["currency"]),
        value=amount("value"),
        percent_bp=amount("percent_bp"),
        cap=int(data["cap"]) if data.get("cap") is not None else None,
        threshold=amount("threshold"),
        min_spend=amount("min_spend"),
        valid_from=when(data.get("valid_from")),
        valid_until=when(data.get("valid_until")),
        valid_days_after_claim=(
            int(data["valid_days_after_claim"])
            if data.get("valid_days_after_claim") is not None
            else None
        ),
        weekdays=frozenset(int(d) for d in data.get("weekdays", range(7))),
        time_windows=tuple(
            TimeWindow(time.fromisoformat(a), time.fromisoformat(b))
            for a, b in data.get("time_windows") or []
        ),
        channels=frozenset(data.get("channels", ("pos", "online"))),
        store_ids=frozenset(uuid.UUID(str(s)) for s in store_ids)
        if store_ids is not None
        else None,
    )


def max_discount(offer: Offer) -> int:
    """The most one coupon can ever give: what claiming reserves against the budgets."""
    if offer.kind == "percent_off":
        return offer.cap or 0
    return offer.value


def discount_for(offer: Offer, basket: int) -> int:
    """The discount for a basket, ignoring time and place. Never negative, never more than
    the basket, the cap, or the face value."""
    if basket <= 0:
        return 0
    if offer.kind == "amount_off" or offer.kind == "gift":
        amount = offer.value
    elif offer.kind == "percent_off":
        amount = min(percent_of(basket, offer.percent_bp), offer.cap or 0)
    else:  # threshold
        amount = offer.value if basket >= offer.threshold else 0
    return max(0, min(amount, basket))


@dataclass(frozen=True, slots=True)
class Validity:
    """A coupon's half-open validity window `[starts_at, ends_at)`."""

    starts_at: datetime
    ends_at: datetime


def coupon_validity(
    offer: Offer, *, claimed_at: datetime, campaign_ends_at: datetime, timezone: str
) -> Validity:
    """Fixed dates, or until the end of the N-th local day after the claim; never past the
    campaign's end."""
    if offer.valid_days_after_claim is not None:
        zone = ZoneInfo(timezone)
        local_day = claimed_at.astimezone(zone).date() + timedelta(
            days=offer.valid_days_after_claim
        )
        end_of_day = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=zone)
        starts_at, ends_at = claimed_at, end_of_day
    else:
        assert offer.valid_from is not None and offer.valid_until is not None
        starts_at, ends_at = offer.valid_from, offer.valid_until
    return Validity(starts_at=starts_at, ends_at=min(ends_at, campaign_ends_at))


@dataclass(frozen=True, slots=True)
class Basket:
    amount: int
    currency: str
    channel: Channel = "pos"


@dataclass(frozen=True, slots=True)
class Quote:
    discount: int
    payable: int


def quote(
    offer: Offer,
    basket: Basket,
    at: datetime,
    store_id: uuid.UUID | None,
    *,
    validity: Validity,
    timezone: str,
    participant_store_ids: frozenset[uuid.UUID] | None = None,
) -> Quote | Refusal:
    """The discount this coupon gives for this basket, at this moment, in this store — or why not.

    `store_id` is None for online checkout. `participant_store_ids`, when given, are the
    stores of the campaign's participants (used when the offer names no store list).
    """
    if basket.currency != offer.currency:
        return Refusal.CURRENCY_MISMATCH
    if basket.channel not in offer.channels:
        return Refusal.CHANNEL_NOT_ALLOWED
    if at < validity.starts_at:
        return Refusal.NOT_YET_VALID
    if at >= validity.ends_at:
        return Refusal.EXPIRED
    if store_id is not None:
        allowed = offer.store_ids if offer.store_ids is not None else participant_store_ids
        if allowed is not None and store_id not in allowed:
            return Refusal.NOT_REDEEMABLE_HERE
    local = at.astimezone(ZoneInfo(timezone))
    if local.weekday() not in offer.weekdays:
        return Refusal.OUTSIDE_TIME_WINDOW
    if offer.time_windows and not any(w.contains(local.time()) for w in offer.time_windows):
        return Refusal.OUTSIDE_TIME_WINDOW
    if basket.amount < max(offer.min_spend, offer.threshold, 1):
        return Refusal.BELOW_MINIMUM_SPEND
    discount = discount_for(offer, basket.amount)
    return Quote(discount=discount, payable=basket.amount - discount)


# --- the campaign workflow --------------------------------------------------------------------


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    PROPOSED = "proposed"
    APPROVED = "approved"
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"
    CANCELLED = "cancelled"


TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    CampaignStatus.DRAFT: frozenset({CampaignStatus.PROPOSED, CampaignStatus.CANCELLED}),
    CampaignStatus.PROPOSED: frozenset(
        {CampaignStatus.APPROVED, CampaignStatus.DRAFT, CampaignStatus.CANCELLED}
    ),
    CampaignStatus.APPROVED: frozenset(
        {CampaignStatus.ACTIVE, CampaignStatus.DRAFT, CampaignStatus.CANCELLED}
    ),
    CampaignStatus.ACTIVE: frozenset({CampaignStatus.PAUSED, CampaignStatus.ENDED}),
    CampaignStatus.PAUSED: frozenset({CampaignStatus.ACTIVE, CampaignStatus.ENDED}),
    CampaignStatus.ENDED: frozenset(),
    CampaignStatus.CANCELLED: frozenset(),
}


def can_transition(current: CampaignStatus, target: CampaignStatus) -> bool:
    return target in TRANSITIONS[current]


# A targeted campaign's list may change until the campaign is over: it is not part of the
# frozen terms (participants agree to a targeted audience, not to each subscriber on it), and
# a running campaign may take in more customers. Nobody claims from an ended or cancelled one.
TARGET_LIST_OPEN = frozenset(
    {
        CampaignStatus.DRAFT,
        CampaignStatus.PROPOSED,
        CampaignStatus.APPROVED,
        CampaignStatus.ACTIVE,
        CampaignStatus.PAUSED,
    }
)


def target_list_open(status: CampaignStatus) -> bool:
    """Whether customers may be put on (or taken off) a campaign's target list now."""
    return status in TARGET_LIST_OPEN


@dataclass(frozen=True, slots=True)
class Funder:
    org_id: uuid.UUID
    share_bp: int
    budget_cap: int | None = None


@dataclass(frozen=True, slots=True)
class Terms:
    """What every participant accepts, frozen per version when proposed."""

    funders: tuple[Funder, ...]
    total_budget: int
    currency: str
    fee_bp: int = 0  # platform fee: basis points of the discount ...
    fee_fixed: int = 0  # ... and/or a fixed amount per redemption
    fee_payer: Literal["redeeming_merchant", "owner"] = "redeeming_merchant"
    settlement_cycle: Literal["daily", "weekly", "monthly"] = "weekly"
    extra: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if not self.funders:
            found.append(("funders", "at least one funder"))
        if sum(f.share_bp for f in self.funders) != 10_000:
            found.append(("funders", "funding shares must sum to exactly 10000 basis points"))
        if any(f.share_bp < 0 for f in self.funders):
            found.append(("funders", "funding shares cannot be negative"))
        if len({f.org_id for f in self.funders}) != len(self.funders):
            found.append(("funders", "each organization funds once"))
        if any(f.budget_cap is not None and f.budget_cap <= 0 for f in self.funders):
            found.append(("funders", "a budget cap must be positive"))
        if self.total_budget <= 0:
            found.append(("total_budget", "must be positive"))
        if not 0 <= self.fee_bp <= 10_000:
            found.append(("fee_bp", "between 0 and 10000 basis points"))
        if self.fee_fixed < 0:
            found.append(("fee_fixed", "cannot be negative"))
        return found


def fee_for(terms: Terms, discount: int) -> int:
    return percent_of(discount, terms.fee_bp) + (terms.fee_fixed if discount > 0 else 0)


def funders_can_cover(terms: Terms, reserved_by_funder: dict[uuid.UUID, int], amount: int) -> bool:
    """Would reserving `amount` more stay within every funder's cap (by its share)?"""
    from coalition.platform.money import split_by_basis_points

    parts = split_by_basis_points(amount, {f.org_id: f.share_bp for f in terms.funders})
    return all(
        f.budget_cap is None
        or reserved_by_funder.get(f.org_id, 0) + parts[f.org_id] <= f.budget_cap
        for f in terms.funders
    )


def sorted_windows(windows: Sequence[TimeWindow]) -> tuple[TimeWindow, ...]:
    return tuple(sorted(windows, key=lambda w: (w.start, w.end)))


# --- audience ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may claim: everybody (`open`), a segment by tier, tags and network, or a target list."""

    kind: str  # open | segment | targeted
    min_tier: int | None = None
    max_tier: int | None = None
    tags: Sequence[str] = ()
    on_network_only: bool = False


def admits(
    audience: Audience, *, tier: int, tags: Sequence[str], on_network: bool, targeted: bool
) -> bool:
    """Whether a customer (with their tier, tags, network and place on the target list) may
    claim from a campaign with this audience."""
    if audience.kind == "targeted":
        return targeted
    if audience.kind == "segment":
        if audience.min_tier is not None and tier < audience.min_tier:
            return False
        if audience.max_tier is not None and tier > audience.max_tier:
            return False
        if audience.tags and not set(audience.tags) & set(tags):
            return False
        if audience.on_network_only and not on_network:
            return False
    return True
