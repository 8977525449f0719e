"""Request and response shapes of POS redemption: quotes, redemptions and their reversals."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from coalition.platform.api import Request, Response

MAX_BASKET = 10**11  # minor units: a billion yuan; anything larger is a typo at the till

BasketAmount = Annotated[
    int, msgspec.Meta(ge=1, le=MAX_BASKET, description="Basket total in minor units (fen, cents)")
]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
CodeText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=300,
        description="The coupon code as typed (any grouping or case) or the scanned QR URL",
    ),
]
OrderRef = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"\S")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=r"\S")]


class QuoteRequest(Request):
    code: CodeText
    basket_amount: BasketAmount
    currency: Currency


class RedeemRequest(Request):
    code: CodeText
    basket_amount: BasketAmount
    currency: Currency
    order_ref: OrderRef


class ReverseRequest(Request):
    """Omit `refund_amount` (or send the whole basket) to reverse the redemption in full."""

    reason: Reason
    refund_amount: BasketAmount | None = None


class QuoteRead(Response):
    coupon_code: str
    campaign_id: uuid.UUID
    campaign_name: str
    currency: str
    basket_amount: int
    discount: int
    payable: int
    store_id: uuid.UUID | None  # None: online checkout
    quoted_at: datetime


class FundingPart(Response):
    org_id: uuid.UUID
    amount: int


class RedemptionRead(Response):
    id: uuid.UUID
    coupon_id: uuid.UUID
    coupon_code: str
    campaign_id: uuid.UUID
    org_id: uuid.UUID
    store_id: uuid.UUID | None  # None: online
    terminal_id: uuid.UUID | None
    channel: str
    order_ref: str | None
    currency: str
    basket_amount: int
    discount: int
    payable: int
    funding: list[FundingPart]  # each funder's part of the discount; they sum to `discount`
    platform_fee: int
    status: str
    refunded_amount: int
    discount_reversed: int
    redeemed_at: datetime
    reversed_at: datetime | None


class ReversalRead(Response):
    id: uuid.UUID
    redemption_id: uuid.UUID
    refund_amount: int
    discount_reversed: int  # this reversal's slice of the discount
    full: bool
    reason: str
    created_at: datetime
    coupon_status: str
    redemption: RedemptionRead


# --- online checkout ----------------------------------------------------------------------------

HoldSeconds = Annotated[
    int, msgspec.Meta(ge=10, le=86_400, description="How long to hold the coupon (seconds)")
]


class ReserveRequest(Request):
    """Hold a coupon for an online checkout: the discount for this basket, kept until it is
    confirmed, released, or the hold expires."""

    code: CodeText
    basket_amount: BasketAmount
    currency: Currency
    order_ref: OrderRef
    hold_seconds: HoldSeconds | None = None


class HoldRead(Response):
    id: uuid.UUID
    status: str  # held | confirmed | released | expired
    coupon_code: str
    campaign_id: uuid.UUID
    org_id: uuid.UUID
    currency: str
    basket_amount: int
    discount: int
    payable: int
    order_ref: str
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None
    redemption_id: uuid.UUID | None


# --- flags for review -----------------------------------------------------------------------------


class FlagRead(Response):
    id: uuid.UUID
    rule: str
    status: str  # open | reviewed
    redemption_id: uuid.UUID
    customer_id: uuid.UUID | None
    org_ids: list[uuid.UUID]
    redemption_ids: list[uuid.UUID]  # a merchant sees only its own organization's
    detail: dict[str, int | str]
    created_at: datetime
    reviewed_at: datetime | None
    reviewed_by: uuid.UUID | None
    review_note: str | None


class FlagReview(Request):
    note: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
