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
