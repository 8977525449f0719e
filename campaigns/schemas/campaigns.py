"""Request and response shapes of joint campaigns: the draft, its offer and terms, the
workflow (propose, accept, decline, activate, pause, resume, end, cancel), frozen terms."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from coalition.platform.api import Request, Response

MAX_AMOUNT = 10**15  # minor units; far below bigint, far above any real campaign
MAX_PARTICIPANTS = 20
MAX_STORES = 1000

CampaignStatusName = Literal[
    "draft", "proposed", "approved", "active", "paused", "ended", "cancelled"
]
OfferKind = Literal["amount_off", "percent_off", "threshold", "gift"]
ChannelName = Literal["pos", "online"]
AudienceKind = Literal["open", "segment", "targeted"]
FeePayer = Literal["redeeming_merchant", "owner"]
SettlementCycle = Literal["daily", "weekly", "monthly"]
Acceptance = Literal["pending", "accepted", "declined"]

Amount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT, description="Minor units (fen, cents)")]
PositiveAmount = Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT)]
BasisPoints = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
TimeZoneName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+\-/]+$",
        description="IANA time zone, e.g. Asia/Shanghai",
    ),
]
CodePrefix = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2,8}$", description="2-8 letters A-Z")]
ClockTime = Annotated[
    str, msgspec.Meta(pattern=r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$", description='"HH:MM"')
]
Weekday = Annotated[int, msgspec.Meta(ge=0, le=6, description="0 = Monday ... 6 = Sunday")]
Tier = Annotated[int, msgspec.Meta(ge=1, le=7)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
PerCustomer = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
ReversalDays = Annotated[int, msgspec.Meta(ge=0, le=365)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


# --- requests -------------------------------------------------------------------------------


class TimeWindowIn(Request):
    """Local time of day, `[start, end)`; an `end` before `start` runs past midnight."""

    start: ClockTime
    end: ClockTime


class OfferIn(Request):
    """The discount rule. Amounts are minor units of the campaign currency.

    - `amount_off`: `value` off; `percent_off`: `percent_bp` of the basket, at most `cap`;
      `threshold`: spend at least `threshold`, get `value` off; `gift`: a gift worth `value`.
    - Validity: fixed `valid_from`/`valid_until` (inside the campaign schedule), or
      `valid_days_after_claim` local days after the claim.
    """

    kind: OfferKind
    value: Amount = 0
    percent_bp: BasisPoints = 0
    cap: Amount | None = None
    threshold: Amount = 0
    min_spend: Amount = 0
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    valid_days_after_claim: int | None = None
    weekdays: Annotated[list[Weekday], msgspec.Meta(max_length=7)] = msgspec.field(
        default_factory=lambda: list(range(7))
    )
    time_windows: Annotated[list[TimeWindowIn], msgspec.Meta(max_length=2)] = msgspec.field(
        default_factory=list
    )
    channels: Annotated[list[ChannelName], msgspec.Meta(max_length=2)] = msgspec.field(
        default_factory=lambda: ["pos", "online"]
    )


class AudienceIn(Request):
    """Who may claim: everybody (`open`), a `segment` (tiers, tags, on-network subscribers),
    or a `targeted` list uploaded later."""

    kind: AudienceKind = "open"
    min_tier: Tier | None = None
    max_tier: Tier | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)] = msgspec.field(default_factory=list)
    on_network_only: bool = False


class ParticipantIn(Request):
    """A funding organization: its share of every discount, and optionally a budget cap."""

    org_id: uuid.UUID
    share_bp: BasisPoints
    budget_cap: PositiveAmount | None = None


class FeeIn(Request):
    """The platform fee per redemption: `bp` of the discount and/or a `fixed` amount."""

    bp: BasisPoints = 0
    fixed: Amount = 0
    payer: FeePayer = "redeeming_merchant"


class CampaignCreate(Request):
    """A draft joint campaign. The caller's organization owns it and must be a participant;
    the participants' shares sum to exactly 10000 basis points. `store_ids` (stores of the
    participants) limits where coupons are redeemable; empty means every participant's store."""

    name: Name
    currency: Currency
    timezone: TimeZoneName
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    offer: OfferIn
    total_quantity: Quantity
    participants: Annotated[
        list[ParticipantIn], msgspec.Meta(min_length=1, max_length=MAX_PARTICIPANTS)
    ]
    total_budget: PositiveAmount
    description: Description | None = None
    code_prefix: CodePrefix | None = None
    audience: AudienceIn = msgspec.field(default_factory=AudienceIn)
    per_customer_limit: PerCustomer = 1
    per_customer_daily_limit: PerCustomer | None = None
    reversal_window_days: ReversalDays = 30
    fee: FeeIn = msgspec.field(default_factory=FeeIn)
    settlement_cycle: SettlementCycle = "weekly"
    store_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_STORES)] = msgspec.field(
        default_factory=list
    )


class CampaignUpdate(Request):
    """Fields to change; omitted fields stay. Nested objects and lists are replaced whole.
    Changing the terms of a proposed or approved campaign returns it to draft."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    currency: Currency | msgspec.UnsetType = msgspec.UNSET
    timezone: TimeZoneName | msgspec.UnsetType = msgspec.UNSET
    starts_at: AwareDatetime | msgspec.UnsetType = msgspec.UNSET
    ends_at: AwareDatetime | msgspec.UnsetType = msgspec.UNSET
    offer: OfferIn | msgspec.UnsetType = msgspec.UNSET
    total_quantity: Quantity | msgspec.UnsetType = msgspec.UNSET
    participants: (
        Annotated[list[ParticipantIn], msgspec.Meta(min_length=1, max_length=MAX_PARTICIPANTS)]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    total_budget: PositiveAmount | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    code_prefix: CodePrefix | msgspec.UnsetType | None = msgspec.UNSET
    audience: AudienceIn | msgspec.UnsetType = msgspec.UNSET
    per_customer_limit: PerCustomer | msgspec.UnsetType = msgspec.UNSET
    per_customer_daily_limit: PerCustomer | msgspec.UnsetType | None = msgspec.UNSET
    reversal_window_days: ReversalDays | msgspec.UnsetType = msgspec.UNSET
    fee: FeeIn | msgspec.UnsetType = msgspec.UNSET
    settlement_cycle: SettlementCycle | msgspec.UnsetType = msgspec.UNSET
    store_ids: (
        Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_STORES)] | msgspec.UnsetType
    ) = msgspec.UNSET


class AcceptRequest(Request):
    """Accept exactly this version of the terms (the campaign's current `terms_version`)."""

    terms_version: Annotated[int, msgspec.Meta(ge=1)]


class DeclineRequest(Request):
    reason: Reason


class TransitionRequest(Request):
    """An optional reason for pausing, ending or cancelling."""

    reason: Reason | None = None


# --- responses ------------------------------------------------------------------------------


class TimeWindowRead(Response):
    start: str
    end: str


class OfferRead(Response):
    kind: str
    currency: str
    value: int
    percent_bp: int
    cap: int | None
    threshold: int
    min_spend: int
    valid_from: datetime | None
    valid_until: datetime | None
    valid_days_after_claim: int | None
    weekdays: list[int]
    time_windows: list[TimeWindowRead]
    channels: list[str]
    store_ids: list[uuid.UUID] | None


class AudienceRead(Response):
    kind: str
    min_tier: int | None
    max_tier: int | None
    tags: list[str]
    on_network_only: bool


class FeeRead(Response):
    bp: int
    fixed: int
    payer: str


class ParticipantRead(Response):
    org_id: uuid.UUID
    org_name: str
    position: int
    is_owner: bool
    share_bp: int
    budget_cap: int | None
    acceptance: Acceptance  # of the campaign's current terms version
    accepted_version: int | None
    accepted_at: datetime | None
    declined_at: datetime | None
    decline_reason: str | None


class CampaignSummary(Response):
    id: uuid.UUID
    owner_org_id: uuid.UUID
    name: str
    status: str
    status_reason: str | None
    currency: str
    timezone: str
    starts_at: datetime
    ends_at: datetime
    terms_version: int
    total_quantity: int
    total_budget: int
    created_at: datetime


class CampaignRead(Response):
    id: uuid.UUID
    owner_org_id: uuid.UUID
    name: str
    description: str | None
    status: str
    status_reason: str | None
    terms_version: int
    currency: str
    timezone: str
    starts_at: datetime
    ends_at: datetime
    code_prefix: str | None
    offer: OfferRead
    audience: AudienceRead
    total_quantity: int
    per_customer_limit: int
    per_customer_daily_limit: int | None
    reversal_window_days: int
    total_budget: int
    fee: FeeRead
    settlement_cycle: str
    participants: list[ParticipantRead]
    store_ids: list[uuid.UUID]
    created_by: uuid.UUID | None
    created_at: datetime
    proposed_at: datetime | None
    approved_at: datetime | None
    activated_at: datetime | None
    ended_at: datetime | None


class TermsVersionRead(Response):
    campaign_id: uuid.UUID
    version: int
    current: bool
    terms: dict[str, Any]
    proposed_by: uuid.UUID | None
    proposed_at: datetime
