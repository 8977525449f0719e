"""Request and response shapes of coupons: claims, the wallet, voids, campaign figures."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

import msgspec

from coalition.platform.api import Request, Response


class CouponRead(Response):
    id: uuid.UUID
    campaign_id: uuid.UUID
    campaign_name: str
    code: str
    display_code: str
    status: str
    currency: str
    max_discount: int
    valid_from: datetime
    valid_until: datetime
    claimed_at: datetime | None
    redeemed_at: datetime | None
    coupon_url: str  # what the QR encodes
    qr_png: str
    qr_svg: str


class VoidRequest(Request):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class FunderFigures(Response):
    org_id: uuid.UUID
    share_bp: int
    budget_cap: int | None
    reserved: int  # held by the coupons given out and not finished
    spent: int  # this funder's share of the standing discounts (after reversals)


class DailyFigures(Response):
    day: date
    issued: int
    claimed: int
    redeemed: int
    expired: int
    voided: int
    discount: int


class CampaignStatsRead(Response):
    campaign_id: uuid.UUID
    currency: str
    total_quantity: int
    total_budget: int
    issued: int
    claimed: int
    redeemed: int
    expired: int
    voided: int
    redemption_rate: float  # redeemed / (issued + claimed), 0 when nothing was given out
    remaining_quantity: int
    budget_reserved: int
    budget_spent: int  # the standing discounts: redeemed, less what reversals took back
    funders: list[FunderFigures]
    by_day: list[DailyFigures]
